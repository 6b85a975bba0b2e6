"""What the pose-server client retries: only a server that cannot be reached (gRPC UNAVAILABLE / HTTP 503, or a
connection error before any reply); every other status fails the request at once with the server's message.

Unit level: :class:`RemoteModel` with fake clients that raise tritonclient's errors (no server needed)."""
from __future__ import annotations

import socket

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the remote client needs the remote extra")
pytest.importorskip("tritonclient.http", reason="the remote client needs the remote extra")

from tritonclient.utils import InferenceServerException  # noqa: E402

from edge_runtime.serving.remote import RemoteModel, ServerAddress  # noqa: E402
from edge_runtime.media.sources import ReconnectPolicy  # noqa: E402

HEATMAPS = np.zeros((1, 3, 4, 4), np.float32)


class _Result:
    def as_numpy(self, name: str) -> np.ndarray:
        return HEATMAPS


class FakeClient:
    """Raises the next queued error on each call (shared queue: a reconnect gets a new client), then answers."""

    def __init__(self, errors: list, calls: list) -> None:
        self.errors, self.calls = errors, calls

    def _next(self):
        self.calls.append(1)
        if self.errors:
            raise self.errors.pop(0)

    def infer(self, *args, **kwargs) -> _Result:
        self._next()
        return _Result()

    def get_model_metadata(self, *args, **kwargs) -> dict:
        self._next()
        return {"name": "sdpose", "inputs": [], "outputs": []}

    def close(self) -> None:
        pass


def model_with(errors: list, protocol: str = "grpc", retries: int = 2) -> "tuple[RemoteModel, list]":
    calls: list = []
    model = RemoteModel(ServerAddress.parse(f"{protocol}://127.0.0.1:9"), "sdpose",
                        retry=ReconnectPolicy(max_retries=retries, initial_s=0.0, max_s=0.0), timeout_s=5.0)
    model.new_client = lambda: FakeClient(errors, calls)
    return model, calls


def grpc_error(code: str, message: str) -> InferenceServerException:
    return InferenceServerException(msg=message, status=f"StatusCode.{code}")


CROPS = np.zeros((1, 8, 6, 3), np.uint8)


@pytest.mark.parametrize("protocol, error", [
    ("grpc", grpc_error("UNAVAILABLE", "failed to connect to all addresses")),
    ("http", InferenceServerException(msg="model not ready", status="503")),
    ("http", ConnectionRefusedError(111, "Connection refused")),
    ("http", ConnectionResetError(104, "Connection reset by peer")),
    ("http", socket.gaierror(-2, "Name or service not known")),
])
def test_unreachable_server_is_retried(protocol: str, error: BaseException) -> None:
    model, calls = model_with([error, error], protocol)
    assert model.infer(CROPS).shape == HEATMAPS.shape
    assert len(calls) == 3 and model.stats["reconnects"] == 2 and model.stats["failed"] == 0


def test_connection_closed_before_the_reply_is_retried() -> None:
    closed = pytest.importorskip("geventhttpclient.response").HTTPConnectionClosed("connection closed.")
    model, calls = model_with([closed], "http")
    assert model.infer(CROPS).shape == HEATMAPS.shape and len(calls) == 2


@pytest.mark.parametrize("protocol, error, expected", [
    ("grpc", grpc_error("UNKNOWN", "Internal inference error: shape mismatch in node pose"),
     "refused the inference of model 'sdpose': Internal inference error: shape mismatch in node pose"),
    ("grpc", grpc_error("CANCELLED", "request cancelled by the server"), "request cancelled by the server"),
    ("grpc", grpc_error("INTERNAL", "out of memory"), "out of memory (StatusCode.INTERNAL)"),
    ("grpc", grpc_error("INVALID_ARGUMENT", "bad shape"), "refused the inference of model 'sdpose': bad shape"),
    ("grpc", grpc_error("DEADLINE_EXCEEDED", "Deadline Exceeded"), "within the request timeout (5 s"),
    ("http", TimeoutError("timed out"), "within the request timeout (5 s; TimeoutError: timed out)"),
    ("http", InferenceServerException(msg="inference failed", status="500"), "inference failed (500)"),
])
def test_other_statuses_fail_at_once_with_the_servers_message(protocol: str, error: BaseException,
                                                             expected: str) -> None:
    model, calls = model_with([error], protocol)
    with pytest.raises(RuntimeError) as info:
        model.infer(CROPS)
    assert expected in str(info.value) and f"pose server {protocol}://127.0.0.1:9" in str(info.value)
    assert len(calls) == 1 and model.stats["reconnects"] == 0 and model.stats["failed"] == 1


def test_retries_are_bounded_and_the_metadata_call_follows_the_same_rule() -> None:
    model, calls = model_with([grpc_error("UNAVAILABLE", "down")] * 5, retries=2)
    with pytest.raises(RuntimeError, match="unreachable .*2 retries"):
        model.infer(CROPS)
    assert len(calls) == 3
    model, calls = model_with([grpc_error("UNKNOWN", "no such model version")])
    with pytest.raises(RuntimeError, match="refused the model metadata of model 'sdpose': no such model version"):
        model.metadata()
    assert len(calls) == 1


def test_rest_connect_timeout_is_retried_and_read_timeout_is_not() -> None:
    """Real tritonclient.http against local sockets: a listener whose accept queue is full drops the connection
    attempt (a connect timeout: no request was sent, retried); a listener that accepts and never answers gives a
    read timeout (the request timeout: fails at once)."""
    full = socket.socket()
    full.bind(("127.0.0.1", 0))
    full.listen(0)
    fillers = []
    for _ in range(4):  # fill the accept queue: the kernel drops later connection attempts
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex(full.getsockname())
        fillers.append(s)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    try:
        for listener, retried in ((full, True), (silent, False)):
            calls: list = []
            model = RemoteModel(ServerAddress.parse(f"http://127.0.0.1:{listener.getsockname()[1]}"), "sdpose",
                                retry=ReconnectPolicy(max_retries=1, initial_s=0.0, max_s=0.0), timeout_s=1.0)
            new_client = model.new_client
            model.new_client = lambda: calls.append(1) or new_client()  # noqa: B023
            with pytest.raises(RuntimeError) as info:
                model.infer(CROPS)
            assert len(calls) == (2 if retried else 1), (retried, str(info.value))
            assert ("unreachable" if retried else "within the request timeout") in str(info.value)
    finally:
        for s in (full, silent, *fillers):
            s.close()
