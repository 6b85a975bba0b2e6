"""Calibration data of a conversion: the deterministic split of a calibration set into calibration and held-out
crops (and detector frames), lazy readers of both, and the calibration inputs of each component kind.

The split is by content hash (sha256 of each crop, from the manifest), so the same set and ``held_out`` give
the same split on every machine; :func:`calibration_record` is what reports and rt_info record about it.
Per component: the VAE encoder (and the fused vae_pose) calibrate on crops, the pose IR on the latents the FP32
VAE encoder makes of them (:func:`capture_component_inputs`), the detector on letterboxed frames
(:func:`detector_calibration`); :func:`component_calibration` picks the right one.
"""
from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from convert.quantize import CALIBRATED_MODES, QuantizeOptions, Reiterable
from edge_runtime.errors import InputError, SDPoseError

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- split

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


# ---------------------------------------------------------------------------------------------- per component

def open_calibration(calib: str | Path) -> Any:
    from calib_data import load_calibration_set

    path = Path(calib)
    if path.is_dir() and not any(path.iterdir()):
        raise InputError(f"--calib {path}: the calibration folder is empty (build one with `sdpose-convert calib "
                         "--images DIR --out calib_data/NAME`, or use calib_data/default)")
    cset = load_calibration_set(calib)
    if len(cset.crop_records) == 0:
        raise InputError(f"--calib {path}: the calibration set has no crops")
    return cset


def capture_component_inputs(fp32_folder: Path, kind: str, images: Iterator[Any], limit: int,
                             hint: str) -> list[Any]:
    """Run the FP32 chain up to component ``kind`` and collect the inputs ``kind`` receives.

    ``images``: crops u8 [1,H,W,3]. For ``pose`` this is crop -> FP32 VAE encoder IR -> latent f32
    [1,4,H/8,W/8]; at most ``limit`` inputs are collected (one per crop).
    """
    from edge_runtime.model.chain import ChainRunner
    from edge_runtime.model.models import CompileOptions, ModelFolder, compile_model

    chains = {"pose": "split", "vae_encoder": "split", "vae_pose": "fused"}
    folder = ModelFolder(fp32_folder, chain=chains.get(kind))
    kinds = list(folder.kinds)
    if kind not in kinds:
        raise SDPoseError(f"{fp32_folder}: chain {kinds} has no component '{kind}'")
    before = kinds[: kinds.index(kind)]
    options = CompileOptions(performance_hint="LATENCY", inference_precision=hint, cache_dir=None)
    runner = ChainRunner.of({k: compile_model(folder.core, folder.read_model(k), options) for k in before}) \
        if before else None
    collected: list[Any] = []
    for image in images:
        if len(collected) >= limit:
            break
        collected.append(image.copy() if runner is None else runner.run(image))
        logger.info("captured %s input %d/%d %s", kind, len(collected), limit, tuple(collected[-1].shape))
    return collected


def detector_calibration(model: Any, cset: Any, subset_size: int, held_out: int,
                         options: QuantizeOptions) -> tuple[Reiterable, QuantizeOptions]:
    """Calibration inputs (letterboxed frames of the calibration split, at most ``subset_size``) and options
    (+ the ignored box-decoding tail) for the detector IR ``model``."""
    from convert.detector import detector_calibration_inputs, detector_ignored_scope

    imgsz = int(model.inputs[0].get_partial_shape()[1].get_length())
    scope = detector_ignored_scope(model)
    options = dataclasses.replace(options, ignored_names=tuple(options.ignored_names) + tuple(scope.names),
                                  ignored_types=tuple(options.ignored_types) + tuple(scope.types))
    n_sub = subset_size
    frame_idx, _ = split_frames(cset, held_out)
    if frame_idx:
        n = min(n_sub, len(frame_idx))
        return Reiterable(lambda: detector_calibration_inputs(iter_frames(cset, frame_idx[:n]), imgsz), n), options
    logger.warning("calibration set %s has no frames: the detector is calibrated on the person crops", cset.path)
    calib_idx, _ = split_calibration(cset, held_out)
    n = min(n_sub, len(calib_idx))
    return Reiterable(lambda: detector_calibration_inputs(
        (c[0] for c in iter_crops(cset, calib_idx[:n], cset.input_size)), imgsz), n), options


@dataclasses.dataclass
class CalibrationPlan:
    """What one conversion calibrates on: the set, its calibration crop indices (manifest order), the crop size
    (w, h) and the held-out count, and the pose IR's captured inputs (None until captured)."""

    cset: Any
    calib_idx: list[int]
    size_wh: tuple[int, int]
    held_out: int
    latents: "list[np.ndarray] | None" = None


def component_calibration(kind: str, model: Any, mode: str, subset_size: int, options: QuantizeOptions,
                          plan: "CalibrationPlan | None") -> tuple[Any, QuantizeOptions]:
    """(calibration data, options) of component ``kind`` for precision ``mode``: None for modes that need no
    calibration; letterboxed frames for the detector; the captured latents for the pose IR; crops u8
    [1,h,w,3] (streamed, at most ``subset_size``) for the VAE encoder and the fused vae_pose."""
    if mode not in CALIBRATED_MODES or plan is None:
        return None, options
    if kind == "detector":
        return detector_calibration(model, plan.cset, subset_size, plan.held_out, options)
    if kind == "pose":
        return plan.latents, options
    n = min(subset_size, len(plan.calib_idx))
    return Reiterable(lambda: iter_crops(plan.cset, plan.calib_idx[:n], plan.size_wh), n), options
