"""Fidelity of a model folder against its FP32 reference: the metrics (cosine, keypoint displacement, box
matching), the batch-1 chain runner both folders are measured with, and the per-component passes of
``sdpose-convert validate`` (:mod:`convert.validate` assembles them into the report; :mod:`convert.variant_check`
reuses the metrics and the chain).

Fidelity passes compile with ``INFERENCE_PRECISION_HINT=f32`` (:data:`FIDELITY_HINT`) so the figures measure the
quantization alone; the pose passes keep one compiled chain alive at a time (bounds memory at full size).
"""
from __future__ import annotations

import gc
import logging
import statistics
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from convert.calibration import iter_crops, iter_frames, split_calibration, split_frames
from edge_runtime.model.chain import ChainRunner
from edge_runtime.model.codec import decode_heatmaps
from edge_runtime.model.metadata import POSE_KINDS
from edge_runtime.running.metrics import time_calls
from edge_runtime.model.models import CompileOptions, ModelFolder, compile_model
from edge_runtime.running.tracking import box_iou

logger = logging.getLogger(__name__)

#: person boxes compared per frame in the threshold-free detector comparison
TOP_K_BOXES = 20
#: the hint every fidelity comparison is compiled with
FIDELITY_HINT = "f32"
#: the hint of the "FP32 IR run in bf16" baseline reported next to the quantization error
BASELINE_HINT = "bf16"
_MB = 1 << 20


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
    (FP32 channel without a positive peak: its location is arbitrary, see edge_runtime.model.codec)."""
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


# ---------------------------------------------------------------------------------------------- chains

def bin_size_mb(xml: Path) -> float:
    """Size of the IR's .bin in MB (2^20 bytes)."""
    b = Path(xml).with_suffix(".bin")
    return round(b.stat().st_size / _MB, 3) if b.is_file() else 0.0


def _options(hint: str | None, latency: bool = True) -> CompileOptions:
    return CompileOptions(device="CPU", performance_hint="LATENCY" if latency else "THROUGHPUT",
                          inference_precision=hint, cache_dir=None)


class FolderChain:
    """Compiled components of one model folder (f32 hint), run synchronously by the runtime's
    :class:`~edge_runtime.model.chain.ChainRunner` (batch 1 here)."""

    def __init__(self, folder: ModelFolder, core: ov.Core, kinds: Iterable[str], hint: str = FIDELITY_HINT) -> None:
        self.folder = folder
        self.compiled = {k: compile_model(core, folder.read_model(k), _options(hint)) for k in kinds}
        self.runner = ChainRunner.of(self.compiled)
        # the compiled models hold their weights: the folder's cached ov.Models (+3.4 GB for the full-size FP32
        # pose IR) would only double them while this chain runs
        folder.release()

    def run(self, kind: str, data: np.ndarray) -> np.ndarray:
        """One component: data [1,...] -> its output [1,...]."""
        return self.runner.run_stage(kind, data)

    def run_chain(self, kinds: Sequence[str], crop: np.ndarray) -> np.ndarray:
        """Components ``kinds`` in order (the folder's chain): crop [1,h,w,3] u8 -> heatmaps [1,K,H/4,W/4]."""
        return self.runner.run(crop, kinds)


def _pose_kinds(folder: ModelFolder) -> list[str]:
    return [k for k in POSE_KINDS if folder.has(k)]


def measure_latency(core: ov.Core, xml: Path, hints: Sequence[str], runs: int,
                    sample: np.ndarray | None = None) -> dict[str, float]:
    """Median batch-1 latency (ms) of one IR per inference-precision hint (LATENCY hint, 1 warm-up run).

    ``sample``: an input [1,...] (zeros of the input shape, or u8 zeros for u8 inputs, if None).
    """
    out: dict[str, float] = {}
    if runs <= 0:
        return out
    if sample is None:
        inp = core.read_model(str(xml)).inputs[0]
        shape = [1 if d.is_dynamic else d.get_length() for d in inp.get_partial_shape()]
        dtype = np.uint8 if inp.get_element_type() == ov.Type.u8 else np.float32
        sample = np.zeros(shape, dtype)
    for hint in hints:
        # read per hint and dropped once compiled: the compiled model holds its own weights (one copy alive)
        compiled = compile_model(core, core.read_model(str(xml)), _options(hint))
        request = compiled.create_infer_request()
        times = time_calls(lambda request=request: request.infer({0: sample}), runs=runs, warmup=1)
        out[hint] = round(statistics.median(times) * 1000.0, 2)
        del request, compiled
    return out


# ---------------------------------------------------------------------------------------------- passes

def latency_samples(cset: Any, idx: Sequence[int], size_wh: tuple[int, int], core: ov.Core,
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


class _Tally:
    """Per-crop results of one comparison (cosines, keypoint displacements, valid masks, score differences)."""

    def __init__(self) -> None:
        self.cos: list[float] = []
        self.disp: list[np.ndarray] = []
        self.valid: list[np.ndarray] = []
        self.score_diff: list[np.ndarray] = []

    def add(self, test: np.ndarray, ref: np.ndarray, size_wh: tuple[int, int], keypoints: bool = True) -> None:
        """Compare heatmaps [1,K,H,W] ``test`` with ``ref`` (keypoints decoded at crop size ``size_wh``)."""
        self.cos.append(cosine(test, ref))
        if keypoints:
            d, s, v = _kp_dist(test, ref, size_wh)
            self.disp.append(d)
            self.score_diff.append(s)
            self.valid.append(v)

    def summary(self, heatmap_px: float, cosine_key: str = "heatmap_cosine") -> dict[str, Any]:
        out: dict[str, Any] = {cosine_key: summary_stats(self.cos)}
        if self.disp:
            out["keypoint_displacement"] = displacement_stats(np.concatenate(self.disp), heatmap_px,
                                                              np.concatenate(self.valid))
        return out


def _kp_dist(a: np.ndarray, b: np.ndarray, size_wh: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(displacement [K] crop px, |score diff| [K], valid [K]: reference ``b`` has a positive peak)."""
    ka, sa = decode_heatmaps(a, input_size=size_wh)
    kb, sb = decode_heatmaps(b, input_size=size_wh)
    sb = np.asarray(sb).ravel()
    dist = np.linalg.norm(np.asarray(ka) - np.asarray(kb), axis=-1).ravel()
    return dist, np.abs(np.asarray(sa).ravel() - sb), np.isfinite(sb) & (sb > 0)


def _reference_pass(core: ov.Core, ref: ModelFolder, crops: Iterable[np.ndarray]
                    ) -> list[tuple[np.ndarray | None, np.ndarray]]:
    """Pass 1: the FP32 reference (f32 hint); (latent [1,4,h,w] or None for a fused reference, heatmaps
    [1,K,H/4,W/4]) per crop."""
    split_ref = ref.has("vae_encoder") and ref.has("pose")
    ref_out: list[tuple[np.ndarray | None, np.ndarray]] = []
    r = FolderChain(ref, core, ["vae_encoder", "pose"] if split_ref else ["vae_pose"])
    for crop in crops:
        if split_ref:
            lat = r.run("vae_encoder", crop)
            ref_out.append((lat, r.run("pose", lat)))
        else:
            ref_out.append((None, r.run("vae_pose", crop)))
    del r
    gc.collect()
    return ref_out


def _folder_pass(core: ov.Core, folder: ModelFolder, kinds: Sequence[str], crops: Iterable[np.ndarray],
                 ref_out: Sequence[tuple[np.ndarray | None, np.ndarray]], size_wh: tuple[int, int]
                 ) -> dict[str, _Tally]:
    """Pass 2: the folder under test (f32 hint): per component (the FP32 latent into its pose IR) and end to
    end (its own chain)."""
    tallies = {k: _Tally() for k in (*POSE_KINDS, "end_to_end")}
    q = FolderChain(folder, core, _pose_kinds(folder))
    for n, (crop, (lat_r, hm_r)) in enumerate(zip(crops, ref_out), start=1):
        if "vae_encoder" in kinds and lat_r is not None:
            tallies["vae_encoder"].add(q.run("vae_encoder", crop), lat_r, size_wh, keypoints=False)
        if "pose" in kinds and lat_r is not None:
            tallies["pose"].add(q.run("pose", lat_r), hm_r, size_wh)
        if "vae_pose" in kinds:
            tallies["vae_pose"].add(q.run("vae_pose", crop), hm_r, size_wh)
        tallies["end_to_end"].add(q.run_chain(folder.kinds, crop), hm_r, size_wh)
        logger.info("fidelity: held-out crop %d/%d: end-to-end heatmap cosine %.5f", n, len(ref_out),
                    tallies["end_to_end"].cos[-1])
    del q
    gc.collect()
    return tallies


def _baseline_pass(core: ov.Core, ref: ModelFolder, crops: Iterable[np.ndarray],
                   ref_out: Sequence[tuple[np.ndarray | None, np.ndarray]], size_wh: tuple[int, int]) -> _Tally:
    """Pass 3: what the CPU's default bf16 execution of the FP32 IRs alone changes (same metrics)."""
    tally = _Tally()
    r16 = FolderChain(ref, core, ref.kinds, hint=BASELINE_HINT)
    for crop, (_, hm_r) in zip(crops, ref_out):
        tally.add(r16.run_chain(ref.kinds, crop), hm_r, size_wh)
    del r16
    return tally


def pose_fidelity(core: ov.Core, folder: ModelFolder, ref: ModelFolder, cset: Any, held_idx: Sequence[int],
                  size_wh: tuple[int, int], heatmap_px: float, components: dict[str, Any],
                  bf16: bool = True) -> dict[str, Any]:
    """Three passes over the held-out crops, one compiled chain alive at a time (bounds memory at full size):
    FP32 reference (f32 hint; latents and heatmaps kept: [1,4,h,w] + [1,K,H/4,W/4] per crop), the folder
    under test (f32 hint), then, where the CPU has bf16 (``bf16``), the FP32 reference with the bf16 hint
    (baseline). Writes each component's ``fidelity`` into ``components``; returns the end-to-end section."""
    kinds = [k for k in _pose_kinds(folder) if ref.has(k)]
    ref_out = _reference_pass(core, ref, iter_crops(cset, held_idx, size_wh))
    tallies = _folder_pass(core, folder, kinds, iter_crops(cset, held_idx, size_wh), ref_out, size_wh)
    if tallies["vae_encoder"].cos:
        components["vae_encoder"]["fidelity"] = tallies["vae_encoder"].summary(heatmap_px, "latent_cosine")
    for kind in ("pose", "vae_pose"):
        if tallies[kind].cos:
            components[kind]["fidelity"] = dict(tallies[kind].summary(heatmap_px),
                                                input="FP32 latent" if kind == "pose" else "crop")
    e2e = tallies["end_to_end"]
    out: dict[str, Any] = {"held_out_crops": len(ref_out), "heatmap_px": heatmap_px, "input_size_wh": list(size_wh)}
    out["end_to_end"] = {"chain": folder.chain, **e2e.summary(heatmap_px),
                         "score_abs_diff_mean": float(np.concatenate(e2e.score_diff).mean())}
    if not bf16:
        out["reference_bf16_baseline"] = {"status": "bf16 is not supported on this CPU: OpenVINO runs the FP32 "
                                                    "IRs in f32 here, so there is no bf16 baseline"}
        return out
    base = _baseline_pass(core, ref, iter_crops(cset, held_idx, size_wh), ref_out, size_wh)
    out["reference_bf16_baseline"] = {
        "what": f"the FP32 reference IRs compiled with INFERENCE_PRECISION_HINT={BASELINE_HINT} vs {FIDELITY_HINT} "
                "(no quantization): the error the CPU's default bf16 execution alone makes",
        **base.summary(heatmap_px)}
    return out


def detector_fidelity(core: ov.Core, folder: ModelFolder, ref: ModelFolder, cset: Any,
                       held_out: int) -> dict[str, Any]:
    from edge_runtime.model.detector import PersonDetector

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
