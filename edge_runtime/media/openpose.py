"""OpenPose JSON output (the layout ControlNet / ComfyUI pose editors and the SDPose app read).

One frame::

    {"version": 1.3,
     "people": [{"person_id": [track id, or -1],
                 "pose_keypoints_2d": [x, y, c] * 18,
                 "foot_keypoints_2d": [x, y, c] * 6,
                 "face_keypoints_2d": [x, y, c] * 70,    (68 with face_points=68)
                 "hand_left_keypoints_2d": [x, y, c] * 21,
                 "hand_right_keypoints_2d": [x, y, c] * 21}, ...],
     "canvas_width": W, "canvas_height": H}

Conventions (chosen and documented here):

- Coordinates are image px (not normalised), as the SDPose app and comfyui_controlnet_aux write them.
- ``pose_keypoints_2d`` is OpenPose-18 (BODY_18 / COCO-18 order: nose, neck, r-shoulder, r-elbow, r-wrist,
  l-shoulder, l-elbow, l-wrist, r-hip, r-knee, r-ankle, l-hip, l-knee, l-ankle, r-eye, l-eye, r-ear,
  l-ear). The neck is the mean of the two shoulders and is valid only if both shoulders are; its
  confidence is the smaller shoulder score (as the SDPose app).
- A point whose score is below ``threshold``, not finite, or outside the canvas (x not in [0, W), y not in
  [0, H)) is written ``0, 0, 0``.
- ``c`` is 1.0 for every kept point (``confidence="binary"``, the default, as DWPose writes it): the readers
  people feed these files to only show such points -- comfyui_controlnet_aux's ``decode_json_as_poses``
  drops points with ``c < 1.0`` and sd-webui-openpose-editor shows a point only when ``c == 1``. With
  ``confidence="score"`` it is the keypoint score clipped to [0, 1] (OpenPose's documented range; the raw
  heatmap maximum can exceed 1).
- ``version`` is OpenPose's format version (1.3) and ``person_id`` OpenPose's ``[id]`` list: the track ID
  where the runtime tracks persons, else ``[-1]`` (OpenPose's "not tracked").
- ``face_keypoints_2d`` has 70 points by default, as OpenPose's face model and comfyui_controlnet_aux's
  DWPose JSON: the 68 iBUG landmarks, then the right and left pupils taken from the body's right and left
  eyes. ``face_points=68`` (Python API only: :func:`to_openpose`, :func:`to_openpose_person`,
  ``sinks.OpenPoseSink``; ``sdpose-edge run --openpose`` always writes 70) writes only the landmarks: the
  layout of the SDPose app's own JSON (its ComfyUI node and Gradio demo write faces of 68), kept for tools that
  read those files. sd-webui-openpose-editor needs 70 face points and drops a file whose faces have 68
  entirely (every person in it), so never use 68 for files meant for it.
- ``foot_keypoints_2d`` keeps the COCO-WholeBody order, which is OpenPose's BODY_25 foot order (left big
  toe, left small toe, left heel, right big toe, right small toe, right heel).
- ``hand_left`` is the person's left hand (COCO-WholeBody 91..111), as OpenPose and controlnet_aux. (The
  SDPose ComfyUI node labels the two hands the other way round.)
- A body-only (17-point) result writes the 18 pose points and empty lists for the other parts.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import InputError
from edge_runtime.model.keypoints import DEFAULT_SCORE_THRESHOLD, NUM_BODY, NUM_WHOLEBODY, OPENPOSE18_FROM_COCO, WHOLEBODY_PARTS

DEFAULT_THRESHOLD = DEFAULT_SCORE_THRESHOLD
#: OpenPose's JSON format version
OPENPOSE_VERSION = 1.3
CONFIDENCE_MODES = ("binary", "score")
_FACE_POINTS = (68, 70)
PART_KEYS = ("pose_keypoints_2d", "foot_keypoints_2d", "face_keypoints_2d", "hand_left_keypoints_2d",
             "hand_right_keypoints_2d")


def _flatten(points: np.ndarray, scores: np.ndarray, threshold: float, confidence: str,
             canvas: tuple[int, int] | None = None) -> list[float]:
    """points [M,2] image px, scores [M] -> [x, y, c] * M with invalid points (below ``threshold``, not
    finite, or outside ``canvas`` (w, h) when given) as 0, 0, 0; c is 1.0 (binary) or the score in [0, 1]."""
    out: list[float] = []
    w, h = canvas if canvas is not None else (np.inf, np.inf)
    for (x, y), s in zip(points, scores):
        if np.isfinite(s) and np.isfinite(x) and np.isfinite(y) and s >= threshold and 0 <= x < w and 0 <= y < h:
            out.extend((float(x), float(y), 1.0 if confidence == "binary" else float(min(max(s, 0.0), 1.0))))
        else:
            out.extend((0.0, 0.0, 0.0))
    return out


def openpose18(keypoints: np.ndarray, scores: np.ndarray, threshold: float = DEFAULT_THRESHOLD
               ) -> tuple[np.ndarray, np.ndarray]:
    """COCO body keypoints [K>=17,2] + scores [K] -> OpenPose-18 points [18,2] and scores [18].

    The neck (index 1) is the shoulders' mean with score min(shoulders) if both shoulders reach
    ``threshold``, else score 0.
    """
    kp = np.asarray(keypoints, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    points = np.zeros((18, 2), np.float64)
    conf = np.zeros(18, np.float64)
    for i, coco in enumerate(OPENPOSE18_FROM_COCO):
        if coco is not None:
            points[i], conf[i] = kp[coco], sc[coco]
    ls, rs = sc[5], sc[6]
    if np.isfinite(ls) and np.isfinite(rs) and ls >= threshold and rs >= threshold:
        points[1] = 0.5 * (kp[5] + kp[6])
        conf[1] = min(ls, rs)
    return points, conf


def to_openpose_person(keypoints: np.ndarray, scores: np.ndarray, threshold: float = DEFAULT_THRESHOLD,
                       face_points: int = 70, confidence: str = "binary", canvas: tuple[int, int] | None = None,
                       person_id: int | None = None) -> dict[str, Any]:
    """One person: keypoints [K,2] image px, scores [K] (K = 133 or 17) -> OpenPose person dict.

    ``canvas`` (w, h): points outside it are written as 0, 0, 0. ``person_id``: the track ID (None: -1).
    ``face_points``: 70 (OpenPose, the default) or 68 (the SDPose app's layout; sd-webui-openpose-editor drops
    such files, see the module doc)."""
    kp = np.asarray(keypoints, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    if kp.ndim != 2 or kp.shape[1] != 2 or sc.shape != (kp.shape[0],) or kp.shape[0] not in (NUM_WHOLEBODY, NUM_BODY):
        raise InputError(f"keypoints/scores: expected [133,2]/[133] or [17,2]/[17], got {kp.shape}/{sc.shape}")
    if face_points not in _FACE_POINTS:
        raise InputError(f"face_points: expected 68 or 70, got {face_points}")
    if confidence not in CONFIDENCE_MODES:
        raise InputError(f"confidence: expected one of {CONFIDENCE_MODES}, got {confidence!r}")
    body, body_scores = openpose18(kp, sc, threshold)
    person: dict[str, Any] = {"person_id": [-1 if person_id is None else int(person_id)]}
    person.update({key: [] for key in PART_KEYS})
    person["pose_keypoints_2d"] = _flatten(body, body_scores, threshold, confidence, canvas)
    if kp.shape[0] == NUM_WHOLEBODY:
        def part(name: str) -> tuple[np.ndarray, np.ndarray]:
            start, stop = WHOLEBODY_PARTS[name]
            return kp[start:stop], sc[start:stop]
        person["foot_keypoints_2d"] = _flatten(*part("feet"), threshold, confidence, canvas)
        face, face_scores = part("face")
        if face_points == 70:  # OpenPose pupils 68 (right) and 69 (left) from the body's eyes
            face = np.concatenate([face, kp[[2, 1]]])
            face_scores = np.concatenate([face_scores, sc[[2, 1]]])
        person["face_keypoints_2d"] = _flatten(face, face_scores, threshold, confidence, canvas)
        person["hand_left_keypoints_2d"] = _flatten(*part("left_hand"), threshold, confidence, canvas)
        person["hand_right_keypoints_2d"] = _flatten(*part("right_hand"), threshold, confidence, canvas)
    return person


def to_openpose(keypoints: np.ndarray, scores: np.ndarray, width: int, height: int,
                threshold: float = DEFAULT_THRESHOLD, face_points: int = 70, confidence: str = "binary",
                person_ids: list[int | None] | None = None) -> dict[str, Any]:
    """All persons of a frame: keypoints [N,K,2] image px, scores [N,K] -> OpenPose frame dict."""
    kp = np.asarray(keypoints, dtype=np.float64)
    sc = np.asarray(scores, dtype=np.float64)
    if len(kp) != len(sc):
        raise InputError(f"keypoints {kp.shape} and scores {sc.shape} disagree on the number of persons")
    ids = list(person_ids) if person_ids is not None else [None] * len(kp)
    people = [to_openpose_person(k, s, threshold, face_points, confidence, (int(width), int(height)), pid)
              for k, s, pid in zip(kp, sc, ids)]
    return openpose_frame(people, width, height)


def openpose_frame(people: list[dict[str, Any]], width: int, height: int, *, allow_unknown: bool = False
                   ) -> dict[str, Any]:
    """Wrap person dicts with OpenPose's version and the canvas size (image px). ``allow_unknown``: a frame
    that failed before its size was known gets canvas 0 x 0 (and no people)."""
    if (int(width) <= 0 or int(height) <= 0) and not (allow_unknown and not people):
        raise InputError(f"canvas size: expected positive width/height, got {width}x{height}")
    return {"version": OPENPOSE_VERSION, "people": list(people), "canvas_width": int(width),
            "canvas_height": int(height)}


def write_openpose_json(path: str | Path, people: list[dict[str, Any]], width: int, height: int) -> Path:
    """Write one frame's OpenPose JSON to ``path`` atomically (temporary file + rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = openpose_frame(people, width, height, allow_unknown=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, allow_nan=False))
    os.replace(tmp, path)
    return path
