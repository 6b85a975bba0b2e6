"""What the two coordinators share (:class:`~edge_runtime.running.pipeline.Pipeline`, file mode, and
:class:`~edge_runtime.running.live.LiveRunner`, live feeds): one backend per model of the chain (and the detector), the
events queue their completions arrive on, ``stop()``, and the loop's wait-then-drain step. All coordinator state
lives in the thread that calls ``run``; backends and capture threads only put events on the queue. Both turn each
:class:`~edge_runtime.running.results.FrameResult` into the sinks' record in one place, :meth:`Coordinator._output`
(temporal smoothing, ``config.smooth``, then ``as_output``)."""
from __future__ import annotations

import queue
import threading
from typing import Any, Callable

import numpy as np

from edge_runtime.running.backends import BackendFactory, build_backends
from edge_runtime.errors import InputError
from edge_runtime.running.smoothing import build_smoother

#: put on the events queue by capture threads: "a frame is waiting" (no completion attached)
WAKE = object()


class Coordinator:
    """Base of the coordinators. Subclasses implement ``_handle(event)`` and own ``self._book``
    (:class:`~edge_runtime.running.backends.RequestBook`)."""

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

    def _begin_run(self) -> None:
        """At the start of every run: capture may go on; fresh temporal-smoothing state (``config.smooth``)."""
        self._stop.clear()
        self._smoother = build_smoother(self.config.smooth)

    def _output(self, result: Any, stream: str = "") -> Any:
        """What the sinks and the frame hook receive of a FrameResult of the source ``stream``: keypoints smoothed
        per track (unless ``smooth`` is none), then :meth:`~edge_runtime.running.results.FrameResult.as_output`
        with ``config.parts``."""
        if self._smoother is not None:
            result = self._smoother(result, stream)
        return result.as_output(self.config.parts)

    def _wake(self) -> None:
        self.events.put(WAKE)

    def _submit(self, stage: str, inputs: np.ndarray, userdata: Any) -> None:
        self._book.submit(stage, inputs, userdata)

    def _handle(self, event: Any) -> None:
        raise NotImplementedError

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
