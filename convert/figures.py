"""Drawn figures with known COCO-WholeBody keypoints: the ground truth random weights cannot give.

A figure is a textured 2-D puppet built from a :class:`Pose` (position, height, facing, lean, limb angles,
head turn, finger spread). :func:`figure_keypoints` computes its 133 COCO-WholeBody keypoints [133,2] in
image px analytically -- body 17, feet 6, an iBUG-68 face on the head, 21 points per hand -- and
:func:`draw_figure` paints the same geometry: limbs as thick textured capsules in the figure's clothing
colours, a skin-coloured head with eyes, brows, nose and mouth, hands with fingers, shoes. Every drawn part
sits exactly on its keypoints, so the figure's pixels determine its keypoints.

:func:`random_pose` samples poses for training (seeded); :func:`walk_sequence` animates figures that walk,
turn, wave, cross and occlude each other, for video proxies. :func:`render_scene` draws several figures
back to front on a textured background and returns the image, keypoints [P,133,2] and person boxes.
Only numpy and OpenCV: the runtime side can use it as well as the trainer.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable

import cv2
import numpy as np

from edge_runtime.model.keypoints import PART_GROUPS, WHOLEBODY_PARTS
from edge_runtime.running.results import FrameResult
from edge_runtime.running.tracking import box_iou

NUM_KEYPOINTS = 133

# COCO body indices
NOSE, L_EYE, R_EYE, L_EAR, R_EAR = 0, 1, 2, 3, 4
L_SH, R_SH, L_EL, R_EL, L_WR, R_WR = 5, 6, 7, 8, 9, 10
L_HIP, R_HIP, L_KN, R_KN, L_AN, R_AN = 11, 12, 13, 14, 15, 16
FACE0, LHAND0, RHAND0 = 23, 91, 112

#: iBUG-68 face template in head units: x right (image, frontal), y down, head centre at (0, 0), head
#: radius 1. Jaw 0-16, brows 17-26, nose 27-35, eyes 36-47, mouth 48-67.
_FACE_TEMPLATE = np.array(
    [(x, -y * 0.9 + 0.1 if y < 0 else y * 0.95 + 0.12) for x, y in
     [(0.78 * math.cos(a), 0.78 * math.sin(a)) for a in np.linspace(math.pi, 0.0, 17)]]
    + [(-0.62 + 0.11 * i, -0.38 - 0.06 * math.sin(math.pi * i / 4)) for i in range(5)]
    + [(0.18 + 0.11 * i, -0.38 - 0.06 * math.sin(math.pi * i / 4)) for i in range(5)]
    + [(0.0, -0.25 + 0.1 * i) for i in range(4)]
    + [(-0.16 + 0.08 * i, 0.2 + 0.03 * (1 - abs(i - 2) / 2)) for i in range(5)]
    + [(-0.42 + 0.1 * math.cos(a), -0.2 + 0.05 * math.sin(a)) for a in np.linspace(math.pi, -math.pi, 7)[:6]]
    + [(0.42 + 0.1 * math.cos(a), -0.2 + 0.05 * math.sin(a)) for a in np.linspace(math.pi, -math.pi, 7)[:6]]
    + [(0.3 * math.cos(a), 0.45 + 0.1 * math.sin(a)) for a in np.linspace(math.pi, -math.pi, 13)[:12]]
    + [(0.2 * math.cos(a), 0.45 + 0.05 * math.sin(a)) for a in np.linspace(math.pi, -math.pi, 9)[:8]],
    np.float32)
assert _FACE_TEMPLATE.shape == (68, 2)


@dataclass(frozen=True)
class Pose:
    """One figure's pose. Lengths are fractions of ``height`` (image px, head top to ankle); angles in
    radians, 0 = hanging straight down, positive = towards image +x.

    center_xy: hip midpoint, image px. facing: cos of the yaw, 1 = facing the camera, -1 = back to it (the
    person's left then appears on image right when facing > 0). lean: torso tilt. arms/legs: (upper, lower)
    angle for the person's left and right limb. head_turn: head yaw offset in [-1, 1]. spread: finger spread.
    """

    center_xy: tuple[float, float]
    height: float
    facing: float = 1.0
    lean: float = 0.0
    left_arm: tuple[float, float] = (-0.25, -0.1)
    right_arm: tuple[float, float] = (0.25, 0.1)
    left_leg: tuple[float, float] = (-0.08, 0.0)
    right_leg: tuple[float, float] = (0.08, 0.0)
    head_turn: float = 0.0
    spread: float = 0.35


def _dir(angle: float) -> np.ndarray:
    return np.array([math.sin(angle), math.cos(angle)], np.float32)


def _side(pose: Pose) -> float:
    """+1 when the person's left is on image right (facing the camera), -1 from behind; never 0."""
    return 1.0 if pose.facing >= 0 else -1.0


def figure_keypoints(pose: Pose) -> np.ndarray:
    """The 133 COCO-WholeBody keypoints [133,2] (x, y image px) of a figure in ``pose``."""
    s = float(pose.height)
    width = max(abs(pose.facing), 0.25)  # shoulder/hip width shrinks when turned sideways
    side = _side(pose)
    kp = np.zeros((NUM_KEYPOINTS, 2), np.float32)
    pelvis = np.array(pose.center_xy, np.float32)
    up = -_dir(pose.lean)
    across = np.array([-up[1], up[0]], np.float32) * side  # towards the person's left on screen
    neck = pelvis + up * 0.30 * s
    kp[L_HIP], kp[R_HIP] = pelvis + across * 0.085 * s * width, pelvis - across * 0.085 * s * width
    kp[L_SH], kp[R_SH] = neck + across * 0.12 * s * width, neck - across * 0.12 * s * width
    for (sh, el, wr), (a_up, a_lo), sign in (((L_SH, L_EL, L_WR), pose.left_arm, 1.0),
                                              ((R_SH, R_EL, R_WR), pose.right_arm, -1.0)):
        kp[el] = kp[sh] + _dir(a_up + pose.lean) * 0.16 * s
        kp[wr] = kp[el] + _dir(a_up + a_lo + pose.lean) * 0.15 * s
    for (hip, kn, an), (a_up, a_lo) in (((L_HIP, L_KN, L_AN), pose.left_leg), ((R_HIP, R_KN, R_AN), pose.right_leg)):
        kp[kn] = kp[hip] + _dir(a_up) * 0.24 * s
        kp[an] = kp[kn] + _dir(a_up + a_lo) * 0.23 * s
    # head: centre above the neck, turned by facing/head_turn (a yaw shifts frontal features sideways)
    r = 0.065 * s
    head = neck + up * (0.04 * s + r)
    yaw = float(np.clip((1.0 - abs(pose.facing)) * math.copysign(1.0, pose.head_turn or 1.0) * 0.8
                        + pose.head_turn * 0.6, -1.0, 1.0))
    hx = np.array([math.cos(pose.lean), math.sin(pose.lean)], np.float32)  # head x axis (image)
    hy = np.array([-hx[1], hx[0]], np.float32)
    face = _FACE_TEMPLATE.copy()
    face[:, 0] = face[:, 0] * math.cos(yaw * 0.9) + 0.55 * math.sin(yaw * 0.9) * (1 - face[:, 0] ** 2)
    face_img = head + (face[:, :1] * hx + face[:, 1:] * hy) * r
    if pose.facing < 0:  # seen from behind the face is hidden behind the head: keep it on the head centre
        face_img = head + (face_img - head) * 0.15
    kp[FACE0:FACE0 + 68] = face_img
    kp[NOSE] = face_img[30]
    kp[L_EYE] = face_img[42:48].mean(0) if side > 0 else face_img[36:42].mean(0)
    kp[R_EYE] = face_img[36:42].mean(0) if side > 0 else face_img[42:48].mean(0)
    ear = r * 0.95 * max(abs(math.cos(yaw)), 0.3)
    kp[L_EAR] = head + hx * ear * side + hy * 0.05 * r
    kp[R_EAR] = head - hx * ear * side + hy * 0.05 * r
    # feet: toes point along the walking direction (sideways when turned), heel behind the ankle
    for an, base in ((L_AN, 17), (R_AN, 20)):
        fwd = np.array([math.copysign(1.0, pose.head_turn or 0.3) * (1.0 - abs(pose.facing)) * 0.9,
                        0.35 + 0.4 * abs(pose.facing)], np.float32)
        fwd /= np.linalg.norm(fwd)
        out = 1.0 if an == L_AN else -1.0
        kp[base] = kp[an] + (fwd * 0.07 + np.array([0.015 * out * side, 0.02], np.float32)) * s
        kp[base + 1] = kp[an] + (fwd * 0.055 + np.array([0.04 * out * side, 0.02], np.float32)) * s
        kp[base + 2] = kp[an] + (-fwd * 0.025 + np.array([0.0, 0.03], np.float32)) * s
    # hands: root at the wrist, fingers fanned along the forearm
    for el, wr, base, sign in ((L_EL, L_WR, LHAND0, 1.0), (R_EL, R_WR, RHAND0, -1.0)):
        axis = kp[wr] - kp[el]
        axis /= max(float(np.linalg.norm(axis)), 1e-6)
        perp = np.array([-axis[1], axis[0]], np.float32) * sign * side
        root = kp[wr] + axis * 0.012 * s
        kp[base] = root
        for f in range(5):
            ang = (f - 1.5) * pose.spread * 0.5 + (0.9 if f == 0 else 0.0)
            d = axis * math.cos(ang) + perp * math.sin(ang)
            lengths = (0.018, 0.016, 0.012, 0.010) if f else (0.016, 0.013, 0.011, 0.009)
            p = root + perp * (f - 2) * 0.006 * s * (0 if f == 0 else 1)
            for j, length in enumerate(lengths):
                p = p + d * length * s * (1.15 if j == 0 and f else 1.0)
                kp[base + 1 + 4 * f + j] = p
    return kp


@dataclass(frozen=True)
class Look:
    """A figure's colours (BGR) and clothing texture."""

    skin: tuple[int, int, int]
    shirt: tuple[int, int, int]
    trousers: tuple[int, int, int]
    shoes: tuple[int, int, int]
    hair: tuple[int, int, int]
    stripes: int  # 0: plain clothes, else the stripe period in px


def random_look(rng: np.random.Generator) -> Look:
    def colour(lo: int = 30, hi: int = 230) -> tuple[int, int, int]:
        return tuple(int(v) for v in rng.integers(lo, hi, 3))

    skin_tone = rng.uniform(0.35, 1.0)
    skin = (int(90 + 80 * skin_tone), int(120 + 90 * skin_tone), int(150 + 100 * skin_tone))
    return Look(skin=skin, shirt=colour(), trousers=colour(20, 200), shoes=colour(10, 90), hair=colour(10, 120),
                stripes=int(rng.choice([0, 0, 5, 7, 9])))


_LIMBS = ((L_SH, L_EL, "shirt", 0.045), (L_EL, L_WR, "skin", 0.032), (R_SH, R_EL, "shirt", 0.045),
          (R_EL, R_WR, "skin", 0.032), (L_HIP, L_KN, "trousers", 0.06), (L_KN, L_AN, "trousers", 0.05),
          (R_HIP, R_KN, "trousers", 0.06), (R_KN, R_AN, "trousers", 0.05))


def _capsule(image: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float, colour: tuple[int, int, int],
             stripes: int) -> None:
    thickness = max(2, int(round(2 * radius)))
    pa, pb = tuple(int(round(v)) for v in a), tuple(int(round(v)) for v in b)
    cv2.line(image, pa, pb, colour, thickness, cv2.LINE_AA)
    if stripes:
        dark = tuple(int(c * 0.6) for c in colour)
        n = int(np.linalg.norm(b - a) // stripes)
        for i in range(1, n):
            p = a + (b - a) * (i / n)
            d = (b - a) / max(float(np.linalg.norm(b - a)), 1e-6)
            q = np.array([-d[1], d[0]]) * radius * 0.9
            cv2.line(image, tuple(int(v) for v in p - q), tuple(int(v) for v in p + q), dark, 1, cv2.LINE_AA)


def draw_figure(image: np.ndarray, pose: Pose, look: Look) -> np.ndarray:
    """Paint the figure of ``pose`` onto ``image`` (BGR u8, in place) and return its keypoints [133,2]."""
    kp = figure_keypoints(pose)
    s = float(pose.height)
    colours = {"shirt": look.shirt, "skin": look.skin, "trousers": look.trousers}
    far_first = (L_SH, L_HIP) if pose.facing >= 0 else (R_SH, R_HIP)  # the far side is drawn first
    limbs = sorted(_LIMBS, key=lambda limb: 0 if limb[0] in (far_first[0], far_first[1], far_first[0] + 2,
                                                              far_first[1] + 2) else 1)
    torso = np.array([kp[L_SH], kp[R_SH], kp[R_HIP], kp[L_HIP]], np.float32)
    centre = torso.mean(0)
    torso = centre + (torso - centre) * np.array([1.25, 1.05], np.float32)
    for a, b, part, radius in limbs[:4]:
        _capsule(image, kp[a], kp[b], radius * s, colours[part], look.stripes if part == "shirt" else 0)
    cv2.fillConvexPoly(image, np.round(torso).astype(np.int32), look.shirt, cv2.LINE_AA)
    if look.stripes:
        for y in range(int(torso[:, 1].min()), int(torso[:, 1].max()), look.stripes):
            xs = torso[:, 0]
            cv2.line(image, (int(xs.min()) + 2, y), (int(xs.max()) - 2, y),
                     tuple(int(c * 0.6) for c in look.shirt), 1, cv2.LINE_AA)
    for a, b, part, radius in limbs[4:]:
        _capsule(image, kp[a], kp[b], radius * s, colours[part], look.stripes if part == "shirt" else 0)
    for base in (17, 20):  # shoes: heel -> toes
        cv2.fillConvexPoly(image, np.round(kp[[base + 2, base, base + 1]]).astype(np.int32), look.shoes, cv2.LINE_AA)
        cv2.line(image, tuple(int(v) for v in kp[base + 2]), tuple(int(v) for v in (kp[base] + kp[base + 1]) / 2),
                 look.shoes, max(2, int(0.025 * s)), cv2.LINE_AA)
    for base in (LHAND0, RHAND0):  # hands: palm + fingers
        for f in range(5):
            pts = kp[[base] + [base + 1 + 4 * f + j for j in range(4)]]
            cv2.polylines(image, [np.round(pts).astype(np.int32)], False, look.skin, max(1, int(0.008 * s)),
                          cv2.LINE_AA)
    neck_top = (kp[L_SH] + kp[R_SH]) / 2
    head = kp[FACE0:FACE0 + 68]
    head_c = (kp[L_EAR] + kp[R_EAR]) / 2
    r = 0.065 * s
    cv2.line(image, tuple(int(v) for v in neck_top), tuple(int(v) for v in head_c), look.skin,
             max(2, int(0.04 * s)), cv2.LINE_AA)
    cv2.circle(image, tuple(int(round(v)) for v in head_c), int(round(r * 1.05)), look.skin, -1, cv2.LINE_AA)
    if pose.facing < 0:  # back of the head: hair only
        cv2.circle(image, tuple(int(round(v)) for v in head_c), int(round(r * 1.0)), look.hair, -1, cv2.LINE_AA)
        return kp
    cv2.ellipse(image, tuple(int(round(v)) for v in head_c), (int(r * 1.05), int(r * 0.6)), 0, 180, 360,
                look.hair, -1, cv2.LINE_AA)
    dark = (40, 30, 30)
    for lo, hi, closed, colour in ((17, 22, False, look.hair), (22, 27, False, look.hair), (27, 31, False, dark),
                                   (31, 36, False, dark), (36, 42, True, dark), (42, 48, True, dark),
                                   (48, 60, True, (60, 60, 170)), (0, 17, False, tuple(int(c * 0.8) for c in look.skin))):
        cv2.polylines(image, [np.round(head[lo:hi]).astype(np.int32)], closed, colour, 1, cv2.LINE_AA)
    return kp


def textured_background(size_wh: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A BGR u8 background: a colour gradient, soft blobs, a few lines and pixel noise (seeded)."""
    w, h = size_wh
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    c0, c1 = rng.integers(40, 220, 3), rng.integers(40, 220, 3)
    t = (xx / max(w - 1, 1) * rng.uniform(0.2, 1) + yy / max(h - 1, 1) * rng.uniform(0.2, 1))[..., None]
    image = (c0 * (1 - t / t.max()) + c1 * (t / t.max())).astype(np.float32)
    for _ in range(int(rng.integers(3, 8))):
        cx, cy, rad = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(0.05, 0.3) * max(w, h)
        image += (rng.uniform(-50, 50, 3) * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * rad ** 2))[..., None])
    image += rng.normal(0, 6, image.shape)
    image = np.clip(image, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 7))):
        p, q = rng.uniform(0, [w, h]).astype(int), rng.uniform(0, [w, h]).astype(int)
        cv2.line(image, tuple(int(v) for v in p), tuple(int(v) for v in q),
                 tuple(int(v) for v in rng.integers(0, 255, 3)), int(rng.integers(1, 4)), cv2.LINE_AA)
    return image


def keypoint_box(keypoints: np.ndarray, margin: float = 0.04) -> np.ndarray:
    """Person box [4] x1, y1, x2, y2 around keypoints [K,2], grown by ``margin`` x the box height."""
    lo, hi = keypoints.min(0), keypoints.max(0)
    pad = margin * float(hi[1] - lo[1])
    return np.array([lo[0] - pad, lo[1] - pad * 2.2, hi[0] + pad, hi[1] + pad], np.float32)


def random_pose(rng: np.random.Generator, center_xy: tuple[float, float], height: float) -> Pose:
    """A random plausible pose (standing, walking, waving, reaching, crouching a little)."""
    def arm(sign: float) -> tuple[float, float]:
        if rng.random() < 0.25:  # raised / waving
            return (sign * rng.uniform(1.6, 2.9), sign * rng.uniform(-0.6, 0.8))
        return (sign * rng.uniform(-0.5, 1.3), sign * rng.uniform(-0.2, 1.6))

    def leg(sign: float) -> tuple[float, float]:
        return (sign * rng.uniform(-0.15, 0.45), rng.uniform(-0.5, 0.1) * sign)

    facing = float(rng.choice([1.0, 1.0, -1.0]) * rng.uniform(0.2, 1.0))
    return Pose(center_xy=center_xy, height=height, facing=facing, lean=float(rng.uniform(-0.2, 0.2)),
                left_arm=arm(1.0), right_arm=arm(-1.0), left_leg=leg(1.0), right_leg=leg(-1.0),
                head_turn=float(rng.uniform(-0.6, 0.6)), spread=float(rng.uniform(0.1, 0.7)))


def render_scene(size_wh: tuple[int, int], poses: list[Pose], looks: list[Look],
                 rng: np.random.Generator, background: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Draw figures back to front (smaller = farther) on a background.

    Returns (image BGR u8 [H,W,3], keypoints [P,133,2] image px in the order of ``poses``,
    boxes_xyxy [P,4] image px).
    """
    image = textured_background(size_wh, rng) if background is None else background.copy()
    kps = np.zeros((len(poses), NUM_KEYPOINTS, 2), np.float32)
    for i in sorted(range(len(poses)), key=lambda j: (poses[j].center_xy[1] + 0.5 * poses[j].height)):
        kps[i] = draw_figure(image, poses[i], looks[i])
    boxes = np.stack([keypoint_box(k) for k in kps]) if len(poses) else np.zeros((0, 4), np.float32)
    return image, kps, boxes


def _bounce(x: float, lo: float, hi: float) -> tuple[float, float]:
    """x folded into [lo, hi] as a triangle wave; returns (position, direction +1/-1)."""
    span = hi - lo
    u = (x - lo) % (2 * span)
    return (lo + u, 1.0) if u < span else (hi - (u - span), -1.0)


def walk_sequence(num_frames: int, size_wh: tuple[int, int] = (640, 480), num_figures: int = 3,
                  seed: int = 0) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """A video of figures that walk back and forth (crossing and occluding each other), turn, and wave.

    Returns (frames [T] BGR u8, keypoints [T,P,133,2], boxes_xyxy [T,P,4]) with ground truth in every frame.
    """
    rng = np.random.default_rng(seed)
    w, h = size_wh
    background = textured_background(size_wh, rng)
    looks = [random_look(rng) for _ in range(num_figures)]
    walkers = []
    for i in range(num_figures):
        walkers.append(dict(x0=(i + 0.5) / num_figures * w, height=float(rng.uniform(0.5, 0.72) * h),
                            speed=(1.0 if i % 2 == 0 else -1.0) * float(rng.uniform(0.004, 0.008)) * w,
                            y=float(h * rng.uniform(0.5, 0.6)), phase=float(rng.uniform(0, 2 * math.pi)),
                            waves=i == 1))
    frames, kps, boxes = [], [], []
    for t in range(num_frames):
        poses = []
        for wk in walkers:
            x, direction = _bounce(wk["x0"] + wk["speed"] * t, 0.12 * w, 0.88 * w)
            turn = math.cos(t / 25.0 + wk["phase"])  # facing the camera, sideways, from behind, ...
            facing = turn if abs(turn) > 0.2 else math.copysign(0.2, turn)
            step = math.sin(t * 0.35 + wk["phase"])
            wave = wk["waves"] and (t // 30) % 2 == 1
            left_arm = (2.5 + 0.4 * math.sin(t * 0.6), 0.3) if wave else (0.45 * step, 0.3)
            poses.append(Pose(center_xy=(x, wk["y"] + 2 * abs(step)), height=wk["height"], facing=facing,
                              lean=0.05 * step * direction, left_arm=left_arm, right_arm=(-0.45 * step, -0.3),
                              left_leg=(-0.35 * step, 0.25 * max(step, 0)),
                              right_leg=(0.35 * step, -0.25 * max(-step, 0)),
                              head_turn=0.4 * math.sin(t / 23.0 + wk["phase"]) + 0.3 * direction, spread=0.4))
        image, kp, bx = render_scene(size_wh, poses, looks, rng, background)
        frames.append(image)
        kps.append(kp)
        boxes.append(bx)
    return frames, np.stack(kps), np.stack(boxes)


def pck(pred: np.ndarray, gt: np.ndarray, boxes_size: np.ndarray, alpha: float = 0.05) -> np.ndarray:
    """Correct-keypoint mask [N,K]: distance of pred [N,K,2] to gt [N,K,2] <= alpha x boxes_size [N] (the box's
    longer side), PCK@alpha; a non-finite prediction is wrong."""
    dist = np.nan_to_num(np.linalg.norm(pred - gt, axis=-1), nan=np.inf)
    return dist <= alpha * np.asarray(boxes_size, np.float64)[:, None]


#: part -> (start, stop) keypoint index range, for per-part PCK (the runtime's part groups: hands = both hands)
PARTS = {group: (WHOLEBODY_PARTS[parts[0]][0], WHOLEBODY_PARTS[parts[-1]][1]) for group, parts in PART_GROUPS.items()}


def as_results(records: "Iterable[FrameResult | dict]") -> list[FrameResult]:
    """Frame results of a run: ``predictions.jsonl`` records are read with
    :meth:`~edge_runtime.running.results.FrameResult.from_record`, FrameResults are kept."""
    return [r if isinstance(r, FrameResult) else FrameResult.from_record(r) for r in records]


def match_person(result: FrameResult, box: np.ndarray, min_iou: float = 0.3) -> "int | None":
    """The index of the predicted person of ``result`` that has keypoints and whose box overlaps the ground-truth
    box [4] image px most, with IoU >= ``min_iou`` (the last of equals); None if there is none."""
    best, best_iou = None, min_iou
    ious = box_iou(np.asarray(result.boxes_xyxy, np.float32).reshape(-1, 4), np.asarray(box)[None])[:, 0]
    for j, (iou, posed) in enumerate(zip(ious, result.has_pose)):
        if posed and float(iou) >= best_iou:
            best, best_iou = j, float(iou)
    return best


def person_keypoints(result: FrameResult, j: int) -> np.ndarray:
    """Person ``j``'s keypoints [K,2] image px, float32 (NaN where the record had null)."""
    return np.asarray(result.keypoints[j], np.float32)


def score_records(records: "Iterable[FrameResult | dict]", gt_keypoints: np.ndarray, gt_boxes: np.ndarray,
                  alpha: float = 0.05) -> dict[str, float]:
    """PCK@alpha of a run's frame results (or ``predictions.jsonl`` records) against ground truth [T,P,K,2] /
    boxes [T,P,4].

    A keypoint is correct when it lies within ``alpha`` x the longer side of its ground-truth box. Each
    ground-truth person is matched to the predicted person whose ``bbox_xyxy`` overlaps it most (IoU >= 0.3);
    an unmatched person counts all its keypoints wrong. Returns {"all", "body", "feet", "face", "hands",
    "persons", "matched"} (PCK shares in [0, 1], counts); only the keypoints the model predicts (17 or 133)
    are scored.
    """
    correct: list[np.ndarray] = []
    persons = matched = 0
    k_pred = None
    for result in as_results(records):
        t = int(result.frame)
        if t >= len(gt_keypoints):
            continue
        for p in range(gt_keypoints.shape[1]):
            persons += 1
            box = gt_boxes[t, p]
            best = match_person(result, box)  # persons without a pose yet are not matched
            if best is None:
                correct.append(np.zeros(k_pred or gt_keypoints.shape[2], bool))
                continue
            matched += 1
            kp = person_keypoints(result, best)
            k_pred = len(kp)
            size = np.array([max(box[2] - box[0], box[3] - box[1])])
            correct.append(pck(kp[None], gt_keypoints[t, p, :k_pred][None], size, alpha)[0])
    k = k_pred or gt_keypoints.shape[2]
    ok = np.stack([c[:k] if len(c) >= k else np.zeros(k, bool) for c in correct]) if correct else np.zeros((0, k), bool)
    out = {"all": float(ok.mean()) if ok.size else 0.0, "persons": persons, "matched": matched}
    for part, (lo, hi) in PARTS.items():
        if hi <= k:
            out[part] = float(ok[:, lo:hi].mean()) if ok.size else 0.0
    return out


def keypoint_jitter(records: "Iterable[FrameResult | dict]", gt_keypoints: np.ndarray,
                    gt_boxes: np.ndarray) -> dict[str, float]:
    """Jitter of a run's frame results (or ``predictions.jsonl`` records): the mean absolute second difference |x[t+1] - 2 x[t] + x[t-1]|
    (the 2-D norm, image px) of each keypoint of each ground-truth person over the frames t where that person is
    matched (as in :func:`score_records`) in t-1, t and t+1, beside the same mean of the ground truth on the same
    frames (its own motion's acceleration). Returns {"jitter_px", "jitter_gt_px", "jitter_body_px",
    "jitter_body_gt_px", "jitter_triples"}; the excess jitter is ``jitter_px - jitter_gt_px``."""
    by_frame = {int(r.frame): r for r in as_results(records)}
    num_frames, num_persons = gt_keypoints.shape[:2]
    pred_d2: list[np.ndarray] = []
    gt_d2: list[np.ndarray] = []
    for p in range(num_persons):
        track: list["np.ndarray | None"] = []
        for t in range(num_frames):
            best = match_person(by_frame[t], gt_boxes[t, p]) if t in by_frame else None
            track.append(None if best is None else person_keypoints(by_frame[t], best))
        for t in range(1, num_frames - 1):
            a, b, c = track[t - 1], track[t], track[t + 1]
            if a is None or b is None or c is None:
                continue
            k = len(b)
            pred_d2.append(np.linalg.norm(c - 2 * b + a, axis=-1))
            g = gt_keypoints[t - 1:t + 2, p, :k]
            gt_d2.append(np.linalg.norm(g[2] - 2 * g[1] + g[0], axis=-1))
    if not pred_d2:
        return {"jitter_px": float("nan"), "jitter_gt_px": float("nan"), "jitter_body_px": float("nan"),
                "jitter_body_gt_px": float("nan"), "jitter_triples": 0}
    pred, gt = np.stack(pred_d2), np.stack(gt_d2)   # [triples, K]
    body = PARTS["body"][1]
    return {"jitter_px": float(np.nanmean(pred)), "jitter_gt_px": float(np.mean(gt)),
            "jitter_body_px": float(np.nanmean(pred[:, :body])), "jitter_body_gt_px": float(np.mean(gt[:, :body])),
            "jitter_triples": len(pred)}
