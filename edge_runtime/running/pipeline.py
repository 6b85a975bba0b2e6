"""The file-mode runtime: capture -> detector requests -> crops -> pose requests -> decode -> sinks.

Every frame in order, full recompute (live feeds, with tracks, pose scheduling and keypoint propagation, run in
:mod:`edge_runtime.running.live`). Threads (:mod:`edge_runtime.running.coordinator`): a capture thread fills a bounded FrameFeed
(blocking when full); the coordinator (the thread calling :meth:`Pipeline.run`, holding all state, no locks)
submits to one Backend per model; completions come back on the events queue, where it decodes heatmaps,
reorders, assigns track IDs and writes the sinks. Tests inject slow, out-of-order or failing backends.

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

import collections
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from edge_runtime.running.backends import BackendFactory, Completion, RequestBook
from edge_runtime.running.coordinator import WAKE, Coordinator
from edge_runtime.errors import SDPoseError
from edge_runtime.media.feeds import CaptureStatus, FrameFeed, capture_loop
from edge_runtime.running.metrics import Progress, Reservoirs
from edge_runtime.running.modes import PipelineConfig
from edge_runtime.running.results import FrameResult
from edge_runtime.media.sources import Frame, FrameSource, mask_credentials
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
    pending: int = 0                        # pose items not yet decoded
    heat_parts: "dict[int, dict[bool, np.ndarray]]" = dataclasses.field(default_factory=dict)
    det_meta: Any = None
    error: "str | None" = None
    done: bool = False


@dataclasses.dataclass
class _PoseItem:
    seq: int
    person: int
    flipped: bool


# ============================================================================ the pipeline
class Pipeline(Coordinator):
    """Runs pose estimation over a :class:`~edge_runtime.media.sources.FrameSource` and writes every result.

    Args: ``estimator`` (a PoseEstimator: ``compiled``, ``preprocess``, ``postprocess``, ``flip_average``),
    ``sinks`` (``write(record, image=None)``, ``close()``; called in frame order), ``config``, ``detector`` or
    ``detections`` ({frame key: float [M,5] x1, y1, x2, y2, score image px}, keys image file names or frame
    indices as strings; bypasses the detector), ``backend_factory`` (one Backend per model; default
    OpenVINOBackend), ``num_requests`` ({stage: requests}), ``frame_hook(record, image) -> keep going``.

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
        self.first_stage = self.stages[0]
        self.heat_stage = self.stages[-1]
        self._reset()

    # ------------------------------------------------------------------ public
    def run(self, source: FrameSource) -> dict[str, Any]:
        """Process ``source`` to the end (or max_frames / stop()) and return the summary dict."""
        cfg = self.config
        self._begin_run()
        self._reset()
        self._source = source
        pose_cap = self.backends[self.heat_stage].capacity
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
        capture = threading.Thread(target=capture_loop, name="sdpose-capture", daemon=True,
                                   args=(source, self._feed, self._stop, self._wake,
                                         self._capture, False, cfg.max_frames))
        capture.start()
        aborted = True
        try:
            self._loop()
            aborted = False
        finally:
            self._stop.set()
            source.close()
            self._feed.close()
            self._feed.discard()
            capture.join(timeout=10.0)
            if capture.is_alive():
                logger.warning("capture thread did not stop within 10 s (blocked in the source read)")
            # an exception (a second Ctrl-C) does not wait long
            self._book.wait_all(1.0 if aborted else cfg.request_timeout_s)
            self._t1 = time.perf_counter()  # summary() is valid on every exit path
        self._progress.update(self._written, force=True)
        return self.summary()

    # ------------------------------------------------------------------ coordinator
    def _reset(self) -> None:
        self._states: dict[int, _FrameState] = {}
        self._next_seq = 0
        self._next_write = 0
        self._capture = CaptureStatus()
        self._written = 0
        self._failed = 0
        self._persons = 0
        self._discarded_at_stop = 0
        self._dets_missing = 0
        self._book = RequestBook(self.backends, self.config.request_timeout_s, chain=self.stages)
        self._det_queue: collections.deque = collections.deque()
        self._pose_items: collections.deque = collections.deque()  # _PoseItem (crop made at submission)
        self._latent_queue: collections.deque = collections.deque()  # (latents, items)
        self._waiting_carry: dict[int, _FrameState] = {}
        self._carry: "tuple[np.ndarray, np.ndarray, tuple[int, int]] | None" = None
        self._last_detect_seq: "int | None" = None
        self._tracker = IouTracker(self.config.track_iou_threshold)
        self._lat = Reservoirs()
        self._t0 = self._t1 = time.perf_counter()
        self._interrupted = False

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
            self._schedule()
            if self._finished():
                return
            self._wait_and_handle(0.1)  # then every event that is ready, before scheduling again

    def _finished(self) -> bool:
        if self._states:
            return False
        return self._interrupted or (self._feed.closed and len(self._feed) == 0)

    def _expire(self) -> None:
        """Requests past their deadline fail their frames; their slots stay taken (the device holds them)."""
        for event in self._book.expired():
            self._handle(event, counted=False)

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

    def _start(self, state: _FrameState) -> None:
        frame = state.frame
        if not frame.ok:
            state.error = frame.error
            self._complete(state)
            return
        h, w = frame.image.shape[:2]
        state.image_size = (w, h)
        if self.detections is not None:
            boxes = self.detections.get(frame.name)
            if boxes is None:
                boxes = self.detections.get(str(frame.index))
            if boxes is None:
                if self._dets_missing == 0:
                    examples = ", ".join(repr(k) for k in list(self.detections)[:3])
                    logger.warning("--detections has no entry for frame %d (keys tried: %r, %r; the file has "
                                   "e.g. %s): recorded with zero persons (further misses are counted in the "
                                   "summary)", frame.index, frame.name, str(frame.index), examples or "no keys")
                self._dets_missing += 1
                boxes = np.zeros((0, 5), np.float32)
            self._set_boxes(state, boxes[:, :4], boxes[:, 4], "detections")
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
        self._det_queue.append(state.seq)

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
        self._set_boxes(state, boxes, box_scores, "tracked")

    def _set_boxes(self, state: _FrameState, boxes: np.ndarray, box_scores: np.ndarray, origin: str) -> None:
        boxes, box_scores, outside = select_person_boxes(boxes, box_scores, state.image_size, self.config.max_persons)
        if outside:
            logger.warning("frame %d: %d box(es) entirely outside the %dx%d image dropped", state.frame.index,
                           outside, *state.image_size)
        state.boxes, state.box_scores, state.box_origin = boxes, box_scores, origin
        n = len(boxes)
        k = self.estimator.num_keypoints
        state.keypoints = np.zeros((n, k, 2), np.float32)
        state.scores = np.zeros((n, k), np.float32)
        if n == 0:
            self._complete(state)
            return
        variants = (False, True) if self.config.flip_test else (False,)
        for person in range(n):
            for flipped in variants:  # the crop is made when the request is sent
                self._pose_items.append(_PoseItem(state.seq, person, flipped))
        state.pending = n * len(variants)

    # ------------------------------------------------------------------ submission
    def _free(self, stage: str) -> int:
        free = self._book.free(stage)
        if self.config.chain_slots is not None and stage in self.stages and len(self.stages) == 2:
            used = sum(self._book.inflight[s] for s in self.stages)
            free = min(free, self.config.chain_slots - used)
        return free

    def _more_crops_possible(self) -> bool:
        """True if crops may still arrive without anything in the pose chain completing first."""
        if self._det_queue or self._book.inflight["detector"]:
            return True
        if self._interrupted or len(self._states) >= self._max_inflight:
            return False
        # file mode: capture is still reading frames that will be admitted
        return len(self._feed) > 0 or not self._feed.closed

    def _fail_dead_stages(self) -> None:
        reason = "no inference request left (every request of the {} stage stopped answering)"
        if self._book.dead("detector"):
            while self._det_queue:
                state = self._states[self._det_queue.popleft()]
                state.error = reason.format("detector")
                self._complete(state)
        if self._book.dead(self.first_stage) and self._pose_items:
            items = list(self._pose_items)
            self._pose_items.clear()
            self._fail_items(items, reason.format(self.first_stage))
        if len(self.stages) == 2 and self._book.dead(self.heat_stage):
            while self._latent_queue:
                _, items = self._latent_queue.popleft()
                self._fail_items(items, reason.format(self.heat_stage))

    def _schedule(self) -> None:
        self._fail_dead_stages()
        # detector
        while self._det_queue and self._free("detector") > 0:
            seq = self._det_queue.popleft()
            state = self._states[seq]
            t = time.perf_counter()
            try:
                tensor, state.det_meta = self.detector.preprocess(state.frame.image)
            except SDPoseError as exc:
                state.error = f"detector preprocessing failed: {exc}"
                self._complete(state)
                continue
            self._lat["detector_pre"].append((time.perf_counter() - t) * 1000.0)
            self._submit("detector", tensor, seq)
        # second stage of the split chain first (keeps the fewest latents alive)
        if len(self.stages) == 2:
            while self._latent_queue and self._free(self.heat_stage) > 0:
                latents, items = self._latent_queue.popleft()
                self._submit(self.heat_stage, latents, items)
        batch = self.config.batch
        while self._pose_items and self._free(self.first_stage) > 0:
            if len(self.stages) == 2 and len(self._latent_queue) >= self.backends[self.heat_stage].capacity:
                break  # the pose stage is the bottleneck: don't pile up latents
            if len(self._pose_items) < batch and self._more_crops_possible():
                break  # wait for a full batch
            take = min(batch, len(self._pose_items))
            items, crops = [], []
            t = time.perf_counter()
            for _ in range(take):
                item = self._pose_items.popleft()
                state = self._states[item.seq]
                try:
                    crop = self.estimator.preprocess(state.frame.image, state.boxes[item.person:item.person + 1])[0]
                except SDPoseError as exc:
                    self._fail_items([item], f"crop failed: {exc}")
                    continue
                items.append(item)
                crops.append(crop[:, ::-1] if item.flipped else crop)
            self._lat["crop"].append((time.perf_counter() - t) * 1000.0)
            if items:
                self._submit(self.first_stage, np.stack(crops), items)

    # ------------------------------------------------------------------ completions
    def _handle(self, event: Any, counted: bool = True) -> None:
        if event is WAKE:
            return
        if counted:
            event = self._book.accept(event)
            if event is None:
                return
            self._lat[event.stage].append((event.done_t - event.submit_t) * 1000.0)
        if event.stage == "detector":
            self._on_detection(event)
        elif event.stage == self.heat_stage:
            self._on_heatmaps(event)
        else:
            self._on_latents(event)

    def _on_detection(self, event: Completion) -> None:
        state = self._states[event.userdata]
        if event.error is not None:
            state.error = event.error
            self._complete(state)
            return
        t = time.perf_counter()
        try:
            boxes, scores = self.detector.postprocess(event.output, state.det_meta)
        except SDPoseError as exc:
            state.error = f"detector postprocessing failed: {exc}"
            self._complete(state)
            return
        self._lat["detector_post"].append((time.perf_counter() - t) * 1000.0)
        self._set_boxes(state, boxes, scores, "detector")

    def _on_latents(self, event: Completion) -> None:
        if event.error is not None:
            self._fail_items(event.userdata, event.error)
            return
        self._latent_queue.append((event.output, event.userdata))

    def _fail_items(self, items: "list[_PoseItem]", error: str) -> None:
        for item in items:
            state = self._states.get(item.seq)
            if state is None or state.done:
                continue
            state.error = mask_credentials(error)
            state.pending -= 1
            if state.pending == 0:
                self._complete(state)

    def _on_heatmaps(self, event: Completion) -> None:
        items: list[_PoseItem] = event.userdata
        if event.error is not None:
            self._fail_items(items, event.error)
            return
        heatmaps = event.output
        # group by frame: decode every finished person of a frame in one call
        ready: dict[int, list[tuple[int, np.ndarray]]] = collections.defaultdict(list)
        for j, item in enumerate(items):
            state = self._states[item.seq]
            if not self.config.flip_test:
                ready[item.seq].append((item.person, heatmaps[j]))
                continue
            parts = state.heat_parts.setdefault(item.person, {})
            parts[item.flipped] = heatmaps[j]
            if len(parts) == 2:
                ready[item.seq].append((item.person, self.estimator.flip_average(parts[False][None], parts[True][None])[0]))
                del state.heat_parts[item.person]
        for seq, persons in ready.items():
            state = self._states[seq]
            idx = np.array([p for p, _ in persons], dtype=np.int64)
            t = time.perf_counter()
            try:
                kpts, scores = self.estimator.postprocess(np.stack([h for _, h in persons]), state.boxes[idx])
                state.keypoints[idx] = kpts
                state.scores[idx] = scores
            except SDPoseError as exc:
                state.error = f"decoding failed: {exc}"
            self._lat["decode"].append((time.perf_counter() - t) * 1000.0)
        for item in items:
            state = self._states[item.seq]
            state.pending -= 1
            if state.pending == 0 and not state.done:
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

    def _record(self, state: _FrameState) -> dict[str, Any]:
        frame = state.frame
        size = state.image_size if state.image_size != (0, 0) else None
        k = self.estimator.num_keypoints
        if state.error is not None or state.boxes is None or len(state.boxes) == 0:
            result = FrameResult.failed(frame, frame.name, state.error or "", k)
            result.image_size, result.error = size, state.error
            return self._output(result)
        result = FrameResult(frame.index, frame.name, frame.timestamp_ms, size, state.boxes, state.box_scores,
                             state.keypoints, state.scores, self._tracker.update(state.boxes))
        return self._output(result)

    def _write(self, state: _FrameState) -> None:
        record = self._record(state)
        image = state.frame.image if state.frame.ok else None
        t = time.perf_counter()
        for sink in self.sinks:
            sink.write(record, image=image)
        now = time.perf_counter()
        self._lat["sinks"].append((now - t) * 1000.0)
        self._lat["frame_latency"].append((now - state.capture_t) * 1000.0)
        self._written += 1
        self._persons += len(record["persons"])
        if state.error is not None:
            self._failed += 1
        elif state.keypoints is not None and state.boxes is not None:
            self._carry = (state.keypoints, state.scores, state.image_size)
        self._progress.update(self._written)
        if self.frame_hook is not None and not self.frame_hook(record, image):
            self.stop()

    # ------------------------------------------------------------------ summary
    def summary(self) -> dict[str, Any]:
        wall = max(self._t1 - self._t0, 1e-9)
        heat_cap = self.backends[self.heat_stage].capacity
        heat = self._book.busy[self.heat_stage]
        busy_sum = heat.requests_s
        ok = self._written - self._failed
        skipped = self._feed.skipped + self._discarded_at_stop
        return {
            "mode": "file",  # a Pipeline runs files only
            "chain": "+".join(self.stages),
            "frames_in": self._capture.frames_read,
            "frames_out": self._written,
            "frames_ok": ok,
            "frames_skipped": skipped,
            "frames_failed": self._failed,
            "persons": self._persons,
            "wall_s": round(wall, 3),
            "fps": round(self._written / wall, 4),
            "persons_per_s": round(self._persons / wall, 4),
            "latency_ms": {k: v.summary() for k, v in sorted(self._lat.items())},
            "pose_busy_share": round(min(1.0, self._book.chain_busy.busy_s(self._t1) / wall), 4),
            "stage_busy_share": {s: round(min(1.0, m.busy_s(self._t1) / wall), 4)
                                 for s, m in sorted(self._book.busy.items())},
            "pose_request_utilization": round(busy_sum / (wall * heat_cap), 4),
            "requests": {k: b.capacity for k, b in self.backends.items()},
            "frames_without_detections": self._dets_missing if self.detections is not None else None,
            "batch": self.config.batch,
            "detect_every": self.config.detect_every,
            "interrupted": self._interrupted,
            **self._capture.to_summary(),
            "requests_timed_out": self._book.requests.expired_count,
        }

