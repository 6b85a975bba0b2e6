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

Every per-frame result is a :class:`~edge_runtime.running.results.FrameResult` (arrays), written to each source's
sinks as a record. Statistics are bounded (reservoirs), so a run may last days.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from edge_runtime.running.backends import BackendFactory, Completion, RequestBook
from edge_runtime.model.compile_choice import InferencePriority
from edge_runtime.running.coordinator import WAKE, Coordinator
from edge_runtime.errors import SDPoseError
from edge_runtime.media.feeds import CaptureStatus, FrameFeed, capture_loop
from edge_runtime.running.live_summary import live_summary
from edge_runtime.running.metrics import Reservoirs
from edge_runtime.running.results import FrameResult
from edge_runtime.media.sources import Frame, FrameSource, mask_credentials
from edge_runtime.running.modes import LiveConfig
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


@dataclasses.dataclass
class _Pose:
    """One crop in a pose request."""

    src: int
    track_id: int
    frame_index: int
    clock: float
    box: np.ndarray  # [4] image px
    flipped: bool


class _Source:
    """Per-source state, touched by the coordinator only."""

    def __init__(self, i: int, run: SourceRun, config: LiveConfig) -> None:
        self.i, self.name, self.source, self.sinks = i, run.name, run.source, list(run.sinks)
        self.detections = run.detections
        self.feed = FrameFeed(config.live_queue_size if config.mode == "live" else 2,
                              drop_oldest=config.mode == "live")
        self.status = CaptureStatus()
        self.tracks = PoseTracks(config.track)
        #: two-sided (files; live with delay_ms > 0): frames wait here for their next keyframes (None: written at once)
        self.two_sided = two_sided_buffer(config)
        self.thread: "threading.Thread | None" = None
        self.frame: "Frame | None" = None   # the current (newest processed) frame
        self.capture_t = 0.0
        self.held = False                   # file mode: the current frame waits for its poses
        self.det_pending = False
        self.last_detect = -10 ** 9
        self.pending = 0                    # pose crops in flight for this source
        self.credit = 0.0
        self.frames_out = self.failed = self.persons = self.recomputes = self.dets_missing = 0
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
    ``backend_factory``, ``num_requests``, ``frame_hook(record, image) -> keep going``.
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
        self._book = RequestBook(self.backends, cfg.request_timeout_s, chain=self.stages)
        self._latents: collections.deque = collections.deque()
        self._lat = Reservoirs()
        self._rr = 0
        self._t0 = time.perf_counter()
        self._priority = InferencePriority(cfg.inference_nice)
        for src in self._srcs:
            pace = cfg.mode == "live" and cfg.pace_live_files and src.source.default_mode == "file"
            src.thread = threading.Thread(
                target=capture_loop, name=f"sdpose-capture-{src.name}", daemon=True,
                args=(src.source, src.feed, self._stop, self._wake, src.status, pace,
                      cfg.max_frames))
            src.thread.start()
            self._priority.keep.add(src.thread.native_id)
        logger.info("%s mode over %d source(s): %s chain, requests %s, batch %d, detect every %d, pose budget %s",
                    cfg.mode, len(self._srcs), "+".join(self.stages),
                    {k: b.capacity for k, b in self.backends.items()}, cfg.batch, cfg.detect_every,
                    cfg.pose_budget if cfg.pose_budget is not None else "as fast as possible")
        aborted = True
        try:
            self._loop()
            aborted = False
        finally:
            self._stop.set()
            for src in self._srcs:
                src.source.close()
                src.feed.close()
                src.feed.discard()
            for src in self._srcs:
                src.thread.join(timeout=10.0)
                if src.thread.is_alive():
                    logger.warning("%s: capture thread did not stop within 10 s (blocked in a read)", src.name)
            self._book.wait_all(1.0 if aborted else 5.0 if cfg.mode == "live" else cfg.request_timeout_s)
            self._t1 = time.perf_counter()  # summary() is valid on every exit path
        return self.summary()

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
        if cfg.pose_budget is not None:  # the budget accrues per person-frame; a little may be saved up
            src.credit = min(src.credit + cfg.pose_budget * src.tracks.active(), 1.0 + src.tracks.active())
        if cfg.mode == "file":
            src.held = True  # emitted by _schedule once its poses are back
        else:
            self._emit(src)

    def _detect(self, src: _Source, frame: Frame) -> None:
        src.last_detect = frame.index
        table = src.detections if src.detections is not None else self.detections
        if table is not None:
            dets = table.get(frame.name)
            if dets is None:
                dets = table.get(str(frame.index))
            if dets is None:
                if src.dets_missing == 0:
                    logger.warning("%s: --detections has no entry for frame %d (%r): no detections on it (further "
                                   "misses are counted)", src.name, frame.index, frame.name)
                src.dets_missing += 1
                dets = np.zeros((0, 5), np.float32)
            self._match(src, frame.index, dets[:, :4], dets[:, 4])
            return
        try:
            tensor, meta = self.detector.preprocess(frame.image)
        except SDPoseError as exc:
            logger.warning("%s frame %d: detector preprocessing failed: %s", src.name, frame.index, exc)
            return
        src.det_pending = True
        self._submit("detector", tensor, (src.i, frame.index, meta))

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
        """Write one record to the source's sinks (``frame``/``capture_t``: a held frame's, else the current)."""
        frame = frame if frame is not None else src.frame
        record = self._output(result, src.name)
        image = frame.image if frame is not None and frame.ok else None
        t = time.perf_counter()
        for sink in src.sinks:
            sink.write(record, image=image)
        now = time.perf_counter()
        src.lat["sinks"].append((now - t) * 1000.0)
        latency = (now - (capture_t if capture_t is not None else src.capture_t)) * 1000.0
        src.lat["frame_latency"].append(latency)
        self._lat["frame_latency"].append(latency)
        src.frames_out += 1
        src.failed += result.error is not None
        src.persons += len(result.track_ids)
        src.t_last = now
        if self.frame_hook is not None and not self.frame_hook(record, image):
            self.stop()

    # ------------------------------------------------------------------ scheduling
    def _submit(self, stage: str, inputs: np.ndarray, userdata: Any) -> None:
        super()._submit(stage, inputs, userdata)
        self._priority.update(now=True)  # the request's threads run behind capture and output from the start

    def _free(self, stage: str) -> int:
        return self._book.free(stage)

    def _candidates(self) -> list[tuple[float, int, int]]:
        """(urgency, source, track id) of every track that may get a pose now, most urgent first."""
        cfg = self.config
        out: list[tuple[float, int, int]] = []
        if any(self._book.dead(s) for s in self.stages):
            return out  # every request of a pose stage stopped answering: poses stay as they are
        for src in self._srcs:
            if src.frame is None or not src.frame.ok or self._stop.is_set():
                continue
            if cfg.mode == "file" and (not src.held or src.det_pending):
                continue
            if cfg.mode == "live" and src.det_pending and src.tracks.active() == 0:
                continue
            # tracks of this source that have (or are getting) a pose: first poses alternate between sources
            posed = sum(1 for t in src.tracks.tracks.values() if t.keypoints is not None or t.pending)
            for track in src.tracks.tracks.values():
                urgency = src.tracks.urgency(track)
                if urgency is None:
                    continue
                if track.keypoints is None:
                    urgency -= 1e3 * posed
                if cfg.pose_budget is not None and src.credit < 1.0 and track.keypoints is not None:
                    continue  # no budget left for a refresh (a track without a pose may go into debt)
                out.append((urgency, src.i, track.track_id))
        out.sort(key=lambda c: (-c[0], c[1], c[2]))
        return out

    def _schedule(self) -> None:
        cfg = self.config
        if len(self.stages) == 2:
            while self._latents and self._free(self.stages[1]) > 0:
                latents, items = self._latents.popleft()
                self._submit(self.stages[1], latents, items)
        while self._free(self.stages[0]) > 0 and not (
                len(self.stages) == 2 and len(self._latents) >= self.backends[self.stages[1]].capacity) and (
                cfg.chain_slots is None or
                sum(self._book.inflight[s] for s in self.stages) + len(self._latents) < cfg.chain_slots):
            cands = self._candidates()
            if not cands:
                break
            per_crop = 2 if cfg.flip_test else 1
            items, crops = [], []
            t = time.perf_counter()
            for _, si, tid in cands:
                if len(crops) + per_crop > max(cfg.batch, per_crop):
                    break
                src = self._srcs[si]
                if cfg.pose_budget is not None:
                    if src.credit < 1.0 and src.tracks.tracks[tid].keypoints is not None:
                        continue
                    src.credit -= 1.0
                box = src.tracks.begin_pose(tid)
                try:
                    crop = self.estimator.preprocess(src.frame.image, box[None])[0]
                except SDPoseError as exc:
                    logger.warning("%s track %d: crop failed: %s", src.name, tid, exc)
                    src.tracks.cancel_pose(tid)
                    continue
                clock = src.tracks.clock_s
                for flipped in ((False, True) if cfg.flip_test else (False,)):
                    items.append(_Pose(si, tid, src.frame.index, clock, box, flipped))
                    crops.append(np.ascontiguousarray(crop[:, ::-1]) if flipped else crop)
                src.pending += 1
            self._lat["crop"].append((time.perf_counter() - t) * 1000.0)
            if not items:
                break
            self._submit(self.stages[0], np.stack(crops), items)
        if cfg.mode == "file":
            for src in self._srcs:
                if src.held and not src.det_pending and src.pending == 0 and not self._wants_pose(src):
                    self._emit(src)

    def _wants_pose(self, src: _Source) -> bool:
        return any(si == src.i for _, si, _ in self._candidates())

    # ------------------------------------------------------------------ completions
    def _expire(self) -> None:
        for event in self._book.expired():
            self._complete(event)

    def _handle(self, event: Any) -> None:
        if event is WAKE:
            return
        event = self._book.accept(event)
        if event is None:
            return  # expired earlier; already handled as failed
        self._lat[event.stage].append((event.done_t - event.submit_t) * 1000.0)
        self._complete(event)

    def _complete(self, event: Completion) -> None:
        if event.stage == "detector":
            si, frame_index, meta = event.userdata
            src = self._srcs[si]
            src.det_pending = False
            if event.error is not None:
                logger.warning("%s frame %d: %s", src.name, frame_index, mask_credentials(event.error))
                return
            try:
                boxes, scores = self.detector.postprocess(event.output, meta)
            except SDPoseError as exc:
                logger.warning("%s frame %d: detector postprocessing failed: %s", src.name, frame_index, exc)
                return
            self._match(src, frame_index, boxes, scores)
        elif event.stage == self.stages[-1]:
            self._on_heatmaps(event)
        elif event.error is not None:
            self._fail_poses(event.userdata, event.error)
        else:
            self._latents.append((event.output, event.userdata))

    def _fail_poses(self, items: "list[_Pose]", error: str) -> None:
        logger.warning("pose request failed (%d crop(s)): %s", len(items), mask_credentials(error))
        self._pose_error = f"pose request failed: {mask_credentials(error)}"
        for item in items:
            if item.flipped:
                continue
            src = self._srcs[item.src]
            src.pending -= 1
            src.tracks.cancel_pose(item.track_id)

    def _on_heatmaps(self, event: Completion) -> None:
        items: list[_Pose] = event.userdata
        if event.error is not None:
            self._fail_poses(items, event.error)
            return
        heatmaps = event.output
        if self.config.flip_test:  # items come in (plain, flipped) pairs
            heatmaps = self.estimator.flip_average(heatmaps[0::2], heatmaps[1::2])
            items = items[0::2]
        t = time.perf_counter()
        try:
            kpts, scores = self.estimator.postprocess(heatmaps, np.stack([it.box for it in items]))
        except SDPoseError as exc:
            self._fail_poses(items, f"decoding failed: {exc}")
            return
        self._lat["decode"].append((time.perf_counter() - t) * 1000.0)
        self._pose_error = None
        for j, item in enumerate(items):
            src = self._srcs[item.src]
            src.pending -= 1
            t = time.perf_counter()
            if src.tracks.apply_pose(item.track_id, item.frame_index, item.clock, item.box, kpts[j], scores[j]):
                src.recomputes += 1
                if src.two_sided is not None:  # live with --delay-ms: its frame may still be held
                    src.two_sided.keyframe(item.track_id, item.frame_index, kpts[j], scores[j])
            src.lat["carry_forward"].append((time.perf_counter() - t) * 1000.0)

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        return live_summary(self)
