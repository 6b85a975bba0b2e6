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
from edge_runtime.media.sources import ImageFilesSource, LiveSource, ReconnectPolicy, open_source

BOUNDARY = "sdposeframe"


def jpeg(level: int) -> bytes:
    img = np.full((48, 64, 3), level, np.uint8)
    cv2.circle(img, (30, 20), 5, (255, 255, 255), -1)
    ok, data = cv2.imencode(".jpg", img)
    assert ok
    return data.tobytes()


class MjpegServer:
    """Serves ``sessions[i]`` (a list of JPEG byte strings; b"" = a corrupt part; None = answer 503) to the i-th
    connection, then answers 503 to later connections."""

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
                if index >= len(outer.sessions) or outer.sessions[index] is None:
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


def flapping(frames: int, every: int, start: int = 40) -> list:
    """Sessions of ``every`` frames: the connection drops after each (a flapping camera)."""
    return [[jpeg(start + 5 * (i + j)) for j in range(every)] for i in range(0, frames, every)]


def test_flapping_feed_counts_drops_reconnects_and_the_longest_outage() -> None:
    """A server that drops the connection every 3 frames, and once refuses the reconnection: 30 frames read,
    9 drops, 9 reconnects, and the longest outage at least the two backoff waits of the refused one."""
    sessions = flapping(30, 3)
    sessions.insert(5, None)  # the 5th reconnection attempt is refused: that outage waits 0.05 + 0.1 s at least
    policy = ReconnectPolicy(max_retries=3, initial_s=0.05, max_s=0.4)
    with MjpegServer(sessions) as server:
        source = open_source(server.url, policy=policy)
        frames = []
        for frame in source:
            frames.append(frame)
            if len(frames) == 30:
                source.close()  # stop before the end of the stream: no outage is still going
    assert [f.index for f in frames] == list(range(30)) and all(f.ok for f in frames)
    stats = source.connections.to_summary()
    assert stats["connection_drops"] == 9 and stats["reconnects"] == 9 == source.reconnects
    assert stats["longest_outage_s"] >= 0.15
    # a file source has no connection to lose
    assert ImageFilesSource([]).connections.to_summary() == {"connection_drops": 0, "reconnects": 0,
                                                             "longest_outage_s": 0.0}


def _run(tmp_path: Path, models: Path, sources: list, *extra: str) -> "tuple[int, dict]":
    from edge_runtime.cli import main

    dets = {str(i): [[5, 5, 60, 45, 0.9]] for i in range(40)}
    (tmp_path / "d.json").write_text(json.dumps(dets))
    (tmp_path / "edge.yaml").write_text("reconnect_initial_s: 0.05\nreconnect_max_s: 0.1\n")
    args = ["run", "--models", str(models), "--output", str(tmp_path / "out"), "--detections",
            str(tmp_path / "d.json"), "--no-cache", "--no-progress", "--reconnect-retries", "1",
            "--config", str(tmp_path / "edge.yaml"), *extra]
    for url in sources:
        args += ["--source", url]
    code = main(args)
    return code, json.loads((tmp_path / "out" / "summary.json").read_text())


def test_flapping_camera_is_counted_in_summary_json(tmp_path: Path, fake_models_dir: Path) -> None:
    """File mode over a feed that drops every 3 frames: every frame in and out, no frame skipped, and the
    drops and reconnects in summary.json (the stream's final end is a drop too: the run says so)."""
    with MjpegServer(flapping(12, 3), interval_s=0.02) as server:
        code, summary = _run(tmp_path, fake_models_dir, [server.url], "--mode", "file")
    assert code == 1 and "gave up after 1 reconnection attempts" in summary["capture_error"]
    assert summary["frames_in"] == summary["frames_out"] == 12 and summary["frames_skipped"] == 0
    assert summary["connection_drops"] == 4 and summary["reconnects"] == 3
    assert summary["longest_outage_s"] >= 0.05


def test_each_live_source_and_the_total_count_their_drops(tmp_path: Path, fake_models_dir: Path) -> None:
    with MjpegServer(flapping(12, 3), interval_s=0.03) as flappy, \
            MjpegServer([flapping(12, 12)[0]], interval_s=0.03) as steady:
        code, summary = _run(tmp_path, fake_models_dir, [flappy.url, steady.url])
        urls = (flappy.url, steady.url)
    assert code == 1 and summary["mode"] == "live"
    per = summary["sources"]
    by_url = {entry["source"]: entry for entry in per.values()}
    assert len(per) == 2 and set(by_url) == set(urls)
    first, second = (by_url[url] for url in urls)
    assert (first["connection_drops"], first["reconnects"], first["frames_in"]) == (4, 3, 12)
    assert (second["connection_drops"], second["reconnects"], second["frames_in"]) == (1, 0, 12)
    assert summary["connection_drops"] == 5 and summary["reconnects"] == 3
    assert summary["longest_outage_s"] == max(first["longest_outage_s"], second["longest_outage_s"]) >= 0.05
    for name in per:  # each source's own summary.json has its entry
        own = json.loads((tmp_path / "out" / name / "summary.json").read_text())
        assert own["connection_drops"] == per[name]["connection_drops"]
