"""The inference backend: the boundary between the runtime's coordinators and the inference engine.

A :class:`Backend` runs one model asynchronously and reports every submission exactly once as a
:class:`Completion`, failed ones included. :class:`OpenVINOBackend` gives each of its ``num_requests``
OpenVINO infer requests a worker thread that runs ``InferRequest.infer`` (which releases the GIL and raises
when the request fails). It does not use ``openvino.AsyncInferQueue``: that queue calls its Python callback
only for requests that succeed (``async_infer_queue.cpp`` runs ``f_callback`` only without an exception), so
a failed request would never complete and the run would wait for ever. Tests inject slow, out-of-order or
failing backends through a :data:`BackendFactory`. A model on a KServe server (``--pose-server``) brings its own
backend (:class:`ServedModel`; :class:`edge_runtime.serving.remote.KServeBackend`, a :class:`WorkerBackend` too), and
:class:`DelayedBackend` wraps any backend to simulate a slow device.

Coordinators additionally guard against a request that never returns (a lost device) with a deadline
(:class:`InflightRequests`).
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import queue
import threading
import time
from typing import Any, Callable, Protocol, Sequence, runtime_checkable

import numpy as np

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Completion:
    """A finished inference request, as handed from a backend to the coordinator.

    output: the model's first output (copied out of the request), or None when ``error`` is set.
    submit_t / done_t: ``time.perf_counter()`` at submission and at completion.
    """

    stage: str
    userdata: Any
    output: "np.ndarray | None"
    error: "str | None"
    submit_t: float
    done_t: float


class Backend(Protocol):
    """Asynchronous inference of one model.

    ``submit(inputs, userdata)`` starts a request on ``inputs`` (the model's single input, e.g. u8
    [N,h,w,3]); when it finishes, successfully or not, the backend calls the ``on_complete`` callback it was
    built with, exactly once per submission, with a :class:`Completion` (in any order, from any thread).
    ``capacity`` is the number of requests that may run at once (the coordinator never has more in flight).
    ``wait_all()`` blocks until every submitted request has completed (or the timeout passes; returns False
    then).
    """

    capacity: int

    def submit(self, inputs: np.ndarray, userdata: Any) -> None: ...

    def wait_all(self, timeout_s: "float | None" = None) -> bool: ...


#: factory(stage, model, num_requests, on_complete) -> Backend; ``model``: a compiled OpenVINO model or a
#: :class:`ServedModel` (``estimator.compiled[stage]``, the detector's ``compiled``)
BackendFactory = Callable[[str, Any, int, Callable[[Completion], None]], Backend]


def release_heap() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``); a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _static_batch(compiled: Any) -> "int | None":
    from edge_runtime.model.models import static_batch_of

    return static_batch_of(compiled)


class WorkerBackend:
    """:class:`Backend` with ``num_requests`` worker threads, each owning one request slot (``_new_slot``: an
    OpenVINO infer request, a KServe client) and running ``_run(slot, inputs)`` synchronously; a failure of the
    engine becomes the completion's error. Subclasses set their fields, then call this ``__init__``."""

    def __init__(self, stage: str, num_requests: int, on_complete: Callable[[Completion], None]) -> None:
        self.stage = stage
        self.capacity = max(1, int(num_requests))
        self._on_complete = on_complete
        self._jobs: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._outstanding = 0
        self._workers = []
        for i in range(self.capacity):
            slot = self._new_slot()
            worker = threading.Thread(target=self._work, args=(slot,), name=f"sdpose-{stage}-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _new_slot(self) -> Any:
        raise NotImplementedError

    def _run(self, slot: Any, inputs: np.ndarray) -> np.ndarray:
        """inputs [n,...] -> the model's first output [n,...] (raises when the request fails)."""
        raise NotImplementedError

    def _after_request(self) -> None:
        """Called by the worker after each request, before its completion is reported."""

    def _work(self, slot: Any) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            inputs, userdata, submit_t = job
            try:
                output, error = self._run(slot, inputs), None
            except Exception as exc:  # noqa: BLE001 - any failure of the engine becomes this request's error
                output, error = None, f"{self.stage} inference failed: {type(exc).__name__}: {exc}"
            self._after_request()
            try:
                self._on_complete(Completion(self.stage, userdata, output, error, submit_t, time.perf_counter()))
            finally:
                with self._cond:
                    self._outstanding -= 1
                    self._cond.notify_all()

    def submit(self, inputs: np.ndarray, userdata: Any) -> None:
        with self._cond:
            self._outstanding += 1
        self._jobs.put((np.ascontiguousarray(inputs), userdata, time.perf_counter()))

    def wait_all(self, timeout_s: "float | None" = None) -> bool:
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._outstanding > 0:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True

    def close(self) -> None:
        """Let the workers end after the jobs already queued."""
        for _ in self._workers:
            self._jobs.put(None)


class OpenVINOBackend(WorkerBackend):
    """:class:`Backend` with ``num_requests`` OpenVINO infer requests, one worker thread each.

    ``release_memory``: with one request, free the compiled model's intermediate buffers after every
    request (``CompiledModel.release_memory``) and trim the heap, so the VAE's and the pose model's
    activation memory are not held at the same time (see docs/benchmarks.md, live feeds: memory)."""

    def __init__(self, stage: str, compiled: Any, num_requests: int,
                 on_complete: Callable[[Completion], None], release_memory: bool = False) -> None:
        self._compiled = compiled
        self._static_batch = _static_batch(compiled)
        single = max(1, int(num_requests)) == 1
        self.release_memory = bool(release_memory) and single and hasattr(compiled, "release_memory")
        if release_memory and not self.release_memory:
            logger.warning("%s: release_memory needs exactly one infer request (got %d); not releasing", stage,
                           max(1, int(num_requests)))
        super().__init__(stage, num_requests, on_complete)

    def _new_slot(self) -> Any:
        return self._compiled.create_infer_request()

    def _run(self, request: Any, inputs: np.ndarray) -> np.ndarray:
        from edge_runtime.model.chain import run_request

        return run_request(request, inputs, self._static_batch)

    def _after_request(self) -> None:
        if self.release_memory:
            try:
                self._compiled.release_memory()
                release_heap()
            except RuntimeError as exc:
                logger.warning("%s: release_memory failed (%s); keeping the buffers", self.stage, exc)
                self.release_memory = False


@runtime_checkable
class ServedModel(Protocol):
    """A model that runs elsewhere and brings its own :class:`Backend` (the KServe client of
    :mod:`edge_runtime.serving.remote`): ``backend(stage, num_requests, on_complete)``."""

    def backend(self, stage: str, num_requests: int, on_complete: Callable[[Completion], None]) -> Backend: ...


def openvino_backend_factory(stage: str, compiled: Any, num_requests: int,
                             on_complete: Callable[[Completion], None], release_memory: bool = False) -> Backend:
    """The :data:`BackendFactory` of compiled OpenVINO models (``functools.partial(..., release_memory=True)``
    for low memory)."""
    return OpenVINOBackend(stage, compiled, num_requests, on_complete, release_memory=release_memory)


def default_backend_factory(stage: str, model: Any, num_requests: int,
                            on_complete: Callable[[Completion], None]) -> Backend:
    """The default :data:`BackendFactory`: a :class:`ServedModel`'s own backend (KServe), else OpenVINO."""
    if isinstance(model, ServedModel):
        return model.backend(stage, num_requests, on_complete)
    return OpenVINOBackend(stage, model, num_requests, on_complete)


class InflightRequests:
    """Requests in flight of a coordinator, with a deadline for requests that never come back.

    ``add(stage, userdata)`` returns a token to submit instead of the userdata; ``pop(token)`` returns the
    entry when its completion arrives (None if it had expired: a late completion is ignored).
    ``expired(now)`` removes and returns the entries older than ``timeout_s``: the coordinator turns them
    into error records and counts their slot as lost (the backend still holds it).
    """

    def __init__(self, timeout_s: "float | None") -> None:
        self.timeout_s = timeout_s
        self._entries: dict[int, tuple[str, Any, float]] = {}
        self._next = 0
        self.expired_count = 0

    def add(self, stage: str, userdata: Any) -> int:
        token = self._next
        self._next += 1
        self._entries[token] = (stage, userdata, time.perf_counter())
        return token

    def pop(self, token: int) -> "tuple[str, Any, float] | None":
        return self._entries.pop(token, None)

    def expired(self, now: "float | None" = None) -> list[tuple[str, Any, float]]:
        if self.timeout_s is None:
            return []
        now = time.perf_counter() if now is None else now
        old = [tok for tok, (_, _, t) in self._entries.items() if now - t > self.timeout_s]
        self.expired_count += len(old)
        return [self._entries.pop(tok) for tok in old]

    def count(self, stage: str) -> int:
        return sum(1 for s, _, _ in self._entries.values() if s == stage)

    def __len__(self) -> int:
        return len(self._entries)


def build_backends(estimator: Any, detector: Any, factory: "BackendFactory | None",
                   num_requests: "dict[str, int] | None", on_complete: Callable[[Completion], None]) -> dict[str, Backend]:
    """One backend per model of the estimator's chain, plus ``detector`` when given (None: boxes come from
    elsewhere); ``num_requests`` {stage: requests} overrides the device's optimum."""
    factory = factory if factory is not None else default_backend_factory
    requests = dict(num_requests or {})
    backends = {s: factory(s, estimator.compiled[s], requests.get(s) or estimator.num_requests(s), on_complete)
                for s in estimator.kinds}
    if detector is not None:
        n = requests.get("detector")
        if not n:
            from edge_runtime.model.models import optimal_requests
            n = optimal_requests(detector.compiled, getattr(detector, "options", None))
        backends["detector"] = factory("detector", detector.compiled, n, on_complete)
    return backends


class RequestBook:
    """A coordinator's view of its backends: requests in flight per stage, slots lost to requests that never
    answered (deadline ``timeout_s``), busy time per stage (and of ``chain`` stages together).

    ``submit`` sends with a token; ``accept(completion)`` maps the token back (None for an answer that came
    after its deadline); ``expired()`` turns overdue requests into failed completions."""

    def __init__(self, backends: dict[str, Backend], timeout_s: "float | None", chain: Sequence[str] = ()) -> None:
        from edge_runtime.running.metrics import BusyMeter

        self.backends = backends
        self.inflight: collections.Counter = collections.Counter()
        self.lost: collections.Counter = collections.Counter()
        self.requests = InflightRequests(timeout_s)
        self.busy: dict[str, Any] = collections.defaultdict(BusyMeter)
        self.chain = tuple(chain)
        self.chain_busy = BusyMeter()  # any request of a chain stage in flight

    def free(self, stage: str) -> int:
        return self.backends[stage].capacity - self.lost[stage] - self.inflight[stage]

    def dead(self, stage: str) -> bool:
        """Every request slot of ``stage`` was lost to a request that never answered."""
        return stage in self.backends and self.backends[stage].capacity - self.lost[stage] <= 0

    def submit(self, stage: str, inputs: np.ndarray, userdata: Any) -> None:
        self.inflight[stage] += 1
        now = time.perf_counter()
        self.busy[stage].start(now)
        if stage in self.chain:
            self.chain_busy.start(now)
        self.backends[stage].submit(inputs, self.requests.add(stage, userdata))

    def _finish(self, event: Completion) -> None:
        self.busy[event.stage].finish(event.submit_t, event.done_t)
        if event.stage in self.chain:
            self.chain_busy.finish(event.submit_t, event.done_t)

    def accept(self, event: Completion) -> "Completion | None":
        entry = self.requests.pop(event.userdata)
        if entry is None:
            logger.warning("%s: an answer arrived after its deadline; ignored", event.stage)
            return None
        self.inflight[event.stage] -= 1
        self._finish(event)
        return dataclasses.replace(event, userdata=entry[1])

    def expired(self) -> list[Completion]:
        out = []
        for stage, userdata, submit_t in self.requests.expired():
            self.lost[stage] += 1
            self.inflight[stage] -= 1
            timeout = self.requests.timeout_s
            logger.error("%s request got no answer within %.0f s: its work fails, %d of %d slot(s) left", stage,
                         timeout, self.backends[stage].capacity - self.lost[stage], self.backends[stage].capacity)
            event = Completion(stage, userdata, None, f"{stage} request got no answer within {timeout:.0f} s",
                               submit_t, time.perf_counter())
            self._finish(event)
            out.append(event)
        return out

    def wait_all(self, timeout_s: "float | None") -> None:
        for stage, backend in self.backends.items():
            if not backend.wait_all(timeout_s=timeout_s):
                logger.warning("%s: requests still running at the end; their results are dropped", stage)


class DelayedBackend:
    """Any :class:`Backend` (``inner``, built with this wrapper's completion callback) whose successful requests
    each take ``delay_s`` longer: the delay runs in the thread that reports the completion (a worker backend's
    worker, whose request slot stays busy meanwhile, as on a slower device), and ``done_t`` includes it."""

    def __init__(self, make_inner: Callable[[Callable[[Completion], None]], Backend], delay_s: float,
                 on_complete: Callable[[Completion], None]) -> None:
        self.delay_s = float(delay_s)
        self._on_complete = on_complete
        self.inner = make_inner(self._complete)
        self.capacity = self.inner.capacity

    def _complete(self, event: Completion) -> None:
        if event.error is None:
            time.sleep(self.delay_s)
            event = dataclasses.replace(event, done_t=time.perf_counter())
        self._on_complete(event)

    def submit(self, inputs: np.ndarray, userdata: Any) -> None:
        self.inner.submit(inputs, userdata)

    def wait_all(self, timeout_s: "float | None" = None) -> bool:
        return self.inner.wait_all(timeout_s)

    def close(self) -> None:
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()


def delayed_backend_factory(delay_s: float, inner: "BackendFactory | None" = None) -> BackendFactory:
    """A :data:`BackendFactory` whose requests each take ``delay_s`` longer than those of ``inner`` (any
    factory: OpenVINO, KServe, a test's fake; None: :func:`default_backend_factory`): a slow device, simulated
    cheaply (live-mode benchmarks and soak runs with a small model)."""
    make = inner if inner is not None else default_backend_factory

    def factory(stage: str, model: Any, num_requests: int, on_complete: Callable[[Completion], None]) -> Backend:
        return DelayedBackend(lambda done: make(stage, model, num_requests, done), delay_s, on_complete)
    return factory
