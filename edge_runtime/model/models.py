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
import re
from pathlib import Path
from typing import Any, Mapping

import openvino as ov
import openvino.properties as props
import openvino.properties.hint as hints
import openvino.properties.streams as streams

from edge_runtime.config import linked
from edge_runtime.model.attention import compile_fused, count_attention_ops
from edge_runtime.model.compile_choice import DEFAULT_HINT
from edge_runtime.model.cpu import cpu_info
from edge_runtime.model.int8_matmuls import float_matmul_activations, wants_float_matmuls
from edge_runtime.errors import InputError, ModelFolderError
from edge_runtime.model.geometry import DEFAULT_PADDING
from edge_runtime.model.metadata import read_index, read_metadata
from edge_runtime.model.model_info import PoseModelInfo
from edge_runtime.settings.schema import check_fields

logger = logging.getLogger(__name__)

#: chain name -> the component kinds it runs, in order (image -> ... -> heatmaps)
CHAINS: dict[str, tuple[str, ...]] = {
    "split": ("vae_encoder", "pose"),
    "fused": ("vae_pose",),
}

DEFAULT_BBOX_PADDING = DEFAULT_PADDING

_PERFORMANCE_HINTS = {
    "THROUGHPUT": hints.PerformanceMode.THROUGHPUT,
    "LATENCY": hints.PerformanceMode.LATENCY,
    "CUMULATIVE_THROUGHPUT": hints.PerformanceMode.CUMULATIVE_THROUGHPUT,
}
_PRECISIONS = {"f32": ov.Type.f32, "bf16": ov.Type.bf16, "f16": ov.Type.f16}


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
        """The typed metadata of the heatmap-producing IR (checked; see :mod:`edge_runtime.model.model_info`)."""
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
    cache_dir: CACHE_DIR for compiled-blob caching ("~" expanded) or None to disable; each device caches in
        its own sub-folder ``cache_dir/DEVICE`` (``AUTO:GPU,CPU`` -> ``AUTO_GPU_CPU``).
    num_requests: infer requests per model, or None for OPTIMAL_NUMBER_OF_INFER_REQUESTS.
    model_device: {model kind: device} overriding ``device`` for that kind (vae_encoder, pose, vae_pose,
        detector; ``--model-device KIND=DEV``), or None.
    int8_matmuls: "auto" | "int8" | "float": an INT8 folder's matrix products as converted or with float
        activations (:mod:`edge_runtime.model.int8_matmuls`; auto: float on CPUs without VNNI).
    static_batch: reshape the IR's dynamic batch to ``batch`` before compiling (devices that compile only
        static shapes, such as the NPU, get this reshape anyway when they refuse the dynamic batch); None = not
        set: dynamic here, decided per CPU by ``sdpose-edge run``/``serve``
        (:func:`edge_runtime.settings.compile.per_isa_options`).
    batch: crops per request: the batch a static-shape compile uses.
    """

    device: str = linked("device")
    performance_hint: str = linked("hint", default=DEFAULT_HINT)
    num_streams: int | None = linked("num_streams")
    inference_num_threads: int | None = linked("num_threads")
    inference_precision: str | None = linked("precision_hint")
    cache_dir: str | None = linked("cache_dir", nullable=True)  # None: caching off
    num_requests: int | None = linked("num_requests")
    model_device: Mapping[str, str] | None = linked("model_device", default=None)
    int8_matmuls: str = linked("int8_matmuls")
    static_batch: bool | None = linked("static_batch")
    batch: int = linked("batch")

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise InputError naming the field when a value is out of range: each field is the ``sdpose-edge run``
        setting it is linked to (``hint``, ``precision_hint``, ``num_threads`` ...) and checked by it
        (:class:`edge_runtime.config.RunSettings`, the one schema); strings are normalised (``latency`` ->
        ``LATENCY``)."""
        if self.performance_hint is None:  # "not set": the default hint
            self.performance_hint = DEFAULT_HINT
        if isinstance(self.cache_dir, Path) and str(self.cache_dir):
            self.cache_dir = str(self.cache_dir)
        check_fields(self)

    def for_kind(self, kind: str | None) -> "CompileOptions":
        """These options for model ``kind``: ``device`` replaced by ``model_device[kind]`` when given."""
        device = (self.model_device or {}).get(kind or "", self.device)
        return dataclasses.replace(self, device=device, model_device=None)

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
            config[props.cache_dir] = str(Path(self.cache_dir).expanduser() / device_cache_folder(self.device))
        return {(key() if callable(key) else key): value for key, value in config.items()}

    def describe(self) -> dict[str, Any]:
        """Plain dict of the options (for logs / run summaries)."""
        return dataclasses.asdict(self)


def device_cache_folder(device: str) -> str:
    """The cache sub-folder of a device string: ``CPU`` -> ``CPU``, ``AUTO:GPU,CPU`` -> ``AUTO_GPU_CPU``
    (compiled blobs of different devices never share a folder)."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", device).strip("_") or "device"


def error_reason(exc: BaseException) -> str:
    """The last non-empty line of an error (OpenVINO puts its reason there), at most 300 characters."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]


def _model_kind(model: ov.Model) -> str | None:
    """The model's ``sdpose/kind`` (rt_info), or None for a model without sdpose metadata."""
    rt_info = model.get_rt_info()
    if "sdpose" not in rt_info or "kind" not in rt_info["sdpose"].keys():
        return None
    return str(rt_info["sdpose"]["kind"].astype(str))


def _dynamic_batch_inputs(model: ov.Model) -> list[Any]:
    """The inputs whose first (batch) dimension is dynamic."""
    return [p for p in model.inputs if p.get_partial_shape().rank.is_static and len(p.get_partial_shape()) > 0
            and p.get_partial_shape()[0].is_dynamic]


def has_dynamic_batch(model: ov.Model) -> bool:
    """True when some input's first (batch) dimension is dynamic."""
    return bool(_dynamic_batch_inputs(model))


def with_static_batch(model: ov.Model, batch: int) -> ov.Model:
    """A clone of ``model`` whose dynamic batch dimensions are ``batch`` (the other dimensions unchanged)."""
    model = model.clone()
    shapes = {p: ov.PartialShape([batch] + list(p.get_partial_shape())[1:]) for p in _dynamic_batch_inputs(model)}
    if shapes:
        model.reshape(shapes)
    return model


def static_batch_of(compiled: Any) -> int | None:
    """The static batch of a compiled model's first input, or None when the batch is dynamic (or the object
    is not a compiled OpenVINO model, e.g. a remote model)."""
    if not hasattr(compiled, "input"):
        return None
    shape = compiled.input(0).get_partial_shape()
    if shape.rank.is_dynamic or len(shape) == 0 or shape[0].is_dynamic:
        return None
    return int(shape[0].get_length())


def fit_batch(inputs: Any, static_batch: int | None) -> Any:
    """``inputs`` [n,...] padded with zeros to [static_batch,...] for a static-batch model (n < static_batch);
    unchanged for a dynamic batch. Callers keep the first n outputs."""
    if static_batch is None or len(inputs) >= static_batch:
        return inputs
    import numpy as np

    pad = np.zeros((static_batch - len(inputs),) + tuple(inputs.shape[1:]), inputs.dtype)
    return np.concatenate([inputs, pad])


def compile_model(core: ov.Core, model_or_path: ov.Model | str | Path,
                  options: CompileOptions | None = None,
                  extra_config: Mapping[str, Any] | None = None) -> ov.CompiledModel:
    """Compile an ``ov.Model`` (or IR path) on ``options.device`` with ``options.to_ov_config()`` plus
    ``extra_config`` (properties that are not settings, e.g. ``{"PERF_COUNT": True}`` for the bench profile).

    The device is ``options.model_device[kind]`` when that maps the model's ``sdpose/kind``. With
    ``options.static_batch`` the dynamic batch is reshaped to ``options.batch`` first; a device that refuses the
    dynamic batch (the NPU compiles only static shapes) gets that reshape and a second try, logged either way.
    With ``options.int8_matmuls`` ``float`` (``auto``: on CPUs without VNNI) the activation FakeQuantize nodes of
    an INT8 model's matrix products are removed first (:mod:`edge_runtime.model.int8_matmuls`).
    A model with attention whose compiled graph leaves attention unfused (quantized keys on AVX2-only CPUs) is
    compiled again with its key FakeQuantize nodes removed (:func:`edge_runtime.model.attention.compile_fused`).

    Raises ModelFolderError (IR path missing) or SDPoseError-derived InputError when OpenVINO rejects the
    device or a property, naming the device and the config.
    """
    options = options if options is not None else CompileOptions()
    model: ov.Model | str = model_or_path
    if isinstance(model_or_path, (str, Path)):
        path = Path(model_or_path)
        if not path.is_file():
            raise ModelFolderError(f"{path}: IR file does not exist")
        needs_model = options.model_device or options.static_batch or options.int8_matmuls == "float"
        model = core.read_model(str(path)) if needs_model else str(path)
    kind = _model_kind(model) if isinstance(model, ov.Model) else None
    device_options = options.for_kind(kind)
    if isinstance(model, ov.Model) and wants_float_matmuls(options.int8_matmuls, device_options.device):
        float_matmul_activations(model)
    if device_options.device != options.device:
        logger.info("%s: compiled on %s (model_device), not %s", kind, device_options.device, options.device)
    if isinstance(model, ov.Model) and options.static_batch and has_dynamic_batch(model):
        logger.info("%s: dynamic batch reshaped to a static batch of %d before compiling on %s (static_batch)",
                    kind or model.friendly_name, options.batch, device_options.device)
        model = with_static_batch(model, options.batch)
    try:
        return _compile_on_device(core, model, device_options, extra_config)
    except InputError as exc:
        dynamic = core.read_model(model) if isinstance(model, str) else model
        if not has_dynamic_batch(dynamic):
            raise
        logger.warning("%s: device %s refused the model with a dynamic batch (%s); reshaping to a static batch of "
                       "%d and compiling again", kind or dynamic.friendly_name, device_options.device,
                       error_reason(exc), options.batch)
        return _compile_on_device(core, with_static_batch(dynamic, options.batch), device_options, extra_config)


def _compile_on_device(core: ov.Core, model: ov.Model | str, options: CompileOptions,
                       extra_config: Mapping[str, Any] | None) -> ov.CompiledModel:
    """:func:`compile_model` on ``options.device`` as given (cache folder of the device, fused attention)."""
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
