"""Live-feed benchmark: the bundled video played as N cameras at a fixed fps through the live runner.

    python scripts/live_bench.py --models MODELS --cameras 1 --seconds 120 [--fps 12] [--json-out F.json]

Each camera loops ``samples/people.mp4`` (3 persons) at ``--fps`` as a paced live source (camera k starts
k frames later), with the boxes of ``samples/people_detections.json`` on every frame (no detector needed:
a synthetic checkpoint has no trained detector). Reports, per camera and in total: frames in/out and
dropped, capture-to-output latency p50/p95, pose age p50/p95 over the person-frames output, pose
recomputes per person per second, the share of (track, frame) slots that carried a pose, the time to the
first pose, and the process's peak RSS (VmHWM), together with the CPU and the compile options.
Random weights: the speed and memory are real, the keypoints are not.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edge_runtime.running.metrics import memory_status  # noqa: E402
from edge_runtime.model.cpu import cpu_info  # noqa: E402
from edge_runtime.model.estimator import PoseEstimator  # noqa: E402
from edge_runtime.running.live import LiveConfig, LiveRunner, SourceRun  # noqa: E402
from edge_runtime.model.models import CompileOptions  # noqa: E402
from edge_runtime.media.sources import Frame, FrameSource  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
log = logging.getLogger("live_bench")


class LoopedVideo(FrameSource):
    """A video file's frames, looped for ``seconds`` with timestamps at ``fps`` (paced by the runner)."""

    def __init__(self, frames: list[np.ndarray], fps: float, seconds: float, offset: int, name: str) -> None:
        super().__init__()
        self.frames, self.fps, self.offset = frames, fps, offset
        self.count = int(seconds * fps)
        self.description = name

    def __iter__(self):
        for i in range(self.count):
            if self.closed:
                return
            yield Frame(i, f"{self.description}#{i}", self.frames[(i + self.offset) % len(self.frames)],
                        1000.0 * i / self.fps)


class Ages:
    """Sink: first-pose time per track."""

    def __init__(self) -> None:
        self.first_pose_s: dict[int, float] = {}
        self.t0 = time.perf_counter()

    def write(self, record: dict, image=None) -> None:
        for p in record["persons"]:
            if p["keypoints"] is not None:  # null: tracked, first pose not back yet
                self.first_pose_s.setdefault(p["track_id"], time.perf_counter() - self.t0)

    def close(self) -> None:
        pass


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True)
    parser.add_argument("--video", type=Path, default=SAMPLES / "people.mp4")
    parser.add_argument("--detections", type=Path, default=SAMPLES / "people_detections.json")
    parser.add_argument("--cameras", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=120.0)
    parser.add_argument("--fps", type=float, default=12.0)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--pose-budget", type=float, default=None)
    parser.add_argument("--hint", default="LATENCY")
    parser.add_argument("--num-requests", type=int, default=1)
    parser.add_argument("--precision-hint", default="f32")
    parser.add_argument("--release-memory", action="store_true",
                        help="free model buffers after each request, and run VAE and pose one after the other")
    parser.add_argument("--json-out", type=Path, default=None)
    return parser


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    cap = cv2.VideoCapture(str(args.video))
    frames = []
    while True:
        ok, img = cap.read()
        if not ok:
            break
        frames.append(img)
    raw = json.loads(args.detections.read_text())
    keyed = {int(k): np.asarray(v, np.float32).reshape(-1, 5) for k, v in raw.items()}
    n = int(args.seconds * args.fps) + len(frames) * 2
    options = CompileOptions(cache_dir=None, performance_hint=args.hint, num_requests=args.num_requests,
                             inference_precision=args.precision_hint)
    est = PoseEstimator(args.models, options=options)
    rss_compiled = memory_status()["peak"]
    runs, ages = [], []
    for cam in range(args.cameras):
        sink = Ages()
        ages.append(sink)
        # every camera: frame i shows video frame (i + cam) % len, so its boxes are those of that frame
        dets = {str(i): keyed.get((i + cam) % len(frames), np.zeros((0, 5), np.float32)) for i in range(n)}
        runs.append(SourceRun(f"cam{cam}", LoopedVideo(frames, args.fps, args.seconds, cam, f"cam{cam}"), [sink],
                              detections=dets))
    import functools

    from edge_runtime.running.backends import openvino_backend_factory

    runner = LiveRunner(est, LiveConfig(mode="live", batch=args.batch, pose_budget=args.pose_budget,
                                        chain_slots=1 if args.release_memory else None),
                        per_source_detections=True,
                        backend_factory=functools.partial(openvino_backend_factory, release_memory=args.release_memory))
    t0 = time.perf_counter()
    result = runner.run(runs)
    wall = time.perf_counter() - t0
    total = result["total"]
    doc = {"cpu": cpu_info().to_dict(), "models": str(args.models), "compile": options.describe(),
           "runtime": est.runtime_info.get("precision"), "cameras": args.cameras, "fps": args.fps,
           "seconds": args.seconds, "wall_s": round(wall, 1), "release_memory": args.release_memory, "batch": args.batch, "pose_budget": args.pose_budget,
           "peak_rss_mb": round(memory_status()["peak"], 1), "rss_after_compile_mb": round(rss_compiled, 1),
           "total": {k: total[k] for k in ("frames_in", "frames_out", "frames_skipped", "pose_recomputes")},
           "frame_latency_ms": total["latency_ms"]["frame_latency"],
           "pose_request_ms": total["latency_ms"].get(est.kinds[-1]), "cameras_detail": {}}
    for r, sink in zip(runs, ages):
        s = result["sources"][r.name]
        doc["cameras_detail"][r.name] = {
            "frames_in": s["frames_in"], "frames_out": s["frames_out"], "frames_skipped": s["frames_skipped"],
            "output_share": round(s["frames_out"] / max(s["frames_in"], 1), 4),
            "frame_latency_ms": {k: s["latency_ms"]["frame_latency"][k] for k in ("p50", "p95")},
            "pose_age_ms": {k: s["latency_ms"].get("pose_age", {}).get(k) for k in ("p50", "p95")},
            "pose_recomputes": s["pose_recomputes"],
            "pose_recomputes_per_person_s": s["pose_recomputes_per_track_s"],
            "person_presence": s["person_presence"], "pose_presence": s["pose_presence"],
            "tracks": s["tracks"]["tracks_created"],
            "first_pose_s": sorted(round(v, 1) for v in sink.first_pose_s.values())}
    text = json.dumps(doc, indent=2)
    log.info("%s", text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
