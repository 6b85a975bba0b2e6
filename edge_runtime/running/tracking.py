"""Boxes carried between detector frames, and simple IoU track IDs.

Between two detector runs the runtime re-uses the previous frame's poses as the next frame's person boxes
(as rtmlib's PoseTracker does): the box is the extent of the visible keypoints, expanded around its center.
Track IDs come from greedy IoU matching of each frame's boxes against the previous frame's tracks.
All boxes are ``boxes_xyxy [N,4]`` in image px.
"""
from __future__ import annotations

import numpy as np

from edge_runtime.model.keypoints import DEFAULT_SCORE_THRESHOLD

#: IoU above which a box continues a track
DEFAULT_TRACK_IOU = 0.3
#: a box made from keypoints is their extent scaled by this around its center
DEFAULT_BOX_EXPANSION = 1.25
#: seconds a track missed by the detector keeps its ID (occlusions)
DEFAULT_LOST_S = 1.5


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU matrix [N,M] between boxes_xyxy ``a`` [N,4] and ``b`` [M,4] (image px)."""
    a = np.asarray(a, dtype=np.float64).reshape(-1, 4)
    b = np.asarray(b, dtype=np.float64).reshape(-1, 4)
    if len(a) == 0 or len(b) == 0:
        return np.zeros((len(a), len(b)), dtype=np.float64)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = np.clip(a[:, 2] - a[:, 0], 0, None) * np.clip(a[:, 3] - a[:, 1], 0, None)
    area_b = np.clip(b[:, 2] - b[:, 0], 0, None) * np.clip(b[:, 3] - b[:, 1], 0, None)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def greedy_iou_match(iou: np.ndarray, threshold: float, taken: "set[int] | None" = None) -> list[tuple[int, int]]:
    """Pairs (row, column) of an IoU matrix [N,M], highest IoU first, each row and column used once, IoU >=
    ``threshold``; columns in ``taken`` are skipped (and the chosen ones are added to it)."""
    taken = taken if taken is not None else set()
    rows: set[int] = set()
    pairs: list[tuple[int, int]] = []
    if iou.size == 0:
        return pairs
    for flat in np.argsort(-iou, axis=None, kind="stable"):
        i, j = (int(v) for v in np.unravel_index(flat, iou.shape))
        if iou[i, j] < threshold:
            break
        if i in rows or j in taken:
            continue
        rows.add(i)
        taken.add(j)
        pairs.append((i, j))
    return pairs


def overlaps_image(boxes_xyxy: np.ndarray, image_size: "tuple[int, int]") -> np.ndarray:
    """Mask [N]: the box (image px) overlaps the image of ``image_size`` (w, h) at all; boxes entirely
    outside it carry no person to crop."""
    boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
    w, h = image_size
    return (boxes[:, 2] > 0) & (boxes[:, 3] > 0) & (boxes[:, 0] < w) & (boxes[:, 1] < h)


def select_person_boxes(boxes_xyxy: np.ndarray, scores: np.ndarray, image_size: "tuple[int, int]",
                        max_persons: "int | None") -> "tuple[np.ndarray, np.ndarray, int]":
    """The boxes a frame's crops are made of: float32 boxes [N,4] image px and scores [N] without the boxes
    entirely outside the image ``image_size`` (w, h), at most ``max_persons`` of the highest scores (stable
    order); also returns how many boxes were outside."""
    boxes = np.asarray(boxes_xyxy, np.float32).reshape(-1, 4)
    scores = np.asarray(scores, np.float32).reshape(-1)
    inside = overlaps_image(boxes, image_size)
    boxes, scores = boxes[inside], scores[inside]
    if max_persons is not None and len(boxes) > max_persons:
        keep = np.argsort(-scores, kind="stable")[:max_persons]
        boxes, scores = boxes[keep], scores[keep]
    return boxes, scores, int((~inside).sum())


def boxes_from_keypoints(keypoints: np.ndarray, scores: np.ndarray, image_size: "tuple[int, int]",
                         score_threshold: float = DEFAULT_SCORE_THRESHOLD, expansion: float = DEFAULT_BOX_EXPANSION,
                         min_keypoints: int = 3) -> "tuple[np.ndarray, np.ndarray]":
    """Person boxes from poses, for the frames between detector runs.

    keypoints [N,K,2] image px, scores [N,K]; image_size (w, h). A box is the min/max of the keypoints
    whose score exceeds ``score_threshold``, scaled by ``expansion`` around its center and clipped to the
    image. Persons with fewer than ``min_keypoints`` visible keypoints are dropped.
    Returns (boxes_xyxy [M,4] image px, index [M] of the person each box came from).
    """
    keypoints = np.asarray(keypoints, dtype=np.float64)
    if keypoints.size == 0:
        return np.zeros((0, 4), dtype=np.float32), np.zeros((0,), dtype=np.int64)
    keypoints = keypoints.reshape(len(keypoints), -1, 2)
    scores = np.asarray(scores, dtype=np.float64).reshape(len(keypoints), -1)
    width, height = image_size
    boxes, keep = [], []
    for i in range(len(keypoints)):
        visible = scores[i] > score_threshold
        pts = keypoints[i][visible & np.all(np.isfinite(keypoints[i]), axis=1)]
        if len(pts) < min_keypoints:
            continue
        x1, y1 = pts.min(axis=0)
        x2, y2 = pts.max(axis=0)
        cx, cy = (x1 + x2) / 2.0, (y1 + y2) / 2.0
        half_w, half_h = (x2 - x1) * expansion / 2.0, (y2 - y1) * expansion / 2.0
        box = np.array([max(cx - half_w, 0.0), max(cy - half_h, 0.0),
                        min(cx + half_w, width - 1.0), min(cy + half_h, height - 1.0)])
        if box[2] - box[0] < 2.0 or box[3] - box[1] < 2.0:
            continue
        boxes.append(box)
        keep.append(i)
    if not boxes:
        return np.zeros((0, 4), dtype=np.float32), np.zeros((0,), dtype=np.int64)
    return np.asarray(boxes, dtype=np.float32), np.asarray(keep, dtype=np.int64)


class IouTracker:
    """Greedy IoU track IDs across consecutive processed frames.

    ``update(boxes_xyxy [N,4])`` returns track_ids [N] (int): each box takes the ID of the unmatched track of
    the previous frame with the highest IoU >= ``iou_threshold``, else a new ID. Tracks not seen for more
    than ``max_age`` updates are forgotten.
    """

    def __init__(self, iou_threshold: float = DEFAULT_TRACK_IOU, max_age: int = 1) -> None:
        self.iou_threshold = float(iou_threshold)
        self.max_age = int(max_age)
        self._next_id = 0
        self._boxes = np.zeros((0, 4), dtype=np.float64)
        self._ids = np.zeros((0,), dtype=np.int64)
        self._age = np.zeros((0,), dtype=np.int64)

    def update(self, boxes_xyxy: np.ndarray) -> np.ndarray:
        boxes = np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, 4)
        ids = np.full(len(boxes), -1, dtype=np.int64)
        iou = box_iou(boxes, self._boxes)
        matched_tracks: set[int] = set()
        for i, j in greedy_iou_match(iou, self.iou_threshold, matched_tracks):
            ids[i] = self._ids[j]
        for i in range(len(boxes)):
            if ids[i] < 0:
                ids[i] = self._next_id
                self._next_id += 1
        # keep unmatched old tracks for max_age updates
        old = [j for j in range(len(self._boxes)) if j not in matched_tracks and self._age[j] + 1 <= self.max_age]
        self._boxes = np.concatenate([boxes, self._boxes[old]], axis=0)
        self._ids = np.concatenate([ids, self._ids[old]])
        self._age = np.concatenate([np.zeros(len(boxes), dtype=np.int64), self._age[old] + 1])
        return ids
