"""Top-down crop geometry, reproducing mmpose 1.3.2 exactly (numpy/OpenCV only).

The pipeline mmpose runs for one person box, and its inverse:

1. ``GetBBoxCenterScale(padding=1.25)`` -> ``bbox_xyxy2cs``: center = box middle,
   scale = box size * padding (image px).
2. ``TopdownAffine(input_size=(w, h), use_udp=True)``: the scale is reshaped to the
   input aspect ratio ``w / h`` (``_fix_aspect_ratio``, never shrinks a side), then
   ``get_udp_warp_matrix(center, scale, rot=0, output_size=(w, h))`` gives the 2x3
   image->crop matrix and ``cv2.warpAffine(img, M, (w, h), flags=INTER_LINEAR)``
   makes the crop (default constant-zero border).
3. After decoding, ``TopdownPoseEstimator.add_pred_to_datasample`` maps keypoints
   back: ``kpts / input_size * scale + center - 0.5 * scale`` (aspect-fixed scale).

Coordinate frames used in this package:

* **image px**: pixel coordinates of the full frame (x right, y down, pixel centres on
  integers, as OpenCV).
* **crop px** (UDP warp frame): pixel coordinates of the ``w x h`` model input made by
  :func:`warp_crop`; ``udp_warp_matrix`` maps image px to this frame. The box edges
  ``center -/+ scale/2`` land on crop px 0 and ``w - 1`` (resp. ``h - 1``).
* **decoded crop-input px**: what :func:`edge_runtime.model.codec.decode_heatmaps` returns
  (mmpose's ``UDPHeatmap.decode`` frame). mmpose encodes its training targets with
  the factor ``(w - 1) / (W - 1)`` but decodes with ``w / (W - 1)``, so a point at crop
  px ``u`` decodes to ``u * w / (w - 1)``. ``keypoints_to_image`` divides by ``w`` (not
  ``w - 1``), which cancels that factor exactly: image -> crop -> heatmap -> decode ->
  image is the identity. Feed :func:`keypoints_to_image` decoded keypoints, not raw
  UDP-warp crop px (for those it is off by ``u * scale / (w * (w - 1))`` image px, at
  most one crop pixel, which is mmpose's own behaviour).

Sizes are always ``(w, h)`` tuples (OpenCV / mmpose order); arrays are ``[H, W]``.
Degenerate boxes: a box with zero width *or* zero height is accepted (mmpose's aspect
fix grows the missing side from the other one); a box with ``x2 < x1`` or ``y2 < y1``,
non-finite coordinates, or zero width *and* height raises :class:`InputError`.
"""
from __future__ import annotations

import math
import re

import cv2
import numpy as np

from edge_runtime.errors import InputError

#: Model input size (w, h) of SDPose (1024x768 HxW).
DEFAULT_INPUT_SIZE = (768, 1024)
#: mmpose GetBBoxCenterScale padding.
DEFAULT_PADDING = 1.25

__all__ = [
    "parse_size_hw",
    "check_boxes_xyxy",
    "DEFAULT_INPUT_SIZE",
    "DEFAULT_PADDING",
    "bbox_xyxy_to_center_scale",
    "fix_aspect_ratio",
    "keypoints_to_image",
    "keypoints_to_image_cs",
    "udp_warp_matrix",
    "udp_warp_matrix_cs",
    "warp_crop",
]


# --------------------------------------------------------------------------- checks
def parse_size_hw(text, where: str = "--input-size", multiple: int = 8) -> tuple[int, int]:
    """THE parser of sizes written as text: ``'HxW'`` (e.g. ``'1024x768'``; ``X`` and spaces accepted) or a
    two-item [H, W] list (YAML) -> ``(H, W)`` px. Note the order: sizes are *written* HxW everywhere (CLI,
    YAML, reports), while the geometry functions take ``(w, h)`` tuples named ``*_wh`` / ``input_size``.

    InputError naming ``where`` unless both are positive multiples of ``multiple`` (8 for model inputs: the
    VAE latent is 1/8 of the crop).
    """
    if isinstance(text, (list, tuple)) and len(text) == 2:
        text = f"{text[0]}x{text[1]}"
    match = re.fullmatch(r"\s*(\d+)\s*[xX]\s*(\d+)\s*", str(text))
    if not match:
        raise InputError(f"{where} {text!r} is malformed: expected HxW, e.g. 1024x768")
    h, w = int(match.group(1)), int(match.group(2))
    if h <= 0 or w <= 0 or h % multiple or w % multiple:
        rule = f"positive multiples of {multiple} (the VAE latent is 1/8 of the crop)" if multiple == 8 else \
            f"positive multiples of {multiple}"
        raise InputError(f"{where}: input size {h}x{w} (HxW) is invalid: height and width must be {rule}")
    return h, w


def _check_size(input_size, name: str = "input_size") -> tuple[int, int]:
    """Validate a ``(w, h)`` size of positive ints (>= 2, UDP divides by ``w - 1``)."""
    try:
        w, h = input_size
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a (w, h) pair of ints, got {input_size!r}") from None
    for v in (w, h):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 2:
            raise InputError(f"{name}: expected a (w, h) pair of ints >= 2, got {input_size!r}")
    return int(w), int(h)


def check_padding(padding) -> float:
    """THE padding check: a positive finite number -> float; InputError otherwise."""
    try:
        p = float(padding)
    except (TypeError, ValueError):
        raise InputError(f"padding: expected a positive number, got {padding!r}") from None
    if not math.isfinite(p) or p <= 0:
        raise InputError(f"padding: expected a positive finite number, got {padding!r}")
    return p


def _as_float_array(value, name: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError(f"{name}: expected a numeric array, got {type(value).__name__}") from None
    return arr


def check_boxes_xyxy(bbox_xyxy, name: str = "bbox_xyxy", allow_score: bool = False) -> np.ndarray:
    """THE box check: float64 ``[4]`` or ``[N,4]`` (x1, y1, x2, y2 image px), finite, x2 >= x1, y2 >= y1 and
    not both sides zero; InputError naming ``name`` otherwise. ``allow_score``: also accept a fifth (score)
    column, dropped."""
    boxes = _as_float_array(bbox_xyxy, name)
    if allow_score and boxes.ndim in (1, 2) and boxes.shape[-1] == 5:
        boxes = boxes[..., :4]
    if boxes.ndim not in (1, 2) or boxes.shape[-1] != 4:
        expected = ("[N,4] or [N,5] (x1, y1, x2, y2[, score]) in image px" if allow_score else
                    "shape [4] or [N,4] (x1, y1, x2, y2 image px; drop any score column)")
        raise InputError(f"{name}: expected {expected}, got shape {boxes.shape}")
    if not np.isfinite(boxes).all():
        raise InputError(f"{name}: coordinates must be finite (NaN/inf found), got {boxes.tolist()}")
    b = boxes.reshape(-1, 4)
    bad = (b[:, 2] < b[:, 0]) | (b[:, 3] < b[:, 1]) | ((b[:, 2] == b[:, 0]) & (b[:, 3] == b[:, 1]))
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise InputError(f"{name}: box {i} {b[i].tolist()} needs x2 >= x1, y2 >= y1 and a non-zero size")
    return boxes



def _check_center_scale(center, scale) -> tuple[np.ndarray, np.ndarray]:
    c = _as_float_array(center, "center")
    s = _as_float_array(scale, "scale")
    if c.ndim not in (1, 2) or c.shape[-1] != 2:
        raise InputError(f"center: expected shape [2] or [N,2] (x, y image px), got {c.shape}")
    if s.shape != c.shape:
        raise InputError(f"scale: expected the shape of center {c.shape}, got {s.shape}")
    if not (np.isfinite(c).all() and np.isfinite(s).all()):
        raise InputError("center/scale: values must be finite")
    if (s < 0).any() or (s.reshape(-1, 2).max(axis=1) <= 0).any():
        raise InputError(f"scale: expected (w, h) >= 0 with at least one side > 0, got {s.tolist()}")
    return c, s


# --------------------------------------------------------------------------- center/scale
def bbox_xyxy_to_center_scale(bbox_xyxy, padding: float = DEFAULT_PADDING):
    """mmpose ``GetBBoxCenterScale`` / ``bbox_xyxy2cs``.

    Args:
        bbox_xyxy: ``[4]`` or ``[N,4]`` boxes (x1, y1, x2, y2) in image px.
        padding: factor applied to the box size (mmpose default 1.25).

    Returns:
        ``(center, scale)``, float64 ``[2]`` / ``[N,2]`` each, image px: center (x, y)
        and scale (w, h) = box size * padding (not yet aspect-fixed).
    """
    boxes = check_boxes_xyxy(bbox_xyxy)
    p = check_padding(padding)
    center = np.stack([boxes[..., 0] + boxes[..., 2], boxes[..., 1] + boxes[..., 3]], axis=-1) * 0.5
    scale = np.stack([boxes[..., 2] - boxes[..., 0], boxes[..., 3] - boxes[..., 1]], axis=-1) * p
    return center, scale


def fix_aspect_ratio(scale, aspect_ratio: float) -> np.ndarray:
    """mmpose ``TopdownAffine._fix_aspect_ratio``: grow one side to reach ``w / h``.

    Args:
        scale: ``[2]`` or ``[N,2]`` (w, h) image px.
        aspect_ratio: target ``w / h`` (the model input's ``w / h``).

    Returns:
        float64 scale of the same shape: ``(w, w / ar)`` if ``w > h * ar`` else ``(h * ar, h)``.
        Idempotent (up to float rounding), so an already fixed scale may be passed again.
    """
    s = _as_float_array(scale, "scale")
    if s.ndim not in (1, 2) or s.shape[-1] != 2:
        raise InputError(f"scale: expected shape [2] or [N,2] (w, h), got {s.shape}")
    ar = float(aspect_ratio)
    if not math.isfinite(ar) or ar <= 0:
        raise InputError(f"aspect_ratio: expected a positive finite number, got {aspect_ratio!r}")
    w = s[..., 0:1]
    h = s[..., 1:2]
    return np.where(w > h * ar, np.concatenate([w, w / ar], axis=-1), np.concatenate([h * ar, h], axis=-1))


# --------------------------------------------------------------------------- warp matrix
def _udp_matrix_from_fixed(center: np.ndarray, scale: np.ndarray, w: int, h: int) -> np.ndarray:
    """get_udp_warp_matrix with rot=0 for ``[N,2]`` center/fixed scale -> float32 ``[N,2,3]``.

    With rot = 0: ``u = (w-1)/s_w * (x - c_x + s_w/2)`` and likewise for y.
    """
    sx = (w - 1) / scale[:, 0]
    sy = (h - 1) / scale[:, 1]
    mats = np.zeros((center.shape[0], 2, 3), dtype=np.float64)
    mats[:, 0, 0] = sx
    mats[:, 0, 2] = sx * (-center[:, 0] + 0.5 * scale[:, 0])
    mats[:, 1, 1] = sy
    mats[:, 1, 2] = sy * (-center[:, 1] + 0.5 * scale[:, 1])
    # mmpose stores the matrix in a float32 array; cv2.warpAffine receives exactly that.
    return mats.astype(np.float32)


def udp_warp_matrix_cs(center, scale, input_size=DEFAULT_INPUT_SIZE) -> np.ndarray:
    """UDP image->crop matrix from center/scale (mmpose ``TopdownAffine(use_udp=True)``, rot 0).

    Args:
        center: ``[2]`` or ``[N,2]`` box centre (x, y), image px.
        scale: same shape, (w, h) image px, raw or already aspect-fixed (the fix to
            ``w / h`` of ``input_size`` is applied here; it is idempotent).
        input_size: model input ``(w, h)`` px.

    Returns:
        float32 ``[2,3]`` (or ``[N,2,3]``) matrix mapping image px -> crop px.
    """
    w, h = _check_size(input_size)
    c, s = _check_center_scale(center, scale)
    single = c.ndim == 1
    fixed = fix_aspect_ratio(s.reshape(-1, 2), w / h)
    mats = _udp_matrix_from_fixed(c.reshape(-1, 2), fixed, w, h)
    return mats[0] if single else mats


def udp_warp_matrix(bbox_xyxy, input_size=DEFAULT_INPUT_SIZE, padding: float = DEFAULT_PADDING) -> np.ndarray:
    """Image->crop affine matrix: mmpose GetBBoxCenterScale + TopdownAffine(use_udp=True).

    Args:
        bbox_xyxy: ``[4]`` (or ``[N,4]``) box x1, y1, x2, y2 in image px.
        input_size: model input ``(w, h)`` px (default 768x1024).
        padding: GetBBoxCenterScale padding (default 1.25).

    Returns:
        float32 ``[2,3]`` (``[N,2,3]`` for ``[N,4]``): ``crop_px = M @ [x, y, 1]``.
    """
    center, scale = bbox_xyxy_to_center_scale(bbox_xyxy, padding)
    return udp_warp_matrix_cs(center, scale, input_size)


def warp_crop(image, matrix, input_size=DEFAULT_INPUT_SIZE) -> np.ndarray:
    """Cut the model input out of ``image`` as mmpose TopdownAffine does.

    ``cv2.warpAffine(image, matrix, (w, h), flags=cv2.INTER_LINEAR)`` with OpenCV's
    default border (constant 0), exactly the call mmpose makes.

    Args:
        image: ``[H,W,C]`` or ``[H,W]`` image (any dtype OpenCV warps, BGR u8 normally).
        matrix: ``[2,3]`` image px -> crop px (from :func:`udp_warp_matrix`).
        input_size: crop ``(w, h)`` px.

    Returns:
        crop ``[h,w,C]`` (``[h,w]`` for a 2-D image), dtype of ``image``.
    """
    w, h = _check_size(input_size)
    if not isinstance(image, np.ndarray) or image.ndim not in (2, 3) or min(image.shape[:2]) < 1:
        shape = getattr(image, "shape", None)
        raise InputError(f"image: expected a non-empty [H,W,C] or [H,W] numpy array, got shape {shape}")
    m = _as_float_array(matrix, "matrix")
    if m.shape != (2, 3) or not np.isfinite(m).all():
        raise InputError(f"matrix: expected a finite [2,3] affine matrix, got shape {m.shape}")
    if isinstance(matrix, np.ndarray) and matrix.dtype == np.float32:
        m = matrix  # pass mmpose's float32 matrix unchanged
    crop = cv2.warpAffine(image, m, (w, h), flags=cv2.INTER_LINEAR)
    if image.ndim == 3 and crop.ndim == 2:  # OpenCV drops a single channel axis
        crop = crop[:, :, None]
    return crop


# --------------------------------------------------------------------------- back to image
def keypoints_to_image_cs(keypoints, center, scale, input_size=DEFAULT_INPUT_SIZE) -> np.ndarray:
    """Decoded crop-input px -> image px (mmpose ``add_pred_to_datasample``).

    ``image = kpts / (w, h) * scale_fixed + center - 0.5 * scale_fixed``.

    Args:
        keypoints: ``[K,2]`` (with center/scale ``[2]``) or ``[N,K,2]`` (with ``[N,2]``),
            decoded crop-input px as returned by ``decode_heatmaps`` (extra trailing
            columns beyond x, y are rejected).
        center: box centre (x, y) image px.
        scale: (w, h) image px, raw or aspect-fixed (the fix is applied here, idempotent).
        input_size: model input ``(w, h)``.

    Returns:
        float64 keypoints, same shape, image px.
    """
    w, h = _check_size(input_size)
    c, s = _check_center_scale(center, scale)
    kp = _as_float_array(keypoints, "keypoints")
    if c.ndim == 1:
        if kp.ndim != 2 or kp.shape[-1] != 2:
            raise InputError(f"keypoints: expected [K,2] crop px for a single box, got {kp.shape}")
        c_b, s_b = c[None, :], fix_aspect_ratio(s, w / h)[None, :]
    else:
        if kp.ndim != 3 or kp.shape[-1] != 2 or kp.shape[0] != c.shape[0]:
            raise InputError(f"keypoints: expected [N,K,2] crop px with N={c.shape[0]} boxes, got {kp.shape}")
        c_b, s_b = c[:, None, :], fix_aspect_ratio(s, w / h)[:, None, :]
    return kp / np.array([w, h], dtype=np.float64) * s_b + c_b - 0.5 * s_b


def keypoints_to_image(keypoints, bbox_xyxy, input_size=DEFAULT_INPUT_SIZE,
                       padding: float = DEFAULT_PADDING) -> np.ndarray:
    """THE mapping of decoded keypoints from the crop back to the image.

    Args:
        keypoints: ``[K,2]`` with ``bbox_xyxy [4]``, or ``[N,K,2]`` with ``[N,4]``; decoded
            crop-input px (the frame of :func:`edge_runtime.model.codec.decode_heatmaps`).
        bbox_xyxy: the boxes the crops were made from, image px.
        input_size: model input ``(w, h)``.
        padding: the GetBBoxCenterScale padding used for the crop.

    Returns:
        float64 keypoints of the same shape in image px, exactly as mmpose reports them.
    """
    center, scale = bbox_xyxy_to_center_scale(bbox_xyxy, padding)
    return keypoints_to_image_cs(keypoints, center, scale, input_size)
