"""``sdpose-convert validate VARIANT --against FULL_FP32``: how far a cheaper variant is from the full model.

A variant (another crop-size preset, attention token downsampling, INT8, or any mix) is compared with the
full-resolution FP32 export of the same checkpoint, on the crops of a calibration set (their person boxes
are in the manifest):

* **keypoint displacement in image px**: each folder sees the same person box at its own input size (the
  stored crop rescaled with the UDP alignment the runtime's warp uses), decodes with the runtime's decoder
  and maps its keypoints back to the image with the runtime's mapping, so different input sizes compare.
  Reported as px (mean, median, p95, max), relative to the box's longer side, and as ``agreement_pck``: the
  share of keypoints within ``alpha`` (0.05) x the box's longer side of the full model's keypoint — PCK with
  the full model as ground truth. Keypoints whose full-model channel has no positive peak are excluded.
* **heatmap agreement**: the variant's heatmaps resized to the full model's heatmap size (corner-aligned, as
  UDP) and compared per crop: cosine, and the mean over channels of the Pearson correlation. Only when both
  inputs have the same aspect (then both heatmaps cover the same image region).
* per-crop compute time of each folder during the comparison (f32 hint, batch 1, first crop excluded).

Both folders are compiled with ``INFERENCE_PRECISION_HINT=f32``. The result goes into ``VARIANT/report.json``
(section ``against_full``, next to any conversion report already there) and ``report.md``.
On a synthetic (random-weight) checkpoint these figures measure how much the variant changes a random
network's output, not pose accuracy; on the released weights they are the agreement a user can check.
"""
from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import openvino as ov

from convert.fidelity import FolderChain, cosine, summary_stats
from convert.report import REPORT_JSON, REPORT_MD, REPORT_VERSION
from convert.report import render_markdown as render_fidelity
from edge_runtime.model.attention import attention_fusion as runtime_attention_fusion
from edge_runtime.model.codec import decode_heatmaps
from edge_runtime.errors import InputError
from edge_runtime.model.geometry import DEFAULT_PADDING, keypoints_to_image
from edge_runtime.model.models import ModelFolder

logger = logging.getLogger(__name__)

SECTION = "against_full"
DEFAULT_ALPHA = 0.05
#: the fields of a folder's pose metadata the report records
_VARIANT_FIELDS = ("preset", "input_height", "input_width", "heatmap_height", "heatmap_width", "token_downsample",
                   "token_downsample_levels", "vae_token_downsample", "precision", "quantized")


def udp_resize(image: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Resize ``image`` [h,w,...] to ``size_wh`` with corners aligned (pixel 0 -> 0, w-1 -> W-1), the
    alignment of the UDP crop and heatmap frames; bilinear, as the runtime's warp."""
    h, w = image.shape[:2]
    tw, th = int(size_wh[0]), int(size_wh[1])
    if (w, h) == (tw, th):
        return image
    matrix = np.array([[(tw - 1) / max(w - 1, 1), 0, 0], [0, (th - 1) / max(h - 1, 1), 0]], np.float64)
    return cv2.warpAffine(image, matrix, (tw, th), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def resize_heatmaps(heatmaps: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """[K,h,w] -> [K,H,W] (``size_wh`` = (W, H)), corner-aligned bilinear per channel."""
    return np.stack([udp_resize(np.ascontiguousarray(c), size_wh) for c in heatmaps])


def channel_correlation(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over channels of the Pearson correlation of [K,H,W] heatmaps (a flat channel counts as 0)."""
    a = a.reshape(a.shape[0], -1).astype(np.float64)
    b = b.reshape(b.shape[0], -1).astype(np.float64)
    a = a - a.mean(1, keepdims=True)
    b = b - b.mean(1, keepdims=True)
    den = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    corr = np.where(den > 0, (a * b).sum(1) / np.where(den > 0, den, 1), 0.0)
    return float(corr.mean())


class _CropChain:
    """One folder's crop -> heatmaps chain (:class:`convert.fidelity.FolderChain`, f32 hint, batch 1) and the
    sizes it works at."""

    def __init__(self, folder: ModelFolder, core: ov.Core) -> None:
        info = folder.pose_info
        self.input_wh, self.heatmap_wh = info.input_size_wh, info.heatmap_size_wh
        self.kinds = folder.kinds
        self.chain = FolderChain(folder, core, self.kinds)
        folder.release()

    def __call__(self, crop: np.ndarray) -> np.ndarray:
        """crop [h,w,3] u8 BGR at this folder's input size -> heatmaps [K,H/4,W/4]."""
        return self.chain.run_chain(self.kinds, crop[None])[0]


def _variant_info(folder: ModelFolder) -> dict[str, Any]:
    meta = folder.pose_meta
    info = {k: meta.get(k) for k in _VARIANT_FIELDS}
    info["token_downsample"] = int(info["token_downsample"] or 1)
    info["vae_token_downsample"] = int(info["vae_token_downsample"] or 1)
    info["path"] = str(folder.path.resolve())
    info["chain"] = folder.chain
    return info


def _check_pair(variant: ModelFolder, full: ModelFolder) -> None:
    vm, fm = variant.pose_meta, full.pose_meta
    for key in ("checkpoint_sha256", "num_keypoints", "scheme"):
        if vm.get(key) != fm.get(key):
            raise InputError(f"--against {full.path}: {key}={fm.get(key)!r} differs from {variant.path}: "
                             f"{vm.get(key)!r}; compare variants of the same checkpoint")
    for kind in full.kinds:
        meta = full.metadata(kind)
        if meta.get("quantized") or meta.get("precision") != "fp32":
            raise InputError(f"--against {full.path}: component {kind} is {meta.get('precision')} "
                             f"(quantized={meta.get('quantized')}); the reference must be an FP32 export")
    for key, what in (("token_downsample", "token downsampling"),
                      ("vae_token_downsample", "VAE encoder token downsampling")):
        if int(fm.get(key, 1)) != 1:
            raise InputError(f"--against {full.path}: the reference uses {what} x{fm.get(key)} ({key}); export "
                             f"it without --{key.replace('_', '-')}")


def compare_variant(variant: str | Path, full: str | Path, calib: str | Path = "default", limit: int | None = None,
                    alpha: float = DEFAULT_ALPHA) -> dict[str, Any]:
    """Agreement of model folder ``variant`` with the full-resolution FP32 folder ``full`` (module docstring).

    calib: calibration set whose crops and boxes are used (``limit``: at most this many crops).
    Returns the ``against_full`` report section.
    """
    from calib_data import load_calibration_set

    from edge_runtime.model.cpu import cpu_info

    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise InputError(f"--limit: expected an integer >= 1, got {limit!r}")
    if not 0 < alpha < 1:
        raise InputError(f"--alpha: expected a number in (0, 1), got {alpha!r}")
    core = ov.Core()
    vfolder, ffolder = ModelFolder(Path(variant), core=core), ModelFolder(Path(full), core=core)
    _check_pair(vfolder, ffolder)
    section: dict[str, Any] = {"variant": _variant_info(vfolder), "full": _variant_info(ffolder)}
    cset = load_calibration_set(calib)
    padding_set = float((cset.manifest.get("params") or {}).get("padding", DEFAULT_PADDING))
    records = cset.crop_records[:limit]
    chains = {"variant": _CropChain(vfolder, core), "full": _CropChain(ffolder, core)}
    same_aspect = abs(chains["variant"].input_wh[0] / chains["variant"].input_wh[1]
                      - chains["full"].input_wh[0] / chains["full"].input_wh[1]) < 1e-3
    disp_px, disp_rel, cos, corr = [], [], [], []
    excluded = 0
    seconds: dict[str, list[float]] = {"variant": [], "full": []}
    used = 0
    for n, (rec, stored) in enumerate(zip(records, cset.crops(limit=len(records)))):
        box = rec.get("box")
        if not (isinstance(box, list) and len(box) == 4):
            logger.warning("%s: crop %s has no person box in the manifest; skipped", cset.path, rec.get("file"))
            continue
        box = np.asarray(box, np.float64)
        out: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
        for name, chain in chains.items():
            crop = np.ascontiguousarray(udp_resize(stored, chain.input_wh))
            t0 = time.perf_counter()
            heat = chain(crop)
            if n > 0:
                seconds[name].append(time.perf_counter() - t0)
            kpts, scores = decode_heatmaps(heat[None], input_size=chain.input_wh)
            # the crops of the set were cut with the set's padding: map back with it
            image_kpts = keypoints_to_image(np.asarray(kpts)[0], box, input_size=chain.input_wh, padding=padding_set)
            out[name] = (heat, image_kpts, np.asarray(scores)[0])
        valid = np.isfinite(out["full"][2]) & (out["full"][2] > 0)
        excluded += int((~valid).sum())
        size = float(max(box[2] - box[0], box[3] - box[1]))
        dist = np.linalg.norm(out["variant"][1] - out["full"][1], axis=-1)[valid]
        disp_px.extend(dist.tolist())
        disp_rel.extend((dist / size).tolist())
        if same_aspect:
            resized = resize_heatmaps(out["variant"][0], chains["full"].heatmap_wh)
            cos.append(cosine(resized, out["full"][0]))
            corr.append(channel_correlation(resized, out["full"][0]))
        used += 1
        logger.info("against full: crop %d/%d: keypoint displacement mean %.2f image px", n + 1, len(records),
                    float(dist.mean()) if dist.size else float("nan"))
    if used == 0 or not disp_px:
        raise InputError(f"calibration set {cset.path}: no crop with a person box and a keypoint to compare")
    d = np.asarray(disp_px)
    rel = np.asarray(disp_rel)
    section.update({
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "calibration_set": {"name": cset.name, "path": str(cset.path), "crops": used, "padding": padding_set},
        "compile": {"inference_precision_hint": "f32", "batch": 1, "device": "CPU"},
        "cpu": cpu_info(core).to_dict(),
        "keypoint_displacement": {
            "frame": "image px (each folder's keypoints mapped back to the source image)",
            "mean_px": float(d.mean()), "median_px": float(np.median(d)), "p95_px": float(np.percentile(d, 95)),
            "max_px": float(d.max()), "mean_rel_box": float(rel.mean()), "count": int(d.size),
            "excluded": excluded},
        "agreement_pck": {"alpha": alpha, "share": float((rel <= alpha).mean()),
                          "what": f"share of keypoints within {alpha} x the box's longer side of the full "
                                  "model's keypoint"},
        "heatmap_agreement": ({"resized_to_hw": list(chains["full"].heatmap_wh[::-1]), "cosine": summary_stats(cos),
                               "channel_correlation": summary_stats(corr)} if same_aspect else
                              {"status": "skipped: the input aspects differ, the heatmaps cover different regions"}),
        "seconds_per_crop": {k: (float(np.median(v)) if v else None) for k, v in seconds.items()},
        "notes": ["On a synthetic (random-weight) checkpoint this measures how much the variant changes a random "
                  "network's output, not pose accuracy."],
    })
    return section


def render_markdown(section: dict[str, Any]) -> str:
    """The ``against_full`` section as Markdown."""
    v, f = section["variant"], section["full"]
    kd, pck = section["keypoint_displacement"], section["agreement_pck"]
    lines = ["## Agreement with the full-resolution FP32 model", "",
             f"Variant: {v['input_height']}x{v['input_width']} (preset {v.get('preset')}), token downsampling "
             f"x{v['token_downsample']} {v.get('token_downsample_levels') or ''}, VAE encoder token downsampling "
             f"x{v.get('vae_token_downsample') or 1}, {v.get('precision')}; full: "
             f"{f['input_height']}x{f['input_width']} FP32 (`{f['path']}`).",
             f"Crops: {section['calibration_set']['crops']} from `{section['calibration_set']['name']}`; both "
             f"compiled with the f32 hint on {section['cpu'].get('name', 'this CPU')}.", "",
             "| metric | value |", "|---|---|",
             f"| keypoint displacement, mean / median / p95 / max (image px) | {kd['mean_px']:.2f} / "
             f"{kd['median_px']:.2f} / {kd['p95_px']:.2f} / {kd['max_px']:.2f} |",
             f"| displacement / box size, mean | {kd['mean_rel_box']:.4f} |",
             f"| agreement PCK@{pck['alpha']} (full model = ground truth) | {100 * pck['share']:.1f} % |"]
    ha = section["heatmap_agreement"]
    if "cosine" in ha:
        lines.append(f"| heatmap cosine (resized to {ha['resized_to_hw'][0]}x{ha['resized_to_hw'][1]}), mean | "
                     f"{ha['cosine']['mean']:.4f} |")
        lines.append(f"| heatmap channel correlation, mean | {ha['channel_correlation']['mean']:.4f} |")
    sec = section["seconds_per_crop"]
    if sec.get("variant") and sec.get("full"):
        lines.append(f"| seconds per crop, variant / full (f32 hint) | {sec['variant']:.3f} / {sec['full']:.3f} |")
    lines += ["", *[f"- {n}" for n in section.get("notes", [])]]
    return "\n".join(lines) + "\n"


def write_against_report(variant: str | Path, section: dict[str, Any]) -> tuple[Path, Path]:
    """Store ``section`` as ``against_full`` in ``VARIANT/report.json`` (keeping a conversion report already
    there) and write ``report.md``; a report.json that is not a JSON object is an error, not overwritten."""
    folder = Path(variant)
    js, md = folder / REPORT_JSON, folder / REPORT_MD
    report: dict[str, Any] = {"format_version": REPORT_VERSION}
    if js.is_file():
        try:
            report = json.loads(js.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(f"{js}: the existing report is not readable JSON ({exc}); move it away to write a "
                             "new one") from exc
        if not isinstance(report, dict):
            raise InputError(f"{js}: the existing report is not a JSON object; move it away to write a new one")
    report[SECTION] = section
    js.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    text = render_markdown(section)
    if {"models", "components"} <= report.keys():  # a conversion / fidelity report: keep it, then the agreement
        text = render_fidelity(report) + "\n" + text
    md.write_text(text, encoding="utf-8")
    logger.info("wrote %s and %s", js, md)
    return js, md


def attention_fusion(model: ov.Model, compiled: ov.CompiledModel) -> dict[str, Any]:
    """Does the CPU plugin still fuse attention? :func:`edge_runtime.model.attention.attention_fusion` as a dict
    (``attention_ops``, ``fused``, ``fused_by_node``, ``runtime_precisions``, ``unfused_softmax``)."""
    return runtime_attention_fusion(model, compiled).to_dict()
