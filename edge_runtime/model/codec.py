"""mmpose 1.3.2 ``UDPHeatmap`` codec (gaussian type) in vectorised numpy/OpenCV.

Decoding (:func:`decode_heatmaps`) reproduces ``UDPHeatmap.decode`` =
``get_heatmap_maximum`` + ``refine_keypoints_dark_udp`` + the scaling
``kpts / (W - 1, H - 1) * (w, h)``, with the same float32/float64 arithmetic, so
well-behaved channels give the same numbers as mmpose (bit-for-bit in our tests):

1. integer peak = first ``argmax`` of each channel; score = channel maximum (raw, float32);
2. each channel is blurred as mmpose's ``gaussian_blur`` does: zero-pad by
   ``(k-1)/2``, ``cv2.GaussianBlur((k, k), 0)``, crop, then rescale so the blurred
   maximum equals the original maximum; clip to ``[1e-3, 50]``; ``log``;
3. first/second derivatives at the peak from the 3x3 neighbourhood of the edge-padded
   log map (mmpose's own ``dxx = ix1 - 2 i + ix1_``, ``dxy = 0.5 (...)`` stencils),
   ``offset = -inv(hessian + eps * I) @ gradient`` (eps = float32 eps);
4. ``keypoints = (peak + offset) / (W - 1, H - 1) * (w, h)``: **decoded crop-input px**
   (see :mod:`edge_runtime.model.geometry` for why this is ``w / (W - 1)`` while the encoder
   uses ``(w - 1) / (W - 1)``; :func:`edge_runtime.model.geometry.keypoints_to_image` undoes it).

Where mmpose has accidents we return a finite, documented keypoint instead
(the score is always mmpose's: the raw channel maximum, so NaN for a channel that
contains NaN, <= 0 for a channel with no positive value):

* **flat channel** (all values equal, any sign, e.g. all zero; NaNs ignored) or all
  NaN: the heatmap centre ``((W - 1) / 2, (H - 1) / 2)``, i.e. crop-input
  ``(w / 2, h / 2)``, which :func:`keypoints_to_image` maps to the box centre.
  (mmpose: NaN from 0/0 for zero channels, an arbitrary corner-based point otherwise.)
* **no positive peak** (maximum <= 0) or a channel containing NaN/inf: the integer
  location of the largest non-NaN value (first in row-major order), unrefined.
  (mmpose: location -1, then reads its derivatives from the neighbouring channel;
  NaN anywhere makes its keypoint NaN.)
* a positive-peak channel whose refinement is not finite (e.g. singular Hessian,
  blurred maximum exactly 0): the integer argmax location, unrefined.

The blur runs for all valid channels of all persons at once (one OpenCV call per
448 channels) on a stack of individually zero-padded channels: identical arithmetic
to mmpose's per-channel loop, which the tests check bit for bit. OpenCV's own thread
pool parallelises it (``cv2.setNumThreads`` is left to the application).
"""
from __future__ import annotations

import numpy as np
import cv2

from edge_runtime.errors import InputError
from edge_runtime.model.geometry import DEFAULT_INPUT_SIZE, _check_size

__all__ = ["decode_heatmaps", "encode_keypoints"]

_EPS32 = float(np.finfo(np.float32).eps)
_CLIP_LO = np.float32(1e-3)
_CLIP_HI = np.float32(50.0)
# channels blurred per OpenCV call (bounds the temporary padded stack to ~100 MB)
_BLUR_CHUNK = 448


def _check_heatmaps(heatmaps) -> tuple[np.ndarray, bool]:
    if not isinstance(heatmaps, np.ndarray):
        try:
            heatmaps = np.asarray(heatmaps)
        except (TypeError, ValueError):
            raise InputError(f"heatmaps: expected a numeric array, got {type(heatmaps).__name__}") from None
    if heatmaps.dtype.kind not in "fiub":
        raise InputError(f"heatmaps: expected a float array (float32), got dtype {heatmaps.dtype}")
    if heatmaps.ndim not in (3, 4):
        raise InputError(f"heatmaps: expected shape [K,H,W] or [N,K,H,W], got {heatmaps.shape}")
    if heatmaps.shape[-1] < 2 or heatmaps.shape[-2] < 2:
        raise InputError(f"heatmaps: expected H, W >= 2, got shape {heatmaps.shape}")
    single = heatmaps.ndim == 3
    hm = heatmaps[None] if single else heatmaps
    return np.ascontiguousarray(hm, dtype=np.float32), single


def _blurred_neighbourhoods(channels: np.ndarray, idx: np.ndarray, ys: np.ndarray, xs: np.ndarray,
                            kernel: int) -> tuple[np.ndarray, np.ndarray]:
    """mmpose ``gaussian_blur`` (before its rescale) of channels ``idx`` of ``[C,H,W]``.

    Returns the blurred values at the points ``ys``/``xs`` (``[M,P]`` int, unpadded
    heatmap px) as float32 ``[M,P]`` and the blurred maxima ``[M]`` (float32).

    Each channel is embedded in its own zero frame of width ``(k-1)/2`` exactly as
    mmpose pads it; stacking the frames vertically lets one GaussianBlur call do many
    channels, and since the kernel radius equals the frame width no value ever crosses
    from one channel into another (the tests check the result equals mmpose's loop).
    """
    _, h, w = channels.shape
    b = (kernel - 1) // 2
    hp, wp = h + 2 * b, w + 2 * b
    m = idx.size
    values = np.empty(ys.shape, dtype=np.float32)
    maxima = np.empty(m, dtype=np.float32)
    contiguous = m == channels.shape[0]  # all channels: slice, no gather copy
    for start in range(0, m, _BLUR_CHUNK):
        stop = min(start + _BLUR_CHUNK, m)
        n = stop - start
        padded = np.zeros((n, hp, wp), dtype=np.float32)
        padded[:, b:b + h, b:b + w] = channels[start:stop] if contiguous else channels[idx[start:stop]]
        stack = padded.reshape(n * hp, wp)
        cv2.GaussianBlur(stack, (kernel, kernel), 0, dst=stack)
        maxima[start:stop] = padded[:, b:b + h, b:b + w].max(axis=(1, 2))
        rows = np.arange(n)[:, None]
        values[start:stop] = padded[rows, ys[start:stop] + b, xs[start:stop] + b]
    return values, maxima


#: the codec every sdpose-convert folder records (rt_info ``codec``); the decoder below implements it
DEFAULT_CODEC = {"type": "UDPHeatmap", "sigma": 6, "refine": "dark_udp", "blur_kernel_size": 11}


def blur_kernel_from_codec(codec, source: str = "<model>") -> int:
    """The DARK blur kernel of a folder's ``codec`` record (None: the default); ModelFolderError for a codec
    this decoder does not implement (another type or refinement, or an even / non-positive kernel)."""
    from edge_runtime.errors import ModelFolderError

    if codec is None:
        return int(DEFAULT_CODEC["blur_kernel_size"])
    if not isinstance(codec, dict) or codec.get("type") != "UDPHeatmap" or codec.get("refine", "dark_udp") != "dark_udp":
        raise ModelFolderError(f"{source}: rt_info codec {codec!r} is not supported: the runtime decodes "
                               "UDPHeatmap with DARK-UDP refinement")
    kernel = codec.get("blur_kernel_size", DEFAULT_CODEC["blur_kernel_size"])
    if isinstance(kernel, bool) or not isinstance(kernel, int) or kernel < 1 or kernel % 2 == 0:
        raise ModelFolderError(f"{source}: rt_info codec blur_kernel_size {kernel!r} must be a positive odd integer")
    return kernel


def decode_heatmaps(heatmaps, input_size=DEFAULT_INPUT_SIZE, blur_kernel_size: int = DEFAULT_CODEC["blur_kernel_size"]):
    """Decode UDP heatmaps to keypoints exactly as mmpose 1.3.2 ``UDPHeatmap.decode``.

    Args:
        heatmaps: ``[K,H,W]`` (one person) or ``[N,K,H,W]`` float32 heatmaps
            (other real dtypes are converted to float32, as mmpose's blur does).
        input_size: model input ``(w, h)`` px the heatmaps belong to.
        blur_kernel_size: odd DARK blur kernel size (mmpose default 11).

    Returns:
        ``(keypoints, scores)``: float64 ``[K,2]`` / ``[N,K,2]`` keypoints in decoded
        crop-input px (map them to the image with
        :func:`edge_runtime.model.geometry.keypoints_to_image`), and float32 ``[K]`` / ``[N,K]``
        scores (raw heatmap maxima). Degenerate channels: see the module docstring.
    """
    w_in, h_in = _check_size(input_size)
    if isinstance(blur_kernel_size, bool) or not isinstance(blur_kernel_size, (int, np.integer)) \
            or blur_kernel_size < 1 or blur_kernel_size % 2 != 1:
        raise InputError(f"blur_kernel_size: expected an odd positive int, got {blur_kernel_size!r}")
    hm, single = _check_heatmaps(heatmaps)
    n, k, h, w = hm.shape
    flat = hm.reshape(n * k, h * w)

    # get_heatmap_maximum (scores exactly mmpose's, NaN-propagating np.max)
    arg = flat.argmax(axis=1)  # first maximum; first NaN if any (as np.argmax in mmpose)
    scores = flat[np.arange(n * k), arg]  # == np.amax(channel), NaN-propagating like it
    mins = flat.min(axis=1)
    finite = np.isfinite(scores) & np.isfinite(mins)  # every value of the channel finite

    flat_ch = finite & (scores == mins)
    valid = finite & ~flat_ch & (scores > 0)
    argmax_ch = finite & ~flat_ch  # valid, or no positive peak: plain argmax is defined

    locs = np.empty((n * k, 2), dtype=np.float32)
    # heatmap centre for flat channels / channels without a finite value
    locs[:, 0] = (w - 1) / 2.0
    locs[:, 1] = (h - 1) / 2.0

    idx_arg = np.flatnonzero(argmax_ch)
    ys, xs = np.divmod(arg[idx_arg], w)
    locs[idx_arg, 0] = xs
    locs[idx_arg, 1] = ys
    for i in np.flatnonzero(~finite):  # rare: only broken channels (NaN/inf inside)
        ch = flat[i]
        real = ~np.isnan(ch)
        if not real.any() or (ch[real] == ch[real][0]).all():
            continue  # nothing but NaN, or flat over its non-NaN values: keep the centre
        y, x = divmod(int(np.where(real, ch, -np.inf).argmax()), w)
        locs[i] = (x, y)

    idx_valid = np.flatnonzero(valid)
    if idx_valid.size:
        locs[idx_valid] = _refine_dark_udp(hm.reshape(n * k, h, w), idx_valid, locs[idx_valid],
                                           scores[idx_valid], blur_kernel_size)

    keypoints = locs.astype(np.float64) / np.array([w - 1, h - 1], dtype=np.float64) \
        * np.array([w_in, h_in], dtype=np.float64)
    keypoints = keypoints.reshape(n, k, 2)
    scores = scores.reshape(n, k)
    if single:
        return keypoints[0], scores[0]
    return keypoints, scores


def _refine_dark_udp(channels: np.ndarray, idx: np.ndarray, locs: np.ndarray, origin_max: np.ndarray,
                     kernel: int) -> np.ndarray:
    """mmpose ``refine_keypoints_dark_udp`` for the channels ``idx`` of ``[C,H,W]``.

    ``locs`` float32 ``[M,2]`` integer peaks, ``origin_max`` float32 ``[M]``.
    Returns float32 ``[M,2]`` refined heatmap px (unrefined where the result is not finite).
    """
    _, h, w = channels.shape
    x = locs[:, 0].astype(np.intp)
    y = locs[:, 1].astype(np.intp)
    xp, xm = np.minimum(x + 1, w - 1), np.maximum(x - 1, 0)  # edge padding == clamping
    yp, ym = np.minimum(y + 1, h - 1), np.maximum(y - 1, 0)
    ys = np.stack([y, y, yp, yp, y, ym, ym], axis=1)
    xs = np.stack([x, xp, x, xp, xm, xm, x], axis=1)
    vals, bmax = _blurred_neighbourhoods(channels, idx, ys, xs, kernel)  # [M,7] float32
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        ratio = origin_max / bmax  # float32, as mmpose's origin_max / np.max(...)
        vals = vals * ratio[:, None]
        np.clip(vals, _CLIP_LO, _CLIP_HI, out=vals)
        np.log(vals, out=vals)
    i_, ix1, iy1, ix1y1, ix1_, ix1_y1_, iy1_ = (vals[:, j] for j in range(7))

    with np.errstate(invalid="ignore", over="ignore"):
        half = np.float32(0.5)
        two = np.float32(2)
        dx = half * (ix1 - ix1_)
        dy = half * (iy1 - iy1_)
        dxx = ix1 - two * i_ + ix1_
        dyy = iy1 - two * i_ + iy1_
        dxy = half * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)

        # mmpose: np.linalg.inv(float32 hessian + float32-eps * eye (float64)), then
        # einsum with the float32 gradient, subtracted in place from float32 keypoints.
        hess = np.empty((idx.size, 2, 2), dtype=np.float64)
        hess[:, 0, 0] = dxx.astype(np.float64) + _EPS32
        hess[:, 0, 1] = dxy
        hess[:, 1, 0] = dxy
        hess[:, 1, 1] = dyy.astype(np.float64) + _EPS32
        det = hess[:, 0, 0] * hess[:, 1, 1] - hess[:, 0, 1] * hess[:, 1, 0]
        invertible = np.isfinite(hess).all(axis=(1, 2)) & np.isfinite(det) & (det != 0)
        hess[~invertible] = np.eye(2)  # keeps np.linalg.inv from raising; reverted below
        inv = np.linalg.inv(hess)
        gx = dx.astype(np.float64)
        gy = dy.astype(np.float64)
        off_x = inv[:, 0, 0] * gx + inv[:, 0, 1] * gy
        off_y = inv[:, 1, 0] * gx + inv[:, 1, 1] * gy

        refined = np.empty_like(locs)
        refined[:, 0] = (locs[:, 0].astype(np.float64) - off_x).astype(np.float32)
        refined[:, 1] = (locs[:, 1].astype(np.float64) - off_y).astype(np.float32)
    ok = np.isfinite(refined).all(axis=1) & invertible
    return np.where(ok[:, None], refined, locs)


def encode_keypoints(keypoints, input_size=DEFAULT_INPUT_SIZE, heatmap_size=(192, 256), sigma: float = 6.0,
                     keypoints_visible=None) -> np.ndarray:
    """mmpose ``UDPHeatmap.encode`` (gaussian): keypoints -> training-target heatmaps.

    ``generate_udp_gaussian_heatmaps(heatmap_size, keypoints / ((w-1)/(W-1), (h-1)/(H-1)))``:
    per keypoint an unnormalised gaussian (peak 1) centred at the sub-pixel heatmap
    position, non-zero only in the integer window ``|col - round(x)| <= 3 sigma``
    (likewise rows); keypoints whose window misses the heatmap give an all-zero
    channel. Several instances are merged by maximum.

    Args:
        keypoints: ``[K,2]`` or ``[M,K,2]`` crop px (UDP warp frame).
        input_size: model input ``(w, h)``.
        heatmap_size: heatmap ``(W, H)``.
        sigma: gaussian sigma in heatmap px (SDPose: 6).
        keypoints_visible: optional ``[K]`` / ``[M,K]``; entries < 0.5 are skipped.

    Returns:
        float32 heatmaps ``[K,H,W]``.
    """
    w_in, h_in = _check_size(input_size)
    w_hm, h_hm = _check_size(heatmap_size, "heatmap_size")
    try:
        kp = np.asarray(keypoints, dtype=np.float64)
    except (TypeError, ValueError):
        raise InputError("keypoints: expected a numeric [K,2] or [M,K,2] array") from None
    if kp.ndim == 2:
        kp = kp[None]
    if kp.ndim != 3 or kp.shape[-1] < 2:
        raise InputError(f"keypoints: expected shape [K,2] or [M,K,2] crop px, got {np.shape(keypoints)}")
    kp = kp[..., :2]
    if not np.isfinite(kp).all():
        raise InputError("keypoints: coordinates must be finite")
    s = float(sigma)
    if not s > 0:
        raise InputError(f"sigma: expected a positive number, got {sigma!r}")
    if keypoints_visible is None:
        vis = np.ones(kp.shape[:2], dtype=bool)
    else:
        v = np.asarray(keypoints_visible, dtype=np.float64).reshape(-1)
        if v.size != kp.shape[0] * kp.shape[1]:
            raise InputError(f"keypoints_visible: expected {kp.shape[:2]} values, "
                             f"got {np.shape(keypoints_visible)}")
        vis = v.reshape(kp.shape[:2]) >= 0.5

    factor = ((np.array([w_in, h_in], dtype=np.float64) - 1) /
              (np.array([w_hm, h_hm], dtype=np.float64) - 1)).astype(np.float32)
    mu_ac = kp / factor  # heatmap px
    radius = s * 3
    mu = np.trunc(mu_ac + 0.5).astype(np.int64)
    lo = np.trunc(mu - radius).astype(np.int64)        # left, top
    hi = np.trunc(mu + radius + 1).astype(np.int64)    # right, bottom (exclusive)
    inside = vis & (lo[..., 0] < w_hm) & (lo[..., 1] < h_hm) & (hi[..., 0] >= 0) & (hi[..., 1] >= 0)

    cols = np.arange(w_hm, dtype=np.float64)
    rows = np.arange(h_hm, dtype=np.float64)
    heatmaps = np.zeros((kp.shape[1], h_hm, w_hm), dtype=np.float32)
    for inst in range(kp.shape[0]):
        for j in np.flatnonzero(inside[inst]):
            gx = np.exp(-((cols - mu_ac[inst, j, 0]) ** 2) / (2 * s * s))
            gy = np.exp(-((rows - mu_ac[inst, j, 1]) ** 2) / (2 * s * s))
            gx[(cols < lo[inst, j, 0]) | (cols >= hi[inst, j, 0])] = 0
            gy[(rows < lo[inst, j, 1]) | (rows >= hi[inst, j, 1])] = 0
            np.maximum(heatmaps[j], np.outer(gy, gx).astype(np.float32), out=heatmaps[j])
    return heatmaps
