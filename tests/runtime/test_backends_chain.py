"""The runtime's inference seams apart from the coordinators: the delayed backend as a wrapper of any backend, the
default backend factory's choice per model, the synchronous chain runner, and the pose contract without compiling."""
from __future__ import annotations

import threading
import time
from typing import Any, Callable

import numpy as np
import pytest

from edge_runtime.model.chain import ChainRunner, RequestPool
from edge_runtime.model.contract import PoseContract
from edge_runtime.model.estimator import PoseEstimator
from edge_runtime.model.models import CompileOptions, ModelFolder
from edge_runtime.running.backends import (Completion, DelayedBackend, OpenVINOBackend, ServedModel,
                                           default_backend_factory, delayed_backend_factory)

OPTS = CompileOptions(cache_dir=None, inference_precision="f32", performance_hint="LATENCY")


class ThreadBackend:
    """A backend that is not OpenVINO: each submission answers from a new thread (output = inputs + 1; inputs
    below zero fail)."""

    def __init__(self, stage: str, on_complete: Callable[[Completion], None], capacity: int = 3) -> None:
        self.stage, self.on_complete, self.capacity = stage, on_complete, capacity
        self.threads: list[threading.Thread] = []

    def submit(self, inputs: np.ndarray, userdata: Any) -> None:
        t0 = time.perf_counter()

        def answer() -> None:
            bad = bool((inputs < 0).any())
            self.on_complete(Completion(self.stage, userdata, None if bad else inputs + 1, "failed" if bad else None,
                                        t0, time.perf_counter()))
        thread = threading.Thread(target=answer)
        thread.start()
        self.threads.append(thread)

    def wait_all(self, timeout_s: "float | None" = None) -> bool:
        for thread in self.threads:
            thread.join(timeout_s)
        return not any(t.is_alive() for t in self.threads)


def test_delayed_backend_wraps_a_backend_that_is_not_openvino() -> None:
    done: list[Completion] = []
    inner = lambda stage, model, n, on_complete: ThreadBackend(stage, on_complete)  # noqa: E731
    backend = delayed_backend_factory(0.05, inner=inner)("pose", None, 1, done.append)
    assert isinstance(backend, DelayedBackend) and backend.capacity == 3  # the wrapped backend's slots
    backend.submit(np.zeros(2, np.float32), "ok")
    backend.submit(-np.ones(2, np.float32), "bad")
    assert backend.wait_all(5.0)
    by_name = {c.userdata: c for c in done}
    np.testing.assert_array_equal(by_name["ok"].output, [1, 1])
    assert by_name["ok"].done_t - by_name["ok"].submit_t >= 0.05 and by_name["ok"].error is None
    assert by_name["bad"].error == "failed" and by_name["bad"].done_t - by_name["bad"].submit_t < 0.05


class Served:
    """A model that runs elsewhere and brings its own backend."""

    def backend(self, stage: str, num_requests: int, on_complete: Callable[[Completion], None]) -> ThreadBackend:
        return ThreadBackend(stage, on_complete, capacity=num_requests)


def test_default_factory_picks_the_backend_per_model(fake_models_dir) -> None:
    assert isinstance(Served(), ServedModel)
    served = default_backend_factory("pose_server", Served(), 2, lambda c: None)
    assert isinstance(served, ThreadBackend) and served.capacity == 2
    est = PoseEstimator(fake_models_dir, OPTS)
    local = default_backend_factory("pose", est.compiled["pose"], 1, lambda c: None)
    assert isinstance(local, OpenVINOBackend)
    local.close()


class FakeRequest:
    def __init__(self, factor: float, made: list) -> None:
        self.factor = factor
        made.append(self)

    def set_input_tensor(self, tensor: Any) -> None:
        self.inputs = np.array(tensor.data)

    def infer(self) -> None:
        time.sleep(0.01)
        self.out = self.inputs * self.factor

    def get_output_tensor(self, index: int) -> Any:
        return type("T", (), {"data": self.out})()


class FakeCompiled:
    def __init__(self, factor: float) -> None:
        self.factor, self.made = factor, []

    def create_infer_request(self) -> FakeRequest:
        return FakeRequest(self.factor, self.made)


def test_chain_runner_runs_components_in_order_on_pools_made_on_need() -> None:
    a, b = FakeCompiled(2.0), FakeCompiled(3.0)
    runner = ChainRunner({"a": RequestPool(a, 2), "b": RequestPool(b, 1)})
    x = np.arange(4, dtype=np.float32).reshape(2, 2)
    np.testing.assert_array_equal(runner.run(x), x * 6)
    np.testing.assert_array_equal(runner.run(x, ["a"]), x * 2)
    np.testing.assert_array_equal(runner.run_stage("b", x), x * 3)
    assert (len(a.made), len(b.made)) == (1, 1)  # one request each until two callers overlap
    threads = [threading.Thread(target=runner.run, args=(x,)) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert (len(a.made), len(b.made)) == (2, 1)  # never more than the pool's size
    eager = FakeCompiled(1.0)
    RequestPool(eager, 3, eager=True)
    assert len(eager.made) == 3


def test_contract_and_chain_runner_give_the_estimators_keypoints(fake_models_dir) -> None:
    """The contract (read from the folder, nothing compiled) around the synchronous chain runner of the compiled
    components is the estimator."""
    est = PoseEstimator(fake_models_dir, OPTS, decode="numpy")
    contract = PoseContract(ModelFolder(fake_models_dir).pose_info, decode="numpy")
    image = np.zeros((120, 160, 3), np.uint8)
    image[40:70, 50:80] = 255
    boxes = np.array([[30, 20, 110, 110]], np.float32)
    kp, sc = contract.estimate(image, boxes, ChainRunner.of(est.compiled).run)
    kp_est, sc_est = est(image, boxes)
    np.testing.assert_allclose(kp, kp_est, atol=1e-4)
    np.testing.assert_allclose(sc, sc_est, atol=1e-5)
    assert np.abs(kp[0] - [65, 55]).max() < 6  # the bright square, in image px
    assert contract.estimate(image, np.zeros((0, 4)), ChainRunner.of(est.compiled).run)[0].shape == (0, 133, 2)


def test_contract_checks_its_settings(fake_models_dir) -> None:
    from edge_runtime.errors import InputError

    info = ModelFolder(fake_models_dir).pose_info
    with pytest.raises(InputError, match="max_batch"):
        PoseContract(info, max_batch=0)
    with pytest.raises(InputError, match="decode: expected one of graph | numpy"):
        PoseContract(info, decode="torch")
