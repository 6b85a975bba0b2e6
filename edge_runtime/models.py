"""Loading a model folder (``MODELS/``) and compiling its IRs with explicit, recorded options.

A model folder is the contract between ``sdpose-convert`` and the runtime (see DEVELOPERS.md):
``sdpose_models.json`` (index) plus one IR per component, each carrying its metadata in
``rt_info['sdpose']``. :class:`ModelFolder` reads and validates it; :class:`CompileOptions`
turns user/config choices into an OpenVINO compile config. Device names are passed through
untouched: no code path branches on them.
"""
from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any, Mapping

import openvino as ov
import openvino.properties as props
import openvino.properties.hint as hints
import openvino.properties.streams as streams

from .attention import compile_fused, count_attention_ops
from .cpu import cpu_info
from .errors import InputError, ModelFolderError
from .geometry import DEFAULT_PADDING
from .metadata import read_index, read_metadata
from .model_info import PoseModelInfo

logger = logging.getLogger(__name__)

#: chain name -> the component kinds it runs, in order (image -> ... -> heatmaps)
CHAINS: dict[str, tuple[str, ...]] = {
    "split": ("vae_encoder", "pose"),
    "fused": ("vae_pose",),
}

DEFAULT_BBOX_PADDING = DEFAULT_PADDING
DEFAULT_CACHE_DIR = "~/.cache/sdpose-edge"

_PERFORMANCE_HINTS = {
    "THROUGHPUT": hints.PerformanceMode.THROUGHPUT,
    "LATENCY": hints.PerformanceMode.LATENCY,
    "CUMULATIVE_THROUGHPUT": hints.PerformanceMode.CUMULATIVE_THROUGHPUT,
}
_PRECISIONS = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}
#: CompileOptions field -> the ``sdpose-edge run`` setting whose schema entry checks it
_SETTING_OF_FIELD = {"device": "device", "performance_hint": "hint", "num_streams": "num_streams",
                     "inference_num_threads": "num_threads", "inference_precision": "precision_hint",
                     "cache_dir": "cache_dir", "num_requests": "num_requests"}


def _dims(shape: ov.PartialShape) -> list[int | None]:
    """PartialShape -> list with None for dynamic dimensions."""
    return [d.get_length() if d.is_static else None for d in shape]


class ModelFolder:
    """A converted model folder ``MODELS/`` (index + IRs + rt_info metadata).

    Args:
        path: the folder written by ``sdpose-convert export``.
        chain: ``"split"`` (vae_encoder -> pose), ``"fused"`` (vae_pose) or None for the index's
            ``default_chain`` (falling back to whichever chain the folder can run, split first).
        core: an ``openvino.Core`` to read models with (one is created if None).

    Attributes:
        path: folder Path. index: the parsed ``sdpose_models.json``.
        components: {kind: Path of the IR .xml} for every component listed in the index.
        chain: the chain that will run. kinds: the component kinds of that chain, in order.
    """

    def __init__(self, path: str | Path, chain: str | None = None, core: ov.Core | None = None):
        self.path = Path(path).expanduser()
        self.index = read_index(self.path)
        self.core = core if core is not None else ov.Core()
        self.components: dict[str, Path] = {}
        index_file = self.path / "sdpose_models.json"
        for kind, rel in self.index["components"].items():
            if not isinstance(rel, str) or not rel:
                raise ModelFolderError(f"{index_file}: components.{kind} must be an IR file name, got {rel!r}")
            target = self.path / rel
            if self.path.resolve() not in target.resolve().parents:
                raise ModelFolderError(f"{index_file}: components.{kind} = {rel!r} points outside the model folder")
            self.components[str(kind)] = target
        self._models: dict[str, ov.Model] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        self.chain = self._choose_chain(chain)
        self.kinds: tuple[str, ...] = CHAINS[self.chain]
        self.validate()

    # ------------------------------------------------------------------ components
    def has(self, kind: str) -> bool:
        """True if the index lists component ``kind`` (the file is checked when read)."""
        return kind in self.components

    def ir_path(self, kind: str) -> Path:
        """Path of the IR .xml of ``kind``; ModelFolderError if the index does not list it."""
        if kind not in self.components:
            raise ModelFolderError(
                f"{self.path / 'sdpose_models.json'}: no '{kind}' component "
                f"(the folder has: {', '.join(sorted(self.components)) or 'none'})")
        return self.components[kind]

    def read_model(self, kind: str) -> ov.Model:
        """The ``openvino.Model`` of component ``kind`` (read once, then cached)."""
        if kind in self._models:
            return self._models[kind]
        xml = self.ir_path(kind)
        if not xml.is_file():
            raise ModelFolderError(f"{xml}: IR file of component '{kind}' is missing (listed in the index)")
        weights = xml.with_suffix(".bin")
        if not weights.is_file():
            raise ModelFolderError(f"{weights}: weights of component '{kind}' are missing (next to {xml.name})")
        try:
            model = self.core.read_model(str(xml))
        except RuntimeError as exc:
            raise ModelFolderError(f"{xml}: cannot read the IR of component '{kind}': {exc}") from exc
        self._models[kind] = model
        return model

    def release(self) -> None:
        """Drop the cached ``openvino.Model`` objects (their weights) but keep the metadata.

        Call after compiling: a compiled model holds its own copy of the weights, so keeping the
        ``ov.Model`` too doubles the memory (about +3.4 GB RSS for the full-size FP32 pose IR).
        """
        self._models.clear()

    def metadata(self, kind: str) -> dict[str, Any]:
        """The ``rt_info['sdpose']`` metadata of component ``kind`` as typed values (cached)."""
        if kind not in self._meta:
            meta = read_metadata(self.read_model(kind), source=self.ir_path(kind))
            stored_kind = meta.get("kind")
            if stored_kind is not None and stored_kind != kind:
                raise ModelFolderError(
                    f"{self.ir_path(kind)}: rt_info sdpose/kind is '{stored_kind}' but the index lists this "
                    f"file as '{kind}'")
            self._meta[kind] = meta
        return self._meta[kind]

    # ------------------------------------------------------------------ chain
    def _choose_chain(self, chain: str | None) -> str:
        index_file = self.path / "sdpose_models.json"
        if chain is None:
            chain = self.index.get("default_chain")
            if chain is not None and chain not in CHAINS:
                raise ModelFolderError(
                    f"{index_file}: default_chain must be one of {sorted(CHAINS)}, got {chain!r}")
            if chain is not None and not all(self.has(k) for k in CHAINS[chain]):
                raise ModelFolderError(
                    f"{index_file}: default_chain '{chain}' needs components {list(CHAINS[chain])}, "
                    f"the index lists {sorted(self.components)}")
            if chain is None:
                for name, kinds in CHAINS.items():
                    if all(self.has(k) for k in kinds):
                        chain = name
                        break
            if chain is None:
                raise ModelFolderError(
                    f"{index_file}: no runnable pose chain: need vae_encoder + pose (split) or vae_pose "
                    f"(fused), the index lists {sorted(self.components) or 'nothing'}")
            return chain
        if chain not in CHAINS:
            raise InputError(f"chain: expected one of {sorted(CHAINS)}, got {chain!r}")
        missing = [k for k in CHAINS[chain] if not self.has(k)]
        if missing:
            raise ModelFolderError(
                f"{self.path}: chain '{chain}' needs component(s) {missing}, the index lists "
                f"{sorted(self.components)}")
        return chain

    @property
    def pose_kind(self) -> str:
        """The kind whose IR outputs heatmaps: ``pose`` (split) or ``vae_pose`` (fused)."""
        return self.kinds[-1]

    @property
    def pose_meta(self) -> dict[str, Any]:
        """Metadata of the heatmap-producing IR, with ``bbox_padding`` defaulted to 1.25 if absent.

        Keys used by the runtime: scheme, num_keypoints, input_width, input_height, heatmap_width,
        heatmap_height, bbox_padding, codec.
        """
        meta = dict(self.metadata(self.pose_kind))
        meta.setdefault("bbox_padding", DEFAULT_BBOX_PADDING)
        return meta

    @property
    def pose_info(self) -> PoseModelInfo:
        """The typed metadata of the heatmap-producing IR (checked; see :mod:`edge_runtime.model_info`)."""
        return PoseModelInfo.from_rt_info(self.metadata(self.pose_kind), str(self.ir_path(self.pose_kind)))

    # ------------------------------------------------------------------ validation
    def validate(self) -> None:
        """Check the chain's IRs exist, carry metadata and agree on sizes; ModelFolderError otherwise."""
        kind = self.pose_kind
        src = self.ir_path(kind)
        info = self.pose_info
        w, h = info.input_size_wh
        k, hw, hh = info.num_keypoints, info.heatmap_width, info.heatmap_height
        out = _dims(self.read_model(kind).outputs[0].get_partial_shape())
        if len(out) != 4 or out[1:] != [k, hh, hw]:
            raise ModelFolderError(
                f"{src}: output shape {out} does not match the metadata [N,{k},{hh},{hw}] "
                "(num_keypoints, heatmap_height, heatmap_width)")
        first = self.kinds[0]
        image_in = _dims(self.read_model(first).inputs[0].get_partial_shape())
        if len(image_in) != 4 or image_in[1:] != [h, w, 3]:
            raise ModelFolderError(
                f"{self.ir_path(first)}: image input shape {image_in} is not [N,{h},{w},3] "
                f"(u8 BGR NHWC at the pose input size {w}x{h})")
        if self.chain == "split":
            vae_src = self.ir_path("vae_encoder")
            vae_meta = self.metadata("vae_encoder")
            vae_size = (vae_meta.get("input_width"), vae_meta.get("input_height"))
            if vae_size != (w, h):
                raise ModelFolderError(
                    f"{vae_src}: input size {vae_size[0]}x{vae_size[1]} (WxH) differs from {src}: {w}x{h}; "
                    "the two IRs come from different exports")
            latent_out = _dims(self.read_model("vae_encoder").outputs[0].get_partial_shape())
            latent_in = _dims(self.read_model("pose").inputs[0].get_partial_shape())
            if latent_out[1:] != latent_in[1:]:
                raise ModelFolderError(
                    f"{vae_src}: latent output shape {latent_out} does not match the latent input {latent_in} "
                    f"of {src}")

    def __repr__(self) -> str:
        return f"ModelFolder({str(self.path)!r}, chain={self.chain!r}, components={sorted(self.components)})"


@dataclasses.dataclass
class CompileOptions:
    """How to compile the IRs. Every field maps to one OpenVINO property (None = device default).

    device: OpenVINO device name, passed through untouched ("CPU", "GPU", "NPU", "AUTO:GPU,CPU", ...).
    performance_hint: "THROUGHPUT" (default; many parallel streams) or "LATENCY" (also
        "CUMULATIVE_THROUGHPUT" for multi-device).
    num_streams: NUM_STREAMS (int >= 1) or None for the hint's choice.
    inference_num_threads: INFERENCE_NUM_THREADS (int >= 1) or None.
    inference_precision: INFERENCE_PRECISION_HINT "f32" | "bf16" | "f16" or None (device default;
        note the CPU runs bf16 by default on AVX512_BF16 / AMX machines).
    cache_dir: CACHE_DIR for compiled-blob caching ("~" expanded) or None to disable.
    num_requests: infer requests per model, or None for OPTIMAL_NUMBER_OF_INFER_REQUESTS.
    """

    device: str = "CPU"
    performance_hint: str = "THROUGHPUT"
    num_streams: int | None = None
    inference_num_threads: int | None = None
    inference_precision: str | None = None
    cache_dir: str | None = DEFAULT_CACHE_DIR
    num_requests: int | None = None

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InputError naming the field when a value is out of range: each field is checked by the
        ``sdpose-edge run`` setting it corresponds to (:data:`edge_runtime.config.SCHEMA`, the one schema)."""
        from .config import SCHEMA

        if isinstance(self.performance_hint, str):
            self.performance_hint = self.performance_hint.upper()
        if isinstance(self.inference_precision, str):
            self.inference_precision = self.inference_precision.lower()
        if isinstance(self.cache_dir, Path) and str(self.cache_dir):
            self.cache_dir = str(self.cache_dir)
        for name, key in _SETTING_OF_FIELD.items():
            value = getattr(self, name)
            default, check, expected = SCHEMA[key]
            if value is None and (default is None or key == "cache_dir"):
                continue  # "device default" (or, for cache_dir, caching off)
            if value is None or not check(value):
                raise InputError(f"{name}: expected {expected}, got {value!r}")

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, base: "CompileOptions | None" = None) -> "CompileOptions":
        """Build from a config mapping (YAML/CLI); keys may use '-' or '_'. Unknown keys -> InputError.

        ``base`` supplies the values of keys absent from ``d`` (defaults if None); a value of None in
        ``d`` means "device default" (or, for cache_dir, caching off).
        """
        if d is None:
            d = {}
        if not isinstance(d, Mapping):
            raise InputError(f"compile options: expected a mapping of option -> value, got {type(d).__name__}")
        known = cls.field_names()
        values = dataclasses.asdict(base) if base is not None else {}
        for key, value in d.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise InputError(f"compile option '{key}' is unknown; expected one of {known}")
            values[name] = value
        return cls(**values)

    def to_ov_config(self) -> dict[str, Any]:
        """OpenVINO compile config {property name: value} for ``core.compile_model``."""
        config: dict[str, Any] = {hints.performance_mode: _PERFORMANCE_HINTS[self.performance_hint]}
        if self.num_streams is not None:
            config[streams.num] = streams.Num(self.num_streams)
        if self.inference_num_threads is not None:
            config[props.inference_num_threads] = self.inference_num_threads
        if self.inference_precision is not None:
            config[hints.inference_precision] = _PRECISIONS[self.inference_precision]
        if self.cache_dir is not None:
            config[props.cache_dir] = str(Path(self.cache_dir).expanduser())
        return {(key() if callable(key) else key): value for key, value in config.items()}

    def describe(self) -> dict[str, Any]:
        """Plain dict of the options (for logs / run summaries)."""
        return dataclasses.asdict(self)


def compile_model(core: ov.Core, model_or_path: ov.Model | str | Path,
                  options: CompileOptions | None = None,
                  extra_config: Mapping[str, Any] | None = None) -> ov.CompiledModel:
    """Compile an ``ov.Model`` (or IR path) on ``options.device`` with ``options.to_ov_config()`` plus
    ``extra_config`` (properties that are not settings, e.g. ``{"PERF_COUNT": True}`` for the bench profile).

    A model with attention whose compiled graph leaves attention unfused (quantized keys on AVX2-only CPUs) is
    compiled again with its key FakeQuantize nodes removed (:func:`edge_runtime.attention.compile_fused`).

    Raises ModelFolderError (IR path missing) or SDPoseError-derived InputError when OpenVINO rejects the
    device or a property, naming the device and the config.
    """
    options = options if options is not None else CompileOptions()
    model: ov.Model | str = model_or_path
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if not path.is_file():
            raise ModelFolderError(f"{path}: IR file does not exist")
        model = str(path)
    config = options.to_ov_config()
    config.update(extra_config or {})
    cache_key = props.cache_dir()
    if cache_key in config:
        try:
            Path(config[cache_key]).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            logger.warning("cache_dir %s is not usable (%s); compiling without model caching", config[cache_key], exc)
            del config[cache_key]

    def compile_one(m: "ov.Model | str") -> ov.CompiledModel:
        try:
            return core.compile_model(m, options.device, config)
        except RuntimeError as exc:
            raise InputError(
                f"device '{options.device}' could not compile the model with {options.describe()}: {exc}") from exc

    if isinstance(model, ov.Model) and count_attention_ops(model):
        # regains fused attention where quantized keys break it (CPUs without AVX-512: removed up front)
        on_cpu = options.device.upper().startswith("CPU")
        compiled, _ = compile_fused(compile_one, model, dequantize_first=on_cpu and not cpu_info(None, "CPU").avx512)
    else:
        compiled = compile_one(model)
    logger.debug("compiled %s on %s with %s", getattr(model, "friendly_name", model), options.device, config)
    return compiled


def optimal_requests(compiled: ov.CompiledModel, options: CompileOptions | None = None) -> int:
    """Number of infer requests to create: ``options.num_requests`` if set, else the device's
    OPTIMAL_NUMBER_OF_INFER_REQUESTS (1 if the device does not report it)."""
    if options is not None and options.num_requests is not None:
        return options.num_requests
    try:
        return max(1, int(compiled.get_property(props.optimal_number_of_infer_requests())))
    except RuntimeError:
        logger.warning("device does not report OPTIMAL_NUMBER_OF_INFER_REQUESTS; using 1 request")
        return 1
