"""Two-sided propagation for files: every frame's keypoints from the keyframes before *and* after it.

The scheduled file mode (:class:`edge_runtime.running.live.LiveRunner`, ``mode="file"``) carries each pose forward
from its keyframe (the frame the model saw) through the keypoint flow of :class:`~edge_runtime.running.tracks.PoseTracks`.
:class:`TwoSidedBuffer` sits between that coordinator and the sinks and holds the last frames back:

- when a frame brings a new keyframe of a track, that pose is carried **backward** through the held frames
  (the same LK flow with its forward-backward check, run from the newer to the older frame; failed keypoints
  move with the pose, a pose without three good keypoints with the box) down to the track's previous keyframe;
- a held frame is written once every person in it has its next keyframe (or its track ended): each keypoint
  is the inverse-variance blend of the forward and the backward estimate (:func:`blend`), whose expected
  errors grow with the distance in frames to the keyframe (``TrackConfig.drift_px`` per frame), with the summed
  forward-backward flow errors along the way and fall with the keyframe's keypoint confidence;
- frames before a track's first keyframe or after its last (or held longer than ``hold_frames``) use one side.

Memory: at most ``hold_frames`` frames are held (each: the decoded image for the sinks, its flow grayscale
image at ``flow_max_side``, the persons' keypoints), whatever the video's length. Pure, no threads.
Coordinates: keypoints [K,2] image px; scores [K]; errors [K] image px.
"""
from __future__ import annotations

import collections
import dataclasses
from typing import Any, Sequence

import numpy as np

from edge_runtime.running.flow import flow_gray, flow_scale, keypoint_flow, step_error, step_points
from edge_runtime.running.tracks import PersonState, TrackConfig, box_center

@dataclasses.dataclass
class BackEstimate:
    """A later keyframe's pose carried backward to a held frame."""

    keypoints: np.ndarray  # [K,2] image px
    scores: np.ndarray     # [K] (the keyframe's)
    error: np.ndarray      # [K] summed step errors, image px
    key_frame: int
    key_clock: float       # seconds
    #: drift correction: next keyframe pose - forward estimate there [K,2]; previous keyframe pose - backward
    #: estimate there [K,2] (None: unknown)
    residual_fwd: "np.ndarray | None" = None
    residual_back: "np.ndarray | None" = None


@dataclasses.dataclass
class HeldFrame:
    """A frame waiting for its persons' next keyframes."""

    frame: Any                    # edge_runtime.media.sources.Frame (its image goes to the sinks)
    capture_t: float
    clock: float                  # seconds on the source's clock
    gray: np.ndarray              # flow image (flow_gray)
    persons: list[PersonState]    # forward estimates
    error: "str | None" = None
    back: dict[int, BackEstimate] = dataclasses.field(default_factory=dict)


def is_keyframe(person: PersonState, frame_index: int) -> bool:
    return person.pose_frame == frame_index and not person.propagated


def side_sigma(distance: float, flow_error: np.ndarray, scores: np.ndarray, drift_px: float) -> np.ndarray:
    """Expected error [K] (image px) of keypoints carried ``distance`` frames from a keyframe whose scores
    are ``scores`` [K], with ``flow_error`` [K] summed along the way; lower confidence, larger error."""
    conf = np.clip(np.asarray(scores, np.float64), 0.05, 1.0)
    return (drift_px * abs(distance) + np.asarray(flow_error, np.float64) + 1e-6) / np.sqrt(conf)


def blend(fwd: np.ndarray, fwd_sigma: np.ndarray, back: np.ndarray, back_sigma: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per keypoint inverse-variance blend of two estimates [K,2] with errors [K] -> (keypoints [K,2], weight
    of the forward side [K]). Equal errors weigh both sides equally; a side with a much larger error is
    practically not used."""
    wf, wb = 1.0 / np.square(fwd_sigma), 1.0 / np.square(back_sigma)
    share = wf / (wf + wb)
    return share[:, None] * fwd + (1.0 - share[:, None]) * back, share


class TwoSidedBuffer:
    """Holds frames of one source until both keyframes of their persons are known (module docstring)."""

    def __init__(self, track: "TrackConfig | None" = None, hold_frames: int = 64) -> None:
        self.track = track if track is not None else TrackConfig()
        self.hold_frames = max(1, int(hold_frames))
        self.drift_px = self.track.drift_px
        self.held: "collections.deque[HeldFrame]" = collections.deque()
        self.max_held = 0
        self.interpolated = 0
        self._scale = 1.0

    def push(self, frame: Any, capture_t: float, clock: float, persons: Sequence[PersonState],
             error: "str | None" = None) -> list[HeldFrame]:
        """Add the next frame (its forward estimates ``persons``); returns the frames now complete, in order,
        their ``persons`` combined from both sides."""
        h, w = frame.image.shape[:2]
        self._scale = flow_scale((w, h), self.track.flow_max_side)
        entry = HeldFrame(frame, capture_t, clock, flow_gray(frame.image, self._scale), list(persons), error)
        self.held.append(entry)
        self.max_held = max(self.max_held, len(self.held))
        for person in entry.persons:
            if is_keyframe(person, frame.index):
                self._carry_back(person, entry)
        alive = {p.track_id for p in entry.persons}
        out = []
        while self.held and (len(self.held) > self.hold_frames or self._complete(self.held[0], alive)):
            out.append(self._finish(self.held.popleft()))
        return out

    def flush(self) -> list[HeldFrame]:
        """The end of the source: every held frame, the rest one-sided."""
        out = [self._finish(entry) for entry in self.held]
        self.held.clear()
        return out

    def _complete(self, entry: HeldFrame, alive: set[int]) -> bool:
        return all(is_keyframe(p, entry.frame.index) or p.track_id in entry.back or p.track_id not in alive
                   for p in entry.persons)

    def _carry_back(self, key: PersonState, key_entry: HeldFrame) -> None:
        """Carry the pose of keyframe ``key_entry`` backward through the held frames to the previous keyframe."""
        pts = np.asarray(key.keypoints, np.float64)
        error = np.zeros(len(pts))
        residual_fwd = None if key.carried is None else pts - np.asarray(key.carried, np.float64)
        newer, newer_box, made = key_entry, np.asarray(key.box, np.float64), []
        for entry in reversed(list(self.held)[:-1]):
            person = next((p for p in entry.persons if p.track_id == key.track_id), None)
            if person is None or key.track_id in entry.back:
                return
            box = np.asarray(person.box, np.float64)
            pts, step = self._step_back(newer.gray, entry.gray, pts, key.kp_scores, box_center(box) - box_center(newer_box))
            if is_keyframe(person, entry.frame.index):  # the previous keyframe: the backward drift up to it
                for back in made:
                    back.residual_back = np.asarray(person.keypoints, np.float64) - pts
                return
            error = error + step
            back = BackEstimate(pts.copy(), np.asarray(key.kp_scores), error.copy(), key_entry.frame.index,
                                key_entry.clock, residual_fwd)
            entry.back[key.track_id] = back
            made.append(back)
            newer, newer_box = entry, box

    def _step_back(self, newer: np.ndarray, older: np.ndarray, pts: np.ndarray, scores: np.ndarray,
                   box_shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One backward flow step of one pose [K,2] -> (keypoints on the older frame, step error [K])."""
        cfg = self.track
        moved, good, fb = keypoint_flow(newer, older, pts, scores, self._scale, cfg.flow_model or "points",
                                        cfg.fb_threshold_px, cfg.score_threshold)
        pts, _, _ = step_points(pts, scores, moved, good, box_shift, cfg.score_threshold)
        return pts, step_error(good, fb, cfg.fb_threshold_px)

    def _finish(self, entry: HeldFrame) -> HeldFrame:
        entry.persons = [self._combine(p, entry) for p in entry.persons]
        entry.back.clear()
        return entry

    def _combine(self, person: PersonState, entry: HeldFrame) -> PersonState:
        index = entry.frame.index
        if is_keyframe(person, index):
            return dataclasses.replace(person, pose_frames=(index, index), interpolated=False)
        back = entry.back.get(person.track_id)
        if back is None:
            return dataclasses.replace(person, pose_frames=(person.pose_frame, None), interpolated=False)
        if person.keypoints is None:  # before the track's first keyframe: the backward side only
            return dataclasses.replace(
                person, keypoints=back.keypoints.astype(np.float32), kp_scores=np.asarray(back.scores, np.float32),
                kp_error=back.error, propagated=True, interpolated=False, pose_frames=(None, back.key_frame),
                pose_frame=back.key_frame, pose_age_ms=round((back.key_clock - entry.clock) * 1000.0, 3))
        d_fwd, d_back = index - person.pose_frame, back.key_frame - index
        fwd_err = person.kp_error if person.kp_error is not None else np.zeros(len(person.keypoints))
        s_fwd = side_sigma(d_fwd, fwd_err, person.kp_scores, self.drift_px)
        s_back = side_sigma(d_back, back.error, back.scores, self.drift_px)
        fwd, bwd = np.asarray(person.keypoints, np.float64), back.keypoints
        if self.track.drift_correction:  # each side's drift, seen at the other keyframe, spread linearly
            span = float(d_fwd + d_back)
            if back.residual_fwd is not None:
                fwd = fwd + (d_fwd / span) * back.residual_fwd
            if back.residual_back is not None:
                bwd = bwd + (d_back / span) * back.residual_back
        kpts, share = blend(fwd, s_fwd, bwd, s_back)
        scores = share * person.kp_scores + (1.0 - share) * back.scores
        back_age_ms = round((back.key_clock - entry.clock) * 1000.0, 3)
        nearer_back = d_back < d_fwd
        self.interpolated += 1
        return dataclasses.replace(
            person, keypoints=kpts.astype(np.float32), kp_scores=scores.astype(np.float32),
            kp_error=np.minimum(s_fwd, s_back), interpolated=True, pose_frames=(person.pose_frame, back.key_frame),
            pose_frame=back.key_frame if nearer_back else person.pose_frame,
            pose_age_ms=back_age_ms if nearer_back else person.pose_age_ms)

    def stats(self) -> dict[str, Any]:
        return {"held_frames_max": self.max_held, "hold_frames": self.hold_frames,
                "interpolated_persons": self.interpolated}
