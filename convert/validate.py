"""``sdpose-convert validate``: the fidelity report of a (quantized) model folder against its FP32 reference.

Measured on *held-out* calibration crops (crops the quantization never saw: :func:`split_calibration`
splits the set deterministically by the sha256 of each crop, recorded in the report):

* per component: VAE encoder latent cosine (same crop into both), pose heatmap cosine (the *FP32* latent
  into both pose IRs, so the pose error is isolated), keypoint displacement of the pose IR alone;
* end to end (crop -> heatmaps through each folder's own chain): heatmap cosine and keypoint displacement
  vs FP32 (decoded with the runtime's UDP/DARK decoder, crop px): mean, p95, max and the share within one
  heatmap pixel (= input width / heatmap width crop px);
* detector: raw output cosine and box IoU vs FP32 on held-out frames (reference boxes matched greedily to
  the best-overlapping boxes of the quantized detector; unmatched reference boxes count as IoU 0);
* model sizes (MB of each .bin) and per-component latency (median of a few batch-1 runs, LATENCY hint,
  one compile per inference-precision hint; the hints used are recorded).

Fidelity runs compile both folders with ``INFERENCE_PRECISION_HINT=f32`` so that the figures measure the
quantization alone (not the CPU's silent bf16). The report names the CPU and its INT8 path
(:mod:`edge_runtime.model.cpu`); a hint the CPU does not support (bf16 without AVX512_BF16/AMX) is reported as
such instead of timing a "bf16" that is really f32. Folders with INT8 activations get fidelity and speed for
both INT8 paths, with and without VNNI (:mod:`convert.int8_paths`). Writes ``report.json`` and ``report.md``
into the folder.
With synthetic (random-weight) checkpoints the figures measure quantization error on a random network,
never pose accuracy.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import openvino as ov

from convert import int8_paths as paths_mod
from convert.calibration import (calibration_record, iter_crops, iter_frames, split_calibration,  # noqa: F401
                                 split_frames)
from convert.fidelity import (FIDELITY_HINT, TOP_K_BOXES, FolderChain, bin_size_mb, cosine,  # noqa: F401
                              detector_fidelity, displacement_stats, latency_samples, match_boxes, measure_latency,
                              pose_fidelity, summary_stats)
from convert.report import REPORT_JSON, REPORT_MD, REPORT_VERSION, render_markdown, write_report  # noqa: F401
from convert.variant_check import compare_variant, write_against_report
from edge_runtime.model.cpu import CpuInfo, cpu_info, int8_accumulation_ratio
from edge_runtime.errors import InputError, ModelFolderError
from edge_runtime.model.metadata import COMPONENT_KINDS
from edge_runtime.model.models import ModelFolder
from edge_runtime.running.tracking import box_iou  # noqa: F401  (re-exported for the report's users)

# The split (convert.calibration), the metrics and chain (convert.fidelity) and the report files (convert.report)
# were parts of this module: their names stay importable from here (noqa: F401 above).

logger = logging.getLogger(__name__)

DEFAULT_HELD_OUT = 8
DEFAULT_LATENCY_RUNS = 3
DEFAULT_LATENCY_HINTS = ("f32", "bf16")


# ---------------------------------------------------------------------------------------------- validate

def validate_folder(models: str | Path, reference: str | Path | None = None, calib: str | Path | None = None,
                    held_out: int | None = None, latency_runs: int = DEFAULT_LATENCY_RUNS,
                    latency_hints: Sequence[str] = DEFAULT_LATENCY_HINTS, notes: Sequence[str] = (),
                    conversion: dict[str, Any] | None = None, write: bool = True,
                    int8_paths: bool = True) -> dict[str, Any]:
    """Measure a model folder against an FP32 reference folder; write report.json + report.md.

    Args:
        models: model folder to report on (quantized or not).
        reference: FP32 model folder of the same checkpoint (None: only sizes/latency, fidelity skipped).
        calib: calibration set folder (None: the one recorded in the folder's quantization metadata, else
            calib_data/default).
        held_out: crops held out (None: as recorded in the metadata, else :data:`DEFAULT_HELD_OUT`).
        latency_runs: timed runs per component and hint (0 = no latency measurement).
        latency_hints: INFERENCE_PRECISION_HINT values to time ("f32", "bf16", ...).
        notes: extra lines for the report (e.g. "synthetic checkpoint").
        conversion: conversion log (stages, wall time, peak RSS) to embed.
        int8_paths: for folders with INT8 activations, also measure the other INT8 path (without VNNI, in a
            capped child process, where this CPU has VNNI); see :mod:`convert.int8_paths`.
    Returns:
        The report dict (also written as ``report.json``).
    """
    from calib_data import load_calibration_set

    models = Path(models)
    core = ov.Core()
    folder = ModelFolder(models, core=core)
    ref_folder = ModelFolder(Path(reference), core=core) if reference is not None else None
    kinds = [k for k in COMPONENT_KINDS if folder.has(k)]
    metas = {k: folder.metadata(k) for k in kinds}
    if ref_folder is not None:
        _check_reference(folder, ref_folder)
    held_out, calib = _recorded_calibration(metas, held_out, calib)
    info = cpu_info(core)
    logger.info("CPU: %s", info.describe())
    unsupported = {} if info.bf16 else {
        "bf16": f"not supported on this CPU ({info.describe()}): OpenVINO would run f32, so bf16 is not timed"}
    latency_hints = [h for h in latency_hints if h not in unsupported]
    report = _report_head(models, reference, folder, info, latency_hints, unsupported, latency_runs, notes)
    _carry_conversion(report, models, conversion, write)
    report["components"].update(_component_entries(folder, ref_folder, kinds, metas))
    if not folder.has("detector"):
        report["detector"] = {"status": "no detector in this model folder (none converted)"}

    cset = load_calibration_set(calib)
    calib_idx, held_idx = split_calibration(cset, held_out)
    report["held_out"] = calibration_record(cset, calib_idx, held_idx)
    pose_meta = folder.pose_meta
    size_wh = (int(pose_meta["input_width"]), int(pose_meta["input_height"]))
    heatmap_px = size_wh[0] / int(pose_meta["heatmap_width"])
    _fidelity(report, core, folder, ref_folder, cset, held_idx, held_out, size_wh, heatmap_px, info.bf16)
    # latency last: compiles per hint, nothing else runs meanwhile
    if latency_runs > 0:
        samples = latency_samples(cset, held_idx or calib_idx[:1], size_wh, core, ref_folder or folder)
        _latency(report, core, folder, ref_folder, kinds, samples, latency_hints, latency_runs)
    if paths_mod.uses_int8_activations(metas):
        report["accumulation_check"] = int8_accumulation_ratio(core)
        if int8_paths and ref_folder is not None and held_idx:
            report["int8_paths"] = paths_mod.measure_paths(report, info, models, Path(reference), cset.path,
                                                          len(held_idx), latency_runs)
    if write:
        write_report(models, report)
    return report


def _check_reference(folder: ModelFolder, ref_folder: ModelFolder) -> None:
    """The reference must be an export of the same checkpoint at the same size (ModelFolderError)."""
    pose_meta, ref_meta = folder.pose_meta, ref_folder.pose_meta
    for key in ("checkpoint_sha256", "input_width", "input_height", "num_keypoints"):
        if pose_meta.get(key) != ref_meta.get(key):
            raise ModelFolderError(
                f"{ref_folder.path}: reference {key}={ref_meta.get(key)!r} differs from {folder.path}: "
                f"{pose_meta.get(key)!r}; the reference must be the FP32 export of the same checkpoint")


def _recorded_calibration(metas: dict[str, dict[str, Any]], held_out: int | None,
                          calib: str | Path | None) -> tuple[int, str | Path]:
    """(held_out, calib): as given, else as recorded at conversion, else the defaults."""
    recorded = next((m.get("quantization", {}).get("calibration") for m in metas.values()
                     if isinstance(m.get("quantization"), dict) and m["quantization"].get("calibration")), None)
    if held_out is None:
        held_out = int(recorded["held_out_crops"]) if recorded else DEFAULT_HELD_OUT
    if calib is None:
        calib = recorded["path"] if recorded and Path(recorded["path"]).is_dir() else "default"
    return held_out, calib


def _report_head(models: Path, reference: str | Path | None, folder: ModelFolder, info: CpuInfo,
                 latency_hints: Sequence[str], unsupported: dict[str, str], latency_runs: int,
                 notes: Sequence[str]) -> dict[str, Any]:
    """The report's first fields: what was measured, where, how; ``components`` still empty."""
    return {
        "format_version": REPORT_VERSION,
        "models": str(models.resolve()),
        "reference": str(Path(reference).resolve()) if reference is not None else None,
        "chain": folder.chain,
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "openvino": ov.get_version(),
        "compile": {"fidelity_hint": FIDELITY_HINT, "latency_hints": list(latency_hints),
                    "unsupported_hints": unsupported,
                    "latency_runs": latency_runs, "performance_hint": "LATENCY", "device": "CPU",
                    "batch": 1},
        "cpu": info.to_dict(),
        "notes": list(notes) + [
            "Fidelity = agreement with the FP32 IRs (quantization error), measured on held-out calibration "
            "crops; it is not pose accuracy."],
        "components": {},
    }


def _carry_conversion(report: dict[str, Any], models: Path, conversion: dict[str, Any] | None,
                      write: bool) -> None:
    """Embed the conversion log: the one given, else (re-validation) the one of the report already there."""
    if conversion:
        report["conversion"] = conversion
    elif write and (models / REPORT_JSON).is_file():
        try:
            previous = json.loads((models / REPORT_JSON).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            logger.warning("%s: the earlier report is unreadable (%s); its conversion log is not carried over",
                           models / REPORT_JSON, exc)
            previous = {}
        if isinstance(previous, dict) and isinstance(previous.get("conversion"), dict):
            report["conversion"] = previous["conversion"]  # re-validation keeps the conversion log


def _component_entries(folder: ModelFolder, ref_folder: ModelFolder | None, kinds: Sequence[str],
                       metas: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per component: file, precision, quantization record and size (and the reference's)."""
    entries: dict[str, dict[str, Any]] = {}
    for kind in kinds:
        meta = metas[kind]
        entry: dict[str, Any] = {
            "file": folder.ir_path(kind).name,
            "precision": meta.get("precision"),
            "quantized": bool(meta.get("quantized", False)),
            "size_mb": bin_size_mb(folder.ir_path(kind)),
        }
        if isinstance(meta.get("quantization"), dict):
            entry["quantization"] = meta["quantization"]
        if ref_folder is not None and ref_folder.has(kind):
            entry["reference_size_mb"] = bin_size_mb(ref_folder.ir_path(kind))
            entry["reference_precision"] = ref_folder.metadata(kind).get("precision")
        entries[kind] = entry
    return entries


def _fidelity(report: dict[str, Any], core: ov.Core, folder: ModelFolder, ref_folder: ModelFolder | None,
              cset: Any, held_idx: Sequence[int], held_out: int, size_wh: tuple[int, int], heatmap_px: float,
              bf16: bool) -> None:
    """The pose and detector fidelity sections (or why they were skipped)."""
    if ref_folder is None:
        report["fidelity"] = {"status": "skipped: no FP32 reference folder given (--reference)"}
    elif not held_idx:
        report["fidelity"] = {"status": "skipped: --held-out 0"}
    else:
        report["fidelity"] = pose_fidelity(core, folder, ref_folder, cset, held_idx, size_wh, heatmap_px,
                                           report["components"], bf16=bf16)
        if folder.has("detector") and ref_folder.has("detector"):
            report["detector"] = detector_fidelity(core, folder, ref_folder, cset, held_out)
            report["components"]["detector"]["fidelity"] = report["detector"]
        elif folder.has("detector"):
            report["detector"] = {"status": "the reference folder has no detector: not compared"}


def _latency(report: dict[str, Any], core: ov.Core, folder: ModelFolder, ref_folder: ModelFolder | None,
             kinds: Sequence[str], samples: dict[str, Any], latency_hints: Sequence[str], latency_runs: int) -> None:
    """Each component's latency per hint (and the reference's), into the report's component entries."""
    for kind in kinds:
        entry = report["components"][kind]
        sample = samples.get(kind)
        logger.info("latency: %s (%s) with hints %s", kind, entry["precision"], list(latency_hints))
        entry["latency_ms"] = measure_latency(core, folder.ir_path(kind), latency_hints, latency_runs, sample)
        if ref_folder is not None and ref_folder.has(kind):
            entry["reference_latency_ms"] = measure_latency(core, ref_folder.ir_path(kind), latency_hints,
                                                            latency_runs, sample)


# ---------------------------------------------------------------------------------------------- CLI

def _hints(text: str) -> list[str]:
    hints = [h.strip().lower() for h in text.split(",") if h.strip()]
    bad = [h for h in hints if h not in ("f32", "bf16", "f16")]
    if bad:
        raise argparse.ArgumentTypeError(f"--latency-hints: unknown hint(s) {bad}; expected f32, bf16, f16")
    return hints


def register(subparsers: Any, name: str = "validate") -> None:
    """Add ``validate MODELS [--reference FP32_MODELS] [--calib DIR] [--held-out N]``."""
    parser = subparsers.add_parser(name, help="fidelity report of a model folder vs its FP32 reference",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path, help="model folder to report on")
    parser.add_argument("--reference", type=Path, default=None,
                        help="FP32 model folder of the same checkpoint (without it: sizes and latency only)")
    parser.add_argument("--calib", default=None,
                        help="calibration set folder (default: the one recorded at conversion, else default)")
    parser.add_argument("--held-out", type=int, default=None,
                        help=f"held-out crops (default: as at conversion, else {DEFAULT_HELD_OUT})")
    parser.add_argument("--latency-runs", type=int, default=DEFAULT_LATENCY_RUNS,
                        help="timed runs per component and hint (0: no latency)")
    parser.add_argument("--latency-hints", type=_hints, default=list(DEFAULT_LATENCY_HINTS),
                        help="comma-separated INFERENCE_PRECISION_HINT values to time (default f32,bf16; "
                             "bf16 is skipped, and said so, on CPUs without it)")
    parser.add_argument("--no-int8-paths", action="store_true",
                        help="do not measure the other INT8 path (no VNNI, emulated in a capped subprocess)")
    parser.add_argument("--no-write", action="store_true", help="do not write report.json/report.md into MODELS")
    parser.add_argument("--json-out", type=Path, default=None, help="also write the report JSON to this file")
    parser.add_argument("--against", type=Path, default=None, metavar="FULL_FP32",
                        help="compare MODELS (another preset, token downsampling, INT8) with this full-resolution "
                             "FP32 export of the same checkpoint: keypoint displacement in image px and heatmap "
                             "agreement, written to MODELS/report.json (section against_full) and report.md")
    parser.add_argument("--limit", type=int, default=None,
                        help="--against: compare at most this many crops of the calibration set")
    parser.set_defaults(func=run)


def _run_against(args: argparse.Namespace) -> int:
    """``validate VARIANT --against FULL_FP32``: see :mod:`convert.variant_check`."""
    if args.reference is not None:
        raise InputError("--against and --reference are two different reports: pass one of them")
    section = compare_variant(args.models, args.against, calib=args.calib or "default", limit=args.limit)
    if not args.no_write:
        write_against_report(args.models, section)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(section, indent=2) + "\n", encoding="utf-8")
    kd, pck = section["keypoint_displacement"], section["agreement_pck"]
    logger.info("against %s: keypoint displacement mean %.2f image px (p95 %.2f), agreement PCK@%.2f %.1f %%",
                args.against, kd["mean_px"], kd["p95_px"], pck["alpha"], 100 * pck["share"])
    return 0


def run(args: argparse.Namespace) -> int:
    """``sdpose-convert validate`` entry point."""
    if args.against is not None:
        return _run_against(args)
    if args.limit is not None:
        raise InputError("--limit applies to --against only")
    if args.latency_runs < 0:
        raise InputError(f"--latency-runs: expected >= 0, got {args.latency_runs}")
    report = validate_folder(args.models, reference=args.reference, calib=args.calib, held_out=args.held_out,
                             latency_runs=args.latency_runs, latency_hints=args.latency_hints,
                             write=not args.no_write, int8_paths=not args.no_int8_paths)
    if args.json_out is not None:
        args.json_out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    e2e = (report.get("fidelity") or {}).get("end_to_end")
    if e2e:
        logger.info("end to end vs FP32: heatmap cosine %.5f, keypoint displacement mean %.3f px (p95 %.3f)",
                    e2e["heatmap_cosine"]["mean"], e2e["keypoint_displacement"]["mean_px"],
                    e2e["keypoint_displacement"]["p95_px"])
    logger.info("report: %s", Path(args.models) / REPORT_MD)
    return 0
