"""Measure the async pipeline against a plain synchronous loop over the same IRs, and live-mode latency.

    python scripts/measure_pipeline.py --models MODELS [--video samples/people.mp4
        --detections samples/people_detections.json] [--frames 6] [--batch 1 2] [--live-seconds 60]

1. sync: a plain loop ``PoseEstimator(image, boxes)`` per frame (all persons of a frame in one batched
   synchronous request), models compiled with PERFORMANCE_HINT LATENCY (the best setting for one request
   at a time), after one warm-up frame.
2. async: :class:`edge_runtime.running.pipeline.Pipeline` in file mode, models compiled with THROUGHPUT and
   OPTIMAL_NUMBER_OF_INFER_REQUESTS, for each ``--batch``, after a one-frame warm-up run.
3. live: the pipeline in live mode on the video looped and paced at its fps for ``--live-seconds``:
   capture-to-result latency p50/p95, frames processed/skipped.

Both use the same frames and boxes (``--detections``, so the detector is not measured). Figures are
logged to stdout and written as JSON (``--out``). Speed figures only; nothing is asserted.
Run full-size models under the shared lock: ``flock /tmp/sdpose-heavy.lock python scripts/measure_pipeline.py ...``.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Iterator

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from edge_runtime.model.estimator import PoseEstimator  # noqa: E402
from edge_runtime.model.models import CompileOptions  # noqa: E402
from edge_runtime.media.detections import load_detections  # noqa: E402
from edge_runtime.running.metrics import percentile_summary  # noqa: E402
from edge_runtime.running.pipeline import Pipeline, PipelineConfig  # noqa: E402
from edge_runtime.media.sources import Frame, FrameSource, VideoFileSource  # noqa: E402

logger = logging.getLogger("measure_pipeline")
REPO = Path(__file__).resolve().parents[1]


class CountingSink:
    """Keeps only counts (the measurement excludes output I/O)."""

    def __init__(self) -> None:
        self.records = 0
        self.persons = 0

    def write(self, result: Any, image: Any = None) -> None:
        """One frame's FrameResult."""
        self.records += 1
        self.persons += len(result.track_ids)

    def close(self) -> None:
        pass


class ListSource(FrameSource):
    """Pre-decoded frames (file mode) so that video decoding is not part of the comparison."""

    def __init__(self, frames: list[Frame]) -> None:
        super().__init__()
        self.frames = frames
        self.total = len(frames)
        self.description = f"{len(frames)} pre-decoded frames"

    def __iter__(self) -> Iterator[Frame]:
        for frame in self.frames:
            if self.closed:
                return
            yield frame


class LoopedLiveSource(FrameSource):
    """The frames looped and paced at ``fps`` for ``seconds`` (a camera stand-in); names keep the original
    frame index so the detections JSON applies."""

    default_mode = "live"

    def __init__(self, frames: list[Frame], fps: float, seconds: float) -> None:
        super().__init__()
        self.frames, self.fps, self.seconds = frames, fps, seconds
        self.description = f"looped video at {fps:.1f} fps for {seconds:.0f} s"
        self.emitted = 0

    def __iter__(self) -> Iterator[Frame]:
        start = time.perf_counter()
        i = 0
        while not self.closed:
            due = start + i / self.fps
            now = time.perf_counter()
            if due - start > self.seconds:
                return
            if due > now and self._closed.wait(due - now):
                return
            src = self.frames[i % len(self.frames)]
            self.emitted += 1
            yield Frame(i, src.name, src.image, time.time() * 1000.0)
            i += 1


def read_frames(video: Path, count: int) -> tuple[list[Frame], float]:
    source = VideoFileSource(video)
    frames = []
    for frame in source:
        frames.append(Frame(frame.index, str(frame.index), frame.image, frame.timestamp_ms))
        if len(frames) >= count:
            break
    return frames, source.fps or 10.0


def options(hint: str, args: argparse.Namespace) -> CompileOptions:
    return CompileOptions(device=args.device, performance_hint=hint, inference_precision=args.precision_hint,
                          cache_dir=args.cache_dir, num_streams=args.num_streams)


def measure_sync(args: argparse.Namespace, frames: list[Frame], dets: dict[str, np.ndarray]) -> dict[str, Any]:
    t = time.perf_counter()
    est = PoseEstimator(args.models, options=options("LATENCY", args), max_batch=args.sync_batch)
    compile_s = time.perf_counter() - t
    est(frames[0].image, dets[frames[0].name][:1, :4])  # warm-up
    persons = 0
    infer_s = 0.0
    per_frame = []
    t0 = time.perf_counter()
    for frame in frames:
        boxes = dets.get(frame.name, np.zeros((0, 5), np.float32))[:, :4]
        f0 = time.perf_counter()
        crops = est.preprocess(frame.image, boxes)
        i0 = time.perf_counter()
        heatmaps = est.infer(crops)
        infer_s += time.perf_counter() - i0
        est.postprocess(heatmaps, boxes)
        per_frame.append((time.perf_counter() - f0) * 1000.0)
        persons += len(boxes)
    wall = time.perf_counter() - t0
    result = {"variant": f"sync loop (LATENCY hint, batch {args.sync_batch})", "frames": len(frames),
              "persons": persons, "wall_s": round(wall, 2), "fps": round(len(frames) / wall, 4),
              "persons_per_s": round(persons / wall, 4), "pose_busy_share": round(infer_s / wall, 4),
              "frame_latency_ms": percentile_summary(per_frame), "compile_s": round(compile_s, 1)}
    del est
    gc.collect()
    return result


def measure_async(args: argparse.Namespace, frames: list[Frame], dets: dict[str, np.ndarray],
                  batch: int, est: PoseEstimator, chain_slots: "int | None" = None) -> dict[str, Any]:
    sink = CountingSink()
    pipeline = Pipeline(est, [sink], PipelineConfig(batch=batch, chain_slots=chain_slots),
                        detections=dets)
    pipeline.run(ListSource(frames[:1]))  # warm-up: the first inferences of the requests
    summary = pipeline.run(ListSource(frames))
    slots = f", chain slots {chain_slots}" if chain_slots else ""
    return {"variant": f"async pipeline (THROUGHPUT, batch {batch}{slots})", "frames": summary["frames_out"],
            "persons": summary["persons"], "wall_s": summary["wall_s"], "fps": summary["fps"],
            "persons_per_s": summary["persons_per_s"], "pose_busy_share": summary["pose_busy_share"],
            "pose_request_utilization": summary["pose_request_utilization"], "requests": summary["requests"],
            "frame_latency_ms": summary["latency_ms"].get("frame_latency"),
            "stage_latency_ms": {k: v for k, v in summary["latency_ms"].items() if k != "frame_latency"}}


def measure_live(args: argparse.Namespace, frames: list[Frame], dets: dict[str, np.ndarray], fps: float,
                 est: PoseEstimator) -> dict[str, Any]:
    source = LoopedLiveSource(frames, fps, args.live_seconds)
    sink = CountingSink()
    from edge_runtime.running.live import LiveConfig, LiveRunner, SourceRun

    summary = LiveRunner(est, LiveConfig(mode="live", batch=1), detections=dets).run(
        [SourceRun("live", source, [sink])])["total"]
    return {"variant": f"live mode (tracks + pose scheduling + propagation, paced {fps:.1f} fps, "
                       f"{args.live_seconds:.0f} s)",
            "frames_in": summary["frames_in"], "frames_out": summary["frames_out"],
            "frames_skipped": summary["frames_skipped"], "persons": summary["persons"],
            "fps": summary["fps"], "pose_recomputes": summary["pose_recomputes"],
            "stage_busy_share": summary["stage_busy_share"],
            "capture_to_result_ms": summary["latency_ms"].get("frame_latency"), "requests": summary["requests"]}


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True)
    parser.add_argument("--video", default=str(REPO / "samples" / "people.mp4"))
    parser.add_argument("--detections", default=str(REPO / "samples" / "people_detections.json"))
    parser.add_argument("--frames", type=int, default=6, help="frames of the video used (file mode)")
    parser.add_argument("--batch", type=int, nargs="*", default=[1], help="pipeline --batch values to measure")
    parser.add_argument("--chain-slots", type=int, nargs="*", default=[],
                        help="also measure batch 1 with these split-chain slot caps")
    parser.add_argument("--sync-batch", type=int, default=8, help="max crops per synchronous request")
    parser.add_argument("--live-seconds", type=float, default=0.0, help="live-mode run length (0: skip)")
    parser.add_argument("--skip-sync", action="store_true")
    parser.add_argument("--device", default="CPU")
    parser.add_argument("--precision-hint", default=None, choices=("f32", "bf16", "f16"))
    parser.add_argument("--num-streams", type=int, default=None)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--out", default=None, help="write the figures as JSON here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stdout, format="%(asctime)s %(message)s")
    logging.getLogger("edge_runtime").setLevel(logging.WARNING)

    frames, fps = read_frames(Path(args.video), args.frames)
    dets = load_detections(args.detections)
    persons = sum(len(dets.get(f.name, ())) for f in frames)
    logger.info("models %s, %d frames of %s (%d persons), device %s, precision hint %s, %d cores",
                args.models, len(frames), args.video, persons, args.device, args.precision_hint, os.cpu_count())
    results: list[dict[str, Any]] = []
    if not args.skip_sync:
        results.append(measure_sync(args, frames, dets))
        logger.info("%s", json.dumps(results[-1]))
    t = time.perf_counter()
    est = PoseEstimator(args.models, options=options("THROUGHPUT", args))
    compile_s = time.perf_counter() - t
    for batch in args.batch:
        results.append(measure_async(args, frames, dets, batch, est))
        results[-1]["compile_s"] = round(compile_s, 1)
        logger.info("%s", json.dumps(results[-1]))
    for slots in args.chain_slots:
        results.append(measure_async(args, frames, dets, 1, est, chain_slots=slots))
        results[-1]["compile_s"] = round(compile_s, 1)
        logger.info("%s", json.dumps(results[-1]))
    if args.live_seconds > 0:
        results.append(measure_live(args, frames, dets, fps, est))
        logger.info("%s", json.dumps(results[-1]))

    logger.info("%-48s %8s %10s %10s %8s", "variant", "frames", "frames/s", "persons/s", "busy")
    for r in results:
        if "persons_per_s" in r:
            logger.info("%-48s %8d %10.4f %10.4f %7.1f%%", r["variant"], r["frames"], r["fps"], r["persons_per_s"],
                        100 * r["pose_busy_share"])
    sync = next((r for r in results if r["variant"].startswith("sync")), None)
    if sync is not None:
        for r in results:
            if r["variant"].startswith("async"):
                logger.info("speed-up of %s over the sync loop: x%.2f", r["variant"], r["fps"] / sync["fps"])
    for r in results:
        if r["variant"].startswith("live"):
            lat = r["capture_to_result_ms"] or {}
            logger.info("live: %d frames in, %d out, %d skipped; capture-to-result p50 %s ms, p95 %s ms",
                        r["frames_in"], r["frames_out"], r["frames_skipped"], lat.get("p50"), lat.get("p95"))
    if args.out:
        Path(args.out).write_text(json.dumps({"args": vars(args), "results": results}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
