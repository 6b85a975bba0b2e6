"""The typed per-frame result handed to the sinks, and its JSONL record.

A :class:`FrameResult` holds arrays (image px): boxes_xyxy [N,4], box_scores [N], keypoints [N,K,2],
scores [N,K], track_ids [N], has_pose [N] bool; in live mode also pose_frames [N] (the frame whose pixels the
model saw), pose_age_ms [N] and propagated [N]; in scheduled modes also interpolated [N] (two-sided: both keyframes
used) and keyframes [N,2] (the keyframes before and after, -1 where a side is missing; the record's
``pose_frames``). A tracked person still waiting for its first pose (live mode and ``--schedule-poses``) has
``has_pose`` False, NaN keypoints and zero scores: its record carries its box, ``track_id`` and ``score`` with
``"keypoints": null`` (``pose_frame`` and ``pose_age_ms`` null, ``propagated`` false), and the sinks that need
keypoints skip it. :meth:`FrameResult.to_record` gives the ``predictions.jsonl`` record.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from edge_runtime.model.keypoints import PART_NAMES

ALL_PARTS = PART_NAMES


@dataclasses.dataclass
class FrameResult:
    frame: int
    source: str
    timestamp_ms: "float | None"
    image_size: "tuple[int, int] | None"  # (w, h) image px
    boxes_xyxy: np.ndarray                 # [N,4]
    box_scores: np.ndarray                 # [N]
    keypoints: np.ndarray                  # [N,K,2]
    scores: np.ndarray                     # [N,K]
    track_ids: np.ndarray                  # [N] int
    pose_frames: "np.ndarray | None" = None   # [N] int
    pose_age_ms: "np.ndarray | None" = None   # [N] float
    propagated: "np.ndarray | None" = None    # [N] bool
    interpolated: "np.ndarray | None" = None  # [N] bool
    keyframes: "np.ndarray | None" = None     # [N,2] int, -1: none
    error: "str | None" = None
    has_pose: "np.ndarray | None" = None      # [N] bool; None: every person has keypoints

    def __post_init__(self) -> None:
        if self.has_pose is None:
            self.has_pose = np.ones(len(self.track_ids), bool)

    @classmethod
    def failed(cls, frame: Any, source_name: str, error: str, num_keypoints: int = 0) -> "FrameResult":
        """A frame that could not be processed (no persons, ``error`` set)."""
        size = None
        if getattr(frame, "ok", False):
            size = (int(frame.image.shape[1]), int(frame.image.shape[0]))
        return cls(frame.index, frame.name, frame.timestamp_ms, size, np.zeros((0, 4), np.float32),
                   np.zeros(0, np.float32), np.zeros((0, num_keypoints, 2), np.float32),
                   np.zeros((0, num_keypoints), np.float32), np.zeros(0, np.int64), error=error)

    @classmethod
    def from_persons(cls, frame: Any, source_name: str, persons: Sequence[Any], image_size: "tuple[int, int]",
                     num_keypoints: int) -> "FrameResult":
        """From :class:`edge_runtime.running.tracks.PersonState` objects of one frame (a person without a pose yet:
        NaN keypoints, zero scores, pose_frame -1, pose_age_ms NaN, has_pose False)."""
        n, k = len(persons), num_keypoints
        posed = [p.keypoints is not None for p in persons]
        return cls(
            frame.index, frame.name, frame.timestamp_ms, tuple(image_size),
            np.array([p.box for p in persons], np.float32).reshape(n, 4),
            np.array([p.score for p in persons], np.float32).reshape(n),
            np.array([p.keypoints if ok else np.full((k, 2), np.nan) for p, ok in zip(persons, posed)],
                     np.float32).reshape(n, k, 2),
            np.array([p.kp_scores if ok else np.zeros(k) for p, ok in zip(persons, posed)], np.float32).reshape(n, k),
            np.array([p.track_id for p in persons], np.int64).reshape(n),
            np.array([p.pose_frame if ok else -1 for p, ok in zip(persons, posed)], np.int64).reshape(n),
            np.array([p.pose_age_ms if ok else np.nan for p, ok in zip(persons, posed)], np.float64).reshape(n),
            np.array([p.propagated for p in persons], bool).reshape(n),
            np.array([p.interpolated for p in persons], bool).reshape(n),
            np.array([[-1 if f is None else f for f in p.pose_frames] for p in persons], np.int64).reshape(n, 2),
            has_pose=np.array(posed, bool).reshape(n))

    def to_record(self, parts: Sequence[str] = ALL_PARTS) -> dict[str, Any]:
        """The ``predictions.jsonl`` record; keypoint groups outside ``parts`` get score 0."""
        record: dict[str, Any] = {"frame": self.frame, "source": self.source, "timestamp_ms": self.timestamp_ms,
                                  "persons": []}
        if self.image_size is not None:
            record["width"], record["height"] = self.image_size
        if self.error is not None:
            record["error"] = self.error
            return record
        scores = self.scores
        if len(scores) and set(parts) != set(ALL_PARTS):
            from edge_runtime.model.keypoints import filter_parts
            _, scores = filter_parts(self.keypoints, scores, tuple(parts))
        for i in range(len(self.track_ids)):
            posed = bool(self.has_pose[i])
            kp = np.concatenate([self.keypoints[i], scores[i][:, None]], axis=1)
            person: dict[str, Any] = {
                "bbox_xyxy": [round(float(v), 2) for v in self.boxes_xyxy[i]],
                "score": round(float(self.box_scores[i]), 5),
                "track_id": int(self.track_ids[i]),
                "keypoints": [[round(float(x), 3), round(float(y), 3), round(float(s), 5)] for x, y, s in kp]
                if posed else None,
            }
            if self.pose_frames is not None:
                person["pose_frame"] = int(self.pose_frames[i]) if posed else None
                person["pose_age_ms"] = round(float(self.pose_age_ms[i]), 3) if posed else None
                person["propagated"] = bool(self.propagated[i]) and posed
            if self.keyframes is not None:
                person["interpolated"] = bool(self.interpolated[i]) and posed
                person["pose_frames"] = [int(f) if f >= 0 and posed else None for f in self.keyframes[i]]
            record["persons"].append(person)
        return record
