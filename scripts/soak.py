"""Soak benchmark: a live loopback MJPEG stream for a long time through the live runner with a slow pose backend.

    python scripts/soak.py --models MODELS --minutes 30 [--fps 12] [--drop-every 300] [--json-out F]

An in-process HTTP server streams the drawn-figures video (``samples/figures.mp4``, looped) as MJPEG at
``--fps``; every ``--drop-every`` frames it drops the connection (the source reconnects). The pose backend
is OpenVINO on MODELS plus a fixed delay per request (``--delay-s``), so the pose stage is slow like the
full-size model while the run stays cheap. RSS (VmRSS) is sampled every 10 s; reported: RSS after warm-up
and at the end (drift), frames in/out/dropped, reconnects, failed frames, pose recomputes, latency.
"""
from __future__ import annotations

import argparse
import http.server
import json
import logging
import sys
import threading
import time
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edge_runtime.running.backends import delayed_backend_factory  # noqa: E402
from edge_runtime.running.metrics import memory_status  # noqa: E402
from edge_runtime.model.cpu import cpu_info  # noqa: E402
from edge_runtime.model.estimator import PoseEstimator  # noqa: E402
from edge_runtime.running.live import LiveConfig, LiveRunner, SourceRun  # noqa: E402
from edge_runtime.model.models import CompileOptions  # noqa: E402
from edge_runtime.media.detections import load_detections  # noqa: E402
from edge_runtime.media.sources import LiveSource, ReconnectPolicy  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
log = logging.getLogger("soak")


def video_jpegs(path: Path) -> list[bytes]:
    """Every frame of a video file as JPEG bytes (what the streamer sends)."""
    cap = cv2.VideoCapture(str(path))
    jpegs = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        jpegs.append(cv2.imencode(".jpg", img)[1].tobytes())
    return jpegs


class Streamer:
    """MJPEG over HTTP from 127.0.0.1: loops ``jpegs`` at ``fps``; closes the connection every ``drop_every``."""

    def __init__(self, jpegs: list[bytes], fps: float, drop_every: int) -> None:
        self.sent = 0
        self.connections = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                outer.connections += 1
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                t_next = time.perf_counter()
                try:
                    for _ in range(drop_every):
                        data = jpegs[outer.sent % len(jpegs)]
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(data) + data + b"\r\n")
                        outer.sent += 1
                        t_next += 1.0 / fps
                        time.sleep(max(0.0, t_next - time.perf_counter()))
                except (BrokenPipeError, ConnectionResetError):
                    return

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/live.mjpg"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()


class Counter:
    def __init__(self) -> None:
        self.records = 0
        self.errors = 0

    def write(self, result, image=None) -> None:
        """One frame's FrameResult."""
        self.records += 1
        self.errors += result.error is not None

    def close(self) -> None:
        pass


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--fps", type=float, default=12.0)
    parser.add_argument("--drop-every", type=int, default=3000, help="frames per connection before a drop")
    parser.add_argument("--delay-s", type=float, default=0.5, help="added to every pose request")
    parser.add_argument("--json-out", type=Path, default=None)
    return parser


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    jpegs = video_jpegs(SAMPLES / "figures.mp4")
    dets = load_detections(SAMPLES / "figures_detections.json")
    table = {str(i): dets[str(i % len(jpegs))] for i in range(int(args.minutes * 60 * args.fps) + 1000)}
    est = PoseEstimator(args.models, options=CompileOptions(cache_dir=None, inference_precision="f32",
                                                            performance_hint="LATENCY", num_requests=1))

    streamer = Streamer(jpegs, args.fps, args.drop_every)
    source = LiveSource(streamer.url, policy=ReconnectPolicy(max_retries=5, initial_s=0.2, max_s=2.0))
    sink = Counter()
    runner = LiveRunner(est, LiveConfig(mode="live"), backend_factory=delayed_backend_factory(args.delay_s),
                        per_source_detections=True)
    samples: list[tuple[float, float]] = []
    t0 = time.perf_counter()

    def watch() -> None:
        while not runner.stopping:
            samples.append((round(time.perf_counter() - t0, 1), memory_status()["rss"]))
            if time.perf_counter() - t0 > args.minutes * 60:
                runner.stop()
                return
            time.sleep(10.0)

    threading.Thread(target=watch, daemon=True).start()
    result = runner.run([SourceRun("soak", source, [sink], detections=table)])
    streamer.close()
    total = result["total"]
    warm = next((r for t, r in samples if t >= 60.0), samples[0][1])
    end = samples[-1][1]
    doc = {"cpu": cpu_info().to_dict(), "minutes": args.minutes, "fps": args.fps, "delay_s": args.delay_s,
           "rss_mb_after_60s": warm, "rss_mb_end": end, "rss_drift": round((end - warm) / warm, 4),
           "rss_mb_max": max(r for _, r in samples),
           "frames_sent": streamer.sent, "frames_in": total["frames_in"], "frames_out": total["frames_out"],
           "frames_dropped": total["frames_skipped"], "frames_failed": total["frames_failed"],
           "records": sink.records, "reconnects": source.reconnects, "connections": streamer.connections,
           "pose_recomputes": total["pose_recomputes"], "frame_latency_ms": total["latency_ms"]["frame_latency"],
           "capture_error": total["capture_error"], "rss_samples": samples}
    log.info("%s", json.dumps({k: v for k, v in doc.items() if k != "rss_samples"}, indent=2))
    if args.json_out:
        args.json_out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
