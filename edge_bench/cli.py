"""Benchmark suite (tools, not the runtime): ``sdpose-edge bench --models MODELS [--models MODELS2 ...] --out BENCH``.

Measures, on this machine and in one run so that a noisy shared machine still gives trustworthy ratios:

1. **Per stage and variant latency** (batch 1, one crop, PERFORMANCE_HINT=LATENCY): stages ``detector``
   (letterbox + IR + NMS on one frame), ``vae_encoder`` (crop u8 -> latent), ``pose`` (latent -> heatmaps),
   ``vae_pose`` (fused IR, when the folder has one), ``decode`` (DARK-UDP decoding of the heatmaps) and
   ``crop`` (vae_encoder + pose + decode of the same run). Variants: every model folder given, read by its
   ``rt_info`` precision; an unquantized folder runs twice, with INFERENCE_PRECISION_HINT f32 and bf16; a
   quantized one (int8, hybrid, ...) with the device's default hint (recorded). Stages run one after
   another; for each stage every variant's model is compiled first, then each of the ``warmup + runs``
   rounds visits every variant in turn (A B C, A B C, ...), so drift and other jobs on the machine hit all
   variants alike; then that stage's models are freed (at full size all variants' models together would
   not fit in 24 GB next to the PyTorch original). Median and p95 over ``runs``; ``crop`` sums the i-th
   run of its stages.
   ``sdpose-convert bench`` injects the original PyTorch pipeline as the first variant (the speed-up baseline);
   this package knows nothing of PyTorch.
2. **Compute limit**: FLOPs of each stage (from the IR here, :func:`edge_bench.peak.count_ir_flops`;
   from the torch modules in ``sdpose-convert bench``) divided by the measured MatMul peak
   (:func:`edge_bench.peak.measure_peak`) of the precision each part runs in (int8 for ops fed by a
   FakeQuantize, else the variant's float precision) -> ``limit_ms``, and the achieved fraction
   ``limit_ms / median_ms``.
3. **End to end** in file mode on a multi-person video with ``--video``/``--detections``: frames/s and
   persons/s of the async THROUGHPUT :class:`~edge_runtime.running.pipeline.Pipeline` vs a plain synchronous loop
   (LATENCY hint, one ``PoseEstimator`` call per frame), each in its own subprocess that reports its peak
   RSS; cold start (empty CACHE_DIR) vs warm start (cache populated): compile time and time to the first
   result.
4. Writes ``BENCH/bench.json``, ``BENCH/bench.md`` and ``BENCH/bench.png`` (bar chart, needs matplotlib,
   which is not a runtime dependency: without it the chart is skipped and bench.md says so).

Only openvino, numpy, cv2 and the standard library are imported at module level (matplotlib lazily).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import logging
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edge_runtime.config import DEFAULTS, add_cli_options, parse_model_device
from edge_runtime.errors import InputError, SDPoseError
from edge_runtime.running.metrics import memory_status

from .end_to_end import run_end_to_end
from .profile import run_profiles
from .report import log_summary, machine_info, write_report
from .timing import (BENCH_FORMAT_VERSION, DEFAULT_PEAK_SIZE, DEFAULT_RUNS, DEFAULT_WARMUP, Variant, analyse,
                     headline, load_inputs, run_interleaved)
from .variants import build_openvino_variants

logger = logging.getLogger(__name__)


def _cross_check_flops(variants: Sequence[Variant], torch_flops: dict[str, Any]) -> None:
    """Record reference count / IR count per stage on every OpenVINO variant (``flops_torch_vs_ir``: the
    field keeps its name, the counts come from whoever injects them)."""
    for variant in variants:
        if variant.kind != "openvino":
            continue
        variant.info["flops_torch_vs_ir"] = {
            stage: (torch_flops[stage]["total"] / variant.flops[stage]) if variant.flops.get(stage) else None
            for stage in torch_flops if stage in variant.flops}


def run_benchmark(models: Sequence[str | Path], out: str | Path, *, runs: int = DEFAULT_RUNS,
                  warmup: int = DEFAULT_WARMUP, video: str | Path | None = None,
                  detections: str | Path | None = None, e2e_frames: int | None = None, skip_e2e: bool = False,
                  peak_size: int = DEFAULT_PEAK_SIZE, device: str = DEFAULTS.device, skip_fused: bool = False,
                  extra_variants: Sequence[Variant] = (),
                  prepare_extra: Callable[[dict[str, Any]], Sequence[Variant]] | None = None,
                  torch_flops: dict[str, Any] | None = None, command: str = "",
                  notes: Sequence[str] = (), baseline_description: str | None = None,
                  profile: bool = False, model_device: dict[str, str] | None = None) -> dict[str, Any]:
    """The whole benchmark; returns the report dict (also written to ``out``).

    ``prepare_extra(inputs)`` (injected by ``sdpose-convert bench``: the PyTorch reference) builds more variants
    from the same inputs; they run first and the first of them is the speed-up baseline, described in the
    report as ``baseline_description``. ``torch_flops``: {stage: {"total": ...}} counted by the injector,
    recorded and cross-checked against the IR counts. ``profile``: also the per-layer profile of every
    component (:mod:`edge_bench.profile`, bench.json ``profile``). ``model_device``: {kind: device} over ``device``.
    """
    import openvino as ov

    from edge_runtime.model.models import ModelFolder

    if not models:
        raise InputError("--models: give at least one model folder")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if detections is not None and video is None:
        raise InputError("--detections needs --video (the boxes belong to the video's frames)")
    core = ov.Core()
    first = ModelFolder(models[0], core=core).pose_meta
    input_wh = (int(first["input_width"]), int(first["input_height"]))
    inputs = load_inputs(input_wh, video, detections)

    variants: list[Variant] = list(extra_variants)
    if prepare_extra is not None:
        variants += list(prepare_extra(inputs))
    baseline = variants[0].name if variants else None
    variants += build_openvino_variants(models, inputs, core=core, device=device, with_fused=not skip_fused,
                                        model_device=model_device)
    if baseline is None:  # runtime only: speed-ups over OpenVINO FP32 with the f32 hint
        baseline = next((v.name for v in variants if v.precision == "fp32" and v.name.endswith("/f32")),
                        variants[0].name)
    if torch_flops:
        _cross_check_flops(variants, torch_flops)

    times, peaks, memory_log = _time_variants(variants, runs, warmup, core, device, peak_size)
    results = analyse(variants, times, peaks, baseline)

    report: dict[str, Any] = {
        "format_version": BENCH_FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command or " ".join(sys.argv),
        "machine": machine_info(),
        "settings": {"runs": runs, "warmup": warmup, "batch": 1, "interleaved": True,
                     "performance_hint": "LATENCY", "input_size_hw": [input_wh[1], input_wh[0]],
                     "input_source": inputs["source"], "device": device, "model_device": model_device or {},
                     "peak_size": peak_size},
        "baseline": baseline,
        "baseline_description": baseline_description,
        "variants": [{"name": v.name, "kind": v.kind, "precision": v.precision,
                      "compute_precision": v.compute_precision, "stages": list(v.stages), **v.info}
                     for v in variants],
        "peaks": peaks,
        "flops_torch": {k: v["total"] for k, v in (torch_flops or {}).items()},
        "results": results,
        "headline": headline(results, baseline),
        "memory_mb": {"stages": memory_log, "bench_process": memory_status()},
        "notes": list(notes),
    }
    report["notes"] += _notes(report["machine"]["cpu"])
    if profile:
        report["profile"] = run_profiles(models, inputs, peaks, core=core, device=device, runs=runs, warmup=warmup,
                                         model_device=model_device)
    _end_to_end(report, variants, out, video, detections, e2e_frames, skip_e2e, device)
    write_report(report, out)
    logger.info("wrote %s/bench.json, bench.md%s", out, ", bench.png" if report.get("chart") else "")
    return report


def _time_variants(variants: Sequence[Variant], runs: int, warmup: int, core: Any, device: str,
                   peak_size: int) -> tuple[Any, dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The interleaved timing loop between two measurements of the MatMul peak of every precision in use;
    returns (times, peaks, memory log). The better of the two peaks counts (a busy machine can only lower a
    measured peak)."""
    from .peak import measure_peak

    precisions = {"f32"} | {v.compute_precision for v in variants}
    if any(share > 0 for v in variants for share in v.int8_share.values()):
        precisions.add("int8")
    wanted = [p for p in ("f32", "bf16", "int8") if p in precisions]
    before = {p: measure_peak(p, core=core, device=device, size=peak_size).to_dict() for p in wanted}

    logger.info("timing %d variants x %d runs (+%d warm-up), interleaved: %s", len(variants), runs, warmup,
                ", ".join(v.name for v in variants))
    started = time.perf_counter()
    memory_log: list[dict[str, Any]] = []
    times = run_interleaved(variants, runs, warmup, memory_log)
    after = {p: measure_peak(p, core=core, device=device, size=peak_size).to_dict() for p in wanted}
    peaks = {p: dict(max(before[p], after[p], key=lambda r: r["gflops"]),
                     gflops_before=before[p]["gflops"], gflops_after=after[p]["gflops"]) for p in wanted}
    logger.info("timing took %.1f s", time.perf_counter() - started)
    return times, peaks, memory_log


def _notes(machine_cpu: dict[str, Any]) -> list[str]:
    """The report's notes on this CPU and on how the figures were taken."""
    notes = []
    if not machine_cpu["bf16"]:
        notes.append(
            "bf16 is not supported on this CPU (OPTIMIZATION_CAPABILITIES / ONEDNN_MAX_CPU_ISA): unquantized "
            "folders are timed with the f32 hint only; a 'bf16' column here would really be f32.")
    notes.append(f"INT8 path of this CPU: {machine_cpu['int8_path']} ({machine_cpu['int8_isa']}).")
    return notes + [
        "stages are timed one after another; within a stage the variants are interleaved (A B C, A B C, ...) "
        "after all of them were compiled, so machine drift and other jobs hit every variant alike; crop = "
        "vae_encoder + pose + decode of the same run index.",
        "decode is the same numpy/OpenCV DARK-UDP code for every variant (the original pipeline decodes with "
        "mmpose in numpy as well); it runs on each variant's own heatmaps.",
        "detector = letterbox + network + NMS on one frame; its limit counts the network only.",
        "limits use the best of repeated MatMul calls (an optimistic peak); 'of limit' can exceed what "
        "memory-bound layers (normalisation, element-wise ops, not counted) allow.",
    ]


def _end_to_end(report: dict[str, Any], variants: list[Variant], out: Path, video: str | Path | None,
                detections: str | Path | None, e2e_frames: int | None, skip_e2e: bool, device: str) -> None:
    """The end-to-end part (into ``report["end_to_end"]``) with the fastest OpenVINO variant's folder; every
    compiled model and torch module (``variants`` is emptied) is freed first."""
    results = report["results"]
    ov_variants = [v for v in variants if v.kind == "openvino" and "crop" in results[v.name]]
    best = min(ov_variants, key=lambda v: results[v.name]["crop"]["median_ms"]) if ov_variants else None
    best_name, best_folder, best_hint = (best.name, best.info["folder"], best.info.get("hint")) if best else \
        (None, None, None)
    # free every compiled model and torch module before the end-to-end subprocesses load their own
    del best, ov_variants
    variants.clear()
    gc.collect()
    if not skip_e2e and video is not None and best_folder is not None:
        # write the per-stage figures first: a failing or interrupted end-to-end part must not lose them
        report["end_to_end"] = "running"
        write_report(report, out)
        try:
            report["end_to_end"] = run_end_to_end(best_folder, video, detections, e2e_frames,
                                                  best_hint if best_hint in ("f32", "bf16") else None,
                                                  device=device)
            report["end_to_end"]["variant"] = best_name
        except (SDPoseError, subprocess.SubprocessError, OSError, ValueError) as exc:
            logger.error("end-to-end part failed: %s", exc)
            report["end_to_end"] = f"failed: {exc}"
    elif video is None:
        report["end_to_end"] = "not run: pass --video FILE --detections DETS.json (a multi-person video)"
    else:
        report["end_to_end"] = "skipped (--skip-e2e)"


def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``sdpose-edge bench`` and ``sdpose-convert bench``."""
    p.add_argument("--models", action="append", required=True,
                   help="model folder (repeat for several: fp32, int8, hybrid ...)")
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                   help=f"timed runs per stage and variant (default {DEFAULT_RUNS})")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                   help=f"untimed warm-up runs (default {DEFAULT_WARMUP})")
    p.add_argument("--out", required=True, help="output folder for bench.json, bench.md, bench.png")
    p.add_argument("--video", default=None, help="multi-person video for the end-to-end figures")
    p.add_argument("--detections", default=None, help="boxes of the video's frames (bypasses the detector)")
    p.add_argument("--e2e-frames", type=int, default=None, help="end to end: only the first N frames (default: all)")
    p.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end part")
    p.add_argument("--peak-size", type=int, default=DEFAULT_PEAK_SIZE,
                   help=f"side of the square MatMuls of the peak micro-benchmark (default {DEFAULT_PEAK_SIZE})")
    p.add_argument("--device", default=DEFAULTS.device, help="OpenVINO device")
    p.add_argument("--skip-fused", action="store_true",
                   help="do not bench vae_pose.xml when the folder also has vae_encoder.xml + pose.xml")


def check_args(args: argparse.Namespace) -> None:
    if args.runs < 1:
        raise InputError(f"--runs must be >= 1, got {args.runs}")
    if args.warmup < 0:
        raise InputError(f"--warmup must be >= 0, got {args.warmup}")
    if args.e2e_frames is not None and args.e2e_frames < 1:
        raise InputError(f"--e2e-frames must be >= 1, got {args.e2e_frames}")
    if args.peak_size < 16:
        raise InputError(f"--peak-size must be >= 16, got {args.peak_size}")
    for name in ("video", "detections"):
        value = getattr(args, name)
        if value is not None and not Path(value).is_file():
            raise InputError(f"--{name} {value}: file does not exist")


def run(args: argparse.Namespace) -> int:
    """``sdpose-edge bench``: runtime-only benchmark (no PyTorch baseline; speed-ups over OpenVINO FP32)."""
    check_args(args)
    report = run_benchmark(args.models, args.out, runs=args.runs, warmup=args.warmup, video=args.video,
                           detections=args.detections, e2e_frames=args.e2e_frames, skip_e2e=args.skip_e2e,
                           peak_size=args.peak_size, device=args.device, skip_fused=args.skip_fused,
                           profile=args.profile,
                           model_device=parse_model_device(args.model_device) if args.model_device else None,
                           command="sdpose-edge " + " ".join(sys.argv[1:]),
                           notes=["runtime-only run (sdpose-edge bench): FLOPs counted from the IR, speed-ups "
                                  "over OpenVINO FP32 with the f32 hint; sdpose-convert bench adds the PyTorch "
                                  "original."])
    log_summary(report)
    return 0


def register(subparsers: Any, name: str = "bench") -> None:
    p = subparsers.add_parser(name, help="benchmark the model folder(s): per-stage latency, compute limit, "
                                         "end to end", description=__doc__.split("\n\n")[0])
    add_common_arguments(p)
    p.add_argument("--profile", action="store_true",
                   help="also profile every component with OpenVINO's performance counters: time per layer type "
                        "and executed precision, FLOPs and GFLOP/s against the measured peak (bench.json profile)")
    add_cli_options({"OpenVINO": p}, keys=("model_device",))
    p.set_defaults(func=run)
