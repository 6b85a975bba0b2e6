"""The KServe client as a backend beside OpenVINO's: ``RemoteModel.backend`` reports every request once, with the
client's retry rule and counters (fake clients that raise tritonclient's errors; no server needed)."""
from __future__ import annotations

import threading

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the remote client needs the remote extra")

from edge_runtime.running.backends import (Completion, ServedModel, default_backend_factory,  # noqa: E402
                                           delayed_backend_factory)
from edge_runtime.serving.remote import KServeBackend  # noqa: E402

from .test_remote_retries import CROPS, HEATMAPS, grpc_error, model_with  # noqa: E402


def collect() -> "tuple[list[Completion], threading.Event, object]":
    done: list[Completion] = []
    event = threading.Event()

    def on_complete(c: Completion) -> None:
        done.append(c)
        event.set()
    return done, event, on_complete


def test_the_served_model_brings_its_kserve_backend() -> None:
    model, calls = model_with([grpc_error("UNAVAILABLE", "down")])
    done, _, on_complete = collect()
    assert isinstance(model, ServedModel)
    backend = default_backend_factory("pose_server", model, 2, on_complete)
    assert isinstance(backend, KServeBackend) and backend.capacity == 2
    backend.submit(CROPS, "a")
    backend.submit(CROPS, "b")
    assert backend.wait_all(5.0)
    backend.close()
    assert sorted(c.userdata for c in done) == ["a", "b"] and all(c.error is None for c in done)
    assert all(c.output.shape == HEATMAPS.shape for c in done)
    assert len(calls) == 3 and model.stats == {"requests": 2, "failed": 0, "reconnects": 1}


def test_a_refused_request_completes_with_the_servers_message() -> None:
    model, calls = model_with([grpc_error("UNKNOWN", "shape mismatch in node pose")])
    done, event, on_complete = collect()
    backend = model.backend("pose_server", 1, on_complete)
    backend.submit(CROPS, "x")
    assert event.wait(5.0) and backend.wait_all(5.0)
    assert done[0].output is None and done[0].error.startswith("pose_server inference failed: RuntimeError: pose "
                                                               "server grpc://127.0.0.1:9 refused the inference")
    assert len(calls) == 1 and model.stats["failed"] == 1 and model.stats["reconnects"] == 0


def test_the_delayed_wrapper_slows_the_kserve_backend() -> None:
    model, _ = model_with([])
    done, event, on_complete = collect()
    backend = delayed_backend_factory(0.05)("pose_server", model, 1, on_complete)
    assert isinstance(backend.inner, KServeBackend)
    backend.submit(CROPS, "x")
    assert event.wait(5.0)
    assert done[0].error is None and done[0].done_t - done[0].submit_t >= 0.05
