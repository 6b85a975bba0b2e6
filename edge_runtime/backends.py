"""The inference backend: the boundary between the runtime's coordinators and the inference engine.

A :class:`Backend` runs one model asynchronously and reports every submission exactly once as a
:class:`Completion`, failed ones included. :class:`OpenVINOBackend` gives each of its ``num_requests``
OpenVINO infer requests a worker thread that runs ``InferRequest.infer`` (which releases the GIL and raises
when the request fails). It does not use ``openvino.AsyncInferQueue``: that queue calls its Python callback
only for requests that succeed (``async_infer_queue.cpp`` runs ``f_callback`` only without an exception), so
a failed request would never complete and the run would wait for ever. Tests inject slow, out-of-order or
failing backends through a :data:`BackendFactory`.

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
from typing import Any, Callable, Protocol, Sequence

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


#: factory(stage, compiled_model, num_requests, on_complete) -> Backend
BackendFactory = Callable[[str, Any, int, Callable[[Completion], None]], Backend]


#: Setting input tensors is serialized across all requests: two worker threads changing the input shape of
#: their requests at the same moment (``InferRequest.infer(inputs)`` on a dynamic batch) deadlocked inside
#: OpenVINO 2026.4's Python binding in CI (both threads blocked in ``tensor.shape = ...``).
_INPUT_LOCK = threading.Lock()


def _tensor(array: np.ndarray) -> Any:
    import openvino as ov

    return ov.Tensor(array)  # shares the array's memory; the job keeps it alive until the request is done


def release_heap() -> None:
    """Hand freed heap pages back to the OS (glibc ``malloc_trim``); a no-op elsewhere."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _static_batch(compiled: Any) -> "int | None":
    from .models import static_batch_of

    return static_batch_of(compiled)


def _fit_batch(inputs: np.ndarray, static_batch: "int | None") -> np.ndarray:
    """A partial batch padded for a model compiled with a static batch (``static_batch``; None: dynamic)."""
    from .models import fit_batch

    return fit_batch(inputs, static_batch)


class OpenVINOBackend:
    """:class:`Backend` with ``num_requests`` OpenVINO infer requests, one worker thread each.

    ``release_memory``: with one request, free the compiled model's intermediate buffers after every
    request (``CompiledModel.release_memory``) and trim the heap, so the VAE's and the pose model's
    activation memory are not held at the same time (see docs/benchmarks.md, live feeds: memory)."""

    def __init__(self, stage: str, compiled: Any, num_requests: int,
                 on_complete: Callable[[Completion], None], release_memory: bool = False) -> None:
        self.stage = stage
        self.capacity = max(1, int(num_requests))
        self._compiled = compiled
        self._static_batch = _static_batch(compiled)
        self.release_memory = bool(release_memory) and self.capacity == 1 and hasattr(compiled, "release_memory")
        if release_memory and not self.release_memory:
            logger.warning("%s: release_memory needs exactly one infer request (got %d); not releasing", stage,
                           self.capacity)
        self._on_complete = on_complete
        self._jobs: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._cond = threading.Condition()
        self._outstanding = 0
        self._workers = []
        for i in range(self.capacity):
            request = compiled.create_infer_request()
            worker = threading.Thread(target=self._work, args=(request,), name=f"sdpose-{stage}-{i}", daemon=True)
            worker.start()
            self._workers.append(worker)

    def _work(self, request: Any) -> None:
        while True:
            job = self._jobs.get()
            if job is None:
                return
            inputs, userdata, submit_t = job
            try:
                with _INPUT_LOCK:  # one thread at a time sets an input (and with it the request's batch size)
                    request.set_input_tensor(_tensor(_fit_batch(inputs, self._static_batch)))
                request.infer()  # the inference itself runs in parallel, without the GIL
                output, error = request.get_output_tensor(0).data[:len(inputs)].copy(), None
            except Exception as exc:  # noqa: BLE001 - any failure of the engine becomes this request's error
                output, error = None, f"{self.stage} inference failed: {type(exc).__name__}: {exc}"
            if self.release_memory:
                try:
                    self._compiled.release_memory()
                    release_heap()
                except RuntimeError as exc:
                    logger.warning("%s: release_memory failed (%s); keeping the buffers", self.stage, exc)
                    self.release_memory = False
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


def openvino_backend_factory(stage: str, compiled: Any, num_requests: int,
                             on_complete: Callable[[Completion], None], release_memory: bool = False) -> Backend:
    """The default :data:`BackendFactory` (``functools.partial(..., release_memory=True)`` for low memory)."""
    return OpenVINOBackend(stage, compiled, num_requests, on_complete, release_memory=release_memory)


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
    factory = factory if factory is not None else openvino_backend_factory
    requests = dict(num_requests or {})
    backends = {s: factory(s, estimator.compiled[s], requests.get(s) or estimator.num_requests(s), on_complete)
                for s in estimator.kinds}
    if detector is not None:
        n = requests.get("detector")
        if not n:
            from .models import optimal_requests
            n = optimal_requests(detector.compiled, getattr(detector, "options", None))
        backends["detector"] = factory("detector", detector.compiled, n, on_complete)
    return backends


class RequestBook:
    """A coordinator's view of its backends: requests in flight per stage, slots lost to requests that never
    answered (deadline ``timeout_s``), busy time per stage (and of ``chain`` stages together).

    ``submit`` sends with a token; ``accept(completion)`` maps the token back (None for an answer that came
    after its deadline); ``expired()`` turns overdue requests into failed completions."""

    def __init__(self, backends: dict[str, Backend], timeout_s: "float | None", chain: Sequence[str] = ()) -> None:
        from .metrics import BusyMeter

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


class _DelayedRequest:
    def __init__(self, request: Any, delay_s: float) -> None:
        self._request, self._delay_s = request, delay_s

    def set_input_tensor(self, tensor: Any) -> None:
        self._request.set_input_tensor(tensor)

    def infer(self) -> None:
        self._request.infer()
        time.sleep(self._delay_s)

    def get_output_tensor(self, index: int) -> Any:
        return self._request.get_output_tensor(index)


class _DelayedModel:
    def __init__(self, compiled: Any, delay_s: float) -> None:
        self._compiled, self._delay_s = compiled, delay_s

    def create_infer_request(self) -> _DelayedRequest:
        return _DelayedRequest(self._compiled.create_infer_request(), self._delay_s)


def delayed_backend_factory(delay_s: float) -> BackendFactory:
    """A :data:`BackendFactory` whose requests each take ``delay_s`` longer than the model: a slow device,
    simulated cheaply (live-mode benchmarks and soak runs with a small model)."""
    def factory(stage: str, compiled: Any, num_requests: int, on_complete: Callable[[Completion], None]) -> Backend:
        return OpenVINOBackend(stage, _DelayedModel(compiled, delay_s), num_requests, on_complete)
    return factory
