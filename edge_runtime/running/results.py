"""The typed per-frame result handed to the sinks, and its JSONL record.

A :class:`FrameResult` holds arrays (image px): boxes_xyxy [N,4], box_scores [N], keypoints [N,K,2],
scores [N,K], track_ids [N], has_pose [N] bool; in live mode also pose_frames [N] (the frame whose pixels the
model saw), pose_age_ms [N] and propagated [N]; in scheduled modes also interpolated [N] (two-sided: both keyframes
used) and keyframes [N,2] (the keyframes before and after, -1 where a side is missing; the record's
``pose_frames``). A tracked person still waiting for its first pose (live mode and ``--schedule-poses``) has
``has_pose`` False, NaN keypoints and zero scores: its record carries its box, ``track_id`` and ``score`` with
``"keypoints": null`` (``pose_frame`` and ``pose_age_ms`` null, ``propagated`` false), and the sinks that need
keypoints skip it.

The sinks, hooks and ``--show`` receive the typed result: :meth:`FrameResult.as_output` is what every sink of a run
receives (groups outside ``parts`` at score 0, values at the record's precision, a failed frame without persons), so
``predictions.jsonl``, ``coco_results.json``, the OpenPose files and the overlays show the same numbers.
:meth:`FrameResult.to_record` gives the ``predictions.jsonl`` record (only the JSONL sink calls it), and
:meth:`FrameResult.from_record` is the one way back from a record (eval, scripts, tests):
``FrameResult.from_record(r.to_record())`` equals ``r.as_output()``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import numpy as np

from edge_runtime.errors import InputError
from edge_runtime.model.keypoints import PART_NAMES

ALL_PARTS = PART_NAMES
#: decimals of the record: bbox_xyxy (image px), keypoint x/y (image px), scores, pose_age_ms
BOX_DECIMALS, XY_DECIMALS, SCORE_DECIMALS, AGE_DECIMALS = 2, 3, 5, 3
#: the per-person arrays (first axis N) of a FrameResult
PERSON_FIELDS = ("boxes_xyxy", "box_scores", "keypoints", "scores", "track_ids", "pose_frames", "pose_age_ms",
                 "propagated", "interpolated", "keyframes", "has_pose")


def _rounded(values: np.ndarray, decimals: int) -> np.ndarray:
    """float64 copy rounded as the record rounds (Python's ``round`` per value, NaN kept)."""
    values = np.asarray(values)
    return np.array([round(v, decimals) for v in values.ravel().tolist()], np.float64).reshape(values.shape)


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

    def select(self, keep: np.ndarray) -> "FrameResult":
        """The result of the persons ``keep`` ([N] bool mask or indices) picks."""
        return dataclasses.replace(self, **{name: getattr(self, name)[keep] for name in PERSON_FIELDS
                                            if getattr(self, name) is not None})

    def with_pose(self) -> "FrameResult":
        """The persons that have keypoints: what the OpenPose, COCO and overlay outputs draw or write."""
        return self.select(np.asarray(self.has_pose, bool))

    def as_output(self, parts: Sequence[str] = ALL_PARTS) -> "FrameResult":
        """What the sinks of a run receive: keypoint groups outside ``parts`` at score 0, boxes, keypoints,
        scores and pose ages rounded as the record rounds them (float64), and a failed frame (``error`` set)
        without persons, as its record has none. So every output of a run carries the numbers of its
        ``predictions.jsonl`` and ``FrameResult.from_record(r.to_record(parts)) == r.as_output(parts)``."""
        if self.error is not None:
            return self.select(np.zeros(len(self.track_ids), bool))
        return dataclasses.replace(
            self, boxes_xyxy=_rounded(self.boxes_xyxy, BOX_DECIMALS), box_scores=_rounded(self.box_scores,
                                                                                        SCORE_DECIMALS),
            keypoints=_rounded(self.keypoints, XY_DECIMALS), scores=_rounded(self._part_scores(parts), SCORE_DECIMALS),
            **self._pending_as_recorded())

    def _part_scores(self, parts: Sequence[str]) -> np.ndarray:
        """scores [N,K] with the keypoint groups outside ``parts`` at 0."""
        if not len(self.scores) or set(parts) == set(ALL_PARTS):
            return self.scores
        from edge_runtime.model.keypoints import filter_parts
        return filter_parts(self.keypoints, self.scores, tuple(parts))[1]

    def _pending_as_recorded(self) -> dict[str, Any]:
        """The pose fields as the record gives them: for a person without a pose, pose_frame/keyframes -1,
        pose_age_ms NaN, propagated/interpolated False; pose_age_ms rounded."""
        posed = np.asarray(self.has_pose, bool)
        out: dict[str, Any] = {}
        if self.pose_frames is not None:
            out["pose_frames"] = np.where(posed, self.pose_frames, -1)
            out["pose_age_ms"] = np.where(posed, _rounded(self.pose_age_ms, AGE_DECIMALS), np.nan)
            out["propagated"] = np.asarray(self.propagated, bool) & posed
        if self.keyframes is not None:
            out["keyframes"] = np.where(posed[:, None] & (self.keyframes >= 0), self.keyframes, -1)
            out["interpolated"] = np.asarray(self.interpolated, bool) & posed
        return out

    @classmethod
    def from_record(cls, record: dict[str, Any], num_keypoints: "int | None" = None) -> "FrameResult":
        """A ``predictions.jsonl`` record (layout in :mod:`edge_runtime.media.sinks`) back as a result: the one
        reader of records. Persons with ``"keypoints": null`` get NaN keypoints, zero scores and ``has_pose``
        False; a missing ``score`` is 1.0 (a given box), a missing ``track_id`` -1. K comes from the keypoints,
        else ``num_keypoints`` (else 0). ``pose_frames``/``pose_age_ms``/``propagated`` are read when the persons
        carry ``pose_frame``, ``keyframes``/``interpolated`` when they carry ``pose_frames``. InputError names
        the frame and the field."""
        if not isinstance(record, dict) or "frame" not in record:
            raise InputError(f"frame record: expected a JSON object with 'frame' and 'persons', got "
                             f"{type(record).__name__}")
        persons = record.get("persons") or []
        if not isinstance(persons, list) or not all(isinstance(p, dict) for p in persons):
            raise InputError(f"frame {record.get('frame')}: 'persons' must be a list of objects")
        size = (int(record["width"]), int(record["height"])) if record.get("width") and record.get("height") \
            else None
        arrays = _person_arrays(record.get("frame"), persons, num_keypoints)
        return cls(record["frame"], record.get("source"), record.get("timestamp_ms"), size,
                   error=record.get("error"), **arrays)

    def to_record(self, parts: Sequence[str] = ALL_PARTS) -> dict[str, Any]:
        """The ``predictions.jsonl`` record; keypoint groups outside ``parts`` get score 0."""
        record: dict[str, Any] = {"frame": self.frame, "source": self.source, "timestamp_ms": self.timestamp_ms,
                                  "persons": []}
        if self.image_size is not None:
            record["width"], record["height"] = self.image_size
        if self.error is not None:
            record["error"] = self.error
            return record
        scores = self._part_scores(parts)
        for i in range(len(self.track_ids)):
            posed = bool(self.has_pose[i])
            person: dict[str, Any] = {
                "bbox_xyxy": [round(v, BOX_DECIMALS) for v in self.boxes_xyxy[i].tolist()],
                "score": round(float(self.box_scores[i]), SCORE_DECIMALS),
                "track_id": int(self.track_ids[i]),
                "keypoints": [[round(x, XY_DECIMALS), round(y, XY_DECIMALS), round(s, SCORE_DECIMALS)]
                              for (x, y), s in zip(self.keypoints[i].tolist(), scores[i].tolist())]
                if posed else None,
            }
            if self.pose_frames is not None:
                person["pose_frame"] = int(self.pose_frames[i]) if posed else None
                person["pose_age_ms"] = round(float(self.pose_age_ms[i]), AGE_DECIMALS) if posed else None
                person["propagated"] = bool(self.propagated[i]) and posed
            if self.keyframes is not None:
                person["interpolated"] = bool(self.interpolated[i]) and posed
                person["pose_frames"] = [int(f) if f >= 0 and posed else None for f in self.keyframes[i]]
            record["persons"].append(person)
        return record


def _keypoints(frame: Any, persons: list[dict[str, Any]], num_keypoints: "int | None") -> np.ndarray:
    """[N,K,3] x, y, score of the persons (NaN x/y, score 0 for ``"keypoints": null``)."""
    posed = [p["keypoints"] for p in persons if p.get("keypoints") is not None]
    k = len(posed[0]) if posed and isinstance(posed[0], list) else int(num_keypoints or 0)
    out = np.full((len(persons), k, 3), np.nan)
    out[..., 2] = 0.0
    for i, person in enumerate(persons):
        if "keypoints" not in person:
            raise InputError(f"frame {frame}: malformed persons entry (persons[{i}] has no 'keypoints'; "
                             "null for a person without a pose)")
        if person["keypoints"] is None:
            continue
        try:
            kp = np.array(person["keypoints"], dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise InputError(f"frame {frame}: malformed persons entry ({exc})") from exc
        if kp.ndim != 2 or kp.shape != (k, 3):
            raise InputError(f"frame {frame}: persons[].keypoints must be [K,3] [x, y, score] with one K, "
                             f"got {kp.shape} (persons[{i}])")
        out[i] = kp
    return out


def _optional(persons: list[dict[str, Any]], key: str, default: Any) -> list[Any]:
    return [default if p.get(key) is None else p[key] for p in persons]


def _person_arrays(frame: Any, persons: list[dict[str, Any]], num_keypoints: "int | None") -> dict[str, Any]:
    """The FrameResult per-person fields of a record's persons."""
    n = len(persons)
    kp = _keypoints(frame, persons, num_keypoints)
    try:
        arrays: dict[str, Any] = {
            "boxes_xyxy": np.array([p["bbox_xyxy"][:4] for p in persons], np.float64).reshape(n, 4),
            "box_scores": np.array([np.nan if p.get("score", 1.0) is None else p.get("score", 1.0)
                                    for p in persons], np.float64).reshape(n),
            "track_ids": np.array(_optional(persons, "track_id", -1), np.int64).reshape(n),
            "keypoints": kp[..., :2], "scores": kp[..., 2],
            "has_pose": np.array([p.get("keypoints") is not None for p in persons], bool).reshape(n)}
        if any("pose_frame" in p for p in persons):
            arrays["pose_frames"] = np.array(_optional(persons, "pose_frame", -1), np.int64).reshape(n)
            arrays["pose_age_ms"] = np.array(_optional(persons, "pose_age_ms", np.nan), np.float64).reshape(n)
            arrays["propagated"] = np.array(_optional(persons, "propagated", False), bool).reshape(n)
        if any("pose_frames" in p for p in persons):
            keyframes = [[-1 if f is None else f for f in (p.get("pose_frames") or (None, None))] for p in persons]
            arrays["keyframes"] = np.array(keyframes, np.int64).reshape(n, 2)
            arrays["interpolated"] = np.array(_optional(persons, "interpolated", False), bool).reshape(n)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InputError(f"frame {frame}: malformed persons entry ({exc})") from exc
    return arrays
