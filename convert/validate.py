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
(:mod:`edge_runtime.cpu`); a hint the CPU does not support (bf16 without AVX512_BF16/AMX) is reported as
such instead of timing a "bf16" that is really f32. Folders with INT8 activations get fidelity and speed for
both INT8 paths, with and without VNNI (:mod:`convert.int8_paths`). Writes ``report.json`` and ``report.md``
into the folder.
With synthetic (random-weight) checkpoints the figures measure quantization error on a random network,
never pose accuracy.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import time
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from convert import int8_paths as paths_mod
from edge_runtime.codec import decode_heatmaps
from edge_runtime.cpu import cpu_info, int8_accumulation_ratio
from edge_runtime.errors import InputError, ModelFolderError
from edge_runtime.tracking import box_iou  # noqa: F401  (re-exported for the report's users)
from edge_runtime.metrics import time_calls
from edge_runtime.models import CompileOptions, ModelFolder, compile_model

logger = logging.getLogger(__name__)

REPORT_JSON = "report.json"
REPORT_MD = "report.md"
REPORT_VERSION = 1
DEFAULT_HELD_OUT = 8
DEFAULT_LATENCY_RUNS = 3
DEFAULT_LATENCY_HINTS = ("f32", "bf16")
#: person boxes compared per frame in the threshold-free detector comparison
TOP_K_BOXES = 20
#: the hint every fidelity comparison is compiled with
FIDELITY_HINT = "f32"
#: the hint of the "FP32 IR run in bf16" baseline reported next to the quantization error
BASELINE_HINT = "bf16"
_MB = 1 << 20


# ---------------------------------------------------------------------------------------------- data split

def split_calibration(cset: Any, held_out: int) -> tuple[list[int], list[int]]:
    """Deterministic split of a calibration set's crops into (calibration indices, held-out indices).

    The ``held_out`` crops with the smallest sha256 (manifest field, i.e. content hash) are held out; the
    rest, in manifest order, calibrate. Same set + same ``held_out`` -> same split on every machine.
    A set too small for ``held_out`` (fewer than ``held_out + 1`` crops) holds out half of its crops
    (rounded down) instead, with a warning, so at least one crop always calibrates; the count actually held
    out is in :func:`calibration_record`. Raises InputError for an empty set.
    """
    n = len(cset.crop_records)
    if isinstance(held_out, bool) or not isinstance(held_out, int) or held_out < 0:
        raise InputError(f"--held-out: expected an integer >= 0, got {held_out!r}")
    if n == 0:
        raise InputError(f"calibration set {cset.path}: no crops; nothing to calibrate on")
    if held_out >= n:
        fewer = n // 2
        logger.warning("calibration set %s: %d crop(s) cannot hold out %d and still calibrate; holding out %d "
                       "(the fidelity report rests on %d crop(s): add crops for a firmer report)",
                       cset.path, n, held_out, fewer, fewer)
        held_out = fewer
    order = sorted(range(n), key=lambda i: (str(cset.crop_records[i]["sha256"]), i))
    held = sorted(order[:held_out])
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], held


def split_frames(cset: Any, held_out: int) -> tuple[list[int], list[int]]:
    """Same split for the detector frames: at most ``held_out`` (and at most half) of them held out."""
    n = len(cset.frame_records)
    k = min(held_out, n // 2)
    order = sorted(range(n), key=lambda i: (str(cset.frame_records[i]["sha256"]), i))
    held = sorted(order[:k])
    held_set = set(held)
    return [i for i in range(n) if i not in held_set], held


def iter_crops(cset: Any, indices: Sequence[int], size_wh: tuple[int, int]) -> Iterator[np.ndarray]:
    """Yield the crops ``indices`` (manifest order) as BGR u8 [1,h,w,3] at ``size_wh``, read lazily."""
    wanted = set(indices)
    last = max(wanted) if wanted else -1
    for i, crop in enumerate(cset.crops(limit=last + 1, size=size_wh)):
        if i in wanted:
            yield np.ascontiguousarray(crop[None])


def iter_frames(cset: Any, indices: Sequence[int]) -> Iterator[np.ndarray]:
    """Yield the frames ``indices`` as BGR u8 [H,W,3], read lazily."""
    wanted = set(indices)
    last = max(wanted) if wanted else -1
    for i, frame in enumerate(cset.frames(limit=last + 1)):
        if i in wanted:
            yield frame


def calibration_record(cset: Any, calib_idx: Sequence[int], held_idx: Sequence[int]) -> dict[str, Any]:
    """What reports and rt_info record about the calibration data and its split."""
    return {
        "name": cset.name,
        "path": str(cset.path),
        "fingerprint": cset.fingerprint(),
        "crops_total": len(cset.crop_records),
        "calibration_crops": len(calib_idx),
        "held_out_crops": len(held_idx),
        "split": "the held_out crops with the smallest sha256 are held out; the rest calibrate (manifest order)",
        "held_out_files": [cset.crop_records[i]["file"] for i in held_idx],
    }


# ---------------------------------------------------------------------------------------------- metrics

def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """Cosine similarity of two tensors, flattened (float64). 1.0 when both are all zero."""
    a = np.asarray(a, np.float64).ravel()
    b = np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0 and nb == 0:
        return 1.0
    if na == 0 or nb == 0:
        return 0.0
    return float(a @ b / (na * nb))


def summary_stats(values: Sequence[float]) -> dict[str, float]:
    arr = np.asarray(values, np.float64)
    if arr.size == 0:
        return {}
    return {"mean": float(arr.mean()), "min": float(arr.min()), "max": float(arr.max())}


def displacement_stats(dists: np.ndarray, heatmap_px: float, valid: np.ndarray | None = None) -> dict[str, float]:
    """Keypoint displacement (crop px) summary over the ``valid`` keypoints (all if None): mean, median,
    p95, max, share within one heatmap px (= ``heatmap_px`` crop px); ``excluded`` = keypoints left out
    (FP32 channel without a positive peak: its location is arbitrary, see edge_runtime.codec)."""
    d = np.asarray(dists, np.float64).ravel()
    mask = np.ones(d.shape, bool) if valid is None else np.asarray(valid, bool).ravel()
    excluded = int((~mask).sum())
    d = d[mask]
    if d.size == 0:
        return {"count": 0, "excluded": excluded}
    return {"mean_px": float(d.mean()), "median_px": float(np.median(d)), "p95_px": float(np.percentile(d, 95)),
            "max_px": float(d.max()), "within_1_heatmap_px": float((d <= heatmap_px).mean()),
            "heatmap_px": float(heatmap_px), "count": int(d.size), "excluded": excluded}


def match_boxes(ref: np.ndarray, test: np.ndarray) -> np.ndarray:
    """Greedy one-to-one matching (highest IoU first); IoU per reference box [len(ref)], 0 if unmatched."""
    iou = box_iou(ref, test)
    out = np.zeros(len(ref))
    if iou.size == 0:
        return out
    used_r, used_t = set(), set()
    for flat in np.argsort(-iou, axis=None):
        r, t = np.unravel_index(flat, iou.shape)
        if iou[r, t] <= 0:
            break
        if r in used_r or t in used_t:
            continue
        used_r.add(r)
        used_t.add(t)
        out[r] = iou[r, t]
    return out


# ---------------------------------------------------------------------------------------------- helpers

def bin_size_mb(xml: Path) -> float:
    """Size of the IR's .bin in MB (2^20 bytes)."""
    b = Path(xml).with_suffix(".bin")
    return round(b.stat().st_size / _MB, 3) if b.is_file() else 0.0


def _options(hint: str | None, latency: bool = True) -> CompileOptions:
    return CompileOptions(device="CPU", performance_hint="LATENCY" if latency else "THROUGHPUT",
                          inference_precision=hint, cache_dir=None)


class FolderChain:
    """Compiled components of one model folder (f32 hint), run batch 1 synchronously."""

    def __init__(self, folder: ModelFolder, core: ov.Core, kinds: Iterable[str], hint: str = FIDELITY_HINT) -> None:
        self.folder = folder
        self.compiled = {k: compile_model(core, folder.read_model(k), _options(hint)) for k in kinds}
        self.requests = {k: c.create_infer_request() for k, c in self.compiled.items()}

    def run(self, kind: str, data: np.ndarray) -> np.ndarray:
        out = self.requests[kind].infer({0: data})
        return np.array(out[0], copy=True)


def _pose_kinds(folder: ModelFolder) -> list[str]:
    return [k for k in ("vae_encoder", "pose", "vae_pose") if folder.has(k)]


def measure_latency(core: ov.Core, xml: Path, hints: Sequence[str], runs: int,
                    sample: np.ndarray | None = None) -> dict[str, float]:
    """Median batch-1 latency (ms) of one IR per inference-precision hint (LATENCY hint, 1 warm-up run).

    ``sample``: an input [1,...] (zeros of the input shape, or u8 zeros for u8 inputs, if None).
    """
    out: dict[str, float] = {}
    if runs <= 0:
        return out
    model = core.read_model(str(xml))
    if sample is None:
        inp = model.inputs[0]
        shape = [1 if d.is_dynamic else d.get_length() for d in inp.get_partial_shape()]
        dtype = np.uint8 if inp.get_element_type() == ov.Type.u8 else np.float32
        sample = np.zeros(shape, dtype)
    for hint in hints:
        compiled = compile_model(core, model, _options(hint))
        request = compiled.create_infer_request()
        times = time_calls(lambda request=request: request.infer({0: sample}), runs=runs, warmup=1)
        out[hint] = round(statistics.median(times) * 1000.0, 2)
        del request, compiled
    return out


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
    kinds = [k for k in ("detector", "vae_encoder", "pose", "vae_pose") if folder.has(k)]
    metas = {k: folder.metadata(k) for k in kinds}
    if ref_folder is not None:
        pose_meta, ref_meta = folder.pose_meta, ref_folder.pose_meta
        for key in ("checkpoint_sha256", "input_width", "input_height", "num_keypoints"):
            if pose_meta.get(key) != ref_meta.get(key):
                raise ModelFolderError(
                    f"{ref_folder.path}: reference {key}={ref_meta.get(key)!r} differs from {folder.path}: "
                    f"{pose_meta.get(key)!r}; the reference must be the FP32 export of the same checkpoint")

    recorded = next((m.get("quantization", {}).get("calibration") for m in metas.values()
                     if isinstance(m.get("quantization"), dict) and m["quantization"].get("calibration")), None)
    if held_out is None:
        held_out = int(recorded["held_out_crops"]) if recorded else DEFAULT_HELD_OUT
    if calib is None:
        calib = recorded["path"] if recorded and Path(recorded["path"]).is_dir() else "default"
    info = cpu_info(core)
    logger.info("CPU: %s", info.describe())
    unsupported = {} if info.bf16 else {
        "bf16": f"not supported on this CPU ({info.describe()}): OpenVINO would run f32, so bf16 is not timed"}
    latency_hints = [h for h in latency_hints if h not in unsupported]
    report: dict[str, Any] = {
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
        report["components"][kind] = entry
    if not folder.has("detector"):
        report["detector"] = {"status": "no detector in this model folder (none converted)"}

    cset = load_calibration_set(calib)
    calib_idx, held_idx = split_calibration(cset, held_out)
    report["held_out"] = calibration_record(cset, calib_idx, held_idx)
    w, h = int(folder.pose_meta["input_width"]), int(folder.pose_meta["input_height"])
    hw = int(folder.pose_meta["heatmap_width"])
    heatmap_px = w / hw

    if ref_folder is None:
        report["fidelity"] = {"status": "skipped: no FP32 reference folder given (--reference)"}
    elif not held_idx:
        report["fidelity"] = {"status": "skipped: --held-out 0"}
    else:
        report["fidelity"] = _pose_fidelity(core, folder, ref_folder, cset, held_idx, (w, h), heatmap_px,
                                            report["components"], bf16=info.bf16)
        if folder.has("detector") and ref_folder.has("detector"):
            report["detector"] = _detector_fidelity(core, folder, ref_folder, cset, held_out)
            report["components"]["detector"]["fidelity"] = report["detector"]
        elif folder.has("detector"):
            report["detector"] = {"status": "the reference folder has no detector: not compared"}

    # latency last: compiles per hint, nothing else runs meanwhile
    if latency_runs > 0:
        samples = _latency_samples(cset, held_idx or calib_idx[:1], (w, h), core, ref_folder or folder)
        for kind in kinds:
            entry = report["components"][kind]
            sample = samples.get(kind)
            logger.info("latency: %s (%s) with hints %s", kind, entry["precision"], list(latency_hints))
            entry["latency_ms"] = measure_latency(core, folder.ir_path(kind), latency_hints, latency_runs, sample)
            if ref_folder is not None and ref_folder.has(kind):
                entry["reference_latency_ms"] = measure_latency(core, ref_folder.ir_path(kind), latency_hints,
                                                                latency_runs, sample)
    if paths_mod.uses_int8_activations(metas):
        report["accumulation_check"] = int8_accumulation_ratio(core)
        if int8_paths and ref_folder is not None and held_idx:
            report["int8_paths"] = paths_mod.measure_paths(report, info, models, Path(reference), cset.path,
                                                          len(held_idx), latency_runs)
    if write:
        write_report(models, report)
    return report


def _latency_samples(cset: Any, idx: Sequence[int], size_wh: tuple[int, int], core: ov.Core,
                     folder: ModelFolder) -> dict[str, np.ndarray]:
    """A real batch-1 input per component: a crop for image inputs, its FP32 latent for the pose IR."""
    crop = next(iter_crops(cset, idx[:1], size_wh), None)
    samples: dict[str, np.ndarray] = {}
    if crop is None:
        return samples
    samples["vae_encoder"] = samples["vae_pose"] = crop
    if folder.has("vae_encoder"):
        chain = FolderChain(folder, core, ["vae_encoder"])
        samples["pose"] = chain.run("vae_encoder", crop)
    return samples


def _pose_fidelity(core: ov.Core, folder: ModelFolder, ref: ModelFolder, cset: Any, held_idx: Sequence[int],
                   size_wh: tuple[int, int], heatmap_px: float, components: dict[str, Any],
                   bf16: bool = True) -> dict[str, Any]:
    """Three passes over the held-out crops, one compiled chain alive at a time (bounds memory at full size):
    FP32 reference (f32 hint; latents and heatmaps kept: [1,4,h,w] + [1,K,H/4,W/4] per crop), the folder
    under test (f32 hint), then, where the CPU has bf16 (``bf16``), the FP32 reference with the bf16 hint
    (baseline)."""
    kinds = [k for k in _pose_kinds(folder) if ref.has(k)]
    split_ref = ref.has("vae_encoder") and ref.has("pose")
    per: dict[str, list[float]] = {"vae_encoder": [], "pose": [], "vae_pose": [], "end_to_end": []}
    disp: dict[str, list[np.ndarray]] = {"pose": [], "vae_pose": [], "end_to_end": []}
    valid: dict[str, list[np.ndarray]] = {"pose": [], "vae_pose": [], "end_to_end": []}
    score_diff: list[np.ndarray] = []
    base_cos: list[float] = []
    base_disp: list[np.ndarray] = []
    base_valid: list[np.ndarray] = []

    def run_chain(chain: FolderChain, kinds_: Sequence[str], crop: np.ndarray) -> np.ndarray:
        data = crop
        for k in kinds_:
            data = chain.run(k, data)
        return data

    def kp_dist(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(displacement [K] crop px, |score diff| [K], valid [K]: reference ``b`` has a positive peak)."""
        ka, sa = decode_heatmaps(a, input_size=size_wh)
        kb, sb = decode_heatmaps(b, input_size=size_wh)
        sb = np.asarray(sb).ravel()
        dist = np.linalg.norm(np.asarray(ka) - np.asarray(kb), axis=-1).ravel()
        return dist, np.abs(np.asarray(sa).ravel() - sb), np.isfinite(sb) & (sb > 0)

    # pass 1: FP32 reference
    ref_out: list[tuple[np.ndarray | None, np.ndarray]] = []
    r = FolderChain(ref, core, ["vae_encoder", "pose"] if split_ref else ["vae_pose"])
    for crop in iter_crops(cset, held_idx, size_wh):
        if split_ref:
            lat = r.run("vae_encoder", crop)
            ref_out.append((lat, r.run("pose", lat)))
        else:
            ref_out.append((None, r.run("vae_pose", crop)))
    del r
    gc.collect()

    # pass 2: the folder under test
    q = FolderChain(folder, core, _pose_kinds(folder))
    for n, (crop, (lat_r, hm_r)) in enumerate(zip(iter_crops(cset, held_idx, size_wh), ref_out), start=1):
        if "vae_encoder" in kinds and lat_r is not None:
            per["vae_encoder"].append(cosine(q.run("vae_encoder", crop), lat_r))
        if "pose" in kinds and lat_r is not None:
            hm_p = q.run("pose", lat_r)
            per["pose"].append(cosine(hm_p, hm_r))
            d, _, v = kp_dist(hm_p, hm_r)
            disp["pose"].append(d)
            valid["pose"].append(v)
        if "vae_pose" in kinds:
            hm_f = q.run("vae_pose", crop)
            per["vae_pose"].append(cosine(hm_f, hm_r))
            d, _, v = kp_dist(hm_f, hm_r)
            disp["vae_pose"].append(d)
            valid["vae_pose"].append(v)
        hm_e = run_chain(q, folder.kinds, crop)
        per["end_to_end"].append(cosine(hm_e, hm_r))
        d, s, v = kp_dist(hm_e, hm_r)
        disp["end_to_end"].append(d)
        valid["end_to_end"].append(v)
        score_diff.append(s)
        logger.info("fidelity: held-out crop %d/%d: end-to-end heatmap cosine %.5f", n, len(held_idx),
                    per["end_to_end"][-1])
    del q
    gc.collect()

    # pass 3: baseline = what the CPU's default bf16 execution of the FP32 IRs alone changes (same metrics)
    r16 = FolderChain(ref, core, ref.kinds, hint=BASELINE_HINT) if bf16 else None
    baseline_pairs = zip(iter_crops(cset, held_idx, size_wh), ref_out) if r16 is not None else ()
    for crop, (_, hm_r) in baseline_pairs:
        hm_b = run_chain(r16, ref.kinds, crop)
        base_cos.append(cosine(hm_b, hm_r))
        d, _, v = kp_dist(hm_b, hm_r)
        base_disp.append(d)
        base_valid.append(v)
    del r16
    n = len(ref_out)

    out: dict[str, Any] = {"held_out_crops": n, "heatmap_px": heatmap_px, "input_size_wh": list(size_wh)}
    if per["vae_encoder"]:
        components["vae_encoder"]["fidelity"] = {"latent_cosine": summary_stats(per["vae_encoder"])}
    for kind in ("pose", "vae_pose"):
        if per[kind]:
            components[kind]["fidelity"] = {
                "heatmap_cosine": summary_stats(per[kind]),
                "keypoint_displacement": displacement_stats(np.concatenate(disp[kind]), heatmap_px,
                                                            np.concatenate(valid[kind])),
                "input": "FP32 latent" if kind == "pose" else "crop"}
    out["end_to_end"] = {
        "chain": folder.chain,
        "heatmap_cosine": summary_stats(per["end_to_end"]),
        "keypoint_displacement": displacement_stats(np.concatenate(disp["end_to_end"]), heatmap_px,
                                                    np.concatenate(valid["end_to_end"])),
        "score_abs_diff_mean": float(np.concatenate(score_diff).mean()),
    }
    if not bf16:
        out["reference_bf16_baseline"] = {"status": "bf16 is not supported on this CPU: OpenVINO runs the FP32 "
                                                    "IRs in f32 here, so there is no bf16 baseline"}
        return out
    out["reference_bf16_baseline"] = {
        "what": f"the FP32 reference IRs compiled with INFERENCE_PRECISION_HINT={BASELINE_HINT} vs {FIDELITY_HINT} "
                "(no quantization): the error the CPU's default bf16 execution alone makes",
        "heatmap_cosine": summary_stats(base_cos),
        "keypoint_displacement": displacement_stats(np.concatenate(base_disp), heatmap_px,
                                                    np.concatenate(base_valid)),
    }
    return out


def _detector_fidelity(core: ov.Core, folder: ModelFolder, ref: ModelFolder, cset: Any,
                       held_out: int) -> dict[str, Any]:
    from edge_runtime.detector import PersonDetector

    _, held = split_frames(cset, held_out)
    source = "held-out frames"
    frames: Iterable[np.ndarray] = iter_frames(cset, held)
    if not held:
        # no frames in the set: the detector then saw no calibration frames either; use held-out crops
        _, held_crops = split_calibration(cset, min(held_out, len(cset.crop_records) - 1))
        frames = (crop[0] for crop in iter_crops(cset, held_crops, cset.input_size))
        source = "held-out crops (the set has no frames)"
    opts = _options(FIDELITY_HINT)
    det_q = PersonDetector(folder, options=opts, core=core)
    det_r = PersonDetector(ref, options=opts, core=core)
    conf = det_r.conf_threshold
    cos, score_cos, ious, ious_top, n_ref, n_q, n_frames = [], [], [], [], 0, 0, 0
    for frame in frames:
        tensor, meta = det_r.preprocess(frame)
        raw_r, raw_q = det_r.infer(tensor), det_q.infer(tensor)
        cos.append(cosine(raw_q, raw_r))
        score_cos.append(cosine(raw_q[:, 4:], raw_r[:, 4:]))
        boxes_r, _ = det_r.postprocess(raw_r, meta, conf_threshold=conf, max_detections=100)
        boxes_q, _ = det_q.postprocess(raw_q, meta, conf_threshold=conf, max_detections=100)
        ious.append(match_boxes(boxes_r, boxes_q))
        n_ref += len(boxes_r)
        n_q += len(boxes_q)
        # threshold-free view (meaningful for random-weight detectors too): the TOP_K best person boxes
        top_r, _ = det_r.postprocess(raw_r, meta, conf_threshold=0.0, max_detections=TOP_K_BOXES)
        top_q, _ = det_q.postprocess(raw_q, meta, conf_threshold=0.0, max_detections=TOP_K_BOXES)
        ious_top.append(match_boxes(top_r, top_q))
        n_frames += 1
    all_iou = np.concatenate(ious) if ious else np.zeros(0)
    top_iou = np.concatenate(ious_top) if ious_top else np.zeros(0)
    return {
        "frames": n_frames, "source": source,
        "raw_output_cosine": summary_stats(cos),
        "score_cosine": summary_stats(score_cos),
        "conf_threshold": conf,
        "reference_boxes": n_ref, "boxes": n_q,
        "box_iou_mean": float(all_iou.mean()) if all_iou.size else None,
        "box_matched_iou50": float((all_iou >= 0.5).mean()) if all_iou.size else None,
        "top_k": TOP_K_BOXES,
        "top_k_box_iou_mean": float(top_iou.mean()) if top_iou.size else None,
        "top_k_matched_iou50": float((top_iou >= 0.5).mean()) if top_iou.size else None,
        "note": "reference boxes matched greedily (highest IoU first) to the quantized detector's boxes; unmatched "
                "reference boxes count as IoU 0. top_k_*: the same with the TOP_K best person boxes after NMS "
                "regardless of the score threshold (a random-weight detector finds no box above it)"
                + ("" if n_ref else "; the FP32 detector found no person box above the threshold on these frames"),
    }


# ---------------------------------------------------------------------------------------------- report

def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def render_markdown(report: dict[str, Any]) -> str:
    """Human-readable report.md from the report dict."""
    lines = [f"# Conversion report: {report['models']}", ""]
    lines.append(f"- reference: {report.get('reference') or 'none (fidelity not measured)'}")
    lines.append(f"- chain: {report.get('chain')}; OpenVINO {report.get('openvino')}")
    comp = report.get("compile", {})
    cpu = report.get("cpu") or {}
    if cpu:
        lines.append(f"- CPU: {cpu.get('name')}; INT8 path {cpu.get('int8_path')} ({cpu.get('int8_isa')}); bf16 "
                     f"{'yes' if cpu.get('bf16') else 'no'}; OPTIMIZATION_CAPABILITIES "
                     f"{', '.join(cpu.get('capabilities') or [])}"
                     + (f"; capped by ONEDNN_MAX_CPU_ISA={cpu['isa_cap']}" if cpu.get("isa_cap") else ""))
    lines.append(f"- fidelity compiled with INFERENCE_PRECISION_HINT={comp.get('fidelity_hint')}; latency: "
                 f"median of {comp.get('latency_runs')} batch-1 runs, LATENCY hint, precision hints "
                 f"{', '.join(comp.get('latency_hints', []))}")
    for hint, why in (comp.get("unsupported_hints") or {}).items():
        lines.append(f"- {hint} hint: {why}")
    held = report.get("held_out") or {}
    if held:
        lines.append(f"- held-out: {held.get('held_out_crops')} of {held.get('crops_total')} crops of calibration "
                     f"set '{held.get('name')}' ({held.get('split')})")
    for note in report.get("notes", []):
        lines.append(f"- note: {note}")
    lines += ["", "## Components", "",
              "| component | precision | size MB (FP32) | latency ms by hint (FP32 ref) | fidelity |",
              "|---|---|---|---|---|"]
    for kind, c in report.get("components", {}).items():
        lat = ", ".join(f"{h}: {v:.1f}" for h, v in (c.get("latency_ms") or {}).items()) or "-"
        ref_lat = ", ".join(f"{h}: {v:.1f}" for h, v in (c.get("reference_latency_ms") or {}).items())
        fid = c.get("fidelity") or {}
        if "latent_cosine" in fid:
            fid_s = f"latent cosine mean {_fmt(fid['latent_cosine'].get('mean'), 5)}"
        elif "heatmap_cosine" in fid:
            kd = fid.get("keypoint_displacement", {})
            fid_s = (f"heatmap cosine mean {_fmt(fid['heatmap_cosine'].get('mean'), 5)}; kp mean "
                     f"{_fmt(kd.get('mean_px'), 2)} px, p95 {_fmt(kd.get('p95_px'), 2)} px, within 1 hm px "
                     f"{_fmt(kd.get('within_1_heatmap_px'), 3)}")
        elif "raw_output_cosine" in fid:
            fid_s = (f"score cosine mean {_fmt(fid['score_cosine'].get('mean'), 5)}; box IoU mean "
                     f"{_fmt(fid.get('box_iou_mean'), 3)} over {fid.get('reference_boxes')} FP32 boxes, top-"
                     f"{fid.get('top_k')} IoU {_fmt(fid.get('top_k_box_iou_mean'), 3)}")
        else:
            fid_s = "-"
        size = f"{c.get('size_mb', 0):.1f}"
        if c.get("reference_size_mb") is not None:
            size += f" ({c['reference_size_mb']:.1f})"
        lines.append(f"| {kind} | {c.get('precision')} | {size} | {lat}" + (f" ({ref_lat})" if ref_lat else "")
                     + f" | {fid_s} |")
    fid = report.get("fidelity") or {}
    e2e = fid.get("end_to_end")
    lines += ["", "## End to end (crop -> heatmaps -> keypoints, vs FP32)", ""]
    if e2e:
        kd = e2e["keypoint_displacement"]
        base = fid.get("reference_bf16_baseline") or {}
        lines += [f"- heatmap cosine: mean {_fmt(e2e['heatmap_cosine']['mean'], 5)}, min "
                  f"{_fmt(e2e['heatmap_cosine']['min'], 5)} over {fid.get('held_out_crops')} held-out crops",
                  f"- keypoint displacement (crop px): mean {_fmt(kd.get('mean_px'), 3)}, median "
                  f"{_fmt(kd.get('median_px'), 3)}, p95 {_fmt(kd.get('p95_px'), 3)}, max {_fmt(kd.get('max_px'), 3)}; "
                  f"within 1 heatmap px ({_fmt(kd.get('heatmap_px'), 1)} crop px): "
                  f"{_fmt(100 * kd.get('within_1_heatmap_px', 0), 1)} % of {kd.get('count')} keypoints "
                  f"({kd.get('excluded')} excluded: FP32 channel without a positive peak)",
                  f"- mean |score difference|: {_fmt(e2e.get('score_abs_diff_mean'), 5)}"]
        if base.get("status"):
            lines.append(f"- baseline: {base['status']}")
        elif base:
            bk = base["keypoint_displacement"]
            lines.append(f"- baseline, FP32 IRs run with the {BASELINE_HINT} hint vs {FIDELITY_HINT} (no quantization): "
                         f"heatmap cosine mean {_fmt(base['heatmap_cosine'].get('mean'), 5)}; keypoint displacement "
                         f"mean {_fmt(bk.get('mean_px'), 3)}, median {_fmt(bk.get('median_px'), 3)}, p95 "
                         f"{_fmt(bk.get('p95_px'), 3)}; within 1 heatmap px "
                         f"{_fmt(100 * bk.get('within_1_heatmap_px', 0), 1)} %")
    else:
        lines.append(f"- {fid.get('status', 'not measured')}")
    if report.get("int8_paths"):
        lines += paths_mod.render_markdown(report["int8_paths"])
    det = report.get("detector") or {}
    lines += ["", "## Detector", ""]
    if "raw_output_cosine" in det:
        lines.append(f"- {det['frames']} {det['source']}: raw output cosine mean "
                     f"{_fmt(det['raw_output_cosine'].get('mean'), 5)}, class-score cosine mean "
                     f"{_fmt(det['score_cosine'].get('mean'), 5)}")
        lines.append(f"- score >= {det['conf_threshold']}: {det['reference_boxes']} FP32 boxes vs {det['boxes']}; "
                     f"box IoU mean {_fmt(det.get('box_iou_mean'), 4)}, share IoU>=0.5 "
                     f"{_fmt(det.get('box_matched_iou50'), 3)}")
        lines.append(f"- top {det['top_k']} person boxes per frame (no threshold): IoU mean "
                     f"{_fmt(det.get('top_k_box_iou_mean'), 4)}, share IoU>=0.5 {_fmt(det.get('top_k_matched_iou50'), 3)}")
    else:
        lines.append(f"- {det.get('status', 'not measured')}")
    conv = report.get("conversion")
    if conv:
        lines += ["", "## Conversion", "", "| stage | wall s | peak RSS GB |", "|---|---|---|"]
        for st in conv.get("stages", []):
            lines.append(f"| {st['stage']} | {st['wall_s']:.1f} | {_fmt(st.get('peak_rss_gb'), 2)} |")
        lines.append(f"| total | {conv.get('wall_s', 0):.1f} | {_fmt(conv.get('peak_rss_gb'), 2)} |")
    return "\n".join(lines) + "\n"


def write_report(folder: str | Path, report: dict[str, Any]) -> tuple[Path, Path]:
    """Write ``report.json`` and ``report.md`` into ``folder``; returns both paths."""
    folder = Path(folder)
    js = folder / REPORT_JSON
    md = folder / REPORT_MD
    js.write_text(json.dumps(report, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    md.write_text(render_markdown(report), encoding="utf-8")
    logger.info("wrote %s and %s", js, md)
    return js, md


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
    from convert.variant_check import compare_variant, write_against_report

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
