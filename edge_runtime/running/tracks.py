"""Person tracks of one source between pose updates: motion, keypoint propagation and pose urgency.

No threads, no inference: :class:`PoseTracks` is driven by the live runner (and by offline scripts):

    tracks.advance(frame_index, clock_s, image_bgr)      # every frame: carry every track to this frame
    tracks.match(frame_index, boxes_xyxy, scores)        # on detector frames (may be an older frame)
    tracks.accrue()                                      # every frame: the pose budget grows (pose_budget)
    tracks.candidates()                                  # (urgency, track id) of the tracks that may get a pose
    tracks.begin_pose(track_id)                          # the box to crop (None: no budget left)
    tracks.apply_pose(track_id, frame_index, kpts, sc)   # a pose computed on (an older) frame_index
    tracks.persons()                                     # what the current frame outputs (every track)

The scheduling policy of one source lives here (:meth:`PoseTracks.urgency`, :meth:`PoseTracks.candidates`, the
budget rule); the coordinator only ranks the candidates of its sources and sends their crops.

Motion between detector runs comes from the keypoints: sparse pyramidal Lucas-Kanade flow
(``cv2.calcOpticalFlowPyrLK``) on every keypoint with a forward-backward check; a keypoint that fails the
check moves with the median motion of its track's good keypoints, and a track without good keypoints (or
without a pose yet) moves with its box velocity (constant velocity from its last two detections). A pose
that finishes late was computed on an older frame: it is carried forward through the kept grayscale frames
(``history``) to the current one, or moved by the box motion when those frames are gone.

Association is greedy IoU in two passes, as ByteTrack: high-score detections first, then low-score
detections may only extend existing tracks. A track missed by the detector stays alive for ``lost_s``
(short occlusions keep their ID) but is not output while lost. Hand-written rather than a tracker
library: ByteTrack implementations (supervision, trackers, boxmot) expect a detection on every frame and
bring scipy/lap or torch, while here the detector runs every N frames, its results arrive late, and the
boxes in between move with the keypoint flow, which a Kalman box model cannot see.

Coordinates: boxes_xyxy [4] / [N,4] image px; keypoints [K,2] image px; scores [K]. Time: ``clock_s`` is
the frame's capture time (live) or its video timestamp (files), in seconds.
"""
from __future__ import annotations

import collections
import dataclasses
import math
from typing import Any

import cv2
import numpy as np

from edge_runtime.config import linked
from edge_runtime.errors import InputError
from edge_runtime.running.flow import FLOW_MODELS, flow_gray, flow_scale, keypoint_flow, step_error, step_points
from edge_runtime.running.tracking import box_iou, greedy_iou_match
from edge_runtime.settings.schema import check_fields


@dataclasses.dataclass(frozen=True)
class TrackConfig:
    """How tracks move, match and ask for poses.

    iou_threshold: minimum IoU of a detection with a track's box (at the detection's frame) to match.
    high_score / low_score: detections >= high_score may start tracks; [low_score, high_score) only extend.
    lost_s: a track unmatched this long (seconds of source time) is dropped; until then it keeps its ID.
    score_threshold: keypoint score above which a keypoint is visible (flow, motion and confidence use these).
    fb_threshold_px: forward-backward LK error (image px) above which a keypoint's flow is rejected.
    flow_max_side: the grayscale frames for LK are scaled to at most this longer side.
    history: grayscale frames kept to carry late poses forward.
    max_pose_age_s: a pose older than this is due for recompute (None: every pose is always a candidate;
        the oldest goes first).
    motion_threshold: box center motion since the pose, as a share of the box height, that makes it due.
    scale_threshold: |log(box height ratio)| since the pose that makes it due.
    low_confidence: mean visible-keypoint score below which the pose is due.
    propagate: carry keypoints with the optical flow between recomputes (False: keypoints stay where the
        model put them, the behaviour before live scheduling; for measuring what propagation is worth).
    drift_px: expected error a carried keypoint gains per frame from its keyframe (image px), on top of the
        measured forward-backward flow errors: what the check cannot see (two-sided blending weighs by it).
    drift_correction: two-sided: remove from each side the drift it shows at the other keyframe, spread
        linearly over the frames between them (a motion model per keypoint between the two keyframes).
    flow_model: how keypoints follow the image (:mod:`edge_runtime.running.flow`): "points" (LK at each keypoint),
        "dense" (points, and dense DIS flow where a point fails its check) or "bones" (each bone moved rigidly
        by a transform fitted to flow along the whole limb). None: "dense" for two-sided files (measured better
        there, docs/benchmarks.md "Keyframes"), "points" otherwise (LiveConfig resolves it).
    """

    iou_threshold: float = linked("track_iou_threshold")
    high_score: float = 0.5
    low_score: float = 0.1
    lost_s: float = linked("track_lost_s")
    score_threshold: float = linked("score_threshold")
    fb_threshold_px: float = 2.0
    flow_max_side: int = 960
    history: int = 64
    max_pose_age_s: "float | None" = linked("max_pose_age", convert=lambda ms: float(ms) / 1000.0)  # setting: ms
    motion_threshold: float = 0.25
    scale_threshold: float = 0.2
    low_confidence: float = 0.35
    propagate: bool = True
    drift_px: float = 1.0
    flow_model: "str | None" = None
    drift_correction: bool = False

    def __post_init__(self) -> None:
        check_fields(self)  # the linked settings' checks
        if self.flow_model is not None and self.flow_model not in FLOW_MODELS:
            raise InputError(f"flow_model: expected one of {FLOW_MODELS}, got {self.flow_model!r}")


@dataclasses.dataclass
class Track:
    """One person. ``box`` and ``keypoints`` are at the tracker's current frame (image px)."""

    track_id: int
    box: np.ndarray                      # [4] image px
    score: float                         # detection score
    created_frame: int
    last_det_frame: int
    last_det_clock: float
    velocity: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(4))  # box px per frame
    boxes: "collections.OrderedDict[int, np.ndarray]" = dataclasses.field(default_factory=collections.OrderedDict)
    keypoints: "np.ndarray | None" = None  # [K,2]
    kp_scores: "np.ndarray | None" = None  # [K]
    kp_error: "np.ndarray | None" = None   # [K] expected flow error since the pose, image px (step_error sums)
    carried: "np.ndarray | None" = None    # [K,2] the older pose carried to pose_frame, replaced by the new one
    pose_frame: int = -1
    pose_clock: float = 0.0
    pose_box: "np.ndarray | None" = None   # the box the pose was computed in
    propagated: bool = False
    pending: bool = False
    lost: bool = False
    recomputes: int = 0
    failed_clock: "float | None" = None    # when its last recompute failed (not retried on that frame)


@dataclasses.dataclass(frozen=True)
class PersonState:
    """What one output frame says of one tracked person; a track waiting for its first pose has
    ``keypoints``, ``kp_scores``, ``pose_frame`` and ``pose_age_ms`` None (``has_pose`` False)."""

    track_id: int
    box: np.ndarray                    # [4] image px
    score: float
    keypoints: "np.ndarray | None"     # [K,2] image px
    kp_scores: "np.ndarray | None"     # [K]
    pose_frame: "int | None"
    pose_age_ms: "float | None"
    propagated: bool
    kp_error: "np.ndarray | None" = None  # [K] expected error of the carried keypoints, image px (0 at the pose)
    interpolated: bool = False            # two-sided: keypoints combine the poses before and after the frame
    pose_frames: "tuple[int | None, int | None]" = (None, None)  # the keyframes before and after (None: none)
    carried: "np.ndarray | None" = None   # [K,2] at a keyframe: the previous pose carried here (its drift)

    @property
    def has_pose(self) -> bool:
        return self.keypoints is not None


def _box_h(box: np.ndarray) -> float:
    return max(float(box[3] - box[1]), 1.0)


def box_center(box: np.ndarray) -> np.ndarray:
    return np.array([(box[0] + box[2]) / 2.0, (box[1] + box[3]) / 2.0])


class PoseTracks:
    """The tracks of one source (see the module docstring).

    ``pose_budget``: share of person-frames whose pose may be recomputed (None: no limit). The budget accrues
    per person-frame (:meth:`accrue`) as ``credit``; a refresh costs one; a track without a pose may always get
    one (the credit may then go into debt)."""

    def __init__(self, config: "TrackConfig | None" = None, pose_budget: "float | None" = None) -> None:
        self.config = config if config is not None else TrackConfig()
        self.pose_budget = pose_budget
        self.credit = 0.0
        self.tracks: dict[int, Track] = {}
        self.frame_index = -1
        self.clock_s = 0.0
        self.image_size = (0, 0)  # (w, h)
        self._next_id = 0
        self._scale = 1.0
        self._grays: "collections.OrderedDict[int, np.ndarray]" = collections.OrderedDict()
        self.flow_points = 0
        self.flow_rejected = 0

    # ------------------------------------------------------------------ motion
    def _gray(self, image_bgr: np.ndarray) -> np.ndarray:
        return flow_gray(image_bgr, self._scale)

    def _flow(self, prev: np.ndarray, cur: np.ndarray, kpts: np.ndarray,
              kp_scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """One pose's keypoints [K,2] image px on ``prev`` -> (moved [K,2], good [K] bool, fb [K] px)
        (:func:`edge_runtime.running.flow.keypoint_flow` with the configured model)."""
        cfg = self.config
        return keypoint_flow(prev, cur, kpts, kp_scores, self._scale, cfg.flow_model or "points", cfg.fb_threshold_px,
                             cfg.score_threshold)

    def _step_points(self, kpts: np.ndarray, kp_scores: np.ndarray, moved: np.ndarray, good: np.ndarray,
                     fallback_shift: np.ndarray) -> "tuple[np.ndarray, np.ndarray | None, float]":
        """One flow step of one pose (:func:`step_points`), counted in the flow statistics."""
        self.flow_points += len(good)
        self.flow_rejected += int((~good).sum())
        return step_points(kpts, kp_scores, moved, good, fallback_shift, self.config.score_threshold)

    def _move_track(self, track: Track, moved: np.ndarray, good: np.ndarray) -> None:
        """Apply one frame's flow to a track's keypoints and box (moved/good: [K,2]/[K])."""
        box_shift = (track.velocity[:2] + track.velocity[2:]) / 2.0
        new, shift, scale = self._step_points(track.keypoints, track.kp_scores, moved, good, box_shift)
        if shift is None:
            track.box = track.box + track.velocity
        else:
            c = box_center(track.box) + shift
            half = np.array([track.box[2] - track.box[0], track.box[3] - track.box[1]]) * scale / 2.0
            track.box = np.array([c[0] - half[0], c[1] - half[1], c[0] + half[0], c[1] + half[1]])
        track.keypoints = new.astype(np.float32)
        track.propagated = True

    def advance(self, frame_index: int, clock_s: float, image_bgr: np.ndarray) -> None:
        """Carry every track from the previous frame to ``frame_index`` (its image BGR u8 [H,W,3])."""
        h, w = image_bgr.shape[:2]
        if (w, h) != self.image_size:
            self.image_size = (w, h)
            self._scale = flow_scale((w, h), self.config.flow_max_side)
            self._grays.clear()
        gray = self._gray(image_bgr)
        prev = self._grays[next(reversed(self._grays))] if self._grays else None
        with_pose = [t for t in self.tracks.values() if t.keypoints is not None]
        if prev is not None and with_pose and self.config.propagate:
            for track in with_pose:
                moved, good, fb = self._flow(prev, gray, track.keypoints.astype(np.float64), track.kp_scores)
                self._move_track(track, moved, good)
                track.kp_error = track.kp_error + step_error(good, fb, self.config.fb_threshold_px)
        steps = max(1, frame_index - self.frame_index) if self.frame_index >= 0 else 1
        for track in self.tracks.values():
            if track.keypoints is None:
                track.box = track.box + track.velocity * steps
            self._clip(track)
            track.boxes[frame_index] = track.box.copy()
            while len(track.boxes) > self.config.history:
                track.boxes.popitem(last=False)
        self._grays[frame_index] = gray
        while len(self._grays) > self.config.history:
            self._grays.popitem(last=False)
        self.frame_index, self.clock_s = frame_index, clock_s
        self._forget()

    def _clip(self, track: Track) -> None:
        w, h = self.image_size
        b = track.box
        cx = min(max((b[0] + b[2]) / 2.0, 0.0), w - 1.0)
        cy = min(max((b[1] + b[3]) / 2.0, 0.0), h - 1.0)
        half_w, half_h = max((b[2] - b[0]) / 2.0, 1.0), max((b[3] - b[1]) / 2.0, 1.0)
        track.box = np.array([cx - half_w, cy - half_h, cx + half_w, cy + half_h])

    def _forget(self) -> None:
        for tid in [tid for tid, t in self.tracks.items()
                    if t.lost and self.clock_s - t.last_det_clock > self.config.lost_s and not t.pending]:
            del self.tracks[tid]

    # ------------------------------------------------------------------ detections
    def match(self, frame_index: int, boxes_xyxy: np.ndarray, scores: np.ndarray,
              clock_s: "float | None" = None) -> list[int]:
        """Associate detections made on ``frame_index`` (the current or an older frame) with the tracks.

        A match moves the track's box to the detection plus the track's motion since that frame. Unmatched
        detections with score >= high_score start tracks; unmatched tracks become lost. Returns the track id
        of each detection (-1: not tracked)."""
        cfg = self.config
        boxes = np.asarray(boxes_xyxy, np.float64).reshape(-1, 4)
        scores = np.asarray(scores, np.float64).reshape(-1)
        clock = self.clock_s if clock_s is None else clock_s
        ids = [-1] * len(boxes)
        candidates = list(self.tracks.values())
        then = np.stack([t.boxes.get(frame_index, t.box) for t in candidates]) if candidates else np.zeros((0, 4))
        used: set[int] = set()
        for tier in (scores >= cfg.high_score, (scores >= cfg.low_score) & (scores < cfg.high_score)):
            det_idx = np.flatnonzero(tier)
            for i, j in greedy_iou_match(box_iou(boxes[det_idx], then), cfg.iou_threshold, used):
                d = int(det_idx[i])
                ids[d] = self._update(candidates[j], boxes[d], then[j], float(scores[d]), frame_index, clock)
        for d in np.flatnonzero(scores >= cfg.high_score):
            if ids[d] < 0:
                ids[d] = self._create(boxes[d], float(scores[d]), frame_index, clock)
        for j, track in enumerate(candidates):
            if j not in used and track.last_det_frame < frame_index:
                track.lost = True
        return ids

    def _update(self, track: Track, det_box: np.ndarray, box_then: np.ndarray, score: float, frame_index: int,
                clock: float) -> int:
        motion_since = track.box - box_then  # how the track moved after the detected frame
        if track.last_det_frame >= 0 and frame_index > track.last_det_frame:
            prev_det = track.boxes.get(track.last_det_frame)
            if prev_det is not None:
                velocity = (det_box - prev_det) / (frame_index - track.last_det_frame)
                track.velocity = 0.5 * track.velocity + 0.5 * velocity
        track.box = det_box + motion_since
        if frame_index in track.boxes:
            track.boxes[frame_index] = det_box.copy()
        track.score = score
        track.last_det_frame, track.last_det_clock, track.lost = frame_index, clock, False
        return track.track_id

    def _create(self, box: np.ndarray, score: float, frame_index: int, clock: float) -> int:
        track = Track(self._next_id, box.copy(), score, frame_index, frame_index, clock)
        track.boxes[frame_index] = box.copy()
        self.tracks[track.track_id] = track
        self._next_id += 1
        return track.track_id

    # ------------------------------------------------------------------ poses
    def urgency(self, track: Track) -> "float | None":
        """How much ``track`` needs a new pose now (higher first); None if it is not due.

        A track without a pose comes first; otherwise the pose age in seconds, scaled up by the motion and
        scale change since the pose and by a low keypoint confidence. With ``max_pose_age_s`` set, a pose is
        due only when it is older than that or one of the triggers fires. A pose computed on the current frame is
        never due (without this, file mode with ``--schedule-poses`` and no budget recomputed it for ever)."""
        cfg = self.config
        if track.pending or track.lost:
            return None
        if track.failed_clock is not None and track.failed_clock >= self.clock_s:
            return None  # its recompute on this frame failed: the next frame tries again
        if track.keypoints is None:
            return 1e6 + (self.clock_s - track.last_det_clock)
        if track.pose_clock >= self.clock_s:
            return None  # its pose was computed on the current frame: a recompute would see the same pixels
        age = self.clock_s - track.pose_clock
        ref = track.pose_box if track.pose_box is not None else track.box
        motion = float(np.linalg.norm(box_center(track.box) - box_center(ref))) / _box_h(ref)
        scale = abs(math.log(_box_h(track.box) / _box_h(ref)))
        visible = track.kp_scores[track.kp_scores > cfg.score_threshold]
        conf = float(visible.mean()) if len(visible) else 0.0
        triggers = (motion >= cfg.motion_threshold) + (scale >= cfg.scale_threshold) + (conf < cfg.low_confidence)
        if cfg.max_pose_age_s is not None and age < cfg.max_pose_age_s and not triggers:
            return None
        return (age + 1e-3) * (1.0 + triggers + motion / cfg.motion_threshold + scale / cfg.scale_threshold)

    def accrue(self) -> None:
        """A new frame: the pose budget accrues per active person-frame; a little may be saved up."""
        if self.pose_budget is not None:
            active = self.active()
            self.credit = min(self.credit + self.pose_budget * active, 1.0 + active)

    def _within_budget(self, track: Track) -> bool:
        """The budget rule: a refresh needs a whole credit; a first pose does not."""
        return self.pose_budget is None or self.credit >= 1.0 or track.keypoints is None

    def candidates(self) -> list[tuple[float, int]]:
        """(urgency, track id) of every track that may get a pose now (:meth:`urgency`, within the budget).

        A track without a pose yet ranks 1000 lower per track of this source that has (or is getting) a pose,
        so that first poses alternate between sources."""
        posed = sum(1 for t in self.tracks.values() if t.keypoints is not None or t.pending)
        out = []
        for track in self.tracks.values():
            urgency = self.urgency(track)
            if urgency is None or not self._within_budget(track):
                continue
            if track.keypoints is None:
                urgency -= 1e3 * posed
            out.append((urgency, track.track_id))
        return out

    def begin_pose(self, track_id: int) -> "np.ndarray | None":
        """Mark ``track_id`` as being recomputed on the current frame (paid from the budget); returns the box to
        crop [4], or None when the budget has no credit left for it."""
        track = self.tracks[track_id]
        if not self._within_budget(track):
            return None
        if self.pose_budget is not None:
            self.credit -= 1.0
        track.pending = True
        return track.box.astype(np.float32).copy()

    def cancel_pose(self, track_id: int) -> None:
        """The recompute failed: the track keeps its old pose and may be scheduled again from the next frame on
        (retrying on the same frame would loop for ever while the device or pose server stays down)."""
        track = self.tracks.get(track_id)
        if track is not None:
            track.pending = False
            track.failed_clock = self.clock_s

    def apply_pose(self, track_id: int, frame_index: int, clock_s: float, box: np.ndarray,
                   keypoints: np.ndarray, kp_scores: np.ndarray) -> bool:
        """A pose computed on ``frame_index`` (in ``box``): carry it to the current frame; False if the track
        is gone."""
        track = self.tracks.get(track_id)
        if track is None:
            return False
        track.pending = False
        if frame_index < track.pose_frame:
            return True  # an older result than what the track has
        track.recomputes += 1
        kpts = np.asarray(keypoints, np.float64).reshape(-1, 2)
        # the pose carried to this frame that the new one replaces (two-sided: the forward drift up to here)
        track.carried = track.keypoints.copy() if track.keypoints is not None and \
            frame_index == self.frame_index and len(track.keypoints) == len(kpts) else None
        track.kp_scores = np.asarray(kp_scores, np.float32).reshape(-1)
        track.pose_frame, track.pose_clock = frame_index, clock_s
        track.pose_box = np.asarray(track.boxes.get(frame_index, box), np.float64).copy()
        frames = [f for f in self._grays if f >= frame_index]
        error = np.zeros(len(kpts))
        if frames and frames[0] == frame_index:
            pts = kpts
            for a, b in zip(frames, frames[1:]):
                moved, good, fb = self._flow(self._grays[a], self._grays[b], pts, track.kp_scores)
                box_shift = box_center(track.boxes.get(b, track.box)) - box_center(track.boxes.get(a, track.box))
                pts, _, _ = self._step_points(pts, track.kp_scores, moved, good, box_shift)
                error += step_error(good, fb, self.config.fb_threshold_px)
        else:  # the frame is no longer kept: move by the box motion since
            pts = kpts + (box_center(track.box) - box_center(np.asarray(track.boxes.get(frame_index, box), np.float64)))
            error += 2.0 * self.config.fb_threshold_px * max(self.frame_index - frame_index, 0)
        track.keypoints = np.asarray(pts, np.float32)
        track.kp_error = error
        track.propagated = frame_index != self.frame_index
        return True

    def persons(self) -> list[PersonState]:
        """Every tracked (not lost) person at the current frame, by track id, from the frame it was detected
        on: a track still waiting for its first pose comes with its box and no keypoints."""
        out = []
        for tid in sorted(self.tracks):
            t = self.tracks[tid]
            if t.lost:
                continue
            if t.keypoints is None:
                out.append(PersonState(tid, t.box.astype(np.float32), t.score, None, None, None, None, False))
                continue
            out.append(PersonState(tid, t.box.astype(np.float32), t.score, t.keypoints.copy(), t.kp_scores.copy(),
                                   t.pose_frame, round((self.clock_s - t.pose_clock) * 1000.0, 3), t.propagated,
                                   None if t.kp_error is None else t.kp_error.copy(),
                                   pose_frames=(t.pose_frame, None),
                                   carried=t.carried if t.pose_frame == self.frame_index else None))
        return out

    def active(self) -> int:
        """Tracks that are not lost (output or waiting for their first pose)."""
        return sum(1 for t in self.tracks.values() if not t.lost)

    def stats(self) -> dict[str, Any]:
        return {"tracks_created": self._next_id, "flow_points": self.flow_points,
                "flow_rejected": self.flow_rejected}
