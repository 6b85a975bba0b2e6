"""The UDPHeatmap + DARK-UDP decoder of :mod:`edge_runtime.model.codec` as OpenVINO operations.

:func:`keypoints_output` builds, on a heatmaps tensor ``[N,K,H,W]`` f32 of a model, the output ``keypoints``
``[N,K,3]`` f32: x, y in decoded crop-input px (the frame :func:`edge_runtime.model.codec.decode_heatmaps` returns,
before :func:`edge_runtime.model.geometry.keypoints_to_image`) and the score (raw channel maximum). The steps and the
degenerate-channel rules are the numpy decoder's, op for op:

1. peak = first maximum of each channel (TopK, stable; NaN values skipped); score = channel maximum (NaN if
   the channel holds a NaN);
2. blur: mmpose ``gaussian_blur`` = zero padding by ``(k-1)/2`` + ``cv2.GaussianBlur((k, k), 0)``; since the
   kernel radius equals the padding, OpenCV's border rule never reaches the kept pixels, so this is exactly a
   zero-padded separable convolution with ``cv2.getGaussianKernel(k, 0)`` (two depthwise convolutions);
3. rescale by ``score / blurred maximum``, clip to ``[1e-3, 50]``, log; derivatives from the edge-clamped 3x3
   neighbourhood; ``offset = inv(hessian + eps I) gradient`` (closed-form 2x2 inverse; the numpy decoder
   inverts in float64, this graph in float32: the difference stays far below 0.05 px, see the tests);
4. ``keypoints = (peak - offset) / (W - 1, H - 1) * (w, h)``.

Flat channels (all values equal, NaN ignored; or all NaN) give the heatmap centre; channels without a positive
peak or with a non-finite value give the unrefined peak; a non-finite refinement gives the unrefined peak.

Agreement with numpy: within 0.05 crop px and 1e-3 in score wherever the DARK step is well posed (the trained
proxy: every keypoint; tests/convert/test_decode_graph.py). The blurred values are OpenCV's up to float rounding
(another summation order), and where the Newton step is ill-conditioned (random weights: most channels jump more
than one heatmap px, not the sub-pixel correction DARK is) that rounding decides the point: numpy's own result
moves by up to ~1 crop px when the heatmaps change by 2e-7, and the two decoders differ by up to a few px there.
The blur is only needed in full for its maximum (the rescale); the nine values around the peak are taken from the
heatmaps directly (a window and the 2-D kernel), which saves re-reading the blurred maps.

Where the output is added: when the runtime loads the pose IR (:func:`with_keypoints`), not at export. Every
folder converted before gets it, the IR files stay as they are (the 1.7 GB pose.bin, hard-linked into OVMS
repositories), and the decoder follows the folder's ``codec`` record as the numpy decoder does.

Why by hand: no library offers this decoder as graph operations (mmpose's is numpy; OpenVINO has no DARK op),
and the numpy reference it must equal lives in this package.

:func:`with_keypoints` appends the output to a pose IR read by the runtime (load time: it serves every folder,
also those converted earlier); :func:`decoder_model` is the decoder alone (``heatmaps`` -> ``keypoints``), the
extra node of the served ``sdpose_keypoints`` chain and of the OVMS pipeline of that name.
"""
from __future__ import annotations

from typing import Any

import cv2
import numpy as np
import openvino as ov
import openvino.opset13 as ops

from edge_runtime.errors import ModelFolderError

__all__ = ["KEYPOINTS_OUTPUT", "keypoints_output", "with_keypoints", "decoder_model"]

#: name of the decoded output tensor
KEYPOINTS_OUTPUT = "keypoints"
_EPS32 = float(np.finfo(np.float32).eps)


def _f32(value: Any) -> Any:
    return ops.constant(np.asarray(value, dtype=np.float32))


def _i32(value: Any) -> Any:
    return ops.constant(np.asarray(value, dtype=np.int32))


def _gaussian(kernel_size: int) -> np.ndarray:
    """OpenCV's kernel for ``GaussianBlur((k, k), 0)`` (float32 [k])."""
    return cv2.getGaussianKernel(kernel_size, 0, ktype=cv2.CV_32F).reshape(-1).astype(np.float32)


def _blurred_max(heatmaps: Any, k: int, kernel_size: int) -> Any:
    """Maximum of each channel of mmpose's gaussian_blur (before its rescale): [N,K,H,W] -> [N,K,1]."""
    g = _gaussian(kernel_size)
    b = (kernel_size - 1) // 2
    vert = np.broadcast_to(g.reshape(1, 1, 1, kernel_size, 1), (k, 1, 1, kernel_size, 1)).copy()
    horiz = np.broadcast_to(g.reshape(1, 1, 1, 1, kernel_size), (k, 1, 1, 1, kernel_size)).copy()
    out = ops.group_convolution(heatmaps, _f32(vert), [1, 1], [b, 0], [b, 0], [1, 1])
    out = ops.group_convolution(out, _f32(horiz), [1, 1], [0, b], [0, b], [1, 1])
    return ops.unsqueeze(ops.reduce_max(out, _i32([2, 3]), False), _i32([2]))


def _peaks(flat: Any, hw: int) -> tuple[Any, Any, Any, Any]:
    """flat [N,K,H*W] -> (first peak index [N,K] i32, score, flat channel, all finite) [N,K].

    NaN values are skipped for the peak (numpy: argmax of the non-NaN values) but make the score NaN; a channel
    is flat when all its non-NaN values equal its maximum (all NaN included)."""
    nan = ops.is_nan(flat)
    has_nan = ops.reduce_logical_or(nan, _i32([2]), False)
    clean = ops.select(nan, _f32(-np.inf), flat)
    hi = ops.reduce_max(clean, _i32([2]), True)
    lo = ops.reduce_min(flat, _i32([2]), False)  # read only where the channel has no NaN
    at_max = ops.equal(clean, hi)
    # first maximum: the smallest index where the channel equals its maximum (TopK's stable mode is slower)
    iota = _i32(np.arange(hw, dtype=np.int32))
    index = ops.reduce_min(ops.select(at_max, iota, _i32(hw)), _i32([2]), False)
    flat_ch = ops.reduce_logical_and(ops.logical_or(at_max, nan), _i32([2]), False)
    hi = ops.squeeze(hi, _i32([2]))
    score = ops.select(has_nan, _f32(np.nan), hi)
    finite = ops.logical_and(ops.logical_and(ops.is_finite(hi), ops.is_finite(lo)), ops.logical_not(has_nan))
    return index, score, flat_ch, finite


def _blurred_points(flat: Any, x: Any, y: Any, w: int, h: int, kernel_size: int) -> Any:
    """Blurred values (zero padding) at the peak's 3x3 neighbourhood, straight from the heatmaps.

    Gathers the ``(k+2) x (k+2)`` window around (y, x) (zeros outside the heatmap, as mmpose pads) and applies
    the 2-D kernel at the 9 offsets: [N,K,9], offset (dy, dx) at column ``3 (dy + 1) + (dx + 1)``.
    """
    b = (kernel_size - 1) // 2
    r = b + 1
    side = 2 * r + 1
    d = np.arange(-r, r + 1, dtype=np.int32)
    dy, dx = (a.reshape(1, 1, -1) for a in np.meshgrid(d, d, indexing="ij"))
    yy = ops.add(ops.unsqueeze(y, _i32([2])), _i32(dy))
    xx = ops.add(ops.unsqueeze(x, _i32([2])), _i32(dx))
    inside = ops.logical_and(ops.logical_and(ops.greater_equal(yy, _i32(0)), ops.less(yy, _i32(h))),
                             ops.logical_and(ops.greater_equal(xx, _i32(0)), ops.less(xx, _i32(w))))
    index = ops.add(ops.multiply(ops.clamp(yy, 0, h - 1), _i32(w)), ops.clamp(xx, 0, w - 1))
    window = ops.select(inside, ops.gather(flat, index, _i32(2), 2), _f32(0.0))  # [N,K,side*side]
    g2 = np.outer(_gaussian(kernel_size), _gaussian(kernel_size))
    weights = np.zeros((side, side, 9), np.float32)
    for j, (oy, ox) in enumerate((oy, ox) for oy in (-1, 0, 1) for ox in (-1, 0, 1)):
        weights[r + oy - b:r + oy + b + 1, r + ox - b:r + ox + b + 1, j] = g2
    return ops.matmul(window, _f32(weights.reshape(side * side, 9)), False, False)


def _neighbourhood(points: Any, x: Any, y: Any, w: int, h: int) -> Any:
    """[N,K,9] blurred 3x3 values -> [N,K,7] at (y,x) (y,x+1) (y+1,x) (y+1,x+1) (y,x-1) (y-1,x-1) (y-1,x) with
    the neighbours clamped to the heatmap (mmpose's edge padding: a clamped neighbour is the peak's row/column)."""
    col = [ops.squeeze(ops.gather(points, _i32([j]), _i32(2)), _i32([2])) for j in range(9)]

    def at(oy: int, ox: int) -> Any:
        return col[3 * (oy + 1) + (ox + 1)]

    def clamped(oy: int, ox: int) -> Any:
        """value at the clamped offset (oy, ox)."""
        value = at(oy, ox)
        ok_x = ops.less(x, _i32(w - 1)) if ox > 0 else ops.greater(x, _i32(0)) if ox < 0 else None
        ok_y = ops.less(y, _i32(h - 1)) if oy > 0 else ops.greater(y, _i32(0)) if oy < 0 else None
        if ok_x is not None and ok_y is not None:
            value = ops.select(ok_y, ops.select(ok_x, value, at(oy, 0)), ops.select(ok_x, at(0, ox), at(0, 0)))
        elif ok_x is not None:
            value = ops.select(ok_x, value, at(oy, 0))
        elif ok_y is not None:
            value = ops.select(ok_y, value, at(0, ox))
        return ops.unsqueeze(value, _i32([2]))

    offsets = ((0, 0), (0, 1), (1, 0), (1, 1), (0, -1), (-1, -1), (-1, 0))
    return ops.concat([clamped(oy, ox) for oy, ox in offsets], 2)


def _offsets(vals: Any) -> tuple[Any, Any, Any]:
    """log-values [N,K,7] -> (offset x, offset y, invertible) [N,K] of the DARK Newton step."""
    v = [ops.squeeze(ops.gather(vals, _i32([j]), _i32(2)), _i32([2])) for j in range(7)]
    i_, ix1, iy1, ix1y1, ix1_, ix1_y1_, iy1_ = v
    half = _f32(0.5)
    dx = ops.multiply(half, ops.subtract(ix1, ix1_))
    dy = ops.multiply(half, ops.subtract(iy1, iy1_))
    two_i = ops.add(i_, i_)
    dxx = ops.add(ops.subtract(ix1, two_i), ix1_)
    dyy = ops.add(ops.subtract(iy1, two_i), iy1_)
    cross = ops.add(ops.subtract(ops.subtract(ix1y1, ix1), iy1), two_i)
    dxy = ops.multiply(half, ops.add(ops.subtract(ops.subtract(cross, ix1_), iy1_), ix1_y1_))
    a = ops.add(dxx, _f32(_EPS32))
    d = ops.add(dyy, _f32(_EPS32))
    det = ops.subtract(ops.multiply(a, d), ops.multiply(dxy, dxy))
    off_x = ops.divide(ops.subtract(ops.multiply(d, dx), ops.multiply(dxy, dy)), det)
    off_y = ops.divide(ops.subtract(ops.multiply(a, dy), ops.multiply(dxy, dx)), det)
    invertible = ops.logical_and(ops.is_finite(det), ops.not_equal(det, _f32(0.0)))
    return off_x, off_y, invertible


def keypoints_output(heatmaps: Any, input_size_wh: tuple[int, int], blur_kernel_size: int) -> Any:
    """The decoder on ``heatmaps`` (an ``ov.Output`` [N,K,H,W] f32, K/H/W static) -> ``keypoints`` [N,K,3] f32
    (x, y decoded crop-input px, score) as an ``ov.Output`` named :data:`KEYPOINTS_OUTPUT`."""
    shape = heatmaps.get_partial_shape()
    if shape.rank.is_dynamic or len(shape) != 4 or not all(d.is_static for d in list(shape)[1:]):
        raise ModelFolderError(f"heatmaps: expected [N,K,H,W] with static K, H, W, got {shape}")
    k, h, w = (int(d.get_length()) for d in list(shape)[1:])
    w_in, h_in = input_size_wh
    flat = ops.reshape(heatmaps, _i32([0, 0, h * w]), True)
    index, score, flat_ch, finite = _peaks(flat, h * w)
    x = ops.floor_mod(index, _i32(w))
    y = ops.divide(index, _i32(w))  # non-negative: integer division
    points = _blurred_points(flat, x, y, w, h, blur_kernel_size)
    vals = _neighbourhood(points, x, y, w, h)
    vals = ops.multiply(vals, ops.divide(ops.unsqueeze(score, _i32([2])), _blurred_max(heatmaps, k, blur_kernel_size)))
    off_x, off_y, invertible = _offsets(ops.log(ops.clamp(vals, 1e-3, 50.0)))
    xf, yf = ops.convert(x, ov.Type.f32), ops.convert(y, ov.Type.f32)
    rx, ry = ops.subtract(xf, off_x), ops.subtract(yf, off_y)
    refine = ops.logical_and(ops.logical_and(finite, ops.logical_not(flat_ch)), ops.greater(score, _f32(0.0)))
    ok = ops.logical_and(ops.logical_and(invertible, ops.is_finite(rx)), ops.is_finite(ry))
    ok = ops.logical_and(refine, ok)
    px = ops.select(flat_ch, _f32((w - 1) / 2.0), ops.select(ok, rx, xf))
    py = ops.select(flat_ch, _f32((h - 1) / 2.0), ops.select(ok, ry, yf))
    px = ops.multiply(px, _f32(w_in / (w - 1)))
    py = ops.multiply(py, _f32(h_in / (h - 1)))
    out = ops.concat([ops.unsqueeze(t, _i32([2])) for t in (px, py, score)], 2)
    out.output(0).get_tensor().set_names({KEYPOINTS_OUTPUT})
    out.set_friendly_name(KEYPOINTS_OUTPUT)
    return out.output(0)


def with_keypoints(model: ov.Model, input_size_wh: tuple[int, int], blur_kernel_size: int,
                   keep_heatmaps: bool = True) -> ov.Model:
    """A pose IR (output 0 ``heatmaps`` [N,K,H,W]) with the decoder appended: outputs (heatmaps, keypoints), or
    only ``keypoints`` [N,K,3] when ``keep_heatmaps`` is False (what a local run compiles). ``model`` is not
    changed (a clone gets the decoder; the clone shares the weights' memory)."""
    out = model.clone()
    heatmaps_result = out.get_results()[0]
    keypoints = keypoints_output(heatmaps_result.input_value(0), input_size_wh, blur_kernel_size)
    if keep_heatmaps:
        out.add_results([ops.result(keypoints)])
    else:  # the heatmaps' Result returns the keypoints now
        heatmaps_result.input(0).replace_source_output(keypoints)
        heatmaps_result.output(0).get_tensor().set_names({KEYPOINTS_OUTPUT})
        out.validate_nodes_and_infer_types()
    return out


def decoder_model(num_keypoints: int, heatmap_size_wh: tuple[int, int], input_size_wh: tuple[int, int],
                  blur_kernel_size: int) -> ov.Model:
    """The decoder alone: input ``heatmaps`` f32 [-1,K,H,W] -> output ``keypoints`` f32 [-1,K,3]."""
    w, h = heatmap_size_wh
    param = ops.parameter(ov.PartialShape([-1, num_keypoints, h, w]), ov.Type.f32, name="heatmaps")
    param.output(0).get_tensor().set_names({"heatmaps"})
    keypoints = keypoints_output(param.output(0), input_size_wh, blur_kernel_size)
    return ov.Model([ops.result(keypoints)], [param], "keypoint_decoder")
