"""``sdpose-edge serve MODELS``: the pose chain of a model folder as a KServe v2 server (gRPC and REST).

Built on the ``kserve`` Python ModelServer (optional extra ``serve``): kserve speaks the protocol (gRPC
``inference.GRPCInferenceService``, REST ``/v2/models/...`` with the binary-tensor extension), this module only
runs OpenVINO. It serves the same names as the OVMS repository ``sdpose-convert export-ovms`` writes, so a client
talks to either unchanged:

- one model per component of the folder's chain (``vae_encoder`` and ``pose``, or ``vae_pose``), inputs and
  outputs named as in the IR (``image`` u8 [N,h,w,3] BGR -> ``latent`` -> ``heatmaps`` f32 [N,K,h/4,w/4]);
- ``sdpose``: the whole chain in one request, crops -> heatmaps (OVMS: the DAG pipeline of the same name);
- ``keypoint_decoder``: the heatmap decoder in OpenVINO ops (:mod:`edge_runtime.model.codec_graph`), ``heatmaps`` ->
  ``keypoints`` f32 [N,K,3] (decoded crop px x, y and score), computed in f32 whatever the precision hint;
- ``sdpose_keypoints``: the chain and the decoder in one request, crops -> keypoints (133 x 3 numbers per crop
  instead of 26 MB of heatmaps; OVMS: the DAG pipeline of the same name).

Each component is compiled once (components and the chain share it). A request runs on one of the compiled
model's infer requests in a thread pool, so the asyncio server keeps answering while OpenVINO computes (the
inference releases the GIL). kserve binds every interface; :class:`BoundModelServer` binds ``--host`` instead.
kserve and tritonclient register the same protobuf names (``inference.*``): never import both in one process.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime import config as cfgmod
from edge_runtime.errors import InputError
from edge_runtime.settings.compile import COMPILE_KEYS, compile_options, per_isa_options
from edge_runtime.model.chain import ChainRunner, RequestPool

logger = logging.getLogger(__name__)

#: name of the served crops -> heatmaps model (and of the OVMS pipeline that export-ovms writes)
CHAIN_MODEL = "sdpose"
#: name of the served crops -> keypoints model (the chain + the decoder; an OVMS pipeline too)
KEYPOINTS_MODEL = "sdpose_keypoints"
#: name of the served heatmaps -> keypoints decoder (a model of the OVMS repository too)
DECODER_MODEL = "keypoint_decoder"
DEFAULT_MAX_BATCH = 8

#: numpy dtype -> KServe v2 datatype
V2_DATATYPES = {np.dtype(np.uint8): "UINT8", np.dtype(np.float32): "FP32", np.dtype(np.float16): "FP16",
                np.dtype(np.int64): "INT64", np.dtype(np.int32): "INT32"}


def register(subparsers: Any, name: str) -> None:
    p = subparsers.add_parser(name, help="serve the pose chain over KServe v2 (gRPC + REST), for --pose-server "
                                         "clients", description=__doc__.splitlines()[0])
    p.add_argument("models", help="model folder written by sdpose-convert export, or an OVMS repository written by "
                                  "sdpose-convert export-ovms (its config.json models and linear pipelines)")
    p.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1; 0.0.0.0: all)")
    p.add_argument("--port", type=int, default=8001, help="gRPC port (KServe v2; default 8001)")
    p.add_argument("--http-port", type=int, default=None, help="also serve REST (KServe v2) on this port")
    p.add_argument("--chain", choices=cfgmod.SCHEMA["chain"].check.choices, default=None,
                   help="default: the folder's default_chain")
    p.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH,
                   help=f"largest batch of crops one request may carry (default {DEFAULT_MAX_BATCH})")
    # the compile options of sdpose-edge run, from the same schema (default THROUGHPUT: several clients at once)
    cfgmod.add_cli_options({"OpenVINO": p.add_argument_group("OpenVINO")}, keys=COMPILE_KEYS)
    p.set_defaults(func=serve)


def _check_port(value: Any, name: str, host: str) -> int:
    """A valid port that is free on ``host`` (InputError naming the option otherwise)."""
    import socket

    if isinstance(value, bool) or not isinstance(value, int) or not 0 < value < 65536:
        raise InputError(f"{name}: expected a TCP port 1-65535, got {value!r}")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as the servers do: a port left in TIME_WAIT by a server that just stopped is free, a listening one not
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, value))
        except OSError as exc:
            raise InputError(f"{name}: cannot listen on {host}:{value} ({exc.strerror or exc})") from exc
    return value


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """A model input or output as KServe v2 model metadata describes it (-1: dynamic dimension)."""

    name: str
    datatype: str
    shape: tuple[int, ...]

    @classmethod
    def from_port(cls, port: Any) -> "TensorSpec":
        dtype = np.dtype(port.get_element_type().to_dtype())
        if dtype not in V2_DATATYPES:
            raise InputError(f"tensor {port.get_any_name()}: element type {dtype} has no KServe v2 datatype here")
        dims = tuple(d.get_length() if d.is_static else -1 for d in port.get_partial_shape())
        return cls(port.get_any_name(), V2_DATATYPES[dtype], dims)

    def as_metadata(self) -> dict[str, Any]:
        return {"name": self.name, "datatype": self.datatype, "shape": list(self.shape)}

    def describe(self) -> str:
        return f"'{self.name}' {self.datatype} [{','.join(str(d) for d in self.shape)}]"


class ServedChain:
    """One served model: the components ``pools`` {name: pool} run in order by the runtime's synchronous
    :class:`~edge_runtime.model.chain.ChainRunner`, input checked against ``input_spec``."""

    def __init__(self, name: str, pools: "dict[str, RequestPool]", max_batch: int, input_name: "str | None" = None,
                 output_name: "str | None" = None) -> None:
        self.name = name
        self.runner = ChainRunner(pools)
        self.pools = tuple(pools.values())
        spec_in = TensorSpec.from_port(self.pools[0].compiled.input(0))
        spec_out = TensorSpec.from_port(self.pools[-1].compiled.output(0))
        #: a pipeline names its request input and output itself (OVMS DAG); a model uses its IR's names
        self.input_spec = dataclasses.replace(spec_in, name=input_name or spec_in.name)
        self.output_spec = dataclasses.replace(spec_out, name=output_name or spec_out.name)
        self.max_batch = int(max_batch)

    def check(self, name: str, datatype: str, array: np.ndarray) -> np.ndarray:
        """The request's input as the model takes it; InputError naming the model and what was expected."""
        spec = self.input_spec
        expected = f"model {self.name}: expected one input {spec.describe()} with 1-{self.max_batch} items"
        if name != spec.name:
            raise InputError(f"{expected}; got an input named '{name}'")
        if str(datatype).upper() != spec.datatype:
            raise InputError(f"{expected}; got datatype {datatype}")
        shape = tuple(array.shape)
        if len(shape) != len(spec.shape) or any(s != d for s, d in zip(shape[1:], spec.shape[1:]) if s != -1 and d != -1):
            raise InputError(f"{expected}; got shape {list(shape)}")
        if not 1 <= shape[0] <= self.max_batch:
            raise InputError(f"{expected}; got a batch of {shape[0]}")
        return array

    def run(self, array: np.ndarray) -> np.ndarray:
        return self.runner.run(array)

    @property
    def workers(self) -> int:
        return max(pool.size for pool in self.pools)


def is_repository(path: "str | Path") -> bool:
    """An OVMS repository (``config.json``, as export-ovms writes) rather than a model folder."""
    from edge_runtime.serving.ovms_repo import CONFIG_NAME

    path = Path(path).expanduser()
    return (path / CONFIG_NAME).is_file() and not (path / "sdpose_models.json").is_file()


@dataclasses.dataclass
class Repository:
    """An OVMS repository read once: its models and pipelines (checked, every DAG edge against the IRs' real
    tensors), each IR read once (``irs``), and whether any of them was quantized (rt_info sdpose/quantized)."""

    path: Path
    models: dict[str, Any]
    pipelines: list[Any]
    irs: dict[str, Any]
    quantized: bool

    @classmethod
    def load(cls, repo: "str | Path") -> "Repository":
        import openvino as ov

        from edge_runtime.model.metadata import read_metadata
        from edge_runtime.serving.ovms_repo import read_repository, tensor_names

        core = ov.Core()
        by_xml: dict[Path, Any] = {}

        def read(xml: Path) -> Any:
            if xml not in by_xml:
                by_xml[xml] = core.read_model(str(xml))
            return by_xml[xml]

        models, pipelines = read_repository(repo, tensor_names=lambda xml: tensor_names(read(xml)))
        irs = {name: read(entry.xml) for name, entry in models.items()}
        quantized = any(bool(read_metadata(irs[name], source=entry.xml).get("quantized"))
                        for name, entry in models.items())
        return cls(Path(repo), models, pipelines, irs, quantized)


def build_served_repository(repo: Repository, options: Any, max_batch: int) -> list[ServedChain]:
    """The models and linear pipelines of an OVMS repository, compiled with ``options`` (OVMS itself reads the
    repository's ``plugin_config``; ``serve`` applies its own command line)."""
    import openvino as ov

    from edge_runtime.model.models import compile_model, optimal_requests
    from edge_runtime.serving.ovms_repo import is_linear

    core = ov.Core()
    pools = {}
    for name, entry in repo.models.items():
        # the decoder computes in f32 whatever the hint (bf16 would move the points), as its plugin_config says
        model_options = dataclasses.replace(options, inference_precision="f32") if name == DECODER_MODEL else options
        compiled = compile_model(core, repo.irs[name], model_options)
        pools[name] = RequestPool(compiled, entry.nireq or optimal_requests(compiled, model_options), eager=True)
        logger.info("compiled %s (version %d) on %s, %d request(s)", name, entry.version, options.device,
                    pools[name].size)
    repo.irs.clear()  # the compiled models hold the weights now
    served = [ServedChain(name, {name: pool}, max_batch) for name, pool in pools.items()]
    for pipe in repo.pipelines:
        if not is_linear(pipe):
            raise InputError(f"{repo.path}: pipeline '{pipe.name}' is not a chain of nodes; serve runs linear "
                             "pipelines only (OVMS runs any DAG)")
        served.append(ServedChain(pipe.name, {node.name: pools[node.model_name] for node in pipe.nodes},
                                  max_batch, input_name=pipe.input_name, output_name=pipe.output_name))
    return served


def folder_decoder(folder: Any) -> Any:
    """The ``keypoint_decoder`` model of a model folder (its pose IR's sizes and codec): heatmaps -> keypoints."""
    from edge_runtime.model.codec_graph import decoder_model
    from edge_runtime.model.metadata import FORMAT_VERSION, write_metadata

    info = folder.pose_info
    model = decoder_model(info.num_keypoints, info.heatmap_size_wh, info.input_size_wh, info.blur_kernel_size)
    meta = folder.pose_meta
    write_metadata(model, {"kind": DECODER_MODEL, "format_version": FORMAT_VERSION, "scheme": info.scheme,
                           "num_keypoints": info.num_keypoints, "input_width": info.input_size_wh[0],
                           "input_height": info.input_size_wh[1], "heatmap_width": info.heatmap_size_wh[0],
                           "heatmap_height": info.heatmap_size_wh[1], "codec": meta.get("codec"), "quantized": False})
    return model


def build_served(models: str, options: Any, chain: "str | None", max_batch: int) -> list[ServedChain]:
    """The served models of a folder: each component of its chain, the decoder, ``sdpose`` (the chain in one
    request) and ``sdpose_keypoints`` (the chain and the decoder in one request)."""
    from edge_runtime.model.models import ModelFolder, compile_model, optimal_requests

    folder = ModelFolder(models, chain=chain)
    irs = {kind: (folder.read_model(kind), options) for kind in folder.kinds}
    irs[DECODER_MODEL] = (folder_decoder(folder), dataclasses.replace(options, inference_precision="f32"))
    pools = {}
    for kind, (model, kind_options) in irs.items():
        compiled = compile_model(folder.core, model, kind_options)
        pools[kind] = RequestPool(compiled, optimal_requests(compiled, kind_options), eager=True)
        logger.info("compiled %s on %s (%s), %d request(s)", kind, kind_options.for_kind(kind).device,
                    options.performance_hint, pools[kind].size)
    irs.clear()
    folder.release()  # the compiled models hold the weights now
    chain_pools = {k: pools[k] for k in folder.kinds}
    served = [ServedChain(kind, {kind: pool}, max_batch) for kind, pool in pools.items()]
    served.append(ServedChain(CHAIN_MODEL, chain_pools, max_batch))
    served.append(ServedChain(KEYPOINTS_MODEL, {**chain_pools, DECODER_MODEL: pools[DECODER_MODEL]}, max_batch))
    return served


def serve(args: argparse.Namespace) -> int:
    if args.http_port is not None and args.http_port == args.port:
        raise InputError(f"--http-port: must differ from --port ({args.port})")
    _check_port(args.port, "--port", args.host)
    if args.http_port is not None:
        _check_port(args.http_port, "--http-port", args.host)
    if args.max_batch < 1:
        raise InputError(f"--max-batch: expected a positive integer, got {args.max_batch}")
    settings = cfgmod.merge(cfgmod.validate({k: getattr(args, k) for k in COMPILE_KEYS if getattr(args, k) is not None},
                                            source="command line"), {})
    settings["batch"] = args.max_batch  # a static-shape compile takes the largest batch (smaller ones are padded)
    options = compile_options(settings)
    repository = Repository.load(args.models) if is_repository(args.models) else None
    options, hint_source = per_isa_options(options, args.models,
                                           quantized=None if repository is None else repository.quantized)
    served = build_served(args.models, options, args.chain, args.max_batch) if repository is None else \
        build_served_repository(repository, options, args.max_batch)
    logger.info("serving %s (precision hint: %s, %s) as %s on %s: gRPC port %d%s", args.models,
                options.inference_precision or "device default", hint_source,
                ", ".join(s.name for s in served), args.host, args.port,
                "" if args.http_port is None else f", REST port {args.http_port}")
    with _kserve_argv():
        from edge_runtime.serving.kserve_server import run_server
    run_server(served, host=args.host, grpc_port=args.port, http_port=args.http_port)
    return 0


@contextlib.contextmanager
def _kserve_argv() -> Any:
    """kserve parses ``sys.argv`` with its own options when imported: hide ours from it."""
    saved = sys.argv
    sys.argv = saved[:1]
    try:
        yield
    finally:
        sys.argv = saved
