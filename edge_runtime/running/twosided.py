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

Live mode with a bounded delay (``--delay-ms D``, ``delay_ms``): the frames go out in order, each at the latest
when it is D old on the source's clock (the newest pushed frame's clock minus its own; with what it has then:
the forward side for persons without a next keyframe). A pose comes back after its frame was pushed:
:meth:`TwoSidedBuffer.keyframe` makes the held frame it was computed on a keyframe, carries it backward to the
previous keyframe and forward over the held frames after it, so a frame whose next pose arrives within D is
blended two-sided and later frames stay forward-only. Capture-to-output latency: about D plus a frame interval
(frames go out when a newer frame is pushed, or at the end).

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

    def __init__(self, track: "TrackConfig | None" = None, hold_frames: int = 64,
                 delay_ms: "float | None" = None) -> None:
        self.track = track if track is not None else TrackConfig()
        self.hold_frames = max(1, int(hold_frames))
        #: live: a held frame goes out once it is this old on the source's clock (None: files, no age limit)
        self.delay_s = None if delay_ms is None else float(delay_ms) / 1000.0
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
        while self.held and (len(self.held) > self.hold_frames or self._complete(self.held[0], alive)
                             or self._due(self.held[0], clock)):
            out.append(self._finish(self.held.popleft()))
        return out

    def _due(self, entry: HeldFrame, clock: float) -> bool:
        """Live: ``entry`` is ``delay_s`` old at the newest frame's ``clock`` (seconds, the source's clock)."""
        return self.delay_s is not None and clock - entry.clock >= self.delay_s - 1e-9

    def keyframe(self, track_id: int, frame_index: int, keypoints: np.ndarray, scores: np.ndarray) -> None:
        """A pose (``keypoints`` [K,2] image px, ``scores`` [K]) computed on ``frame_index`` came back after that
        frame was pushed (live mode): if the frame is still held, it becomes the track's keyframe there, is carried
        backward to the previous keyframe and forward over the held frames after it. Nothing to do otherwise
        (the frame went out already, or a newer pose of the track is held: this one is stale)."""
        held = list(self.held)
        at = next((i for i, e in enumerate(held) if e.frame.index == frame_index), None)
        if at is None:
            return
        if any(p.track_id == track_id and p.pose_frame is not None and p.pose_frame > frame_index
               for e in held[at + 1:] for p in e.persons):
            return
        entry = held[at]
        j = next((j for j, p in enumerate(entry.persons) if p.track_id == track_id), None)
        if j is None or is_keyframe(entry.persons[j], frame_index):
            return
        old = entry.persons[j]
        kpts, scores = np.asarray(keypoints, np.float32).reshape(-1, 2), np.asarray(scores, np.float32).reshape(-1)
        same = old.keypoints is not None and len(old.keypoints) == len(kpts)
        key = dataclasses.replace(old, keypoints=kpts, kp_scores=scores, kp_error=np.zeros(len(kpts)),
                                  pose_frame=frame_index, pose_age_ms=0.0, propagated=False,
                                  pose_frames=(frame_index, None), carried=old.keypoints if same else None)
        entry.persons[j] = key
        self._carry_back(key, entry)
        self._carry_forward(key, entry, held[at + 1:])

    def _carry_forward(self, key: PersonState, key_entry: HeldFrame, later: "list[HeldFrame]") -> None:
        """Carry a late keyframe's pose forward over the held frames after it (their forward side)."""
        pts, error = np.asarray(key.keypoints, np.float64), np.zeros(len(key.keypoints))
        older, older_box = key_entry, np.asarray(key.box, np.float64)
        for entry in later:
            j = next((j for j, p in enumerate(entry.persons) if p.track_id == key.track_id), None)
            if j is None:
                return
            person = entry.persons[j]
            box = np.asarray(person.box, np.float64)
            shift = box_center(box) - box_center(older_box)
            pts, step = self._flow_step(older.gray, entry.gray, pts, key.kp_scores, shift)
            error = error + step
            entry.persons[j] = dataclasses.replace(
                person, keypoints=pts.astype(np.float32), kp_scores=key.kp_scores, kp_error=error.copy(),
                pose_frame=key.pose_frame, pose_age_ms=round((entry.clock - key_entry.clock) * 1000.0, 3),
                propagated=True, pose_frames=(key.pose_frame, None), carried=None)
            older, older_box = entry, box

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
        held = list(self.held)
        older = held[:next(i for i, e in enumerate(held) if e is key_entry)]
        for entry in reversed(older):
            person = next((p for p in entry.persons if p.track_id == key.track_id), None)
            if person is None or key.track_id in entry.back:
                return
            box = np.asarray(person.box, np.float64)
            shift = box_center(box) - box_center(newer_box)
            pts, step = self._flow_step(newer.gray, entry.gray, pts, key.kp_scores, shift)
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

    def _flow_step(self, src: np.ndarray, dst: np.ndarray, pts: np.ndarray, scores: np.ndarray,
                   box_shift: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One flow step of one pose [K,2] from flow image ``src`` to ``dst`` (backward: newer to older) ->
        (keypoints on ``dst``, step error [K])."""
        cfg = self.track
        moved, good, fb = keypoint_flow(src, dst, pts, scores, self._scale, cfg.flow_model or "points",
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
                "interpolated_persons": self.interpolated,
                "delay_ms": None if self.delay_s is None else round(self.delay_s * 1000.0, 3)}


def two_sided_buffer(config: Any) -> "TwoSidedBuffer | None":
    """The buffer of one source for a :class:`~edge_runtime.running.modes.LiveConfig`: None when poses go forward
    only (frames written at once); live mode holds frames at most ``delay_ms``."""
    if config.propagation != "two-sided":
        return None
    delay = config.delay_ms if config.mode == "live" else None
    return TwoSidedBuffer(config.track, config.held_frames(), delay)
