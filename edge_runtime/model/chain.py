"""The synchronous chain runner: compiled components run one after the other (``vae_encoder`` -> ``pose``, or
``vae_pose``; a decoder may follow), each on a pool of its own infer requests.

One implementation serves every synchronous user: the estimator's ``infer``, ``sdpose-convert validate`` (fidelity
passes) and ``validate --against`` (:mod:`convert.variant_check`), and ``sdpose-edge serve`` (each served model is a
chain of pools, called from the server's thread pool). The asynchronous pipeline has its own backends
(:mod:`edge_runtime.running.backends`), which run one request with :func:`run_request` too.
"""
from __future__ import annotations

import queue
import threading
from typing import Any, Iterable

import numpy as np

#: Setting input tensors is serialized across all requests of the process: two threads changing the input shape of
#: their requests at the same moment (``InferRequest.infer(inputs)`` on a dynamic batch) deadlocked inside
#: OpenVINO 2026.4's Python binding in CI (both threads blocked in ``tensor.shape = ...``).
INPUT_LOCK = threading.Lock()


def run_request(request: Any, inputs: np.ndarray, static_batch: "int | None") -> np.ndarray:
    """One synchronous inference on ``request``: inputs [n,...] (padded to ``static_batch`` for a static-batch
    compile) -> a copy of the first output's first n items [n,...]. Raises when the engine fails."""
    import openvino as ov

    from edge_runtime.model.models import fit_batch

    array = np.ascontiguousarray(fit_batch(inputs, static_batch))
    with INPUT_LOCK:  # one thread at a time sets an input (and with it the request's batch size)
        request.set_input_tensor(ov.Tensor(array))  # shares the array's memory, alive until infer returns
    request.infer()  # the inference itself runs in parallel, without the GIL
    return request.get_output_tensor(0).data[:len(inputs)].copy()


class RequestPool:
    """Up to ``size`` infer requests of one compiled model, made on first need (or all at once: ``eager``);
    :meth:`run` borrows one for a synchronous inference (thread-safe: callers beyond ``size`` wait)."""

    def __init__(self, compiled: Any, size: int = 1, eager: bool = False) -> None:
        from edge_runtime.model.models import static_batch_of

        self.compiled = compiled
        self.static_batch = static_batch_of(compiled)  # a static-shape compile: partial batches are padded
        self.size = max(1, int(size))
        self._free: "queue.SimpleQueue[Any]" = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._made = 0
        for _ in range(self.size if eager else 0):
            self._free.put(self._make())

    def _make(self) -> Any:
        self._made += 1
        return self.compiled.create_infer_request()

    def _borrow(self) -> Any:
        with self._lock:
            try:
                return self._free.get_nowait()
            except queue.Empty:
                if self._made < self.size:
                    return self._make()
        return self._free.get()

    def run(self, array: np.ndarray) -> np.ndarray:
        """array [n,...] -> the model's first output [n,...] (a copy)."""
        request = self._borrow()
        try:
            return run_request(request, array, self.static_batch)
        finally:
            self._free.put(request)


class ChainRunner:
    """Named components run in order, each on its :class:`RequestPool`: ``run(data)`` feeds each output to the next
    component (``kinds``: a sub-chain, in the given order); ``run_stage(kind, data)`` runs one component."""

    def __init__(self, pools: "dict[str, RequestPool]") -> None:
        if not pools:
            raise ValueError("a chain needs at least one component")
        self.pools = dict(pools)
        self.kinds: tuple[str, ...] = tuple(self.pools)

    @classmethod
    def of(cls, compiled: "dict[str, Any]", requests: int = 1) -> "ChainRunner":
        """The chain of compiled models {kind: compiled model} in their order, ``requests`` per component."""
        return cls({kind: RequestPool(model, requests) for kind, model in compiled.items()})

    def run_stage(self, kind: str, data: np.ndarray) -> np.ndarray:
        return self.pools[kind].run(data)

    def run(self, data: np.ndarray, kinds: "Iterable[str] | None" = None) -> np.ndarray:
        """data [n,...] (crops u8 [n,h,w,3]) -> the last component's output [n,...] (heatmaps [n,K,H,W] f32)."""
        for kind in (self.kinds if kinds is None else kinds):
            data = self.pools[kind].run(data)
        return data
