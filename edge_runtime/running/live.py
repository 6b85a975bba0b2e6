"""Live feeds: every tracked person in every frame, with the heavy pose model recomputing in the background.

One coordinator thread serves one or more sources with one set of compiled models::

    capture thread per source --FrameFeed (newest wins)--> coordinator
    coordinator, per frame:  PoseTracks.advance (keypoint flow) -> detections (every N frames; the detector
                             runs asynchronously and its result is matched on the frame it saw) -> output
    coordinator, always:     the pose scheduler fills free pose requests with the most urgent tracks of all
                             sources (new track > motion / scale change / low confidence > oldest pose;
                             optional budget ``pose_budget`` in person-frames and ``max_pose_age_s``)
    pose completions:        decode -> PoseTracks.apply_pose: carried from the frame the model saw to now

Live mode outputs each frame as soon as it is processed (capture-to-output latency stays about a frame; with
``delay_ms`` > 0 frames wait up to that long in :mod:`edge_runtime.running.twosided` for poses still on their way),
with each person's ``pose_frame``, ``pose_age_ms`` and ``propagated``. Every tracked person is output from the
frame it was detected on; until its first pose comes back it has ``"keypoints": null``. File mode
(``mode="file"``, the ``--schedule-poses`` option of ``sdpose-edge run``) takes every frame in order and holds
each frame until the poses scheduled on it are back, so results are deterministic; with two-sided propagation (the
default for files) frames then wait in :mod:`edge_runtime.running.twosided` for their persons' next keyframes.

The detector and the pose chain are the shared stages (:mod:`edge_runtime.running.stages`); the scheduling policy of a
source (urgency, budget) is its :class:`~edge_runtime.running.tracks.PoseTracks`; this module ranks the sources'
candidates and sends their crops. Every per-frame result is a :class:`~edge_runtime.running.results.FrameResult`
(arrays), written to each source's sinks through :meth:`~edge_runtime.running.coordinator.Coordinator._write_sinks`.
Statistics are bounded (reservoirs), so a run may last days.
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Sequence

import numpy as np

from edge_runtime.errors import SDPoseError
from edge_runtime.media.feeds import CaptureStatus, FrameFeed
from edge_runtime.media.sources import Frame, FrameSource, mask_credentials
from edge_runtime.model.compile_choice import InferencePriority
from edge_runtime.running.backends import BackendFactory
from edge_runtime.running.coordinator import Capture, Coordinator
from edge_runtime.running.metrics import Reservoirs
from edge_runtime.running.modes import LiveConfig
from edge_runtime.running.results import FrameResult
from edge_runtime.running.stages import FoundBoxes, PoseJob, PoseOutcome
from edge_runtime.running.summary import live_summary
from edge_runtime.running.tracking import select_person_boxes
from edge_runtime.running.tracks import PoseTracks
from edge_runtime.running.twosided import two_sided_buffer

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class SourceRun:
    """One source of a run: its name (output sub-folder), the frames, where its results go, and optionally
    its own detections (else the runner's)."""

    name: str
    source: FrameSource
    sinks: Sequence[Any]
    detections: "dict[str, np.ndarray] | None" = None


@dataclasses.dataclass(frozen=True, eq=False)
class _Pose:
    """The key of one person's pose job: whose, and the frame (index, clock s) and box [4] image px it is on."""

    src: int
    track_id: int
    frame_index: int
    clock: float
    box: np.ndarray


class _Source:
    """Per-source state, touched by the coordinator only."""

    def __init__(self, i: int, run: SourceRun, config: LiveConfig) -> None:
        self.i, self.name, self.source, self.sinks = i, run.name, run.source, list(run.sinks)
        self.detections = run.detections
        self.feed = FrameFeed(config.live_queue_size if config.mode == "live" else 2,
                              drop_oldest=config.mode == "live")
        self.status = CaptureStatus()
        self.tracks = PoseTracks(config.track, config.pose_budget)
        #: two-sided (files; live with delay_ms > 0): frames wait here for their next keyframes (None: written at once)
        self.two_sided = two_sided_buffer(config)
        self.frame: "Frame | None" = None   # the current (newest processed) frame
        self.capture_t = 0.0
        self.held = False                   # file mode: the current frame waits for its poses
        self.det_pending = False
        self.last_detect = -10 ** 9
        self.pending = 0                    # pose jobs queued or in flight for this source
        self.frames_out = self.failed = self.persons = self.recomputes = 0
        self.person_slots = self.person_present = self.pose_present = 0
        self.lat = Reservoirs()
        self.t_first: "float | None" = None
        self.t_last = 0.0


def source_clock(frame: Frame, capture_t: float, mode: str) -> float:
    """Seconds on the source's clock: capture time (live) or media time (file; frame index / 30 without)."""
    if mode == "live":
        return capture_t
    return frame.timestamp_ms / 1000.0 if frame.timestamp_ms is not None else frame.index / 30.0


class LiveRunner(Coordinator):
    """Tracks, pose scheduling and propagation over one or more sources (see the module docstring).

    Args mirror :class:`edge_runtime.running.pipeline.Pipeline`: ``estimator`` (a PoseEstimator), ``detector`` or
    ``detections`` ({frame name or index: [M,5]}, used for every source, keyed by capture order),
    ``backend_factory``, ``num_requests``, ``frame_hook(result, image) -> keep going`` (the FrameResult the sinks get).
    """

    def __init__(self, estimator: Any, config: "LiveConfig | None" = None, detector: Any = None,
                 detections: "dict[str, np.ndarray] | None" = None,
                 backend_factory: "BackendFactory | None" = None, num_requests: "dict[str, int] | None" = None,
                 frame_hook: "Callable[[dict, np.ndarray | None], bool] | None" = None,
                 per_source_detections: bool = False) -> None:
        super().__init__(estimator, detector, detections, backend_factory, num_requests, frame_hook,
                         boxes_elsewhere=per_source_detections)
        self.config = config if config is not None else LiveConfig()
        self._interrupted = False

    # ------------------------------------------------------------------ public
    def stop(self) -> None:
        """Stop capture on every source; the run ends after the frames being processed (signal-safe)."""
        self._interrupted = True
        super().stop()

    def run(self, runs: Sequence[SourceRun]) -> dict[str, Any]:
        """Process every source to its end (or max_frames / stop()); returns {"total": {...}, "sources":
        {name: summary}}."""
        cfg = self.config
        self._begin_run()
        self._interrupted = False
        self._pose_error: "str | None" = None  # the last pose request failed: frames say so until one succeeds
        self._srcs = [_Source(i, r, cfg) for i, r in enumerate(runs)]
        self._new_stages()
        self._rr = 0
        self._t0 = time.perf_counter()
        self._priority = InferencePriority(cfg.inference_nice)
        captures = [self._capture(src.name, src.source, src.feed, src.status,
                                  cfg.mode == "live" and cfg.pace_live_files and src.source.default_mode == "file")
                    for src in self._srcs]
        logger.info("%s mode over %d source(s): %s chain, requests %s, batch %d, detect every %d, pose budget %s",
                    cfg.mode, len(self._srcs), "+".join(self.stages),
                    {k: b.capacity for k, b in self.backends.items()}, cfg.batch, cfg.detect_every,
                    cfg.pose_budget if cfg.pose_budget is not None else "as fast as possible")
        self._drive(captures, 5.0 if cfg.mode == "live" else cfg.request_timeout_s)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        return live_summary(self)

    def frames_without_detections(self, src: _Source) -> int:
        """Frames of ``src`` its detections table had no entry for."""
        return self._boxes.missing[src.name]

    def _started(self, capture: Capture) -> None:
        self._priority.keep.add(capture.thread.native_id)  # capture keeps its priority

    # ------------------------------------------------------------------ loop
    def _loop(self) -> None:
        while True:
            self._priority.update()
            self._expire()
            n = len(self._srcs)
            for k in range(n):  # round-robin over sources, starting one further each time
                src = self._srcs[(self._rr + k) % n]
                if self._stop.is_set() or src.held or src.det_pending and self.config.mode == "file":
                    continue
                item = src.feed.get_nowait()
                if item is not None:
                    self._frame(src, *item)
            self._rr += 1
            self._schedule()
            if self._finished():
                for src in self._srcs:
                    self._release(src, src.two_sided.flush() if src.two_sided is not None else [])
                return
            self._wait_and_handle(0.05)

    def _finished(self) -> bool:
        for src in self._srcs:
            if src.held:
                if self._stop.is_set():
                    self._emit(src)  # stopping: write what the held frame has
                return False
            if not self._stop.is_set() and (not src.feed.closed or len(src.feed)):
                return False
        return True

    # ------------------------------------------------------------------ frames
    def _frame(self, src: _Source, frame: Frame, capture_t: float) -> None:
        cfg = self.config
        src.frame, src.capture_t = frame, capture_t
        if src.t_first is None:
            src.t_first = capture_t
        if not frame.ok:
            self._write_failed(src, FrameResult.failed(frame, src.name, mask_credentials(frame.error or "unreadable frame")))
            return
        t = time.perf_counter()
        try:
            src.tracks.advance(frame.index, source_clock(frame, capture_t, cfg.mode), frame.image)
        except (SDPoseError, ValueError) as exc:
            self._write_failed(src, FrameResult.failed(frame, src.name, f"tracking failed: {exc}"))
            return
        src.lat["propagate"].append((time.perf_counter() - t) * 1000.0)
        if frame.index - src.last_detect >= cfg.detect_every and not src.det_pending:
            self._detect(src, frame)
        src.tracks.accrue()
        if cfg.mode == "file":
            src.held = True  # emitted by _schedule once its poses are back
        else:
            self._emit(src)

    def _detect(self, src: _Source, frame: Frame) -> None:
        src.last_detect = frame.index
        table = src.detections if src.detections is not None else self.detections
        if table is not None:
            found = self._boxes.lookup(table, frame, src.name)
            self._match(src, frame.index, found.boxes_xyxy, found.scores)
            return
        src.det_pending = True  # until the box stage answers (pre-processing failures included)
        self._boxes.request(frame.image, (src.i, frame.index))

    def _on_boxes(self, userdata: "tuple[int, int]", found: FoundBoxes) -> None:
        src, frame_index = self._srcs[userdata[0]], userdata[1]
        src.det_pending = False
        if found.error is not None:
            logger.warning("%s frame %d: %s", src.name, frame_index, mask_credentials(found.error))
            return
        self._match(src, frame_index, found.boxes_xyxy, found.scores)

    def _match(self, src: _Source, frame_index: int, boxes: np.ndarray, scores: np.ndarray) -> None:
        boxes, scores, _ = select_person_boxes(boxes, scores, src.tracks.image_size, self.config.max_persons)
        src.tracks.match(frame_index, boxes, scores)

    def _emit(self, src: _Source) -> None:
        src.held = False
        persons = src.tracks.persons()
        src.person_slots += src.tracks.active()
        src.person_present += len(persons)
        if src.two_sided is not None:  # held until the persons' next keyframes are known
            self._release(src, src.two_sided.push(src.frame, src.capture_t, src.tracks.clock_s, persons,
                                                  self._pose_error))
            return
        self._count_poses(src, persons)
        result = FrameResult.from_persons(src.frame, src.name, persons, src.tracks.image_size,
                                          num_keypoints=self.estimator.num_keypoints)
        result.error = self._pose_error  # its tracked persons are there, but their poses could not be updated
        self._write(src, result)

    @staticmethod
    def _count_poses(src: _Source, persons: list) -> None:
        """Count the output persons that have keypoints and their pose ages."""
        for p in persons:
            if p.has_pose:
                src.pose_present += 1
                src.lat["pose_age"].append(p.pose_age_ms)

    def _release(self, src: _Source, done: list) -> None:
        """Write frames the two-sided buffer completed (:class:`~edge_runtime.running.twosided.HeldFrame`)."""
        for held in done:
            self._count_poses(src, held.persons)
            result = FrameResult.from_persons(held.frame, src.name, held.persons, held.frame.image.shape[1::-1],
                                              num_keypoints=self.estimator.num_keypoints)
            result.error = held.error
            self._write(src, result, held.frame, held.capture_t)

    def _write_failed(self, src: _Source, result: FrameResult) -> None:
        if src.two_sided is not None:  # the frames before it go first (one-sided where the next pose is unknown)
            self._release(src, src.two_sided.flush())
        self._write(src, result)

    def _write(self, src: _Source, result: FrameResult, frame: "Frame | None" = None,
               capture_t: "float | None" = None) -> None:
        """Write one result to the source's sinks (``frame``/``capture_t``: a held frame's, else the current)."""
        frame = frame if frame is not None else src.frame
        image = frame.image if frame is not None and frame.ok else None
        src.lat["sinks"].append(self._write_sinks(src.sinks, result, image, src.name))
        now = time.perf_counter()
        latency = (now - (capture_t if capture_t is not None else src.capture_t)) * 1000.0
        src.lat["frame_latency"].append(latency)
        self._lat["frame_latency"].append(latency)
        src.frames_out += 1
        src.failed += result.error is not None
        src.persons += len(result.track_ids)
        src.t_last = now

    # ------------------------------------------------------------------ scheduling
    def _submit(self, stage: str, inputs: np.ndarray, userdata: Any) -> None:
        super()._submit(stage, inputs, userdata)
        self._priority.update(now=True)  # the request's threads run behind capture and output from the start

    def _may_pose(self, src: _Source) -> bool:
        """The source's current frame may get poses now (file mode: the held frame, once its boxes are in)."""
        if src.frame is None or not src.frame.ok or self._stop.is_set():
            return False
        if self.config.mode == "file":
            return src.held and not src.det_pending
        return not (src.det_pending and src.tracks.active() == 0)

    def _candidates(self) -> list[tuple[float, int, int]]:
        """(urgency, source, track id) of every track that may get a pose now, most urgent first."""
        if self._poses.dead():
            return []  # every request of a pose stage stopped answering: poses stay as they are
        out = [(urgency, src.i, tid) for src in self._srcs if self._may_pose(src)
               for urgency, tid in src.tracks.candidates()]
        out.sort(key=lambda c: (-c[0], c[1], c[2]))
        return out

    def _next_jobs(self) -> list[PoseJob]:
        """The most urgent candidates' jobs for one request (at least one job; flip test: two crops a job)."""
        per_job = len(self._poses.variants)
        jobs: list[PoseJob] = []
        for _, si, tid in self._candidates():
            if (len(jobs) + 1) * per_job > max(self.config.batch, per_job):
                break
            src = self._srcs[si]
            box = src.tracks.begin_pose(tid)
            if box is None:
                continue  # no budget left for a refresh
            jobs.append(PoseJob(_Pose(si, tid, src.frame.index, src.tracks.clock_s, box), src.frame.image, box))
            src.pending += 1
        return jobs

    def _schedule(self) -> None:
        self._pump_stages()
        while self._poses.room() and not self._poses.queued:
            jobs = self._next_jobs()
            if not jobs:
                break
            self._poses.add(jobs)
            self._on_poses(self._poses.pump())
        if self.config.mode == "file":
            for src in self._srcs:
                if src.held and not src.det_pending and src.pending == 0 and not self._wants_pose(src):
                    self._emit(src)

    def _wants_pose(self, src: _Source) -> bool:
        return any(si == src.i for _, si, _ in self._candidates())

    # ------------------------------------------------------------------ completions
    def _on_poses(self, outcomes: Sequence[PoseOutcome]) -> None:
        """Poses back: carried from the frame the model saw to now; failed ones leave the track as it was."""
        failed = []
        for outcome in outcomes:
            item: _Pose = outcome.job.key
            src = self._srcs[item.src]
            src.pending -= 1
            if outcome.error is not None:
                src.tracks.cancel_pose(item.track_id)
                if outcome.stage == "crop":
                    logger.warning("%s track %d: %s", src.name, item.track_id, outcome.error)
                else:
                    failed.append(outcome.error)
                continue
            self._pose_error = None
            t = time.perf_counter()
            if src.tracks.apply_pose(item.track_id, item.frame_index, item.clock, item.box, outcome.keypoints,
                                     outcome.scores):
                src.recomputes += 1
                if src.two_sided is not None:  # live with --delay-ms: its frame may still be held
                    src.two_sided.keyframe(item.track_id, item.frame_index, outcome.keypoints, outcome.scores)
            src.lat["carry_forward"].append((time.perf_counter() - t) * 1000.0)
        if failed:
            error = mask_credentials(failed[0])
            logger.warning("pose request failed (%d person(s)): %s", len(failed), error)
            self._pose_error = f"pose request failed: {error}"
