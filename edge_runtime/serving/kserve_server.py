"""The kserve side of ``sdpose-edge serve``: KServe v2 models over served chains (:class:`Served`, which
:class:`edge_runtime.serving.serve.ServedChain` implements; this module does not import serve: serve imports it).

Imported only by ``sdpose-edge serve`` (it needs the optional ``kserve`` package). kserve's ``ModelServer``
always binds every interface (``0.0.0.0`` / ``[::]``) and always starts REST; :class:`BoundModelServer` starts
kserve's own REST and gRPC servers on ``host``, REST only when a port is given. The gRPC part re-does the few
lines of ``kserve.protocol.grpc.server.GRPCServer.start`` that choose the listen address (kserve 0.21 has no
option for it), with kserve's servicer and interceptors.
"""
from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import signal
from typing import Any, Protocol, Sequence

import numpy as np

from grpc import aio
from kserve import Model, ModelServer
from kserve.errors import InferenceError, InvalidInput
from kserve.protocol.grpc import grpc_predict_v2_pb2_grpc
from kserve.protocol.grpc.interceptors import ExceptionToStatusInterceptor, LoggingInterceptor
from kserve.protocol.grpc.server import GRPCServer
from kserve.protocol.grpc.servicer import InferenceServicer
from kserve.protocol.infer_type import InferOutput, InferRequest, InferResponse
from kserve.protocol.rest.server import RESTServer

from edge_runtime.errors import InputError

logger = logging.getLogger(__name__)

#: gRPC message cap of the server: a batch of 8 wholebody heatmaps is 8 x 26 MB
MAX_MESSAGE_BYTES = 1 << 30


class Served(Protocol):
    """What the server needs of one served model (:class:`edge_runtime.serving.serve.ServedChain`)."""

    name: str
    input_spec: Any  # edge_runtime.serving.serve.TensorSpec: name, datatype, shape; as_metadata(), describe()
    output_spec: Any

    def check(self, name: str, datatype: str, array: np.ndarray) -> np.ndarray: ...

    def run(self, array: np.ndarray) -> np.ndarray: ...

    @property
    def workers(self) -> int: ...


class ChainModel(Model):
    """A KServe v2 model running a :class:`Served` chain in a thread pool (OpenVINO releases the GIL)."""

    def __init__(self, served: Served, executor: concurrent.futures.Executor) -> None:
        super().__init__(served.name)
        self.served = served
        self._executor = executor
        self.ready = True

    def load(self) -> bool:
        self.ready = True
        return True

    def get_input_types(self) -> list[dict[str, Any]]:
        return [self.served.input_spec.as_metadata()]

    def get_output_types(self) -> list[dict[str, Any]]:
        return [self.served.output_spec.as_metadata()]

    async def predict(self, payload: Any, headers: "dict[str, str] | None" = None,
                      response_headers: "dict[str, str] | None" = None) -> InferResponse:
        name = self.served.name
        if not isinstance(payload, InferRequest):
            raise InvalidInput(f"model {name}: expected a KServe v2 inference request, got {type(payload).__name__}")
        if len(payload.inputs) != 1:
            raise InvalidInput(f"model {name}: expected one input {self.served.input_spec.describe()}, "
                               f"got {len(payload.inputs)}")
        tensor = payload.inputs[0]
        try:
            array = tensor.as_numpy()
        except (ValueError, TypeError, InferenceError) as exc:
            raise InvalidInput(f"model {name}: input '{tensor.name}' could not be read as {tensor.datatype} "
                               f"{tensor.shape}: {exc}") from exc
        try:
            array = self.served.check(tensor.name, tensor.datatype, array)
        except InputError as exc:
            raise InvalidInput(str(exc)) from exc
        try:
            out = await asyncio.get_running_loop().run_in_executor(self._executor, self.served.run, array)
        except RuntimeError as exc:
            raise InferenceError(f"model {name}: inference failed: {exc}") from exc
        spec = self.served.output_spec
        output = InferOutput(spec.name, list(out.shape), spec.datatype)
        output.set_data_from_numpy(out, binary_data=True)
        return InferResponse(payload.id, name, [output], use_binary_outputs=payload.use_binary_outputs,
                             requested_outputs=payload.request_outputs)


class _BoundGRPCServer(GRPCServer):
    def __init__(self, host: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._host = host

    async def start(self, max_workers: int) -> None:
        servicer = InferenceServicer(self._data_plane, self._model_repository_extension)
        self._server = aio.server(
            concurrent.futures.ThreadPoolExecutor(max_workers=max_workers),
            interceptors=(LoggingInterceptor(), ExceptionToStatusInterceptor()),
            options=[("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
                     ("grpc.so_reuseport", 0)])  # a second server on the same port is an error, not a twin
        grpc_predict_v2_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(servicer, self._server)
        address = f"[{self._host}]:{self._port}" if ":" in self._host else f"{self._host}:{self._port}"
        if self._server.add_insecure_port(address) == 0:
            raise OSError(f"gRPC: cannot listen on {address}")
        logger.info("KServe v2 gRPC on %s", address)
        await self._server.start()
        await self._server.wait_for_termination()


class BoundModelServer(ModelServer):
    """kserve's ModelServer listening on ``host`` only; REST only if ``http_port`` is set."""

    def __init__(self, host: str, grpc_port: int, http_port: "int | None") -> None:
        super().__init__(http_port=http_port or 0, grpc_port=grpc_port, enable_grpc=True,
                         enable_latency_logging=False)
        self.host = host
        self.serve_rest = http_port is not None

    def start(self, models: list[Any]) -> None:
        self._register_and_check_atleast_one_model_is_ready(models)
        if self.serve_rest:
            self._rest_server = RESTServer("kserve.model_server:app", self.dataplane, self.model_repository_extension,
                                           self.http_port, grace_period=self.grace_period,
                                           timeout_keep_alive=self.timeout_keep_alive)
            self._rest_server.config.host = self.host
            self.servers.append(self._rest_server.start())
            logger.info("KServe v2 REST on %s:%d", self.host, self.http_port)
        self._grpc_server = _BoundGRPCServer(self.host, self.grpc_port, self.dataplane,
                                             self.model_repository_extension, kwargs={},
                                             grace_period=self.grace_period)
        self.servers.append(self._grpc_server.start(self.max_threads))
        asyncio.run(self._serve())  # not kserve's setup_event_loop: it configures a second, unused loop

    async def _serve(self) -> None:
        # kserve installs its stop handler with signal.signal, which a loop asleep in epoll never runs when
        # only gRPC is served: install it on the running loop instead (uvicorn, when serving REST, hands the
        # signal on after its own shutdown)
        loop = asyncio.get_running_loop()
        loop.set_exception_handler(self.default_exception_handler)
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, self.stop, sig)
        await asyncio.gather(*self.servers)


def run_server(served: Sequence[Served], host: str, grpc_port: int, http_port: "int | None") -> None:
    """Serve ``served`` until SIGINT/SIGTERM."""
    executor = concurrent.futures.ThreadPoolExecutor(max_workers=sum(s.workers for s in served),
                                                     thread_name_prefix="sdpose-serve")
    BoundModelServer(host, grpc_port, http_port).start([ChainModel(s, executor) for s in served])
