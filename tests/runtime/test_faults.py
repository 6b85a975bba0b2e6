"""Fault injection: streams that drop mid-part or never send, credentials in URLs, reused output folders, a
calibration --overwrite aimed at the wrong folder, bad boxes. Loopback servers and fake models only."""
from __future__ import annotations

import base64
import json
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.errors import InputError
from edge_runtime.media.outputs import expand_sources, prepare_output, source_name
from edge_runtime.media.sources import LiveSource, ReconnectPolicy, mask_credentials, split_credentials
from tests.runtime.test_mjpeg import MjpegServer, jpeg

FAST = ReconnectPolicy(max_retries=2, initial_s=0.01, max_s=0.02)


class RawServer:
    """A TCP server on 127.0.0.1 that runs ``behaviour(conn)`` for each connection."""

    def __init__(self, behaviour) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = self.sock.getsockname()[1]
        self.behaviour = behaviour
        self.connections = 0
        self._stop = threading.Event()
        self.conns: list = []
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            self.conns.append(conn)
            threading.Thread(target=self.behaviour, args=(conn, self.connections == 1), daemon=True).start()

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        for c in self.conns:
            c.close()


def _chunked_drop(conn: socket.socket, first: bool) -> None:
    conn.recv(4096)
    if not first:  # later connections are refused at the HTTP level
        conn.sendall(b"HTTP/1.1 503 Unavailable\r\nContent-Length: 0\r\n\r\n")
        conn.close()
        return
    head = (b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=b\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n")
    part = b"--b\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg(50)) + jpeg(50) + b"\r\n"
    body = part + b"--b\r\nContent-Type: image/jpeg\r\nContent-Length: 5000\r\n\r\n" + b"x" * 100
    conn.sendall(head + b"%x\r\n" % len(body) + body[:len(part) + 40])  # the chunk ends early: connection dies
    conn.close()


def test_chunked_mjpeg_server_dropping_mid_part_ends_with_a_clear_error() -> None:
    server = RawServer(_chunked_drop)
    try:
        source = LiveSource(f"http://127.0.0.1:{server.port}/s.mjpg", policy=FAST, timeout_s=2.0)
        frames = []
        with pytest.raises(InputError, match="gave up after 2 reconnection attempts"):
            for frame in source:
                frames.append(frame)
        assert frames and frames[0].ok  # the first full part arrived
        assert server.connections == 3  # first session + 2 bounded retries, then the source fails
    finally:
        server.close()


def _accept_and_stay_silent(conn: socket.socket, first: bool) -> None:
    conn.recv(4096)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=b\r\n\r\n")
    threading.Event().wait(30)  # never sends a frame


def test_a_server_that_accepts_and_never_sends_is_bounded() -> None:
    server = RawServer(_accept_and_stay_silent)
    try:
        source = LiveSource(f"http://127.0.0.1:{server.port}/s.mjpg", policy=FAST, timeout_s=0.3)
        with pytest.raises(InputError, match="gave up after 2"):
            list(source)
        # every open succeeds, yet the outage budget is not reset: 1 + 2 retries, not an endless loop
        assert server.connections == 3
    finally:
        server.close()


def test_credentials_are_masked_and_used_for_basic_auth() -> None:
    url = "rtsp://admin:s3cret@cam.local:554/stream1"
    assert mask_credentials(f"cannot open {url} (x)") == "cannot open rtsp://admin:***@cam.local:554/stream1 (x)"
    assert split_credentials("http://u:p%40ss@host:8080/v.mjpg") == ("http://host:8080/v.mjpg", "u", "p@ss")
    assert source_name(url) == "cam.local_554_stream1"
    expected = "Basic " + base64.b64encode(b"user:pa:ss").decode()
    with MjpegServer([[jpeg(10), jpeg(60)]], auth=expected) as server:
        authed = server.url.replace("http://", "http://user:pa:ss@")
        source = LiveSource(authed, policy=ReconnectPolicy(max_retries=0))
        frames = []
        with pytest.raises(InputError) as info:
            for frame in source:
                frames.append(frame)
    assert len(frames) == 2 and all(f.ok for f in frames)
    assert server.auth_seen[0] == expected
    assert "pa:ss" not in str(info.value) and all("pa:ss" not in f.name for f in frames)


def test_no_credential_reaches_outputs_or_logs(tmp_path: Path, fake_models_dir: Path, capfd, caplog) -> None:
    from edge_runtime.cli import main

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://viewer:TopSecret42@127.0.0.1:{port}/cam.mjpg"
    (tmp_path / "d.json").write_text(json.dumps({"0": [[1, 1, 20, 20, 0.9]]}))
    code = main(["run", "--models", str(fake_models_dir), "--source", url, "--output", str(tmp_path / "out"),
                 "--detections", str(tmp_path / "d.json"), "--no-cache", "--reconnect-retries", "0"])
    assert code == 1  # the camera could not be opened: a failed run
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    out, err = capfd.readouterr()
    texts = [out, err, caplog.text]
    for f in (tmp_path / "out").rglob("*"):
        if f.is_file():
            texts.append(f.read_text())
    assert all("TopSecret42" not in t for t in texts)
    assert "viewer:***@" in summary["capture_error"] and "viewer:***@" in summary["source"]


def test_output_folder_reuse_needs_overwrite_and_clears_only_our_files(tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "openpose").mkdir(parents=True)
    (out / "predictions.jsonl").write_text("old\n")
    (out / "openpose" / "000001.json").write_text("{}")
    (out / "notes.txt").write_text("mine")
    (out / "cam0").mkdir()
    (out / "cam0" / "summary.json").write_text("{}")
    with pytest.raises(InputError, match="not empty.*--overwrite"):
        prepare_output(out, overwrite=False)
    assert (out / "predictions.jsonl").read_text() == "old\n"  # nothing lost by the refusal
    prepare_output(out, overwrite=True)
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]


def test_run_refuses_a_used_output_folder(tmp_path: Path, fake_models_dir: Path) -> None:
    from edge_runtime.cli import main
    from tests.runtime.test_pipeline import person_image
    import cv2

    cv2.imwrite(str(tmp_path / "a.png"), person_image((40, 60)))
    (tmp_path / "d.json").write_text(json.dumps({"a.png": [[10, 10, 80, 110, 0.9]]}))
    args = ["run", "--models", str(fake_models_dir), "--source", str(tmp_path / "a.png"), "--output",
            str(tmp_path / "out"), "--detections", str(tmp_path / "d.json"), "--no-cache"]
    assert main(args) == 0
    first = (tmp_path / "out" / "predictions.jsonl").read_text()
    assert main(args) == 2  # refused with a clear message (exit code 2: bad input), nothing touched
    assert (tmp_path / "out" / "predictions.jsonl").read_text() == first
    assert main(args + ["--overwrite"]) == 0


def test_source_lists_and_names(tmp_path: Path) -> None:
    (tmp_path / "cams.yaml").write_text("- 0\n- {name: door, source: rtsp://u:p@10.0.0.2/live}\n- a/b/walk.mp4\n"
                                        "- c/walk.mp4\n")
    assert expand_sources([str(tmp_path / "cams.yaml")]) == [
        ("camera0", "0"), ("door", "rtsp://u:p@10.0.0.2/live"), ("walk", "a/b/walk.mp4"), ("walk_2", "c/walk.mp4")]
    (tmp_path / "bad.yaml").write_text("cams: 3\n")
    with pytest.raises(InputError, match="bad.yaml: expected a YAML list"):
        expand_sources([str(tmp_path / "bad.yaml")])


def test_calib_overwrite_only_replaces_a_calibration_set(tmp_path: Path) -> None:
    import cv2

    from calib_data.builder import build_calibration_set
    from tests.runtime.test_pipeline import person_image

    photos = tmp_path / "photos"
    photos.mkdir()
    for i in range(3):
        cv2.imwrite(str(photos / f"p{i}.png"), person_image((40 + 10 * i, 60)))
    with pytest.raises(InputError, match="only replaces a calibration set"):
        build_calibration_set(photos, images=[photos], overwrite=True)
    assert len(list(photos.iterdir())) == 3  # the user's photos are untouched
    other = tmp_path / "other"
    other.mkdir()
    (other / "x.txt").write_text("keep")
    with pytest.raises(InputError, match="only replaces a calibration set"):
        build_calibration_set(other, images=[photos], overwrite=True)
    assert (other / "x.txt").read_text() == "keep"
    out = tmp_path / "set"
    build_calibration_set(out, images=[photos])
    with pytest.raises(InputError, match="is inside it"):
        build_calibration_set(out, images=[photos, out / "crops"], overwrite=True)
    build_calibration_set(out, images=[photos], overwrite=True)  # a real set is replaced
    assert (out / "manifest.json").is_file()


def test_bad_boxes_are_refused(tmp_path: Path) -> None:
    from edge_runtime.media.detections import load_detections

    (tmp_path / "d.json").write_text(json.dumps({"0": [[0, 0, 1e39, 10, 0.9]]}))
    with pytest.raises(InputError, match="beyond 1e7 px"):
        load_detections(tmp_path / "d.json")
    np.testing.assert_equal(load_detections(_write(tmp_path, {"0": [[0, 0, 5, 5]]}))["0"], [[0, 0, 5, 5, 1]])


def _write(tmp_path: Path, doc: dict) -> Path:
    path = tmp_path / "ok.json"
    path.write_text(json.dumps(doc))
    return path
