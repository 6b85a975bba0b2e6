"""Attention fusion on the CPU plugin: count it, and regain it where quantized keys break it.

OpenVINO's CPU plugin runs ``ScaledDotProductAttention`` as one fused kernel (a Snippets ``Subgraph`` or an
``ScaledAttn``/``MHA`` node) that never materialises the attention matrix. NNCF quantizes the query and the key of
every self-attention (a FakeQuantize before their Reshape/Transpose). On AVX-512 CPUs the fused kernel takes both
quantized inputs; on AVX2-only CPUs (no AVX-512, with or without AVX-VNNI) it does not, and the attention runs as
separate MatMul / Softmax / MatMul nodes: at 1024x768 each self-attention then holds a 12,288 x 12,288 f32 matrix
(+11 GiB for the pose IR, +2 GiB for the VAE encoder). Cross-attentions, whose key comes from the folded text
constant and carries no FakeQuantize, fuse everywhere with only the query quantized.

:func:`compile_fused` compiles a model; when the compiled graph shows attention that did not fuse, it replaces the
FakeQuantize nodes on the attention **keys** by their inputs (the key then enters the attention in float, as in
the cross-attentions; the query keeps its quantization) and compiles again. Folders converted earlier are served
the same way, and a CPU that fuses the quantized keys keeps them (the check costs one look at the compiled
graph; the second compile happens only where fusion failed). On a CPU without AVX-512 kernels the runtime removes
the key FakeQuantize nodes before the first compile (measured there: the fused attention runs in f32 either way, so
the quantized keys bring nothing), and checks the compiled graph all the same.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable

import openvino as ov

logger = logging.getLogger(__name__)

#: runtime-graph layer types of the CPU plugin's fused attention kernels
FUSED_LAYERS = ("Subgraph", "ScaledDotProductAttention", "ScaledAttn", "MHA")
#: ops a quantized key passes through between its FakeQuantize and the attention (shape only)
_SHAPE_OPS = ("Reshape", "Transpose", "Squeeze", "Unsqueeze")


@dataclass(frozen=True)
class FusionReport:
    """What a compiled model does with its attentions.

    attention_ops: ``ScaledDotProductAttention`` ops in the IR; fused: compiled nodes that run a whole attention;
    unfused_softmax: Softmax nodes left alone in the compiled graph (an attention that did not fuse);
    runtime_precisions: fused nodes by execution precision; keys_dequantized: key FakeQuantize nodes removed
    before this compile (0: the model as read)."""

    attention_ops: int
    fused: int
    fused_by_node: dict[str, int]
    runtime_precisions: dict[str, int]
    unfused_softmax: int
    keys_dequantized: int = 0

    @property
    def all_fused(self) -> bool:
        """Every attention of the IR runs fused (vacuously true for a model without attention)."""
        return self.unfused_softmax == 0 and self.fused >= self.attention_ops

    def to_dict(self) -> dict[str, Any]:
        return {"attention_ops": self.attention_ops, "fused": self.fused, "fused_by_node": dict(self.fused_by_node),
                "runtime_precisions": dict(self.runtime_precisions), "unfused_softmax": self.unfused_softmax,
                "keys_dequantized": self.keys_dequantized}


def runtime_attention(compiled: ov.CompiledModel) -> tuple[dict[str, int], dict[str, int], int]:
    """From the compiled runtime graph: fused attention nodes by layer type, the same by execution precision,
    and the Softmax nodes left alone (attentions that did not fuse). Devices whose runtime graph names no CPU
    layer types give nothing fused and nothing unfused."""
    fused: dict[str, int] = {}
    precisions: dict[str, int] = {}
    unfused = 0
    for op in compiled.get_runtime_model().get_ops():
        info = op.get_rt_info()
        if "layerType" not in info:
            continue
        layer = info["layerType"].astype(str)
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        holds_softmax = "Softmax" in names or "scaled_dot_product" in names
        if layer in FUSED_LAYERS and holds_softmax:
            fused[layer] = fused.get(layer, 0) + 1
            precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else "?"
            precisions[precision] = precisions.get(precision, 0) + 1
        elif layer == "Softmax":
            unfused += 1
    return fused, precisions, unfused


def attention_fusion(model: ov.Model, compiled: ov.CompiledModel, keys_dequantized: int = 0) -> FusionReport:
    """Count the IR's attentions and the compiled runtime graph's nodes that execute them: a fused node (holding
    the whole QK^T-softmax-AV) vs separate Softmax nodes."""
    sdpa = count_attention_ops(model)
    fused, precisions, unfused = runtime_attention(compiled)
    return FusionReport(sdpa, int(sum(fused.values())), fused, precisions, unfused, keys_dequantized)


def count_attention_ops(model: ov.Model) -> int:
    """``ScaledDotProductAttention`` ops in the IR."""
    return int(sum(op.get_type_name() == "ScaledDotProductAttention" for op in model.get_ops()))


def _key_fake_quantize(sdpa: ov.Node) -> "ov.Node | None":
    """The FakeQuantize that feeds the key (input 1) of an attention op through shape-only ops, if any, and only
    if the key path is its one consumer (so removing it changes nothing else)."""
    node = sdpa.input_value(1).get_node()
    while node.get_type_name() in _SHAPE_OPS:
        if len(node.output(0).get_target_inputs()) != 1:
            return None
        node = node.input_value(0).get_node()
    if node.get_type_name() != "FakeQuantize" or len(node.output(0).get_target_inputs()) != 1:
        return None
    return node


def dequantize_attention_keys(model: ov.Model) -> int:
    """Replace each FakeQuantize on an attention key by its input, in place; returns how many were replaced
    (0 for a float model or one already done)."""
    stripped = 0
    for op in model.get_ordered_ops():
        if op.get_type_name() != "ScaledDotProductAttention":
            continue
        fq = _key_fake_quantize(op)
        if fq is None:
            continue
        fq.output(0).replace(fq.input_value(0))
        stripped += 1
    if stripped:
        model.validate_nodes_and_infer_types()
    return stripped


def compile_fused(compile_fn: Callable[[ov.Model], ov.CompiledModel], model: ov.Model,
                  dequantize_first: bool = False) -> tuple[ov.CompiledModel, FusionReport]:
    """Compile ``model`` with ``compile_fn``; if attention did not fuse and the keys carry FakeQuantize, remove
    those (in ``model``, in place) and compile again. ``dequantize_first``: remove them before the first compile
    (a CPU known not to fuse quantized keys: one compile instead of two). Returns the compiled model and its
    fusion report."""
    stripped = dequantize_attention_keys(model) if dequantize_first else 0
    compiled = compile_fn(model)
    report = attention_fusion(model, compiled, stripped)
    if report.all_fused or stripped:
        if not report.all_fused:
            logger.warning("%s: %d of %d attentions run unfused with their keys in float",
                           model.get_friendly_name(), report.attention_ops - report.fused, report.attention_ops)
        return compiled, report
    stripped = dequantize_attention_keys(model)
    if not stripped:
        logger.warning("%s: %d of %d attentions run unfused and no quantized key was found to remove",
                       model.get_friendly_name(), report.attention_ops - report.fused, report.attention_ops)
        return compiled, report
    del compiled
    recompiled = compile_fn(model)
    fixed = attention_fusion(model, recompiled, keys_dequantized=stripped)
    logger.info("%s: attention fused %d/%d as read; %d/%d with the %d quantized keys in float",
                model.get_friendly_name(), report.fused, report.attention_ops, fixed.fused, fixed.attention_ops,
                stripped)
    return recompiled, fixed
