"""What this CPU computes INT8 and bf16 with, and the precision a compiled model really runs at.

* **INT8 path.** CPUs with VNNI (AVX512-VNNI, AVX-VNNI) or AMX accumulate u8 x s8 products in 32 bits.
  Without VNNI (AVX2-only edge boxes, Skylake-SP, Zen 1-3), oneDNN's INT8 kernels add each *pair* of
  products into a saturating 16-bit sum, so a model quantized without NNCF's overflow fix can lose fidelity
  there. The flags come from the kernel's cpuid report, ``/proc/cpuinfo`` (Linux; elsewhere the path is
  "unknown"): OpenVINO's ``OPTIMIZATION_CAPABILITIES`` names INT8 but does not say which kernel family.
* **The ISA cap.** ``ONEDNN_MAX_CPU_ISA`` caps OpenVINO's CPU kernels; ``AVX512_CORE`` (or below) takes VNNI
  and bf16 away even where cpuid has them, which is how one machine emulates a CPU without VNNI.
  OpenVINO's capability list still follows cpuid, so bf16 support is ``BF16`` in the capabilities *and* a
  cap that allows bf16 kernels.
* **Running precision.** ``INFERENCE_PRECISION_HINT`` read back from the compiled model (bf16 on a bf16
  CPU unless f32 was asked for), with the runtime precisions of its convolutions and MatMuls (``i8`` where
  INT8 kernels run).
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_runtime.model.attention import runtime_attention

logger = logging.getLogger(__name__)

#: cpuid flags (as /proc/cpuinfo spells them) this module reports
REPORTED_FLAGS = ("avx2", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8",
                  "avx512_fp16")
#: cpuid flags that give INT8 kernels 32-bit accumulation
VNNI_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
#: ONEDNN_MAX_CPU_ISA values whose kernels have neither VNNI nor bf16 (oneDNN ISA names)
NO_VNNI_CAPS = frozenset({"SSE41", "AVX", "AVX2", "AVX512_CORE", "AVX512_MIC", "AVX512_MIC_4OPS"})
#: ONEDNN_MAX_CPU_ISA values that allow VNNI but not bf16
VNNI_NO_BF16_CAPS = frozenset({"AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE_VNNI"})
#: ONEDNN_MAX_CPU_ISA values that hold the kernels below AVX-512
BELOW_AVX512_CAPS = frozenset({"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2"})
#: the cap that emulates a CPU without VNNI on any AVX-512 machine (the AVX2 cap crashes the pose IR in
#: OpenVINO 2026.4)
EMULATE_NO_VNNI_CAP = "AVX512_CORE"
CPUINFO = Path("/proc/cpuinfo")


@dataclass(frozen=True)
class CpuInfo:
    """The INT8/bf16 facts of the CPU OpenVINO runs on.

    name: ``FULL_DEVICE_NAME``. flags: the :data:`REPORTED_FLAGS` cpuid has (``None``: unknown, no
    /proc/cpuinfo). capabilities: ``OPTIMIZATION_CAPABILITIES``. isa_cap: ``ONEDNN_MAX_CPU_ISA`` or None.
    int8_path: "vnni" (32-bit sums: VNNI or AMX), "no_vnni" (16-bit saturating pair sums) or "unknown".
    int8_isa: what the INT8 kernels use ("AMX", "AVX512-VNNI", "AVX-VNNI", or why there is none).
    bf16: bf16 kernels can run (capability present and not capped away).
    """

    name: str
    flags: tuple[str, ...] | None
    capabilities: tuple[str, ...]
    isa_cap: str | None
    int8_path: str
    int8_isa: str
    bf16: bool

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["flags"] = list(self.flags) if self.flags is not None else None
        d["capabilities"] = list(self.capabilities)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CpuInfo":
        """The inverse of :meth:`to_dict` (e.g. a report written by another process)."""
        flags = d.get("flags")
        return cls(name=str(d["name"]), flags=tuple(flags) if flags is not None else None,
                   capabilities=tuple(d.get("capabilities") or ()), isa_cap=d.get("isa_cap"),
                   int8_path=str(d["int8_path"]), int8_isa=str(d["int8_isa"]), bf16=bool(d["bf16"]))

    @property
    def avx512(self) -> bool:
        """AVX-512 kernels can run: cpuid has AVX-512F and no ISA cap holds the kernels at AVX2 or below. Without
        them, quantized attention keys keep the CPU plugin from fusing attention (edge_runtime.model.attention)."""
        return self.flags is not None and "avx512f" in self.flags and self.isa_cap not in BELOW_AVX512_CAPS

    def describe(self) -> str:
        """One line for logs and reports."""
        cap = f", capped by ONEDNN_MAX_CPU_ISA={self.isa_cap}" if self.isa_cap else ""
        return (f"{self.name}: INT8 path {self.int8_path} ({self.int8_isa}), bf16 "
                f"{'yes' if self.bf16 else 'no'}{cap}")


def read_cpu_flags(path: Path = CPUINFO) -> tuple[str, ...] | None:
    """The :data:`REPORTED_FLAGS` in the first ``flags`` line of ``/proc/cpuinfo``; None when unreadable."""
    try:
        with open(path, encoding="ascii", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    present = set(value.split())
                    return tuple(f for f in REPORTED_FLAGS if f in present)
    except OSError as exc:
        logger.debug("cannot read %s: %s", path, exc)
    return None


def _int8_path(flags: tuple[str, ...] | None, cap: str | None) -> tuple[str, str]:
    if cap in NO_VNNI_CAPS:
        return "no_vnni", f"none: ONEDNN_MAX_CPU_ISA={cap} caps the kernels below VNNI (16-bit saturating sums)"
    if flags is None:
        return "unknown", "unknown (no /proc/cpuinfo)"
    if "amx_int8" in flags and cap is None:
        return "vnni", "AMX"
    if "avx512_vnni" in flags and cap not in ("AVX2_VNNI", "AVX2_VNNI_2"):
        return "vnni", "AVX512-VNNI"
    if any(f in flags for f in VNNI_FLAGS):
        return "vnni", "AVX-VNNI"
    return "no_vnni", "none: no VNNI or AMX in cpuid (16-bit saturating sums)"


def cpu_info(core: Any = None, device: str = "CPU", cpuinfo: Path = CPUINFO) -> CpuInfo:
    """Read the CPU's facts (cached per device when ``core`` is None and ``cpuinfo`` is the default)."""
    if core is None and cpuinfo == CPUINFO:
        return _cached(device)
    return _read(core, device, cpuinfo)


@functools.lru_cache(maxsize=4)
def _cached(device: str) -> CpuInfo:
    return _read(None, device, CPUINFO)


def _read(core: Any, device: str, cpuinfo: Path) -> CpuInfo:
    import openvino as ov

    core = core if core is not None else ov.Core()
    try:
        name = str(core.get_property(device, "FULL_DEVICE_NAME"))
    except RuntimeError:
        name = device
    try:
        capabilities = tuple(str(c) for c in core.get_property(device, "OPTIMIZATION_CAPABILITIES"))
    except RuntimeError:
        capabilities = ()
    cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "").strip().upper() or None
    flags = read_cpu_flags(cpuinfo)
    path, isa = _int8_path(flags, cap)
    bf16 = "BF16" in capabilities and cap not in NO_VNNI_CAPS and cap not in VNNI_NO_BF16_CAPS
    return CpuInfo(name=name, flags=flags, capabilities=capabilities, isa_cap=cap, int8_path=path,
                   int8_isa=isa, bf16=bf16)


def running_precision(compiled: Any) -> dict[str, Any]:
    """{"inference_precision": what the compiled model runs its float ops at (read back from it),
    "executed": runtime precisions of its convolutions and MatMuls, e.g. ["bf16", "i8"],
    "attention": {"fused": attention nodes run fused, "unfused_softmax": attentions left unfused} or None}."""

    precision = compiled_property(compiled, "INFERENCE_PRECISION_HINT")
    try:
        executed = executed_precisions(compiled, ("FullyConnected", "MatMul", "Convolution", "Deconvolution"))
        fused, _, unfused = runtime_attention(compiled)
        attention: "dict[str, int] | None" = {"fused": int(sum(fused.values())), "unfused_softmax": unfused}
    except RuntimeError as exc:
        logger.debug("no runtime model: %s", exc)
        executed, attention = [], None
    return {"inference_precision": precision, "executed": executed, "attention": attention}


def amx_kernels(info: CpuInfo) -> bool:
    """AMX kernels can run: cpuid has AMX and no ``ONEDNN_MAX_CPU_ISA`` cap below AMX is set."""
    return "amx_bf16" in (info.flags or ()) and (info.isa_cap is None or "AMX" in info.isa_cap)


def bf16_capped_away(info: CpuInfo) -> bool:
    """OpenVINO offers BF16 (its capability list follows cpuid) but the ISA cap takes the bf16 kernels away:
    the device's default precision would then run bf16 on reference kernels."""
    return "BF16" in info.capabilities and not info.bf16


def recommended_precision_hint(info: CpuInfo, quantized: bool) -> str | None:
    """The INFERENCE_PRECISION_HINT the runtime uses when the user sets none, from measurements per ISA
    (docs/benchmarks.md, round 2 and issue 28):

    * ``ONEDNN_MAX_CPU_ISA`` caps the bf16 kernels away on a bf16 CPU -> "f32" for every folder: the device
      default stays bf16 and runs on reference kernels (an AMX Xeon under ``AVX512_CORE_VNNI``: bf16 MatMul
      9 GFLOP/s against 275 in f32; an INT8 VAE encoder 22.7 s against 14.2 s for the FP32 IR in f32);
    * an INT8 folder on a CPU with bf16 but without AMX kernels (AVX512_BF16, e.g. Zen 4, Cooper Lake) runs its
      crop faster with f32 float ops (Zen 4: 12.2 s vs 13.4 s at 1024x768; the VAE encoder's bf16 reorders cost
      more than they save) -> "f32";
    * with AMX the bf16 hint is faster (issue 28: INT8 VAE encoder 2.34 s bf16 vs 3.10 s f32, pose 2.21 s vs
      3.72 s), and without bf16 there is nothing to choose -> None (device default)."""
    if bf16_capped_away(info):
        return "f32"
    if quantized and info.bf16 and not amx_kernels(info):
        return "f32"
    return None


def recommended_static_batch(info: CpuInfo, batch: int) -> bool:
    """Whether the runtime reshapes the dynamic batch to a static one when the user leaves ``static_batch``
    unset (issue 28, interleaved full-size screens of the INT8 folder): on CPUs with AVX-512 kernels static shapes
    are faster (AMX: pose x0.90, VAE encoder x0.97; AVX512-VNNI: x0.95, x0.99), on AVX2 the screens were within
    noise. Only with ``batch`` 1, so no crop is ever padded."""
    return batch == 1 and info.avx512


def precision_hint_reason(info: CpuInfo) -> str:
    """Why :func:`recommended_precision_hint` chose f32 (for logs and ``precision_hint_source``)."""
    if bf16_capped_away(info):
        return f"bf16 kernels capped away by ONEDNN_MAX_CPU_ISA={info.isa_cap}"
    return "INT8 on bf16 without AMX"


def overflow_warning(meta: dict[str, Any], info: CpuInfo, source: str) -> str | None:
    """The warning for a model quantized with INT8 activations but without the overflow fix on every layer,
    run where INT8 has no VNNI; None when there is nothing to warn about."""
    if not meta.get("quantized") or meta.get("precision") not in ("int8", "hybrid"):
        return None
    fix = meta.get("overflow_fix")
    if info.int8_path != "no_vnni" or fix == "enable":
        return None
    recorded = f"overflow_fix={fix}" if fix else "no overflow fix recorded (NNCF's default, first_layer)"
    return (f"{source}: quantized ({meta.get('precision')}) with {recorded}, running on a CPU without VNNI "
            f"({info.int8_isa}): its INT8 layers can saturate and lose fidelity here. Re-convert with "
            "`sdpose-convert convert --overflow-fix enable` (the default since it was added), or run an "
            "FP32/fp16 model folder on this CPU.")




def int8_accumulation_ratio(core: Any = None, device: str = "CPU", channels: int = 16) -> dict[str, Any]:
    """Run one INT8 3x3 convolution of u8 255 activations times s8 127 weights and return
    {"ratio": computed / exact sum, "executed": runtime precision of the convolution}.

    With 32-bit accumulation (VNNI/AMX) the ratio is 1.0. Without VNNI each pair of products
    (2 x 255 x 127 = 64770) saturates at 32767, so the ratio is 32767 / 64770 = 0.506. This is the direct
    check that a CPU, or an ``ONEDNN_MAX_CPU_ISA`` cap, really computes the no-VNNI path.
    """
    import numpy as np
    import openvino as ov
    import openvino.opset13 as ops

    core = core if core is not None else ov.Core()

    def fq(node: Any, low: float, high: float, levels: int) -> Any:
        lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
        return ops.fake_quantize(node, lo, hi, lo, hi, levels)

    x = ops.parameter([1, channels, 3, 3], np.float32, name="x")
    weights = ops.constant(np.full((1, channels, 3, 3), 127.0, np.float32))
    conv = ops.convolution(fq(x, 0.0, 255.0, 256), fq(weights, -127.0, 127.0, 255), [1, 1], [0, 0], [0, 0],
                           [1, 1])
    model = ov.Model([ops.result(conv)], [x], "int8_accumulation_check")
    compiled = core.compile_model(model, device, {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(np.full((1, channels, 3, 3), 255.0, np.float32))[0]
    exact = 255.0 * 127.0 * 9 * channels
    executed = running_precision(compiled)["executed"]
    return {"ratio": float(np.asarray(result).ravel()[0] / exact), "executed": executed}


#: model folders already warned about (warn once per folder per process)
_WARNED: set[str] = set()


def describe_runtime(core: Any, device: str, compiled: Mapping[str, Any], metas: Mapping[str, Mapping[str, Any]],
                     source: str) -> dict[str, Any]:
    """Log what the runtime really computes with and return it for summary.json:
    {"device", "cpu": CpuInfo dict (CPU device only, else None), "precision": {kind: running_precision}}.
    Warns once per folder when INT8 activations without the overflow fix meet a CPU without VNNI."""
    on_cpu = device.upper().startswith("CPU")
    info = cpu_info(core, device) if on_cpu else None
    precision = {kind: running_precision(c) for kind, c in compiled.items()}
    if info is not None:
        logger.info("CPU: %s", info.describe())
        for kind, meta in metas.items():
            warning = overflow_warning(dict(meta), info, f"{source} ({kind})")
            if warning and source not in _WARNED:
                _WARNED.add(source)
                logger.warning("%s", warning)
    logger.info("running precision: %s", ", ".join(
        f"{k} {p['inference_precision']} (kernels {'/'.join(p['executed']) or '?'})" for k, p in precision.items()))
    return {"device": device, "cpu": info.to_dict() if info is not None else None, "precision": precision}


def compiled_property(compiled: Any, name: str) -> str:
    try:
        value = compiled.get_property(name)
    except RuntimeError:
        return "n/a"
    return str(value.get_type_name() if hasattr(value, "get_type_name") else value)


def executed_precisions(compiled: Any, layer_types: Iterable[str] = ("FullyConnected", "MatMul",
                                                                    "Convolution")) -> list[str]:
    """Sorted runtime precisions (e.g. ``["i8"]``, ``["bf16"]``) of the compiled model's MatMul-like
    and convolution nodes, read from the runtime (execution) graph."""
    wanted = set(layer_types)
    found: set[str] = set()
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        if "layerType" not in info or "runtimePrecision" not in info:
            continue
        if info["layerType"].astype(str) in wanted:
            found.add(info["runtimePrecision"].astype(str))
    return sorted(found)



__all__ = ["CpuInfo", "cpu_info", "read_cpu_flags", "running_precision", "overflow_warning", "describe_runtime", "executed_precisions", "compiled_property",
           "recommended_precision_hint", "recommended_static_batch", "precision_hint_reason", "amx_kernels", "bf16_capped_away",
           "int8_accumulation_ratio", "EMULATE_NO_VNNI_CAP", "NO_VNNI_CAPS"]
