"""The frame record of ``predictions.jsonl`` (layout in :mod:`edge_runtime.media.sinks`) as the sinks and the COCO
writer share it: a JSON-safe copy of a record and a record's persons back as arrays. Its own module so that
:mod:`edge_runtime.media.sinks` and :mod:`edge_runtime.media.coco` both import it and not each other.
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge_runtime.errors import InputError


def json_safe(value: Any) -> Any:
    """JSON-safe copy: numpy -> python, non-finite floats -> None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def has_pose(person: Any) -> bool:
    """False for a tracked person still waiting for its first pose (``"keypoints": null``)."""
    return not (isinstance(person, dict) and "keypoints" in person and person["keypoints"] is None)


def person_arrays(record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, list[Any]]:
    """record -> keypoints [N,K,2] image px, scores [N,K], boxes_xyxy [N,4], box scores [N], track ids of the
    N persons that have keypoints: the OpenPose, COCO and overlay outputs skip pose-pending persons."""
    persons = [p for p in record.get("persons") or [] if has_pose(p)]
    if not persons:
        return np.zeros((0, 0, 2)), np.zeros((0, 0)), np.zeros((0, 4)), np.zeros(0), []
    try:
        kps = np.array([p["keypoints"] for p in persons], dtype=np.float64)
        boxes = np.array([p["bbox_xyxy"][:4] for p in persons], dtype=np.float64)
        box_scores = np.array([1.0 if p.get("score") is None else p["score"] for p in persons], dtype=np.float64)
    except (KeyError, TypeError, ValueError) as exc:
        raise InputError(f"frame {record.get('frame')}: malformed persons entry ({exc})") from exc
    if kps.ndim != 3 or kps.shape[2] != 3:
        raise InputError(f"frame {record.get('frame')}: persons[].keypoints must be [K,3] [x, y, score], "
                         f"got {kps.shape[1:]}")
    return kps[..., :2], kps[..., 2], boxes, box_scores, [p.get("track_id") for p in persons]
