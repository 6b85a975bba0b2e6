"""What the two coordinators share (:class:`~edge_runtime.running.pipeline.Pipeline`, file mode, and
:class:`~edge_runtime.running.live.LiveRunner`, live feeds): one backend per model of the chain (and the detector), the
events queue their completions arrive on, the run's skeleton (capture threads, the loop, teardown), the shared
stages (:mod:`edge_runtime.running.stages`: boxes and poses) and the one place results reach the sinks.

All coordinator state lives in the thread that calls ``run``; backends and capture threads only put events on the
queue. A subclass is a policy: ``_loop`` (which frames, which persons, when), ``_on_boxes`` and ``_on_poses`` (what
the stages' results mean for its frames), and its summary. Every result goes out through
:meth:`Coordinator._write_sinks` (temporal smoothing, ``config.smooth``, then the sinks and the frame hook).
"""
from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from typing import Any, Callable, Sequence

import numpy as np

from edge_runtime.errors import InputError
from edge_runtime.media.feeds import CaptureStatus, FrameFeed, capture_loop
from edge_runtime.media.sources import FrameSource
from edge_runtime.running.backends import BackendFactory, Completion, RequestBook, build_backends
from edge_runtime.running.metrics import Reservoirs
from edge_runtime.running.smoothing import build_smoother
from edge_runtime.running.stages import BoxStage, FoundBoxes, PoseOutcome, PoseStage

logger = logging.getLogger(__name__)

#: put on the events queue by capture threads: "a frame is waiting" (no completion attached)
WAKE = object()


@dataclasses.dataclass
class Capture:
    """One source's capture thread, filling ``feed``."""

    name: str
    source: FrameSource
    feed: FrameFeed
    thread: threading.Thread


class Coordinator:
    """Base of the coordinators (module docstring). Subclasses set ``self.config`` (``batch``, ``flip_test``,
    ``chain_slots``, ``request_timeout_s``, ``max_frames``, ``smooth``, ``parts``) and implement ``_loop``,
    ``_on_boxes`` and ``_on_poses``."""

    def __init__(self, estimator: Any, detector: Any = None, detections: "dict[str, np.ndarray] | None" = None,
                 backend_factory: "BackendFactory | None" = None, num_requests: "dict[str, int] | None" = None,
                 frame_hook: "Callable[[Any, np.ndarray | None], bool] | None" = None,
                 boxes_elsewhere: bool = False) -> None:
        if detector is None and detections is None and not boxes_elsewhere:
            raise InputError("no person boxes: the model folder has no detector component and no --detections "
                             "file was given (export a detector with sdpose-convert, or pass --detections)")
        self.estimator, self.detector, self.detections = estimator, detector, detections
        self.frame_hook = frame_hook
        self.events: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        #: ("vae_encoder", "pose"), ("vae_pose",) or one remote stage
        self.stages: tuple[str, ...] = tuple(estimator.kinds)
        self.backends = build_backends(estimator, detector if detections is None else None, backend_factory,
                                       num_requests, self.events.put)
        self._stop = threading.Event()

    def stop(self) -> None:
        """Stop capture; what is in flight is finished (thread- and signal-safe)."""
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    # ------------------------------------------------------------------ a run
    def _begin_run(self) -> None:
        """At the start of every run: capture may go on; fresh temporal-smoothing state (``config.smooth``)."""
        self._stop.clear()
        self._smoother = build_smoother(self.config.smooth)

    def _new_stages(self) -> None:
        """A run's request book, latency reservoirs and stages (nothing in flight, nothing waiting)."""
        cfg = self.config
        self._book = RequestBook(self.backends, cfg.request_timeout_s, chain=self.stages)
        self._lat = Reservoirs()
        self._boxes = BoxStage(self.detector, self._book, self._submit, self._lat)
        self._poses = PoseStage(self.estimator, self._book, self._submit, self._lat, cfg.batch, cfg.flip_test,
                                cfg.chain_slots)

    def _capture(self, name: str, source: FrameSource, feed: FrameFeed, status: CaptureStatus,
                 pace: bool = False) -> Capture:
        """A capture thread (not started) reading ``source`` into ``feed`` up to ``config.max_frames``."""
        thread = threading.Thread(target=capture_loop, name=f"sdpose-capture{name and '-' + name}", daemon=True,
                                  args=(source, feed, self._stop, self._wake, status, pace, self.config.max_frames))
        return Capture(name, source, feed, thread)

    def _started(self, capture: Capture) -> None:
        """Called once a capture thread runs (a subclass may note its thread)."""

    def _drive(self, captures: Sequence[Capture], drain_timeout_s: "float | None") -> None:
        """Start the capture threads, run ``_loop`` and always tear down: capture stops, sources and feeds close,
        threads join, requests in flight get ``drain_timeout_s`` (1 s after an exception, e.g. a second Ctrl-C),
        and ``_t1`` is stamped (the summary is valid on every exit path)."""
        for capture in captures:
            capture.thread.start()
            self._started(capture)
        aborted = True
        try:
            self._loop()
            aborted = False
        finally:
            self._stop.set()
            for capture in captures:
                capture.source.close()
                capture.feed.close()
                capture.feed.discard()
            for capture in captures:
                capture.thread.join(timeout=10.0)
                if capture.thread.is_alive():
                    logger.warning("%s: capture thread did not stop within 10 s (blocked in a read)",
                                   capture.name or capture.source.description or "source")
            self._book.wait_all(1.0 if aborted else drain_timeout_s)
            self._t1 = time.perf_counter()

    def _loop(self) -> None:
        raise NotImplementedError

    def summary(self) -> dict[str, Any]:
        """The run's summary.json (:mod:`edge_runtime.running.summary`), valid on every exit path of ``run``."""
        raise NotImplementedError

    # ------------------------------------------------------------------ output
    def _write_sinks(self, sinks: Sequence[Any], result: Any, image: "np.ndarray | None", stream: str = "") -> float:
        """The one place a result reaches the sinks: a :class:`~edge_runtime.running.results.FrameResult` of the
        source ``stream``, keypoints smoothed per track (unless ``smooth`` is none), as
        :meth:`~edge_runtime.running.results.FrameResult.as_output` with ``config.parts`` (rounded as the JSONL
        record; only the JSONL sink serialises) to every sink with the
        frame's ``image``, then the frame hook (False stops the run). Returns the time spent in the sinks (ms)."""
        if self._smoother is not None:
            result = self._smoother(result, stream)
        output = result.as_output(self.config.parts)
        t = time.perf_counter()
        for sink in sinks:
            sink.write(output, image=image)
        sinks_ms = (time.perf_counter() - t) * 1000.0
        if self.frame_hook is not None and not self.frame_hook(output, image):
            self.stop()
        return sinks_ms

    # ------------------------------------------------------------------ events
    def _wake(self) -> None:
        self.events.put(WAKE)

    def _submit(self, stage: str, inputs: np.ndarray, userdata: Any) -> None:
        self._book.submit(stage, inputs, userdata)

    def _pump_stages(self, more_coming: bool = False) -> None:
        """Fail the work of dead stages, then send what the stages can send now (boxes first)."""
        for userdata, found in self._boxes.fail_dead() + self._boxes.pump():
            self._on_boxes(userdata, found)
        self._on_poses(self._poses.fail_dead())
        self._on_poses(self._poses.pump(more_coming))

    def _on_boxes(self, userdata: Any, found: FoundBoxes) -> None:
        raise NotImplementedError

    def _on_poses(self, outcomes: Sequence[PoseOutcome]) -> None:
        raise NotImplementedError

    def _dispatch(self, event: Completion) -> None:
        """A completion (or an expired request) to its stage, and the stage's results to the policy."""
        if event.stage == "detector":
            self._on_boxes(*self._boxes.complete(event))
        else:
            self._on_poses(self._poses.complete(event))

    def _expire(self) -> None:
        """Requests past their deadline fail their work; their slots stay taken (the device holds them)."""
        for event in self._book.expired():
            self._dispatch(event)

    def _handle(self, event: Any) -> None:
        if event is WAKE:
            return
        event = self._book.accept(event)
        if event is None:
            return  # expired earlier; already handled as failed
        self._lat[event.stage].append((event.done_t - event.submit_t) * 1000.0)
        self._dispatch(event)

    def _wait_and_handle(self, timeout_s: float) -> None:
        """Wait up to ``timeout_s`` for an event, then handle it and every event already waiting."""
        try:
            event = self.events.get(timeout=timeout_s)
        except queue.Empty:
            return
        self._handle(event)
        while True:
            try:
                event = self.events.get_nowait()
            except queue.Empty:
                return
            self._handle(event)
