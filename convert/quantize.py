"""NNCF quantization of one OpenVINO component IR (detector, VAE encoder, pose UNet+head).

Precision modes (per component):

``fp32``          no change.
``fp16``          no graph change; the weights are stored as f16 when saved (:func:`save_component`).
``int8``          ``nncf.quantize``: INT8 weights *and* activations (FakeQuantize on convolutions and MatMuls).
                  The pose UNet uses ``nncf.ModelType.TRANSFORMER`` (SmoothQuant on MatMuls, attention-aware
                  quantizer placement); the other components use the default CNN model type.
``hybrid``        as optimum-intel does for Stable Diffusion UNets: weight-only INT8 compression of every
                  MatMul (linear / attention projection) weight, then INT8 activation quantization with the
                  weighted MatMuls in the ignored scope (SmoothQuant off for MatMuls): FakeQuantize lands on the
                  convolutions and, as in optimum-intel, on the Q/K/V inputs of ScaledDotProductAttention;
                  no MatMul gets an activation FakeQuantize.
``int8_weights``  ``nncf.compress_weights`` INT8 (asymmetric) weight-only compression; activations stay float.
``int4_weights``  ``nncf.compress_weights`` INT4 (asymmetric, grouped) weight-only compression; the layers
                  NNCF keeps in 8 bit (first/last, ``ratio``) follow NNCF's defaults.

An IR that is already quantized (rt_info ``sdpose/quantized`` true, FakeQuantize nodes, or low-bit weight
constants decompressed by Convert->Multiply) is refused: quantizing twice compounds the error silently.

Calibration data is an iterable of model inputs, one sample per item, batch 1: either a dict
``{input name: array}`` or a single array for single-input IRs (``image`` u8 [1,H,W,3] BGR for the VAE
encoder, ``latent`` f32 [1,4,H/8,W/8] for the pose IR, letterboxed u8 [1,h,w,3] for the detector).
Re-iterable sources (lists, :class:`Reiterable`) are streamed at every pass NNCF makes; one-shot
iterators are materialised first (NNCF iterates the data several times).
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

from convert.nncf_memory import statistics_outputs_first
from convert.quant_graph import count_quantization_nodes, weighted_matmuls
from edge_runtime.errors import SDPoseError
from edge_runtime.model.metadata import COMPONENT_KINDS, RT_NAMESPACE, read_metadata, write_metadata

logger = logging.getLogger(__name__)

#: every precision mode, in the order the CLI lists them
MODES = ("fp32", "fp16", "int8", "hybrid", "int8_weights", "int4_weights")
#: modes that change the graph (the saved IR carries quantized=true)
QUANTIZED_MODES = frozenset({"int8", "hybrid", "int8_weights", "int4_weights"})
#: modes that need calibration data (activation statistics)
CALIBRATED_MODES = frozenset({"int8", "hybrid"})
#: component kinds this module knows how to quantize
KINDS = COMPONENT_KINDS
#: kinds quantized with nncf.ModelType.TRANSFORMER (the SD UNet has attention blocks everywhere)
TRANSFORMER_KINDS = frozenset({"pose", "vae_pose"})

#: --overflow-fix values -> NNCF ``OverflowFix`` member names. CPUs without VNNI (no AVX512-VNNI, AVX-VNNI or
#: AMX) add pairs of u8 x s8 products in saturating 16-bit sums; NNCF's overflow fix narrows weights to 7 bits
#: so those sums cannot saturate: on every quantized layer (enable), on the first one only (first_layer, NNCF's
#: own default) or nowhere (disable).
OVERFLOW_FIX = {"enable": "ENABLE", "first_layer": "FIRST_LAYER", "disable": "DISABLE"}
#: the default: one model folder that keeps its fidelity on CPUs with and without VNNI (docs/benchmarks.md)
DEFAULT_OVERFLOW_FIX = "enable"


class QuantizationError(SDPoseError):
    """A component cannot be quantized as asked (already quantized, bad mode, no calibration data)."""


@dataclass(frozen=True)
class QuantizeOptions:
    """Tunable NNCF settings (``configs/convert.yaml`` section ``advanced``).

    smooth_quant_alpha: SmoothQuant alpha for MatMuls in ``int8`` mode on TRANSFORMER kinds; ``None`` keeps
        NNCF's default (0.95 for TRANSFORMER), a negative value disables SmoothQuant.
    fast_bias_correction: NNCF's FastBiasCorrection (True) or the full, much slower BiasCorrection (False).
    bias_correction: False disables bias correction altogether.
    preset: "performance" (symmetric activations) or "mixed" (asymmetric activations); None = NNCF default
        for the model type (mixed for TRANSFORMER, performance otherwise).
    weights_sym: symmetric weight-only compression (int8_weights / int4_weights / hybrid's MatMul weights).
    int4_group_size, int4_ratio: INT4 group size and share of layers in INT4 (the rest INT8).
    ignored_types, ignored_names: extra ignored scope (OpenVINO op types / friendly names).
    overflow_fix: "enable" | "first_layer" | "disable" (see :data:`OVERFLOW_FIX`); int8 and hybrid modes.
    model_type: NNCF model type of ``int8`` mode: None = per kind (``transformer`` for the pose UNet, NNCF's
        default otherwise), "transformer" or "default" (e.g. ``components.vae_encoder.advanced.model_type:
        transformer`` for the VAE encoder's mid-block attention).
    """

    smooth_quant_alpha: float | None = None
    fast_bias_correction: bool = True
    bias_correction: bool = True
    preset: str | None = None
    weights_sym: bool = False
    int4_group_size: int = 64
    int4_ratio: float = 1.0
    ignored_types: tuple[str, ...] = ()
    ignored_names: tuple[str, ...] = ()
    overflow_fix: str = DEFAULT_OVERFLOW_FIX
    model_type: str | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None, source: str = "advanced") -> "QuantizeOptions":
        """Build from a mapping (YAML section); unknown keys or bad types -> QuantizationError naming them."""
        if d is None:
            return cls()
        if not isinstance(d, Mapping):
            raise QuantizationError(f"{source}: expected a mapping of option -> value, got {type(d).__name__}")
        known = {f.name for f in fields(cls)}
        values: dict[str, Any] = {}
        for key, value in d.items():
            name = str(key).replace("-", "_")
            if name not in known:
                raise QuantizationError(f"{source}.{key}: unknown option; expected one of {sorted(known)}")
            if name in ("ignored_types", "ignored_names"):
                if value is None:
                    value = ()
                if isinstance(value, str) or not isinstance(value, Sequence):
                    raise QuantizationError(f"{source}.{key}: expected a list of strings, got {value!r}")
                value = tuple(str(v) for v in value)
            values[name] = value
        opts = cls(**values)
        opts.check(source)
        return opts

    def check(self, source: str = "advanced") -> None:
        """Raise QuantizationError naming the field when a value is out of range."""
        if self.smooth_quant_alpha is not None and (isinstance(self.smooth_quant_alpha, bool)
                                                    or not isinstance(self.smooth_quant_alpha, (int, float))
                                                    or self.smooth_quant_alpha > 1):
            raise QuantizationError(f"{source}.smooth_quant_alpha: expected null, a negative number (off) or "
                                    f"a value in [0, 1], got {self.smooth_quant_alpha!r}")
        for name in ("fast_bias_correction", "bias_correction", "weights_sym"):
            if not isinstance(getattr(self, name), bool):
                raise QuantizationError(f"{source}.{name}: expected true or false, got {getattr(self, name)!r}")
        if self.overflow_fix not in OVERFLOW_FIX:
            raise QuantizationError(f"{source}.overflow_fix: expected one of {list(OVERFLOW_FIX)}, "
                                    f"got {self.overflow_fix!r}")
        if self.model_type not in (None, "transformer", "default"):
            raise QuantizationError(f"{source}.model_type: expected null, 'transformer' or 'default', "
                                    f"got {self.model_type!r}")
        if self.preset not in (None, "performance", "mixed"):
            raise QuantizationError(f"{source}.preset: expected null, 'performance' or 'mixed', got {self.preset!r}")
        if isinstance(self.int4_group_size, bool) or not isinstance(self.int4_group_size, int) \
                or (self.int4_group_size < 1 and self.int4_group_size != -1):
            raise QuantizationError(f"{source}.int4_group_size: expected a positive integer or -1 (per channel), "
                                    f"got {self.int4_group_size!r}")
        if isinstance(self.int4_ratio, bool) or not isinstance(self.int4_ratio, (int, float)) \
                or not 0 < self.int4_ratio <= 1:
            raise QuantizationError(f"{source}.int4_ratio: expected a number in (0, 1], got {self.int4_ratio!r}")


class Reiterable:
    """A re-iterable view over a generator factory: every ``iter()`` calls ``factory()`` afresh.

    Lets NNCF make several passes over data that is produced lazily (crops read from disk one by one).
    ``length`` (optional) is reported by ``len()`` so NNCF's progress bars know the total.
    """

    def __init__(self, factory: Callable[[], Iterable[Any]], length: int | None = None) -> None:
        self._factory = factory
        self._length = length

    def __iter__(self) -> Iterator[Any]:
        return iter(self._factory())

    def __len__(self) -> int:
        if self._length is None:
            raise TypeError("length unknown")
        return self._length


# ---------------------------------------------------------------------------------------------- graph checks

def check_not_quantized(model: ov.Model, source: str | Path = "<model>") -> None:
    """Raise QuantizationError naming ``source`` if the IR is already quantized or weight-compressed."""
    meta: dict[str, Any] = {}
    if RT_NAMESPACE in model.get_rt_info():
        meta = read_metadata(model, source)
    if meta.get("quantized"):
        raise QuantizationError(
            f"{source}: this IR is already quantized (rt_info sdpose/quantized=true, precision="
            f"{meta.get('precision')!r}); quantizing it again would compound the error. Quantize the FP32 "
            "export instead (sdpose-convert export --precision fp32, or sdpose-convert convert from the checkpoint)")
    counts = count_quantization_nodes(model)
    if counts["fake_quantize"] or counts["compressed_weights"]:
        raise QuantizationError(
            f"{source}: this IR already contains quantization ({counts['fake_quantize']} FakeQuantize nodes, "
            f"{counts['compressed_weights']} low-bit weight constants); refusing to quantize it again. "
            "Start from an FP32 (or FP16) IR.")


# ---------------------------------------------------------------------------------------------- calibration

def _first_pass_items(calibration: Iterable[Any]) -> Iterable[Any]:
    """Return a re-iterable: one-shot iterators are materialised (NNCF makes several passes)."""
    if isinstance(calibration, Iterator):
        items = list(calibration)
        logger.debug("materialised %d calibration items from a one-shot iterator", len(items))
        return items
    return calibration


def _as_model_input(item: Any, input_names: list[str], source: str) -> Any:
    """A calibration item as NNCF's OpenVINO backend expects it: {input name: ndarray} or one ndarray."""
    if isinstance(item, Mapping):
        missing = [n for n in input_names if n not in item]
        if missing:
            raise QuantizationError(f"{source}: calibration item lacks input(s) {missing} "
                                    f"(has {sorted(map(str, item))})")
        return {n: np.asarray(item[n]) for n in input_names}
    if len(input_names) != 1:
        raise QuantizationError(f"{source}: the IR has inputs {input_names}; calibration items must be dicts")
    return np.asarray(item)


class _CountingData:
    """Re-iterable over model inputs that converts items and counts what NNCF actually consumed."""

    def __init__(self, items: Iterable[Any], input_names: list[str], source: str, limit: int) -> None:
        self._items = items
        self._names = input_names
        self._source = source
        self._limit = limit
        self.max_seen = 0

    def __iter__(self) -> Iterator[Any]:
        n = 0
        for item in self._items:
            if n >= self._limit:
                break
            n += 1
            self.max_seen = max(self.max_seen, n)
            yield _as_model_input(item, self._names, self._source)

    def __len__(self) -> int:
        try:
            return min(self._limit, len(self._items))  # type: ignore[arg-type]
        except TypeError:
            return self._limit


def _nncf():
    import nncf

    # NNCF's own progress bars (statistics collection, bias correction) print at INFO
    nncf.set_log_level(logging.INFO)
    return nncf


# ---------------------------------------------------------------------------------------------- quantize

def quantize_component(model: ov.Model, kind: str, mode: str, calibration: Iterable[Any] | None,
                       subset_size: int = 300, options: QuantizeOptions | None = None,
                       calib_info: Mapping[str, Any] | None = None,
                       source: str | Path = "<model>") -> ov.Model:
    """Quantize one component IR in ``mode`` and record how in its rt_info metadata.

    Args:
        model: FP32/FP16 ``ov.Model`` of one component (never a quantized one: refused).
        kind: "detector" | "vae_encoder" | "pose" | "vae_pose" (chooses model type and ignored scope).
        mode: one of :data:`MODES`.
        calibration: model inputs, one batch-1 sample per item (see module doc); needed for int8/hybrid,
            optional for weight-only modes (unused), ignored for fp32/fp16.
        subset_size: number of calibration samples NNCF collects statistics on.
        options: NNCF settings (:class:`QuantizeOptions`); also its ``ignored_types``/``ignored_names``.
        calib_info: what to record about the calibration set (e.g. {"name", "hash", "split"}).
        source: the IR file, used in error messages.
    Returns:
        The quantized ``ov.Model`` (a new object for quantized modes, ``model`` itself for fp32/fp16), with
        rt_info sdpose/precision=mode, quantized, quantization={mode, subset_size, calib, nncf version,
        smooth_quant / bias correction settings, ignored scope, node counts}.
    Raises:
        QuantizationError: unknown mode/kind, already quantized IR, missing or empty calibration data.
    """
    options = options if options is not None else QuantizeOptions()
    options.check()
    source = str(source)
    if mode not in MODES:
        raise QuantizationError(f"{source}: precision mode {mode!r} is unknown; expected one of {list(MODES)}")
    if kind not in KINDS:
        raise QuantizationError(f"{source}: component kind {kind!r} is unknown; expected one of {list(KINDS)}")
    if isinstance(subset_size, bool) or not isinstance(subset_size, int) or subset_size < 1:
        raise QuantizationError(f"{source}: subset_size must be a positive integer, got {subset_size!r}")
    check_not_quantized(model, source)
    old_meta = read_metadata(model, source) if RT_NAMESPACE in model.get_rt_info() else {}

    if mode not in QUANTIZED_MODES:
        write_metadata(model, {"precision": mode, "quantized": False})
        return model

    nncf = _nncf()
    input_names = [inp.get_any_name() for inp in model.inputs]
    data = None
    if mode in CALIBRATED_MODES:
        if calibration is None:
            raise QuantizationError(f"{source}: precision '{mode}' needs calibration data (--calib)")
        data = _CountingData(_first_pass_items(calibration), input_names, source, subset_size)
        if next(iter(data), None) is None:
            raise QuantizationError(f"{source}: the calibration data for '{kind}' is empty")

    record: dict[str, Any] = {"mode": mode, "nncf_version": nncf.__version__, "kind": kind}
    extra_ignored = nncf.IgnoredScope(types=list(options.ignored_types), names=list(options.ignored_names),
                                      validate=False)
    extra_ignored_names = 0  # nodes a mode keeps out of activation quantization on its own (hybrid)
    if mode in CALIBRATED_MODES:
        with statistics_outputs_first():  # same statistics, each tensor freed once reduced (convert.nncf_memory)
            if mode == "int8":
                result, settings = _int8(nncf, model, kind, data, subset_size, options, extra_ignored)
            else:
                result, settings, extra_ignored_names = _hybrid(nncf, model, kind, data, subset_size, options,
                                                                extra_ignored)
    else:
        result, settings = _weights_only(nncf, model, mode, options, extra_ignored)
    record.update(settings)

    if data is not None:
        record["subset_size"] = subset_size
        record["calibration_samples"] = data.max_seen
    if calib_info:
        record["calibration"] = dict(calib_info)
    record["ignored_types"] = list(options.ignored_types)
    record["ignored_names_count"] = len(options.ignored_names) + extra_ignored_names
    record["nodes"] = count_quantization_nodes(result)
    # NNCF keeps rt_info, but restore it explicitly so the contract never depends on that
    if old_meta:
        write_metadata(result, old_meta)
    meta = {"precision": mode, "quantized": True, "quantization": record}
    if "overflow_fix" in record:  # int8 / hybrid: INT8 activations, so the no-VNNI arithmetic matters
        meta["overflow_fix"] = record["overflow_fix"]
    write_metadata(result, meta)
    logger.info("%s: %s done: %s", kind, mode, record["nodes"])
    return result


def _preset(nncf: Any, options: QuantizeOptions) -> Any:
    if options.preset is None:
        return None
    return nncf.QuantizationPreset.MIXED if options.preset == "mixed" else nncf.QuantizationPreset.PERFORMANCE


def _advanced(nncf: Any, options: QuantizeOptions, matmul_alpha: float | None) -> Any:
    from nncf.quantization.advanced_parameters import AdvancedSmoothQuantParameters, OverflowFix

    kwargs: dict[str, Any] = {"disable_bias_correction": not options.bias_correction,
                              "overflow_fix": OverflowFix[OVERFLOW_FIX[options.overflow_fix]]}
    if matmul_alpha is not None:
        kwargs["smooth_quant_alphas"] = AdvancedSmoothQuantParameters(matmul=float(matmul_alpha))
    return nncf.AdvancedQuantizationParameters(**kwargs)


def _int8(nncf: Any, model: ov.Model, kind: str, data: _CountingData, subset_size: int,
          options: QuantizeOptions, ignored: Any) -> tuple[ov.Model, dict[str, Any]]:
    """INT8 weights + activations; returns (model, the settings used, for the record)."""
    transformer = options.model_type == "transformer" if options.model_type else kind in TRANSFORMER_KINDS
    alpha = options.smooth_quant_alpha if transformer else None
    settings = {
        "overflow_fix": options.overflow_fix,
        "model_type": "transformer" if transformer else "default",
        "smooth_quant_alpha_matmul": (alpha if alpha is not None else "nncf default (0.95)")
        if transformer else "n/a (not a transformer model type)",
        "fast_bias_correction": options.fast_bias_correction,
        "bias_correction": options.bias_correction,
        "preset": options.preset or "nncf default",
    }
    return nncf.quantize(
        model, nncf.Dataset(data), subset_size=subset_size, preset=_preset(nncf, options),
        fast_bias_correction=options.fast_bias_correction,
        model_type=nncf.ModelType.TRANSFORMER if transformer else None,
        ignored_scope=ignored, advanced_parameters=_advanced(nncf, options, alpha)), settings


def _hybrid(nncf: Any, model: ov.Model, kind: str, data: _CountingData, subset_size: int,
            options: QuantizeOptions, ignored: Any) -> tuple[ov.Model, dict[str, Any], int]:
    """Weight-only INT8 on MatMul/embedding weights, then INT8 activations on the convolutions only.
    Returns (model, the settings used, the number of MatMuls kept out of activation quantization)."""
    to_compress = weighted_matmuls(model)
    wc_mode = nncf.CompressWeightsMode.INT8_SYM if options.weights_sym else nncf.CompressWeightsMode.INT8_ASYM
    conv_types = ["Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData"]
    wc_ignored = nncf.IgnoredScope(types=list(ignored.types) + conv_types, names=list(ignored.names),
                                   validate=False)
    logger.info("%s: hybrid step 1/2: weight-only %s on %d MatMul/embedding weights", kind, wc_mode.value,
                len(to_compress))
    compressed = nncf.compress_weights(model, mode=wc_mode, ignored_scope=wc_ignored)
    ptq_ignored = nncf.IgnoredScope(types=list(ignored.types), names=list(ignored.names) + to_compress,
                                    validate=False)
    logger.info("%s: hybrid step 2/2: INT8 activation quantization of convolutions (subset %d)", kind,
                subset_size)
    settings = {
        "overflow_fix": options.overflow_fix,
        "model_type": "transformer",
        "weight_compression": wc_mode.value,
        "weight_compressed_ops": len(to_compress),
        "smooth_quant_alpha_matmul": "off (-1: MatMul weights are compressed)",
        "fast_bias_correction": options.fast_bias_correction,
        "bias_correction": options.bias_correction,
        "preset": options.preset or "nncf default",
    }
    return nncf.quantize(
        compressed, nncf.Dataset(data), subset_size=subset_size, preset=_preset(nncf, options),
        fast_bias_correction=options.fast_bias_correction, model_type=nncf.ModelType.TRANSFORMER,
        ignored_scope=ptq_ignored, advanced_parameters=_advanced(nncf, options, -1)), settings, len(to_compress)


def _weights_only(nncf: Any, model: ov.Model, mode: str, options: QuantizeOptions,
                  ignored: Any) -> tuple[ov.Model, dict[str, Any]]:
    """Weight-only compression; returns (model, the settings used)."""
    settings: dict[str, Any] = {}
    if mode == "int8_weights":
        wc_mode = nncf.CompressWeightsMode.INT8_SYM if options.weights_sym else nncf.CompressWeightsMode.INT8_ASYM
        kwargs: dict[str, Any] = {}
    else:
        wc_mode = nncf.CompressWeightsMode.INT4_SYM if options.weights_sym else nncf.CompressWeightsMode.INT4_ASYM
        from nncf.quantization.advanced_parameters import AdvancedCompressionParameters, GroupSizeFallbackMode

        # channels not divisible by the group size get the largest smaller group that fits (NNCF ADJUST)
        kwargs = {"group_size": options.int4_group_size, "ratio": float(options.int4_ratio),
                  "advanced_parameters": AdvancedCompressionParameters(
                      group_size_fallback_mode=GroupSizeFallbackMode.ADJUST)}
        settings.update({"group_size": options.int4_group_size, "ratio": float(options.int4_ratio)})
    settings["weight_compression"] = wc_mode.value
    ignored_arg = ignored if (ignored.types or ignored.names) else None
    return nncf.compress_weights(model, mode=wc_mode, ignored_scope=ignored_arg, **kwargs), settings


# ---------------------------------------------------------------------------------------------- save

def save_component(model: ov.Model, path: str | Path, mode: str) -> Path:
    """Save an IR (``path`` .xml + .bin). Weights are stored as f16 only in ``fp16`` mode; every other mode
    keeps its float constants in f32 (quantized modes already store their low-bit weights as such)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    ov.save_model(model, str(path), compress_to_fp16=(mode == "fp16"))
    return path


def describe_options(options: QuantizeOptions) -> dict[str, Any]:
    """Plain dict of the options (for reports)."""
    d = asdict(options)
    d["ignored_types"] = list(options.ignored_types)
    d["ignored_names"] = list(options.ignored_names)
    return d


__all__ = ["OVERFLOW_FIX", "DEFAULT_OVERFLOW_FIX", "MODES", "QUANTIZED_MODES", "CALIBRATED_MODES", "QuantizeOptions", "QuantizationError", "Reiterable",
           "quantize_component", "check_not_quantized", "count_quantization_nodes", "weighted_matmuls",
           "save_component", "describe_options"]
