"""Keypoint optical flow between two frames: what carries a pose from its keyframe to the frames around it.

Three models (``TrackConfig.flow_model``):

- ``points``: pyramidal Lucas-Kanade (``cv2.calcOpticalFlowPyrLK``) at each keypoint, with a forward-backward
  check (a point whose flow does not come back within ``fb_threshold_px`` fails);
- ``bones``: skeleton-constrained. Each body/foot bone with both ends visible is moved rigidly by a similarity
  transform (``cv2.estimateAffinePartial2D``, LMedS) fitted to the flow of points sampled along and beside the
  whole limb, not at one point; the face and each hand move by one similarity fitted to their points' flow.
  A joint takes the mean of its bones' transforms; where no bone or group fits, its own point flow is used;
- ``dense``: ``points``, and where a point fails its check, dense DIS flow (``cv2.DISOpticalFlow``, computed
  over the pose's region, with its own forward-backward check): flat-coloured limbs give a single LK window
  little to hold on to, the variational refinement of DIS fills them in from their edges.

Failed keypoints then move with the median shift of their pose's good ones (:func:`step_points`), and each
step adds an expected error per keypoint (:func:`step_error`) that two-sided blending weighs by.
Coordinates: points [M,2] and keypoints [K,2] image px; gray images at ``scale`` x image size.
"""
from __future__ import annotations

import cv2
import numpy as np

FLOW_MODELS = ("points", "bones", "dense")

#: COCO-17 bones plus the foot bones of the 133 layout (indices into the keypoints)
BODY_BONES: tuple[tuple[int, int], ...] = (
    (5, 7), (7, 9), (6, 8), (8, 10), (11, 13), (13, 15), (12, 14), (14, 16), (5, 6), (11, 12), (5, 11), (6, 12),
    (0, 1), (0, 2), (1, 3), (2, 4))
FOOT_BONES: tuple[tuple[int, int], ...] = ((15, 19), (15, 17), (15, 18), (16, 22), (16, 20), (16, 21))
#: keypoint groups moved by one similarity each in the 133 layout: face, left hand, right hand
RIGID_GROUPS: tuple[tuple[int, int], ...] = ((23, 91), (91, 112), (112, 133))
#: samples per bone: positions along it and offsets across it (share of the bone length)
_ALONG = np.linspace(0.0, 1.0, 7)
_ACROSS = (-0.12, 0.0, 0.12)


def flow_scale(image_wh: "tuple[int, int]", flow_max_side: int) -> float:
    """The factor that scales an image of ``image_wh`` to at most ``flow_max_side`` on its longer side (<= 1)."""
    return min(1.0, flow_max_side / max(image_wh))


def flow_gray(image_bgr: np.ndarray, scale: float) -> np.ndarray:
    """The grayscale image LK flow runs on: BGR u8 [H,W,3] -> u8 [H*scale, W*scale]."""
    gray = cv2.cvtColor(image_bgr, cv2.COLOR_BGR2GRAY)
    if scale != 1.0:
        gray = cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    return gray


def lk_flow(prev: np.ndarray, cur: np.ndarray, pts: np.ndarray, scale: float,
            fb_threshold_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pyramidal LK with a forward-backward check: pts [M,2] image px on ``prev`` -> (moved [M,2] image px,
    good [M] bool, fb [M] forward-backward error, image px). ``prev``/``cur`` are :func:`flow_gray` images."""
    if len(pts) == 0:
        return pts.copy(), np.zeros(0, bool), np.zeros(0)
    p0 = (pts * scale).astype(np.float32).reshape(-1, 1, 2)
    lk = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 20, 0.03))
    p1, st1, _ = cv2.calcOpticalFlowPyrLK(prev, cur, p0, None, **lk)
    p0b, st2, _ = cv2.calcOpticalFlowPyrLK(cur, prev, p1, None, **lk)
    fb = np.linalg.norm((p0 - p0b).reshape(-1, 2), axis=1) / scale
    good = (st1.reshape(-1) == 1) & (st2.reshape(-1) == 1) & (fb < fb_threshold_px)
    moved = p1.reshape(-1, 2).astype(np.float64) / scale
    good &= np.all(np.isfinite(moved), axis=1)
    fb = np.where(np.isfinite(fb), fb, np.inf)
    return moved, good, fb


def step_points(kpts: np.ndarray, kp_scores: np.ndarray, moved: np.ndarray, good: np.ndarray,
                fallback_shift: np.ndarray, score_threshold: float) -> "tuple[np.ndarray, np.ndarray | None, float]":
    """One flow step of one pose: keypoints [K,2] -> (new keypoints, median shift or None, scale).

    Keypoints whose flow failed move with the median shift of the good visible ones; without three of those
    the whole pose moves by ``fallback_shift`` (the box motion) and the shift is None."""
    old = kpts.astype(np.float64)
    anchor = good & (kp_scores > score_threshold)
    if anchor.sum() < 3:
        return old + fallback_shift, None, 1.0
    shift = np.median(moved[anchor] - old[anchor], axis=0)
    spread_old = np.median(np.linalg.norm(old[anchor] - old[anchor].mean(0), axis=1))
    spread_new = np.median(np.linalg.norm(moved[anchor] - moved[anchor].mean(0), axis=1))
    scale = float(np.clip(spread_new / spread_old, 0.8, 1.25)) if spread_old > 1.0 else 1.0
    return np.where(good[:, None], moved, old + shift), shift, scale


def step_error(good: np.ndarray, fb: np.ndarray, fb_threshold_px: float) -> np.ndarray:
    """The expected error one flow step adds to each keypoint [K] (image px): its forward-backward error where
    the flow passed the check, twice the threshold where it failed (the keypoint moved with its pose)."""
    return np.where(good, np.minimum(fb, fb_threshold_px), 2.0 * fb_threshold_px)


def _bone_samples(kpts: np.ndarray, bones: "list[tuple[int, int]]") -> np.ndarray:
    """[len(bones), S, 2] image px: points along and beside each bone."""
    a, b = kpts[[i for i, _ in bones]], kpts[[j for _, j in bones]]
    d = b - a
    normal = np.stack([-d[:, 1], d[:, 0]], axis=1)
    pts = [a + t * d + o * normal for t in _ALONG for o in _ACROSS]
    return np.stack(pts, axis=1)


def _fit(src: np.ndarray, dst: np.ndarray) -> "np.ndarray | None":
    """Similarity [2,3] mapping src [M,2] to dst [M,2] (LMedS; None without 3 points or a fit)."""
    if len(src) < 3:
        return None
    m, _ = cv2.estimateAffinePartial2D(src.astype(np.float32), dst.astype(np.float32), method=cv2.LMEDS)
    return m


def _apply(m: np.ndarray, pts: np.ndarray) -> np.ndarray:
    return pts @ m[:, :2].T + m[:, 2]


def bone_flow(prev: np.ndarray, cur: np.ndarray, kpts: np.ndarray, scores: np.ndarray, scale: float,
              fb_threshold_px: float, score_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skeleton-constrained flow of one pose (module docstring): kpts [K,2] (K = 17 or 133), scores [K] ->
    (moved [K,2], good [K], fb [K] image px), as :func:`lk_flow`."""
    kpts = np.asarray(kpts, np.float64)
    moved, good, fb = lk_flow(prev, cur, kpts, scale, fb_threshold_px)
    k = len(kpts)
    visible = np.asarray(scores) > score_threshold
    bones = [(i, j) for i, j in BODY_BONES + (FOOT_BONES if k > 22 else ())
             if visible[i] and visible[j] and np.linalg.norm(kpts[i] - kpts[j]) > 2.0]
    estimates: "list[list[np.ndarray]]" = [[] for _ in range(k)]
    errors: "list[list[float]]" = [[] for _ in range(k)]
    if bones:
        samples = _bone_samples(kpts, bones)
        s_moved, s_good, s_fb = lk_flow(prev, cur, samples.reshape(-1, 2), scale, fb_threshold_px)
        per = samples.shape[1]
        for n, (i, j) in enumerate(bones):
            sel = slice(n * per, (n + 1) * per)
            ok = s_good[sel]
            m = _fit(samples[n][ok], s_moved[sel][ok]) if ok.sum() >= per // 3 else None
            if m is None:
                continue
            for idx in (i, j):
                estimates[idx].append(_apply(m, kpts[idx][None])[0])
                errors[idx].append(float(np.median(s_fb[sel][ok])))
    out_moved, out_good, out_fb = moved.copy(), good.copy(), fb.copy()
    for lo, hi in (RIGID_GROUPS if k == 133 else ()):
        ok = good[lo:hi] & visible[lo:hi]
        m = _fit(kpts[lo:hi][ok], moved[lo:hi][ok])
        if m is not None:
            out_moved[lo:hi] = _apply(m, kpts[lo:hi])
            out_good[lo:hi] = True
            out_fb[lo:hi] = float(np.median(fb[lo:hi][ok]))
    for idx in range(k):
        if estimates[idx]:
            out_moved[idx] = np.mean(estimates[idx], axis=0)
            out_good[idx] = True
            out_fb[idx] = float(np.mean(errors[idx]))
    return out_moved, out_good, out_fb


def _sample(flow: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Bilinear sample of a flow field [h,w,2] at pts [M,2] (field px) -> [M,2]."""
    mx = pts[:, 0].astype(np.float32).reshape(1, -1)
    my = pts[:, 1].astype(np.float32).reshape(1, -1)
    out = cv2.remap(flow, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return out.reshape(-1, 2).astype(np.float64)


def dense_flow(prev: np.ndarray, cur: np.ndarray, pts: np.ndarray, scale: float,
               fb_threshold_px: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dense DIS flow (``cv2.DISOpticalFlow``, fast preset) over the points' region (their bounding box with a
    margin), forward and backward, sampled at pts [M,2] image px -> (moved, good, fb) as :func:`lk_flow`."""
    if len(pts) == 0:
        return pts.copy(), np.zeros(0, bool), np.zeros(0)
    h, w = prev.shape[:2]
    p = pts * scale
    lo, hi = p.min(0), p.max(0)
    margin = 0.3 * (hi - lo).max() + 16
    x0, y0 = (max(int(v - margin), 0) for v in lo)
    x1, y1 = min(int(hi[0] + margin) + 1, w), min(int(hi[1] + margin) + 1, h)
    if x1 - x0 < 16 or y1 - y0 < 16:
        return lk_flow(prev, cur, pts, scale, fb_threshold_px)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
    a, b = np.ascontiguousarray(prev[y0:y1, x0:x1]), np.ascontiguousarray(cur[y0:y1, x0:x1])
    fwd, bwd = dis.calc(a, b, None), dis.calc(b, a, None)
    local = p - (x0, y0)
    moved = local + _sample(fwd, local)
    back = moved + _sample(bwd, moved)
    fb = np.linalg.norm(back - local, axis=1) / scale
    good = np.isfinite(fb) & (fb < fb_threshold_px)
    return (moved + (x0, y0)) / scale, good, np.where(np.isfinite(fb), fb, np.inf)


def keypoint_flow(prev: np.ndarray, cur: np.ndarray, kpts: np.ndarray, scores: np.ndarray, scale: float,
                  model: str, fb_threshold_px: float, score_threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The flow of one pose's keypoints [K,2] with ``model`` (FLOW_MODELS) -> (moved [K,2], good [K], fb [K])."""
    if model == "bones" and len(kpts) in (17, 133):
        return bone_flow(prev, cur, kpts, scores, scale, fb_threshold_px, score_threshold)
    if model == "dense":  # LK where it passes its check, else the dense flow where that passes
        moved, good, fb = lk_flow(prev, cur, np.asarray(kpts, np.float64), scale, fb_threshold_px)
        if not good.all():
            d_moved, d_good, d_fb = dense_flow(prev, cur, np.asarray(kpts, np.float64), scale, fb_threshold_px)
            use = ~good & d_good
            moved[use], good[use], fb[use] = d_moved[use], True, d_fb[use]
        return moved, good, fb
    return lk_flow(prev, cur, np.asarray(kpts, np.float64), scale, fb_threshold_px)
