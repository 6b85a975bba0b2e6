"""``sdpose-edge run --pose-server URL``: the pose chain on a KServe v2 server, the rest of the run local.

The server is ``sdpose-edge serve``, OpenVINO Model Server with a repository from ``sdpose-convert export-ovms``,
or any KServe v2 server with a model (default ``sdpose``) that maps crops ``image`` u8 [N,h,w,3] BGR to
``heatmaps`` f32 [N,K,h/4,w/4] (decoded here, with the ``decode`` decoder), or one such as ``sdpose_keypoints``
that maps them to ``keypoints`` f32 [N,K,3] (decoded crop px x, y and score: the server decodes; 133 x 3 numbers
per crop cross the wire instead of 26 MB of heatmaps). The served model's output shape tells which. The client is ``tritonclient`` (optional extra ``remote``): gRPC for
``grpc://HOST:PORT``, REST with binary tensors for ``http://HOST:PORT``.

The model folder stays the contract: the client reads the sizes, keypoints and codec from its IRs' rt_info
(nothing is compiled) and checks them against the server's model metadata at start.

:class:`RemoteModel` is the client; :class:`KServeBackend` runs it beside the OpenVINO backend behind the runtime's
:class:`~edge_runtime.running.backends.Backend` protocol: one worker thread and one client per request in flight,
each request a batch of crops.
A server that cannot be reached -- gRPC ``UNAVAILABLE`` (REST: HTTP 503), or a connection error before any reply
(refused, reset, closed before the answer, connect timeout, host name not resolved) -- closes the client,
reconnects and retries with the ``--reconnect-*`` backoff (:class:`~edge_runtime.media.sources.ReconnectPolicy`, as for
cameras; per request); when the retries run out the request fails (its frames get ``"error"`` records) and later requests try once each until the
server answers again. Every other outcome fails the request at once with the server's message: its refusals
(bad request, model missing), ``UNKNOWN`` (OVMS's code for an unmapped inference error), ``CANCELLED``, and
``DEADLINE_EXCEEDED`` / a REST read timeout (the request timeout: the server may still be working on it).
"""
from __future__ import annotations

import http.client
import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np

from edge_runtime.config import DEFAULTS
from edge_runtime.errors import InputError, SDPoseError
from edge_runtime.model.contract import ContractRunner, folder_contract
from edge_runtime.serving.server_address import ServerAddress
from edge_runtime.media.sources import ReconnectPolicy
from edge_runtime.running.backends import Backend, Completion, WorkerBackend

logger = logging.getLogger(__name__)

#: the runtime's stage name for the remote chain (logs, summary "chain")
STAGE = "pose_server"
DEFAULT_SERVER_MODEL = "sdpose"
#: requests in flight to the server when --num-requests is not set
DEFAULT_IN_FLIGHT = 2
#: REST: seconds to open a connection (a timeout there is retried, as gRPC's UNAVAILABLE after its ~20 s connect)
CONNECT_TIMEOUT_S = 20.0

#: statuses of a server that cannot take the request (retried): gRPC UNAVAILABLE and its REST twin, HTTP 503. Every
#: other status is the server's answer or the request timeout (DEADLINE_EXCEEDED) and fails the request at once.
_RETRY_STATUSES = {"StatusCode.UNAVAILABLE", "503"}
_TIMEOUT_STATUSES = {"StatusCode.DEADLINE_EXCEEDED", "504"}


class PoseServerError(SDPoseError):
    """The pose server cannot be used (unreachable at start, or it serves another model)."""


class ClientSlot:
    """One request slot: its own client (tritonclient clients are not shared across threads)."""

    def __init__(self, model: "RemoteModel") -> None:
        self._model = model
        self._client: Any = None

    def client(self) -> Any:
        if self._client is None:
            self._client = self._model.new_client()
        return self._client

    def drop_client(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            try:
                client.close()
            except Exception as exc:  # noqa: BLE001 - a broken connection may fail to close in any way
                logger.debug("closing the pose-server client failed: %s", exc)


class KServeBackend(WorkerBackend):
    """:class:`~edge_runtime.running.backends.Backend` of a model on a KServe v2 server: one worker thread and
    one client per request in flight, each request a batch of crops (``RemoteModel.infer``, with its retries)."""

    def __init__(self, stage: str, model: "RemoteModel", num_requests: int,
                 on_complete: Callable[[Completion], None]) -> None:
        self.model = model
        super().__init__(stage, num_requests, on_complete)

    def _new_slot(self) -> ClientSlot:
        return ClientSlot(self.model)

    def _run(self, slot: ClientSlot, inputs: np.ndarray) -> np.ndarray:
        return self.model.infer(inputs, slot=slot)


class RemoteModel:
    """A crops -> heatmaps (or keypoints) model on a KServe v2 server: the client, its start-up check against the
    model folder, and synchronous inference with the reconnect policy. :meth:`backend` runs it asynchronously
    (a :class:`~edge_runtime.running.backends.ServedModel`)."""

    def __init__(self, address: ServerAddress, model_name: str = DEFAULT_SERVER_MODEL,
                 retry: "ReconnectPolicy | None" = None, timeout_s: float = DEFAULTS.request_timeout_s) -> None:
        if not isinstance(model_name, str) or not model_name.strip():
            raise InputError(f"--pose-server-model: expected a model name, got {model_name!r}")
        self.address = address
        self.model_name = model_name
        self.retry = retry if retry is not None else ReconnectPolicy()
        self.timeout_s = float(timeout_s)
        self.input_name = "image"
        self.output_name = "heatmaps"
        self.output_rank = 4  # heatmaps [N,K,H,W]; 3: keypoints [N,K,3] (the server decodes)
        self._module = self._client_module(address.protocol)
        self._lock = threading.Lock()
        self._down = False  # the last request used up its retries: try once per request until one succeeds
        self._local = threading.local()
        self.stats = {"requests": 0, "failed": 0, "reconnects": 0}

    @staticmethod
    def _client_module(protocol: str) -> Any:
        try:
            if protocol == "grpc":
                import tritonclient.grpc as module
            else:
                import tritonclient.http as module
        except ImportError as exc:
            raise InputError(f"--pose-server needs tritonclient ({exc}); install sdpose-edge[remote]") from exc
        return module

    # ------------------------------------------------------------------ connections
    def new_client(self) -> Any:
        if self.address.protocol == "grpc":
            return self._module.InferenceServerClient(self.address.target)
        return self._module.InferenceServerClient(self.address.target, network_timeout=self.timeout_s,
                                                  connection_timeout=min(self.timeout_s, CONNECT_TIMEOUT_S))

    def backend(self, stage: str, num_requests: int, on_complete: Callable[[Completion], None]) -> Backend:
        return KServeBackend(stage, self, num_requests, on_complete)

    @staticmethod
    def is_transport_error(exc: BaseException) -> bool:
        """True for a server that cannot be reached (retry): gRPC UNAVAILABLE / HTTP 503, or a connection error
        before any reply (refused, reset, closed before the answer, connect timeout, name not resolved). False for
        everything else, which fails the request at once: the server's answers (UNKNOWN, CANCELLED, INTERNAL, ...)
        and the request timeout (DEADLINE_EXCEEDED, a REST read timeout), after which the server may still be busy."""
        from tritonclient.utils import InferenceServerException

        if isinstance(exc, InferenceServerException):
            return str(exc.status()) in _RETRY_STATUSES
        if isinstance(exc, TimeoutError):  # REST's request timeout (an OSError since Python 3.10) or connect timeout
            return _raised_while_connecting(exc)
        return isinstance(exc, (ConnectionError, socket.gaierror)) or _closed_before_reply(exc)

    def _answer_error(self, exc: BaseException, what: str) -> RuntimeError:
        """The error of a request that is not retried, with the server's message (or the client's)."""
        from tritonclient.utils import InferenceServerException

        if isinstance(exc, InferenceServerException):
            status, message = str(exc.status()), exc.message()
        else:
            status, message = type(exc).__name__, str(exc)
        if status in _TIMEOUT_STATUSES or isinstance(exc, TimeoutError):  # a connect timeout was retried
            return RuntimeError(f"pose server {self.address}: no answer to the {what} of model '{self.model_name}' "
                                f"within the request timeout ({self.timeout_s:g} s; {status}: {message})")
        return RuntimeError(f"pose server {self.address} refused the {what} of model '{self.model_name}': "
                            f"{message} ({status})")

    # ------------------------------------------------------------------ metadata
    def metadata(self) -> dict[str, Any]:
        """The served model's KServe v2 metadata {name, inputs, outputs}, with the reconnect policy applied."""
        slot = ClientSlot(self)
        try:
            return self._with_retries(slot, self._metadata_once, "model metadata")
        finally:
            slot.drop_client()

    def _metadata_once(self, client: Any) -> dict[str, Any]:
        if self.address.protocol == "grpc":
            return client.get_model_metadata(self.model_name, as_json=True)
        return client.get_model_metadata(self.model_name)

    def check(self, input_hw: tuple[int, int], heatmap_khw: tuple[int, int, int]) -> bool:
        """The served model takes the folder's crops and gives its heatmaps [-1,K,H,W] or keypoints [-1,K,3]
        (returns True then); PoseServerError otherwise."""
        try:
            meta = self.metadata()
        except RuntimeError as exc:
            raise PoseServerError(str(exc)) from exc
        inputs, outputs = meta.get("inputs") or [], meta.get("outputs") or []
        expected_in = [-1, input_hw[0], input_hw[1], 3]
        expected_out = [-1, *heatmap_khw]
        expected_kpts = [-1, heatmap_khw[0], 3]
        where = f"pose server {self.address} model '{self.model_name}'"
        if len(inputs) != 1 or len(outputs) != 1:
            raise PoseServerError(f"{where}: expected one input and one output, the server lists {meta}")
        got_in = [int(d) for d in inputs[0].get("shape", [])]
        got_out = [int(d) for d in outputs[0].get("shape", [])]
        if inputs[0].get("datatype") != "UINT8" or got_in[1:] != expected_in[1:]:
            raise PoseServerError(f"{where}: input {inputs[0]} does not take the model folder's crops UINT8 "
                                  f"{expected_in}; the server runs another model or input size")
        if outputs[0].get("datatype") != "FP32" or got_out[1:] not in (expected_out[1:], expected_kpts[1:]):
            raise PoseServerError(f"{where}: output {outputs[0]} is neither the model folder's heatmaps FP32 "
                                  f"{expected_out} nor its keypoints FP32 {expected_kpts}; the server runs another "
                                  "model")
        self.input_name, self.output_name = inputs[0]["name"], outputs[0]["name"]
        self.output_rank = len(got_out)
        return self.output_rank == 3

    # ------------------------------------------------------------------ inference
    def infer(self, crops: np.ndarray, slot: "ClientSlot | None" = None) -> np.ndarray:
        """crops [N,h,w,3] u8 -> heatmaps [N,K,H,W] f32 (RuntimeError when the request fails)."""
        if slot is None:  # synchronous use: one request slot per calling thread
            slot = getattr(self._local, "slot", None)
            if slot is None:
                slot = self._local.slot = ClientSlot(self)
        with self._lock:
            self.stats["requests"] += 1
        try:
            return self._with_retries(slot, lambda client: self._infer_once(client, crops), "inference")
        except RuntimeError:
            with self._lock:
                self.stats["failed"] += 1
            raise

    def _infer_once(self, client: Any, crops: np.ndarray) -> np.ndarray:
        module = self._module
        tensor = module.InferInput(self.input_name, list(crops.shape), "UINT8")
        if self.address.protocol == "grpc":
            tensor.set_data_from_numpy(np.ascontiguousarray(crops))
            result = client.infer(self.model_name, [tensor], outputs=[module.InferRequestedOutput(self.output_name)],
                                  client_timeout=self.timeout_s)
        else:
            tensor.set_data_from_numpy(np.ascontiguousarray(crops), binary_data=True)
            result = client.infer(self.model_name, [tensor],
                                  outputs=[module.InferRequestedOutput(self.output_name, binary_data=True)])
        out = result.as_numpy(self.output_name)
        if out is None or out.ndim != self.output_rank or out.shape[0] != crops.shape[0]:
            dims = "K,H,W" if self.output_rank == 4 else "K,3"
            raise RuntimeError(f"pose server {self.address}: answer without '{self.output_name}' [N={crops.shape[0]},"
                               f"{dims}] (got {None if out is None else out.shape})")
        return np.asarray(out, dtype=np.float32)

    def _with_retries(self, slot: ClientSlot, call: Any, what: str) -> Any:
        from tritonclient.utils import InferenceServerException

        delays = [] if self._down else list(self.retry.delays())
        attempt = 0
        while True:
            try:
                out = call(slot.client())
            except (InferenceServerException, OSError, http.client.HTTPException) as exc:
                if not self.is_transport_error(exc):
                    raise self._answer_error(exc, what) from exc
                slot.drop_client()
                if attempt >= len(delays):
                    with self._lock:
                        if not self._down:
                            logger.error("pose server %s unreachable after %d retries (%s); requests fail until "
                                         "it answers again", self.address, attempt, exc)
                        self._down = True
                    raise RuntimeError(f"pose server {self.address} unreachable ({what}, {attempt} retries): "
                                       f"{exc}") from exc
                logger.warning("pose server %s: %s; reconnecting in %.1f s (%d/%d)", self.address, exc,
                               delays[attempt], attempt + 1, len(delays))
                time.sleep(delays[attempt])
                attempt += 1
                with self._lock:
                    self.stats["reconnects"] += 1
                continue
            with self._lock:
                if self._down:
                    logger.info("pose server %s answers again", self.address)
                self._down = False
            return out


def _raised_while_connecting(exc: BaseException) -> bool:
    """REST: a timeout raised while geventhttpclient opened the connection (its ``_create_socket``), before any
    request was sent; a timeout anywhere else is the request timeout. (If a geventhttpclient release renames that
    function, connect timeouts fail the request at once instead of being retried.)"""
    tb = exc.__traceback__
    while tb is not None:
        if tb.tb_frame.f_code.co_name == "_create_socket" and "geventhttpclient" in tb.tb_frame.f_code.co_filename:
            return True
        tb = tb.tb_next
    return False


def _closed_before_reply(exc: BaseException) -> bool:
    """REST: geventhttpclient (tritonclient.http's transport) raises HTTPConnectionClosed only when the connection
    closes or resets before the first byte of the answer."""
    try:
        from geventhttpclient.response import HTTPConnectionClosed
    except ImportError:
        return False
    return isinstance(exc, HTTPConnectionClosed)


class RemotePoseEstimator(ContractRunner):
    """The pose chain on a KServe v2 server, with the model folder's contract here: crops are cut here, and decoded
    here too unless the served model returns keypoints (``sdpose_keypoints``; then ``decode`` is not used).

    Reads the folder's metadata (nothing is compiled but the graph decoder for ``decode="graph"`` on heatmaps)
    and checks the server's model against it. ``in_flight``: requests sent at once (the pipeline's
    ``num_requests`` for the remote stage). ``compiled`` {"pose_server": RemoteModel} is the one stage the
    coordinators run (on the model's :class:`KServeBackend`).
    """

    def __init__(self, models_dir: "str | Path", server: str, model_name: str = DEFAULT_SERVER_MODEL,
                 chain: "str | None" = None, flip_test: bool = False, padding: "float | None" = None,
                 in_flight: int = DEFAULT_IN_FLIGHT, retry: "ReconnectPolicy | None" = None,
                 timeout_s: float = DEFAULTS.request_timeout_s, core: Any = None, decode: "str | None" = None) -> None:
        if isinstance(in_flight, bool) or not isinstance(in_flight, int) or in_flight < 1:
            raise InputError(f"num_requests: expected a positive integer, got {in_flight!r}")
        self.remote = RemoteModel(ServerAddress.parse(server), model_name, retry=retry, timeout_s=timeout_s)
        super().__init__(*folder_contract(models_dir, chain, core, flip_test, 1, padding, decode))
        self.contract.chain_keypoints = self.remote.check(
            (self.input_size[1], self.input_size[0]), (self.num_keypoints, self.heatmap_size[1], self.heatmap_size[0]))
        if self.chain_keypoints and self.flip_test:
            raise InputError(f"--flip-test averages heatmaps, but pose server model '{model_name}' returns keypoints; "
                             f"use --pose-server-model {DEFAULT_SERVER_MODEL} (heatmaps) with --flip-test")
        if self.decode == "graph" and not self.chain_keypoints:
            from edge_runtime.model.estimator import graph_decoder
            from edge_runtime.model.models import CompileOptions

            self.contract.decoder = graph_decoder(self.contract, self.core, CompileOptions(performance_hint="LATENCY"))
        self.in_flight = in_flight
        self.kinds = (STAGE,)
        self.compiled = {STAGE: self.remote}
        self.folder.release()
        self.runtime_info = self._runtime_info(model_name)
        logger.info("pose chain on %s (model '%s', %d request(s) in flight); %s %d keypoints, input %dx%d",
                    self.remote.address, model_name, in_flight, self.scheme, self.num_keypoints, *self.input_size)

    def _runtime_info(self, model_name: str) -> dict[str, Any]:
        from edge_runtime.model.cpu import cpu_info

        return {"device": f"remote {self.remote.address}", "cpu": cpu_info().to_dict(),
                "precision": {STAGE: "chosen by the server"},
                "variant": self._variant(),
                "pose_server": {"url": str(self.remote.address), "model": model_name,
                                "requests_in_flight": self.in_flight, "folder_chain": self.folder.chain,
                                "decoded_by": "server" if self.chain_keypoints else f"client ({self.decode})"}}

    def num_requests(self, kind: str) -> int:
        return self.in_flight

    def input_name(self, kind: str) -> str:
        return self.remote.input_name

    def output_name(self, kind: str) -> str:
        return self.remote.output_name

    def _run_chain(self, crops: np.ndarray) -> np.ndarray:
        return self.remote.infer(np.ascontiguousarray(crops))

    def __repr__(self) -> str:
        return (f"RemotePoseEstimator({str(self.folder.path)!r}, server={str(self.remote.address)!r}, "
                f"model={self.remote.model_name!r}, K={self.num_keypoints})")
