"""DWPose-style skeleton drawing on BGR images (OpenPose-18 body sticks, hand bones, face dots).

The look follows DWPose / ControlNet's ``draw_bodypose`` / ``draw_handpose`` / ``draw_facepose``: body
limbs are filled ellipses in the 18 OpenPose colours blended at 60 %, joints are dots in the same colours,
hand bones are HSV-rainbow lines with red joints, face landmarks are white dots; feet (which DWPose
does not draw) are ankle->toe/heel sticks. Colours are given in RGB like DWPose and converted to BGR
here, so images look the same as DWPose's. Stick width and dot size scale with the image size.
"""
from __future__ import annotations

import colorsys
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Iterable

import cv2
import numpy as np

from edge_runtime.errors import InputError
from edge_runtime.model.keypoints import DEFAULT_SCORE_THRESHOLD, ALL_GROUPS, FOOT_LINKS, HAND_LINKS, NUM_BODY, NUM_WHOLEBODY, OPENPOSE18_LIMBS, WHOLEBODY_PARTS
from edge_runtime.media.openpose import openpose18

if TYPE_CHECKING:
    from edge_runtime.running.results import FrameResult

#: the 18 OpenPose colours (RGB), one per limb / joint
BODY_COLORS_RGB: tuple[tuple[int, int, int], ...] = (
    (255, 0, 0), (255, 85, 0), (255, 170, 0), (255, 255, 0), (170, 255, 0), (85, 255, 0), (0, 255, 0),
    (0, 255, 85), (0, 255, 170), (0, 255, 255), (0, 170, 255), (0, 85, 255), (0, 0, 255), (85, 0, 255),
    (170, 0, 255), (255, 0, 255), (255, 0, 170), (255, 0, 85),
)
FOOT_COLOR_RGB = (255, 128, 0)
HAND_JOINT_COLOR_RGB = (255, 0, 0)
FACE_COLOR_RGB = (255, 255, 255)


def _bgr(rgb: tuple[int, int, int]) -> tuple[int, int, int]:
    return int(rgb[2]), int(rgb[1]), int(rgb[0])


def _hand_colors() -> list[tuple[int, int, int]]:
    n = len(HAND_LINKS)
    return [_bgr(tuple(int(round(c * 255)) for c in colorsys.hsv_to_rgb(i / n, 1.0, 1.0))) for i in range(n)]


_HAND_COLORS_BGR = _hand_colors()


@dataclass
class DrawOptions:
    """What to draw: parts (subset of body/feet/face/hands) and the keypoint score threshold."""

    parts: frozenset[str] = field(default_factory=lambda: ALL_GROUPS)
    threshold: float = DEFAULT_SCORE_THRESHOLD
    draw_boxes: bool = False

    def __post_init__(self) -> None:
        self.parts = frozenset(self.parts)
        unknown = self.parts - ALL_GROUPS
        if unknown:
            raise InputError(f"draw parts: unknown {sorted(unknown)}; expected a subset of {sorted(ALL_GROUPS)}")


def _sizes(image: np.ndarray) -> tuple[int, int, int]:
    """(stick half-width, joint radius, small dot radius) scaled with the image size."""
    avg = (image.shape[0] + image.shape[1]) / 2
    return max(1, int(round(avg / 256))) * 2, max(2, int(round(avg / 192))), max(1, int(round(avg / 320)))


def _valid(p: np.ndarray, s: float, threshold: float) -> bool:
    return bool(np.isfinite(s) and s >= threshold and np.all(np.isfinite(p)))


def _pt(p: np.ndarray) -> tuple[int, int]:
    return int(round(float(p[0]))), int(round(float(p[1])))


def draw_body(canvas: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """OpenPose-18 sticks + joints for one person (COCO keypoints [K>=17,2] image px); returns the canvas."""
    points, conf = openpose18(keypoints, scores, threshold)
    stick, radius, _ = _sizes(canvas)
    overlay = canvas.copy()
    for i, (a, b) in enumerate(OPENPOSE18_LIMBS):
        if not (_valid(points[a], conf[a], threshold) and _valid(points[b], conf[b], threshold)):
            continue
        (x1, y1), (x2, y2) = points[a], points[b]
        length = math.hypot(x2 - x1, y2 - y1)
        if length < 1:
            continue
        angle = math.degrees(math.atan2(y2 - y1, x2 - x1))
        poly = cv2.ellipse2Poly((int(round((x1 + x2) / 2)), int(round((y1 + y2) / 2))),
                                (int(length / 2), stick), int(angle), 0, 360, 1)
        cv2.fillConvexPoly(overlay, poly, _bgr(BODY_COLORS_RGB[i]))
    canvas[:] = cv2.addWeighted(overlay, 0.6, canvas, 0.4, 0)
    for i in range(18):
        if _valid(points[i], conf[i], threshold):
            cv2.circle(canvas, _pt(points[i]), radius, _bgr(BODY_COLORS_RGB[i]), -1, cv2.LINE_AA)
    return canvas


def draw_feet(canvas: np.ndarray, keypoints: np.ndarray, scores: np.ndarray, threshold: float) -> np.ndarray:
    """Ankle -> big toe / small toe / heel sticks (133-point layout)."""
    stick, radius, _ = _sizes(canvas)
    color = _bgr(FOOT_COLOR_RGB)
    for a, b in FOOT_LINKS:
        if _valid(keypoints[a], scores[a], threshold) and _valid(keypoints[b], scores[b], threshold):
            cv2.line(canvas, _pt(keypoints[a]), _pt(keypoints[b]), color, max(1, stick // 2), cv2.LINE_AA)
    start, stop = WHOLEBODY_PARTS["feet"]
    for i in range(start, stop):
        if _valid(keypoints[i], scores[i], threshold):
            cv2.circle(canvas, _pt(keypoints[i]), max(1, radius - 1), color, -1, cv2.LINE_AA)
    return canvas


def draw_hand(canvas: np.ndarray, hand: np.ndarray, hand_scores: np.ndarray, threshold: float) -> np.ndarray:
    """One hand: hand [21,2] image px, hand_scores [21]. Rainbow bones, red joints."""
    _, radius, dot = _sizes(canvas)
    for i, (a, b) in enumerate(HAND_LINKS):
        if _valid(hand[a], hand_scores[a], threshold) and _valid(hand[b], hand_scores[b], threshold):
            cv2.line(canvas, _pt(hand[a]), _pt(hand[b]), _HAND_COLORS_BGR[i], max(1, dot + 1), cv2.LINE_AA)
    for p, s in zip(hand, hand_scores):
        if _valid(p, s, threshold):
            cv2.circle(canvas, _pt(p), max(1, dot + 1), _bgr(HAND_JOINT_COLOR_RGB), -1, cv2.LINE_AA)
    return canvas


def draw_face(canvas: np.ndarray, face: np.ndarray, face_scores: np.ndarray, threshold: float) -> np.ndarray:
    """Face landmarks [68,2] image px as white dots."""
    _, _, dot = _sizes(canvas)
    for p, s in zip(face, face_scores):
        if _valid(p, s, threshold):
            cv2.circle(canvas, _pt(p), dot, _bgr(FACE_COLOR_RGB), -1, cv2.LINE_AA)
    return canvas


def draw_poses(image_bgr: np.ndarray, keypoints: np.ndarray, scores: np.ndarray,
               options: DrawOptions | None = None, boxes_xyxy: np.ndarray | None = None,
               track_ids: Iterable[int | None] | None = None) -> np.ndarray:
    """Draw every person onto a copy of ``image_bgr`` [H,W,3] u8.

    keypoints [N,K,2] image px, scores [N,K] (K = 133 or 17); boxes_xyxy [N,4] image px are drawn when
    ``options.draw_boxes`` (with the track id if given). Returns the drawn copy.
    """
    options = options if options is not None else DrawOptions()
    if not isinstance(image_bgr, np.ndarray) or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise InputError(f"image_bgr: expected [H,W,3] u8, got {getattr(image_bgr, 'shape', type(image_bgr))}")
    canvas = np.ascontiguousarray(image_bgr, dtype=np.uint8).copy()
    kp = np.asarray(keypoints, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    if kp.size == 0:
        kp, sc = np.zeros((0, NUM_BODY, 2)), np.zeros((0, NUM_BODY))
    if kp.ndim != 3 or kp.shape[1] not in (NUM_WHOLEBODY, NUM_BODY) or kp.shape[2] != 2 or sc.shape != kp.shape[:2]:
        raise InputError(f"keypoints/scores: expected [N,133|17,2] image px and [N,K], got {kp.shape}/{sc.shape}")
    thr = options.threshold
    if options.draw_boxes and boxes_xyxy is not None:
        ids = list(track_ids) if track_ids is not None else [None] * len(boxes_xyxy)
        for box, tid in zip(np.asarray(boxes_xyxy, dtype=np.float64).reshape(-1, np.shape(boxes_xyxy)[-1]), ids):
            cv2.rectangle(canvas, _pt(box[:2]), _pt(box[2:4]), (0, 255, 255), 1)
            if tid is not None:
                cv2.putText(canvas, str(tid), _pt(box[:2] + np.array([2, 14])), cv2.FONT_HERSHEY_SIMPLEX, 0.5,
                            (0, 255, 255), 1, cv2.LINE_AA)
    for person_kp, person_sc in zip(kp, sc):
        if "body" in options.parts:
            draw_body(canvas, person_kp, person_sc, thr)
        if person_kp.shape[0] != NUM_WHOLEBODY:
            continue
        if "feet" in options.parts:
            draw_feet(canvas, person_kp, person_sc, thr)
        if "hands" in options.parts:
            for part in ("left_hand", "right_hand"):
                start, stop = WHOLEBODY_PARTS[part]
                draw_hand(canvas, person_kp[start:stop], person_sc[start:stop], thr)
        if "face" in options.parts:
            start, stop = WHOLEBODY_PARTS["face"]
            draw_face(canvas, person_kp[start:stop], person_sc[start:stop], thr)
    return canvas


def draw_result(image_bgr: np.ndarray, result: "FrameResult", options: DrawOptions | None = None) -> np.ndarray:
    """:func:`draw_poses` of a frame's result: the persons that have keypoints (with box and track id when
    ``options.draw_boxes``); a person still waiting for its first pose is not drawn."""
    posed = result.with_pose()
    return draw_poses(image_bgr, posed.keypoints, posed.scores, options, posed.boxes_xyxy,
                      [int(t) for t in posed.track_ids])
