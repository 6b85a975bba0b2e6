"""Keypoint tables: COCO-WholeBody (133) and COCO body (17) names, part ranges, flip pairs, skeletons.

Layout of COCO-WholeBody (index ranges, end exclusive)::

    body   0..17   the 17 COCO keypoints (nose, eyes, ears, shoulders, elbows, wrists, hips, knees, ankles)
    feet  17..23   left big toe, left small toe, left heel, right big toe, right small toe, right heel
    face  23..91   68 facial landmarks (iBUG-68 order, face-0 .. face-67)
    left hand  91..112   21 points (root, thumb1-4, forefinger1-4, middle1-4, ring1-4, pinky1-4)
    right hand 112..133  same order

Flip pairs follow the ``swap`` fields of mmpose's ``coco_wholebody`` / ``coco`` dataset infos (tables
below are written out independently). Skeleton links follow DWPose's drawing (OpenPose-18 body limbs
drawn on COCO indices, hand bones per finger).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from edge_runtime.errors import InputError

#: keypoint score above which a keypoint counts as visible (drawing, OpenPose export, boxes from keypoints)
DEFAULT_SCORE_THRESHOLD = 0.3

BODY_NAMES: tuple[str, ...] = (
    "nose", "left_eye", "right_eye", "left_ear", "right_ear",
    "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist",
    "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
)
FOOT_NAMES: tuple[str, ...] = (
    "left_big_toe", "left_small_toe", "left_heel", "right_big_toe", "right_small_toe", "right_heel",
)
FACE_NAMES: tuple[str, ...] = tuple(f"face-{i}" for i in range(68))
_HAND_PARTS: tuple[str, ...] = ("hand_root",) + tuple(
    f"{finger}{j}" for finger in ("thumb", "forefinger", "middle_finger", "ring_finger", "pinky_finger")
    for j in range(1, 5))
LEFT_HAND_NAMES: tuple[str, ...] = tuple(f"left_{p}" for p in _HAND_PARTS)
RIGHT_HAND_NAMES: tuple[str, ...] = tuple(f"right_{p}" for p in _HAND_PARTS)

WHOLEBODY_NAMES: tuple[str, ...] = BODY_NAMES + FOOT_NAMES + FACE_NAMES + LEFT_HAND_NAMES + RIGHT_HAND_NAMES
NUM_WHOLEBODY = len(WHOLEBODY_NAMES)  # 133
NUM_BODY = len(BODY_NAMES)  # 17

#: part -> (start, stop) index range in the 133-point layout
WHOLEBODY_PARTS: dict[str, tuple[int, int]] = {
    "body": (0, 17),
    "feet": (17, 23),
    "face": (23, 91),
    "left_hand": (91, 112),
    "right_hand": (112, 133),
}
#: filter groups accepted by :func:`filter_parts` -> the parts they cover
PART_GROUPS: dict[str, tuple[str, ...]] = {
    "body": ("body",),
    "feet": ("feet",),
    "face": ("face",),
    "hands": ("left_hand", "right_hand"),
}
ALL_GROUPS: frozenset[str] = frozenset(PART_GROUPS)
#: the part list, in order (settings ``parts``, result records, per-part PCK): the one definition, others import it
PART_NAMES: tuple[str, ...] = tuple(PART_GROUPS)

# body: left <-> right (COCO 17)
BODY_FLIP_PAIRS: tuple[tuple[int, int], ...] = ((1, 2), (3, 4), (5, 6), (7, 8), (9, 10), (11, 12), (13, 14),
                                                (15, 16))
# face (iBUG-68, local indices 0..67): contour, brows, nose base, eyes, outer/inner lips
_FACE_FLIP_LOCAL: tuple[tuple[int, int], ...] = (
    tuple((i, 16 - i) for i in range(8))              # jaw contour 0..16 (8 is the chin)
    + tuple((17 + i, 26 - i) for i in range(5))       # eyebrows 17..26
    + ((31, 35), (32, 34))                            # nose base 31..35 (33 centre; 27..30 bridge)
    + ((36, 45), (37, 44), (38, 43), (39, 42), (40, 47), (41, 46))  # eyes
    + ((48, 54), (49, 53), (50, 52), (55, 59), (56, 58))            # outer lips (51, 57 centre)
    + ((60, 64), (61, 63), (65, 67))                                # inner lips (62, 66 centre)
)


def _wholebody_flip_pairs() -> tuple[tuple[int, int], ...]:
    pairs = list(BODY_FLIP_PAIRS)
    pairs += [(17 + i, 20 + i) for i in range(3)]  # feet
    pairs += [(23 + a, 23 + b) for a, b in _FACE_FLIP_LOCAL]
    pairs += [(91 + i, 112 + i) for i in range(21)]  # hands
    return tuple(pairs)


WHOLEBODY_FLIP_PAIRS: tuple[tuple[int, int], ...] = _wholebody_flip_pairs()


def flip_indices(num_keypoints: int) -> np.ndarray:
    """Permutation ``perm`` [K] such that ``flipped[perm]`` swaps left/right keypoints (K = 133 or 17)."""
    if num_keypoints == NUM_WHOLEBODY:
        pairs = WHOLEBODY_FLIP_PAIRS
    elif num_keypoints == NUM_BODY:
        pairs = BODY_FLIP_PAIRS
    else:
        raise InputError(f"num_keypoints: flip pairs exist for {NUM_WHOLEBODY} (wholebody) or {NUM_BODY} "
                         f"(body) keypoints, got {num_keypoints}")
    perm = np.arange(num_keypoints)
    for a, b in pairs:
        perm[a], perm[b] = b, a
    return perm


def keypoint_names(num_keypoints: int) -> tuple[str, ...]:
    """Names for K = 133 (COCO-WholeBody) or 17 (COCO body)."""
    if num_keypoints == NUM_WHOLEBODY:
        return WHOLEBODY_NAMES
    if num_keypoints == NUM_BODY:
        return BODY_NAMES
    raise InputError(f"num_keypoints: expected {NUM_WHOLEBODY} or {NUM_BODY}, got {num_keypoints}")


def part_ranges(num_keypoints: int) -> dict[str, tuple[int, int]]:
    """{part: (start, stop)} for K = 133 (all parts) or 17 (body only)."""
    if num_keypoints == NUM_WHOLEBODY:
        return dict(WHOLEBODY_PARTS)
    if num_keypoints == NUM_BODY:
        return {"body": (0, NUM_BODY)}
    raise InputError(f"num_keypoints: expected {NUM_WHOLEBODY} or {NUM_BODY}, got {num_keypoints}")


# ---------------------------------------------------------------- skeletons (COCO indices)
#: OpenPose-18 order expressed in COCO-17 indices; None = neck (mean of the shoulders)
OPENPOSE18_FROM_COCO: tuple[int | None, ...] = (0, None, 6, 8, 10, 5, 7, 9, 12, 14, 16, 11, 13, 15, 2, 1, 4, 3)
#: DWPose/OpenPose limbs on OpenPose-18 indices (drawn in this order with :data:`BODY_COLORS`)
OPENPOSE18_LIMBS: tuple[tuple[int, int], ...] = (
    (1, 2), (1, 5), (2, 3), (3, 4), (5, 6), (6, 7), (1, 8), (8, 9), (9, 10), (1, 11), (11, 12), (12, 13),
    (1, 0), (0, 14), (14, 16), (0, 15), (15, 17),
)
#: foot bones in the 133 layout (ankle -> heel/toes), DWPose draws feet as points; we link them
FOOT_LINKS: tuple[tuple[int, int], ...] = ((15, 19), (15, 17), (15, 18), (16, 22), (16, 20), (16, 21))
#: hand bones on local hand indices 0..20
HAND_LINKS: tuple[tuple[int, int], ...] = tuple(
    (0 if j == 0 else 1 + 4 * f + j - 1, 1 + 4 * f + j) for f in range(5) for j in range(4))


def filter_parts(keypoints: np.ndarray, scores: np.ndarray,
                 parts: Iterable[str] = ALL_GROUPS) -> tuple[np.ndarray, np.ndarray]:
    """Zero the scores of keypoints outside ``parts`` (subset of {"body", "feet", "face", "hands"}).

    keypoints [..., K, 2] and scores [..., K] keep their shapes (K stays 133/17 so indices keep their
    meaning); scores of removed parts become 0 and their keypoints are left untouched. Returns copies.
    """
    parts = set(parts)
    unknown = parts - ALL_GROUPS
    if unknown:
        raise InputError(f"parts: unknown part(s) {sorted(unknown)}; expected a subset of {sorted(ALL_GROUPS)}")
    keypoints = np.array(keypoints, copy=True)
    scores = np.array(scores, dtype=np.float32, copy=True)
    k = scores.shape[-1]
    if keypoints.shape[-2] != k:
        raise InputError(f"keypoints {keypoints.shape} and scores {scores.shape} disagree on K")
    ranges = part_ranges(k)
    keep = np.zeros(k, dtype=bool)
    for group in parts:
        for part in PART_GROUPS[group]:
            if part in ranges:
                start, stop = ranges[part]
                keep[start:stop] = True
    scores[..., ~keep] = 0.0
    return keypoints, scores
