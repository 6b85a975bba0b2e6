"""MJPEG over HTTP (multipart/x-mixed-replace) served from 127.0.0.1 inside the test: reading, reconnecting
after the feed drops, a corrupt part, and the whole run through the pipeline in live mode."""
from __future__ import annotations

import http.server
import json
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import InputError
from edge_runtime.sources import LiveSource, ReconnectPolicy, open_source

BOUNDARY = "sdposeframe"


def jpeg(level: int) -> bytes:
    img = np.full((48, 64, 3), level, np.uint8)
    cv2.circle(img, (30, 20), 5, (255, 255, 255), -1)
    ok, data = cv2.imencode(".jpg", img)
    assert ok
    return data.tobytes()


class MjpegServer:
    """Serves ``sessions[i]`` (a list of JPEG byte strings; b"" = a corrupt part) to the i-th connection,
    then answers 503 to later connections."""

    def __init__(self, sessions: list[list[bytes]], content_length: bool = True, interval_s: float = 0.0,
                 auth: "str | None" = None) -> None:
        self.sessions = sessions
        self.auth_seen: list = []
        self.connections = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # keep test output quiet
                pass

            def do_GET(self) -> None:
                outer.auth_seen.append(self.headers.get("Authorization"))
                if auth is not None and self.headers.get("Authorization") != auth:
                    self.send_error(401, "authorization required")
                    return
                index = outer.connections
                outer.connections += 1
                if index >= len(outer.sessions):
                    self.send_error(503, "no more sessions")
                    return
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.end_headers()
                for part in outer.sessions[index]:
                    body = part if part else b"\x00garbage-not-a-jpeg"
                    head = f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                    if content_length:
                        head += f"Content-Length: {len(body)}\r\n"
                    self.wfile.write(head.encode() + b"\r\n" + body + b"\r\n")
                    self.wfile.flush()
                    if interval_s:
                        time.sleep(interval_s)
                # drop the connection without a closing boundary (a feed that dies)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/stream.mjpg"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> "MjpegServer":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


FAST_RETRY = ReconnectPolicy(max_retries=2, initial_s=0.01, max_s=0.02)


@pytest.mark.parametrize("content_length", [True, False])
def test_mjpeg_frames_and_reconnect(content_length: bool) -> None:
    sessions = [[jpeg(10), jpeg(60), jpeg(110)], [jpeg(160), b"", jpeg(210)]]
    with MjpegServer(sessions, content_length=content_length) as server:
        source = open_source(server.url, policy=FAST_RETRY)
        assert isinstance(source, LiveSource) and source.default_mode == "live"
        frames = []
        with pytest.raises(InputError, match="gave up after 2 reconnection attempts"):
            for frame in source:  # the stream ends for good: the source says so instead of just stopping
                frames.append(frame)
    assert [f.index for f in frames] == list(range(6))
    assert [f.ok for f in frames] == [True, True, True, True, False, True]
    levels = [int(np.median(f.image)) for f in frames if f.ok]
    assert all(abs(a - b) <= 3 for a, b in zip(levels, [10, 60, 110, 160, 210]))
    assert "not a decodable JPEG" in frames[4].error
    assert source.reconnects == 1
    assert server.connections == 2 + FAST_RETRY.max_retries  # two sessions, then the retries give up
    assert all(f.timestamp_ms is not None and f.name.startswith(server.url) for f in frames)


def test_unreachable_stream_is_a_clear_error() -> None:
    with MjpegServer([]) as server:
        url = server.url
        with pytest.raises(InputError, match="cannot open"):
            list(open_source(url, policy=ReconnectPolicy(max_retries=1, initial_s=0.01)))


def test_mjpeg_stream_through_run_cli(tmp_path: Path, fake_models_dir: Path) -> None:
    from edge_runtime.cli import main

    sessions = [[jpeg(40 + 10 * i) for i in range(12)]]
    dets = {str(i): [[5, 5, 60, 45, 0.9]] for i in range(12)}
    (tmp_path / "d.json").write_text(json.dumps(dets))
    with MjpegServer(sessions, interval_s=0.08) as server:
        code = main(["run", "--models", str(fake_models_dir), "--source", server.url, "--output",
                     str(tmp_path / "out"), "--detections", str(tmp_path / "d.json"), "--no-cache",
                     "--reconnect-retries", "0"])
    # the feed dies and no reconnection is allowed: the run says so in its exit code and summary
    assert code == 1
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["mode"] == "live" and summary["frames_in"] == 12
    assert "gave up after 0 reconnection attempts" in summary["capture_error"]
    lines = (tmp_path / "out" / "predictions.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert len(records) == summary["frames_out"] and summary["frames_out"] + summary["frames_skipped"] == 12
    assert records[-1]["frame"] == 11  # newest frame always processed
    # the tracked person is in every frame from its first detection, with "keypoints": null until its first pose
    assert all([p["track_id"] for p in r["persons"]] == [0] for r in records)
    posed = [r["persons"][0]["keypoints"] is not None for r in records]
    assert any(posed), "the tracked person never got a pose"
    assert posed == sorted(posed)  # once the track has a pose, every later frame carries it
    for r, has_pose in zip(records, posed):
        (person,) = r["persons"]
        if has_pose:
            assert 0 <= person["pose_frame"] <= r["frame"] and person["pose_age_ms"] >= 0
            assert isinstance(person["propagated"], bool)
        else:
            assert (person["pose_frame"], person["pose_age_ms"], person["propagated"]) == (None, None, False)
