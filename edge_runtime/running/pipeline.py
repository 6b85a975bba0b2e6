"""The file-mode runtime: capture -> detector requests -> crops -> pose requests -> decode -> sinks.

Every frame in order, full recompute (live feeds, with tracks, pose scheduling and keypoint propagation, run in
:mod:`edge_runtime.running.live`). Threads (:mod:`edge_runtime.running.coordinator`): a capture thread fills a bounded FrameFeed
(blocking when full); the coordinator (the thread calling :meth:`Pipeline.run`, holding all state, no locks)
submits to one Backend per model through the shared stages (:mod:`edge_runtime.running.stages`: boxes, poses);
completions come back on the events queue; frames complete out of order and are written in order: track IDs
assigned, then the result built and written. Tests inject slow, out-of-order or failing backends.

- At most ``max_inflight_frames`` frames at a time; results strictly in frame order, exactly one record per
  input frame, also for frames without persons and failed frames (those carry ``"error"``).
- The detector runs every ``detect_every`` frames; in between, boxes come from the previous frame's poses
  (:func:`edge_runtime.running.tracking.boxes_from_keypoints`); a frame whose carried boxes are empty is detected.
- Crops of several persons and frames go ``batch`` per pose request; a partial batch is sent when no further
  crops can arrive before something completes.

Coordinates: boxes_xyxy [N,4] image px; crops [N,h,w,3] u8 BGR crop px; heatmaps [N,K,H/4,W/4]; keypoints
[N,K,2] image px; scores [N,K].
"""
from __future__ import annotations

import dataclasses
import logging
import time
from typing import Any, Callable, Sequence

import numpy as np

from edge_runtime.media.feeds import CaptureStatus, FrameFeed
from edge_runtime.media.sources import Frame, FrameSource, mask_credentials
from edge_runtime.running.backends import BackendFactory
from edge_runtime.running.coordinator import Coordinator
from edge_runtime.running.metrics import Progress
from edge_runtime.running.modes import PipelineConfig
from edge_runtime.running.results import FrameResult
from edge_runtime.running.stages import FoundBoxes, PoseJob, PoseOutcome
from edge_runtime.running.summary import file_summary
from edge_runtime.running.tracking import IouTracker, boxes_from_keypoints, select_person_boxes

logger = logging.getLogger(__name__)


# ============================================================================ per-frame state
@dataclasses.dataclass
class _FrameState:
    seq: int
    frame: Frame
    capture_t: float
    admit_t: float
    image_size: "tuple[int, int]" = (0, 0)  # (w, h) image px
    boxes: "np.ndarray | None" = None       # [N,4] image px
    box_scores: "np.ndarray | None" = None  # [N]
    box_origin: str = ""                   # "detections" | "detector" | "tracked"
    keypoints: "np.ndarray | None" = None   # [N,K,2] image px
    scores: "np.ndarray | None" = None      # [N,K]
    pending: int = 0                        # persons whose pose is not back yet
    error: "str | None" = None
    done: bool = False


# ============================================================================ the pipeline
class Pipeline(Coordinator):
    """Runs pose estimation over a :class:`~edge_runtime.media.sources.FrameSource` and writes every result.

    Args: ``estimator`` (a PoseEstimator: ``compiled``, ``preprocess``, ``postprocess``, ``flip_average``),
    ``sinks`` (``write(record, image=None)``, ``close()``; called in frame order), ``config``, ``detector`` or
    ``detections`` ({frame key: float [M,5] x1, y1, x2, y2, score image px}, keys image file names or frame
    indices as strings; bypasses the detector), ``backend_factory`` (one Backend per model; default
    OpenVINOBackend), ``num_requests`` ({stage: requests}), ``frame_hook(result, image) -> keep going`` (the FrameResult the sinks get).

    :meth:`run` returns the summary dict (also what ``OUT/summary.json`` holds). :meth:`stop` (thread- and
    signal-safe) stops capture; in-flight frames are drained and written, then run returns.
    """

    def __init__(self, estimator: Any, sinks: Sequence[Any], config: "PipelineConfig | None" = None,
                 detector: Any = None, detections: "dict[str, np.ndarray] | None" = None,
                 backend_factory: "BackendFactory | None" = None,
                 num_requests: "dict[str, int] | None" = None,
                 frame_hook: "Callable[[dict, np.ndarray | None], bool] | None" = None) -> None:
        super().__init__(estimator, detector, detections, backend_factory, num_requests, frame_hook)
        self.sinks = list(sinks)
        self.config = config if config is not None else PipelineConfig()
        self._reset()

    # ------------------------------------------------------------------ public
    def run(self, source: FrameSource) -> dict[str, Any]:
        """Process ``source`` to the end (or max_frames / stop()) and return the summary dict."""
        cfg = self.config
        self._begin_run()
        self._reset()
        self._source = source
        pose_cap = self.backends[self.stages[-1]].capacity
        self._max_inflight = cfg.max_inflight_frames if cfg.max_inflight_frames is not None else 2 * pose_cap + 2
        self._feed = FrameFeed(2, drop_oldest=False)
        total = source.total
        if cfg.max_frames is not None:
            total = min(total, cfg.max_frames) if total is not None else cfg.max_frames
        self._progress = Progress(total, enabled=cfg.progress)
        logger.info("running %s in file mode: %s chain, requests %s, batch %d, detect every %d, max %d frames "
                    "in flight", source.description or type(source).__name__, "+".join(self.stages),
                    {k: b.capacity for k, b in self.backends.items()}, cfg.batch, cfg.detect_every,
                    self._max_inflight)
        self._t0 = time.perf_counter()
        self._drive([self._capture("", source, self._feed, self._status)], cfg.request_timeout_s)
        self._progress.update(self._written, force=True)
        return self.summary()

    def summary(self) -> dict[str, Any]:
        """The run's summary.json (valid on every exit path of :meth:`run`)."""
        return file_summary(self)

    # ------------------------------------------------------------------ coordinator
    def _reset(self) -> None:
        self._states: dict[int, _FrameState] = {}
        self._next_seq = 0
        self._next_write = 0
        self._status = CaptureStatus()
        self._written = 0
        self._failed = 0
        self._persons = 0
        self._discarded_at_stop = 0
        self._new_stages()
        self._waiting_carry: dict[int, _FrameState] = {}
        self._carry: "tuple[np.ndarray, np.ndarray, tuple[int, int]] | None" = None
        self._last_detect_seq: "int | None" = None
        self._tracker = IouTracker(self.config.track_iou_threshold)
        self._t0 = self._t1 = time.perf_counter()
        self._interrupted = False

    @property
    def frames_without_detections(self) -> "int | None":
        """Frames the detections table had no entry for (None without a table)."""
        return self._boxes.missing[""] if self.detections is not None else None

    def _loop(self) -> None:
        while True:
            if self._stop.is_set() and not self._interrupted:
                self._interrupted = True
                self._source.close()
                logger.info("stopping: capture closed, draining %d frame(s) in flight", len(self._states))
            if self._interrupted:
                self._discarded_at_stop += self._feed.discard()
            self._expire()
            self._admit()
            self._pump_stages(more_coming=self._more_crops_possible())
            if self._finished():
                return
            self._wait_and_handle(0.1)  # then every event that is ready, before scheduling again

    def _finished(self) -> bool:
        if self._states:
            return False
        return self._interrupted or (self._feed.closed and len(self._feed) == 0)

    def _more_crops_possible(self) -> bool:
        """True if crops may still arrive without anything in the pose chain completing first."""
        if self._boxes.busy():
            return True
        if self._interrupted or len(self._states) >= self._max_inflight:
            return False
        # file mode: capture is still reading frames that will be admitted
        return len(self._feed) > 0 or not self._feed.closed

    def _admit(self) -> None:
        while not self._interrupted and len(self._states) < self._max_inflight:
            item = self._feed.get_nowait()
            if item is None:
                return
            frame, capture_t = item
            state = _FrameState(seq=self._next_seq, frame=frame, capture_t=capture_t, admit_t=time.perf_counter())
            self._next_seq += 1
            self._states[state.seq] = state
            self._start(state)

    # ------------------------------------------------------------------ boxes
    def _start(self, state: _FrameState) -> None:
        frame = state.frame
        if not frame.ok:
            state.error = frame.error
            self._complete(state)
            return
        h, w = frame.image.shape[:2]
        state.image_size = (w, h)
        if self.detections is not None:
            self._set_boxes(state, self._boxes.lookup(self.detections, frame))
            return
        cfg = self.config
        due = cfg.detect_every == 1 or self._last_detect_seq is None or \
            state.seq - self._last_detect_seq >= cfg.detect_every
        if due:
            self._request_detection(state)
        elif self._next_write == state.seq:  # every earlier frame written: carried boxes are current
            self._start_carried(state)
        else:
            self._waiting_carry[state.seq] = state

    def _request_detection(self, state: _FrameState) -> None:
        if self._last_detect_seq is None or state.seq > self._last_detect_seq:
            self._last_detect_seq = state.seq
        self._boxes.request(state.frame.image, state.seq)

    def _start_carried(self, state: _FrameState) -> None:
        boxes = np.zeros((0, 4), np.float32)
        box_scores = np.zeros((0,), np.float32)
        if self._carry is not None:
            kpts, scores, _ = self._carry
            boxes, keep = boxes_from_keypoints(kpts, scores, state.image_size, self.config.score_threshold,
                                               self.config.track_box_expansion)
            if len(keep):
                sel = scores[keep]
                box_scores = np.array([float(s[s > self.config.score_threshold].mean()) for s in sel], np.float32)
        if len(boxes) == 0:
            self._request_detection(state)  # nobody to carry: detect on this frame
            return
        self._set_boxes(state, FoundBoxes(boxes, box_scores, "tracked"))

    def _on_boxes(self, seq: int, found: FoundBoxes) -> None:
        self._set_boxes(self._states[seq], found)

    def _set_boxes(self, state: _FrameState, found: FoundBoxes) -> None:
        """The frame's boxes: its persons go to the pose stage (a frame without persons is complete)."""
        if found.error is not None:
            state.error = found.error
            self._complete(state)
            return
        boxes, box_scores, outside = select_person_boxes(found.boxes_xyxy, found.scores, state.image_size,
                                                         self.config.max_persons)
        if outside:
            logger.warning("frame %d: %d box(es) entirely outside the %dx%d image dropped", state.frame.index,
                           outside, *state.image_size)
        state.boxes, state.box_scores, state.box_origin = boxes, box_scores, found.origin
        n = len(boxes)
        k = self.estimator.num_keypoints
        state.keypoints = np.zeros((n, k, 2), np.float32)
        state.scores = np.zeros((n, k), np.float32)
        state.pending = n
        if n == 0:
            self._complete(state)
            return
        self._poses.add(PoseJob((state.seq, person), state.frame.image, boxes[person]) for person in range(n))

    # ------------------------------------------------------------------ poses
    def _on_poses(self, outcomes: Sequence[PoseOutcome]) -> None:
        for outcome in outcomes:
            seq, person = outcome.job.key
            state = self._states.get(seq)
            if state is None or state.done:
                continue
            if outcome.error is not None:
                state.error = mask_credentials(outcome.error)
            else:
                state.keypoints[person] = outcome.keypoints
                state.scores[person] = outcome.scores
            state.pending -= 1
            if state.pending == 0:
                self._complete(state)

    # ------------------------------------------------------------------ ordered output
    def _complete(self, state: _FrameState) -> None:
        state.done = True
        while self._next_write in self._states and self._states[self._next_write].done:
            self._write(self._states.pop(self._next_write))
            self._next_write += 1
            waiting = self._waiting_carry.pop(self._next_write, None)
            if waiting is not None:
                self._start_carried(waiting)

    def _track_ids(self, state: _FrameState) -> np.ndarray:
        """Track IDs [N] of the frame's persons, assigned in frame order (a failed frame or one without persons
        takes none and leaves the tracker as it was)."""
        if state.error is not None or state.boxes is None or len(state.boxes) == 0:
            return np.zeros(0, np.int64)
        return self._tracker.update(state.boxes)

    def _result(self, state: _FrameState, track_ids: np.ndarray) -> FrameResult:
        """The frame's result, built once and complete: a failed frame carries its error and no persons."""
        frame = state.frame
        if state.error is not None or state.boxes is None:
            return FrameResult.failed(frame, frame.name, state.error or "", self.estimator.num_keypoints)
        return FrameResult(frame.index, frame.name, frame.timestamp_ms, state.image_size, state.boxes,
                           state.box_scores, state.keypoints, state.scores, track_ids)

    def _write(self, state: _FrameState) -> None:
        result = self._result(state, self._track_ids(state))
        image = state.frame.image if state.frame.ok else None
        self._lat["sinks"].append(self._write_sinks(self.sinks, result, image))
        self._lat["frame_latency"].append((time.perf_counter() - state.capture_t) * 1000.0)
        self._written += 1
        self._persons += len(result.track_ids)
        if state.error is not None:
            self._failed += 1
        elif state.keypoints is not None and state.boxes is not None:
            self._carry = (state.keypoints, state.scores, state.image_size)
        self._progress.update(self._written)
