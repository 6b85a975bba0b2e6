"""End to end in file mode on a multi-person video, each run in a fresh process (its own peak RSS, a cold or
warm model cache): the async THROUGHPUT pipeline against a plain synchronous loop."""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.running.metrics import peak_rss_mb

from edge_runtime.running.child import run_in_fresh_process

logger = logging.getLogger(__name__)


def _measure(settings: dict[str, Any], timeout: float) -> dict[str, Any]:
    """:func:`measure_once` in a fresh process, plus the parent-side wall time and time to the first result."""
    logger.info("end-to-end: %s mode, cache %s", settings["mode"], "warm" if settings.get("cache_dir") else "off")
    spawned = time.time()
    report = run_in_fresh_process(measure_once, settings, timeout_s=timeout,
                                  what=f"end-to-end {settings['mode']} run")
    report["process_wall_s"] = round(time.time() - spawned, 3)
    if report.get("first_result_epoch") is not None:
        report["time_to_first_result_s"] = round(report["first_result_epoch"] - spawned, 3)
    return report


def run_end_to_end(models: str | Path, video: str | Path, detections: str | Path | None,
                   max_frames: int | None, hint: str | None, device: str = "CPU",
                   timeout: float = 7200.0) -> dict[str, Any]:
    """Three runtime subprocesses on ``video``: async THROUGHPUT pipeline with an empty model cache
    (cold), the same with the cache populated (warm), and the synchronous loop (LATENCY, warm cache).

    Returns {"async": report, "sync": report, "cold": report, "throughput_ratio": async fps / sync fps, ...};
    a report holds frames, persons, wall_s, fps, persons_per_s, compile_s, time_to_first_result_s,
    max_rss_mb.
    """
    common = {"models": str(models), "video": str(video), "device": device,
              "detections": None if detections is None else str(detections),
              "max_frames": int(max_frames) if max_frames else None, "precision_hint": hint or None}
    with tempfile.TemporaryDirectory(prefix="sdpose-bench-cache-") as cache:
        cold = _measure(dict(common, mode="async", cache_dir=cache), timeout)
        warm = _measure(dict(common, mode="async", cache_dir=cache), timeout)
        sync = _measure(dict(common, mode="sync", cache_dir=cache), timeout)
    result = {"models": str(Path(models).resolve()), "video": str(Path(video).resolve()),
              "detections": str(Path(detections).resolve()) if detections else None,
              "precision_hint": hint or "device default", "max_frames": max_frames,
              "async": warm, "sync": sync, "cold": cold,
              "throughput_ratio": (warm["fps"] / sync["fps"]) if sync.get("fps") else None,
              "cold_vs_warm_compile_s": [cold.get("compile_s"), warm.get("compile_s")],
              "cold_vs_warm_first_result_s": [cold.get("time_to_first_result_s"),
                                              warm.get("time_to_first_result_s")]}
    logger.info("end-to-end: async %.3f fps (%.3f persons/s) vs sync %.3f fps; cold compile %.1f s vs warm %.1f s",
                warm["fps"], warm["persons_per_s"], sync["fps"], cold["compile_s"], warm["compile_s"])
    return result


class _FirstResult:
    """A pipeline sink that stamps the wall time of the first written result (``count`` for the synchronous loop)."""

    def __init__(self) -> None:
        self.epoch: float | None = None
        self.frames = 0
        self.persons = 0

    def write(self, result: Any, image: Any = None) -> None:
        """One frame's :class:`~edge_runtime.running.results.FrameResult`."""
        self.count(len(result.track_ids))

    def count(self, persons: int) -> None:
        """One frame written with ``persons`` persons."""
        if self.epoch is None:
            self.epoch = time.time()
        self.frames += 1
        self.persons += persons

    def close(self) -> None:
        """Nothing to flush."""


def measure_once(settings: dict[str, Any]) -> dict[str, Any]:
    """One end-to-end measurement in this (fresh) process: {models, video, detections, mode "async"|"sync",
    cache_dir, max_frames, precision_hint, device} -> the report (frames, fps, compile_s, max_rss_mb ...)."""
    args = argparse.Namespace(**settings)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    import openvino as ov

    from edge_runtime.model.detector import PersonDetector
    from edge_runtime.model.estimator import PoseEstimator
    from edge_runtime.model.models import CompileOptions
    from edge_runtime.media.detections import load_detections
    from edge_runtime.running.pipeline import Pipeline, PipelineConfig
    from edge_runtime.media.sources import VideoFileSource

    hint = "THROUGHPUT" if args.mode == "async" else "LATENCY"
    options = CompileOptions(device=args.device, performance_hint=hint, inference_precision=args.precision_hint,
                             cache_dir=args.cache_dir)
    core = ov.Core()
    t0 = time.perf_counter()
    estimator = PoseEstimator(args.models, options=options, core=core)
    detections = load_detections(args.detections) if args.detections else None
    detector = None if detections is not None else PersonDetector(args.models, options=options, core=core)
    compile_s = time.perf_counter() - t0
    source = VideoFileSource(args.video)
    sink = _FirstResult()
    t_run = time.perf_counter()
    summary: dict[str, Any] = {}
    if args.mode == "async":
        pipeline = Pipeline(estimator, [sink], PipelineConfig(max_frames=args.max_frames),
                            detector=detector, detections=detections)
        summary = pipeline.run(source)
    else:
        for frame in source:
            if args.max_frames is not None and frame.index >= args.max_frames:
                break
            if not frame.ok:
                sink.count(0)
                continue
            if detections is not None:
                boxes = detections.get(str(frame.index))
                if boxes is None:
                    boxes = detections.get(frame.name, np.zeros((0, 5), np.float32))
            else:
                boxes, _ = detector(frame.image)
            keypoints, _ = estimator(frame.image, boxes)
            sink.count(len(keypoints))
    wall = time.perf_counter() - t_run
    report = {"mode": args.mode, "performance_hint": hint, "cache_dir_used": bool(args.cache_dir),
              "compile_s": round(compile_s, 3), "frames": sink.frames, "persons": sink.persons,
              "wall_s": round(wall, 3), "fps": sink.frames / wall if wall > 0 else None,
              "persons_per_s": sink.persons / wall if wall > 0 else None,
              "first_result_epoch": sink.epoch, "max_rss_mb": peak_rss_mb(),
              "requests": summary.get("requests"), "pose_busy_share": summary.get("pose_busy_share"),
              "chain": estimator.chain}
    return report


