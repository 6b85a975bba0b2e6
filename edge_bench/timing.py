"""Timing of benchmark variants: stages timed one after another, variants interleaved, and the analysis
against the measured compute limit."""
from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import InputError
from edge_runtime.model.metadata import COMPONENT_KINDS
from edge_runtime.running.metrics import memory_status

logger = logging.getLogger(__name__)

logger = logging.getLogger(__name__)

BENCH_FORMAT_VERSION = 1
#: stage order in tables and the chart
STAGE_ORDER = (*COMPONENT_KINDS, "decode", "crop")
#: stages that make up one crop (split chain)
CROP_STAGES = ("vae_encoder", "pose", "decode")
PYTORCH = "pytorch-fp32"
DEFAULT_RUNS = 5
DEFAULT_WARMUP = 1
DEFAULT_PEAK_SIZE = 2048



#: a stage builder gets the variant's outputs of earlier stages ({stage: output}) and returns the runner:
#: a zero-argument callable that runs the stage once on fixed inputs and returns its output
StageBuilder = Callable[[dict[str, Any]], Callable[[], Any]]


@dataclass
class Variant:
    """One implementation of the stages, timed side by side with the others.

    name: unique label (e.g. ``openvino-fp32/f32``). kind: ``pytorch`` or ``openvino``.
    precision: the weights' precision (rt_info ``precision``: fp32, fp16, int8, hybrid, ...).
    compute_precision: float precision of non-quantized ops for the limit (``f32`` or ``bf16``).
    builders: {stage: :data:`StageBuilder`}; a builder compiles/loads what the stage needs, so only one
        stage's models are in memory at a time.
    flops: {stage: FLOPs of one call (batch 1)}; int8_share: {stage: share of those FLOPs in int8 ops}.
    info: anything recorded with the variant (folder, hint, compiled properties, threads, ...).
    """

    name: str
    kind: str
    precision: str
    compute_precision: str
    builders: dict[str, StageBuilder]
    flops: dict[str, int] = field(default_factory=dict)
    int8_share: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def stages(self) -> list[str]:
        return [s for s in STAGE_ORDER if s in self.builders] + [s for s in self.builders if s not in STAGE_ORDER]


def _output_of(value: Any) -> Any:
    """The output to hand to later stages: the first output of an OpenVINO result, else the value."""
    if type(value).__name__ == "OVDict":
        return np.array(value[0])
    return value


def rotated_rounds(calls: dict[str, Callable[[], Any]], rounds: int) -> dict[str, list[float]]:
    """Seconds per call of each named callable over ``rounds`` rounds; each round visits every callable once,
    the starting one rotating between rounds, so machine drift and other jobs hit every callable alike (the
    screens in scripts/: compile properties, attention forms)."""
    names = list(calls)
    times: dict[str, list[float]] = {name: [] for name in names}
    for index in range(rounds):
        for name in names[index % len(names):] + names[:index % len(names)]:
            start = time.perf_counter()
            calls[name]()
            times[name].append(time.perf_counter() - start)
    return times


def run_interleaved(variants: Sequence[Variant], runs: int, warmup: int,
                    memory_log: list[dict[str, Any]] | None = None) -> dict[str, dict[str, list[float]]]:
    """Time every stage of every variant, one stage at a time, variants interleaved.

    For each stage (in :data:`STAGE_ORDER`): build the runner of every variant that has the stage
    (compiling its model), then ``warmup + runs`` rounds each visiting every variant in order (A B C, A B C,
    ...), then drop the runners (and their compiled models) before the next stage, so that only one
    stage's models are in memory at once. A stage's last output is passed to the variant's later stages.
    Returns {variant: {stage: [seconds] x runs}} (warm-up rounds dropped). ``memory_log`` (when given)
    receives this process's memory after each stage's models were built.
    """
    memory_log = memory_log if memory_log is not None else []
    if runs < 1 or warmup < 0:
        raise InputError(f"--runs must be >= 1 and --warmup >= 0, got runs={runs}, warmup={warmup}")
    times: dict[str, dict[str, list[float]]] = {v.name: {} for v in variants}
    outputs: dict[str, dict[str, Any]] = {v.name: {} for v in variants}
    stages: list[str] = []
    for v in variants:
        stages += [s for s in v.stages if s not in stages]
    for stage in stages:
        members = [v for v in variants if stage in v.builders]
        runners: dict[str, Callable[[], Any]] = {}
        for v in members:
            t0 = time.perf_counter()
            runners[v.name] = v.builders[stage](outputs[v.name])
            v.info.setdefault("build_s", {})[stage] = round(time.perf_counter() - t0, 3)
            times[v.name][stage] = []
        mem = memory_status()
        if mem:
            memory_log.append({"stage": stage, "after_build": mem})
            logger.info("%s: %d variants built; memory %s", stage, len(members),
                        ", ".join(f"{k} {v / 1024:.1f} GB" for k, v in mem.items()))
        last: dict[str, Any] = {}
        for round_index in range(warmup + runs):
            took: list[str] = []
            for v in members:
                t0 = time.perf_counter()
                last[v.name] = runners[v.name]()
                elapsed = time.perf_counter() - t0
                took.append(f"{v.name} {1000 * elapsed:.1f} ms")
                if round_index >= warmup:
                    times[v.name][stage].append(elapsed)
            label = "warm-up" if round_index < warmup else f"run {round_index - warmup + 1}/{runs}"
            logger.info("%s %s: %s", stage, label, ", ".join(took))
        for v in members:
            outputs[v.name][stage] = _output_of(last[v.name])
        runners.clear()
        last.clear()
        gc.collect()
    return times


def summarize(samples_s: Sequence[float]) -> dict[str, Any]:
    """Seconds -> {"median_ms", "p95_ms", "mean_ms", "min_ms", "max_ms", "runs", "samples_ms"}."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
            "runs": int(ms.size), "samples_ms": [round(float(v), 4) for v in ms]}



def load_inputs(input_size_wh: tuple[int, int], video: str | Path | None = None,
                detections: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """The fixed inputs every variant gets: ``frame`` u8 [H,W,3] BGR image px (detector input) and
    ``crop`` u8 [1,h,w,3] BGR crop px (the pose input size ``input_size_wh`` = (w, h)).

    With ``video`` (+ ``detections``): the first frame and the UDP crop of its first box; otherwise a
    seeded random 960x540 frame and its centre crop. ``source`` says which.
    """
    import cv2

    from edge_runtime.model.geometry import udp_warp_matrix, warp_crop

    w, h = input_size_wh
    frame = None
    box = None
    source = "random"
    if video is not None:
        cap = cv2.VideoCapture(str(video))
        try:
            ok, frame = cap.read()
        finally:
            cap.release()
        if not ok or frame is None:
            raise InputError(f"--video {video}: cannot read its first frame")
        source = f"{Path(video).name} frame 0"
        if detections is not None:
            from edge_runtime.media.detections import load_detections

            dets = load_detections(detections)
            boxes = dets.get("0")
            if boxes is None:
                boxes = dets.get(f"{Path(video).name}#0")
            if boxes is not None and len(boxes):
                box = boxes[0, :4]
                source += " first box"
    if frame is None:
        frame = np.random.default_rng(seed).integers(0, 256, size=(540, 960, 3), dtype=np.uint8)
    if box is None:
        fh, fw = frame.shape[:2]
        box = np.array([fw * 0.25, fh * 0.1, fw * 0.75, fh * 0.9], np.float32)
    matrix = udp_warp_matrix(box, input_size=(w, h))
    crop = warp_crop(frame, matrix, (w, h))[None]
    return {"frame": np.ascontiguousarray(frame), "crop": np.ascontiguousarray(crop), "source": source,
            "box_xyxy": [float(v) for v in box]}



def _limit_ms(flops: int | None, int8_share: float, compute: str, peaks: dict[str, Any]) -> float | None:
    if not flops:
        return None
    float_peak = peaks.get(compute) or peaks.get("f32")
    if float_peak is None:
        return None
    seconds = flops * (1.0 - int8_share) / (float_peak["gflops"] * 1e9)
    if int8_share > 0:
        int8_peak = peaks.get("int8")
        if int8_peak is None:
            return None
        seconds += flops * int8_share / (int8_peak["gflops"] * 1e9)
    return seconds * 1000.0


def analyse(variants: Sequence[Variant], times: dict[str, dict[str, list[float]]],
            peaks: dict[str, Any], baseline: str | None) -> dict[str, dict[str, dict[str, Any]]]:
    """{variant: {stage: stats + flops, limit_ms, limit_fraction, speedup}} incl. the ``crop`` total."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for v in variants:
        per = times[v.name]
        out: dict[str, dict[str, Any]] = {}
        for stage, samples in per.items():
            stats = summarize(samples)
            flops = v.flops.get(stage)
            share = float(v.int8_share.get(stage, 0.0))
            limit = _limit_ms(flops, share, v.compute_precision, peaks)
            stats.update({"flops": flops, "int8_flops_share": round(share, 4) if flops else None,
                          "limit_ms": limit,
                          "limit_fraction": (limit / stats["median_ms"]) if limit and stats["median_ms"] > 0
                          else None})
            out[stage] = stats
        if all(s in per for s in CROP_STAGES):
            total = [sum(vals) for vals in zip(*(per[s] for s in CROP_STAGES))]
            stats = summarize(total)
            limits = [out[s]["limit_ms"] for s in CROP_STAGES if s != "decode"]
            limit = sum(limits) if all(x is not None for x in limits) else None
            flops = sum(int(v.flops.get(s) or 0) for s in CROP_STAGES) or None
            stats.update({"flops": flops, "limit_ms": limit,
                          "limit_fraction": (limit / stats["median_ms"]) if limit else None,
                          "stages": list(CROP_STAGES)})
            out["crop"] = stats
        results[v.name] = out
    if baseline is not None and baseline in results:
        base = results[baseline]
        for per_stage in results.values():
            for stage, stats in per_stage.items():
                ref = base.get(stage)
                stats["speedup"] = (ref["median_ms"] / stats["median_ms"]) if ref and stats["median_ms"] > 0 \
                    else None
    return results


def headline(results: dict[str, dict[str, dict[str, Any]]], baseline: str | None) -> dict[str, Any] | None:
    """The best variant per crop (lowest crop median) vs the baseline."""
    if baseline is None or baseline not in results or "crop" not in results[baseline]:
        return None
    candidates = [(per["crop"]["median_ms"], name) for name, per in results.items()
                  if name != baseline and "crop" in per]
    if not candidates:
        return None
    best_ms, best = min(candidates)
    base_ms = results[baseline]["crop"]["median_ms"]
    return {"baseline": baseline, "baseline_crop_median_ms": base_ms, "best_variant": best,
            "best_crop_median_ms": best_ms, "speedup": base_ms / best_ms,
            "best_limit_fraction": results[best]["crop"].get("limit_fraction")}


