"""What quantization an OpenVINO IR carries: FakeQuantize placement and low-bit (compressed) weight constants,
read from the graph alone (:func:`count_quantization_nodes`), and the weighted MatMuls hybrid mode compresses
(:func:`weighted_matmuls`). Used by :mod:`convert.quantize` (refusing to quantize twice, the quantization
record) and by the tests and reports that check where quantization landed.
"""
from __future__ import annotations

import collections
from typing import Any

import openvino as ov

#: element types of weight constants that NNCF's weight compression produces
_LOW_BIT_TYPES = frozenset({"u8", "i8", "u4", "i4", "nf4", "u2", "i2", "u1", "f8e4m3", "f8e5m2", "f4e2m1",
                            "f8e8m0"})
#: ops a weight may pass through between its Constant and the consuming op
_WEIGHT_PATH_OPS = frozenset({"Convert", "FakeQuantize", "Reshape", "Subtract", "Multiply", "Transpose",
                              "Unsqueeze", "Squeeze"})


def _const_behind(node: Any) -> Any | None:
    """The Constant a weight input comes from, following Convert/FakeQuantize/Reshape/... (first inputs)."""
    seen = 0
    while seen < 16:
        kind = node.get_type_name()
        if kind == "Constant":
            return node
        if kind not in _WEIGHT_PATH_OPS or node.get_input_size() == 0:
            return None
        node = node.input_value(0).get_node()
        seen += 1
    return None


def weighted_matmuls(model: ov.Model) -> list[str]:
    """Friendly names of MatMul ops with a constant (weight) input [linear layers, attention projections]
    and of Gather ops reading a float constant table (embeddings): the ops hybrid mode weight-compresses."""
    names = []
    for op in model.get_ops():
        kind = op.get_type_name()
        if kind == "MatMul":
            if any(_const_behind(op.input_value(i).get_node()) is not None for i in range(2)):
                names.append(op.get_friendly_name())
        elif kind == "Gather":
            src = op.input_value(0)
            if src.get_element_type().is_real() and _const_behind(src.get_node()) is not None:
                names.append(op.get_friendly_name())
    return names


def count_quantization_nodes(model: ov.Model) -> dict[str, int]:
    """Count quantization patterns in an IR.

    Returns {"fake_quantize": FakeQuantize ops, "fq_on_conv": convolutions (incl. group/transposed) with a
    FakeQuantize on their activation input, "fq_on_matmul": MatMuls with a FakeQuantize on an activation
    (non-constant) input, "compressed_weights": low-bit Constants decompressed by Convert (weight-compression
    pattern Constant(u8/i8/u4/...) -> Convert [-> Subtract] -> Multiply), "compressed_matmul_weights":
    MatMuls whose weight is such a compressed constant, "compressed_conv_weights": same for convolutions,
    "convolutions", "matmuls"}.

    Note: NNCF's OpenVINO backend stores the weights of FakeQuantize'd ops as i8/u8 constants (Constant ->
    Convert -> Multiply), so int8 and hybrid IRs show their quantized weights as compressed constants too;
    what tells int8 from hybrid is ``fq_on_matmul`` (activation quantization of MatMuls).
    """
    counts = collections.Counter()
    conv_types = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData")

    def is_compressed(out: Any) -> bool:
        const = _const_behind(out.get_node())
        if const is None:
            return False
        return const.get_output_element_type(0).get_type_name() in _LOW_BIT_TYPES

    def fq_on_activation(op: Any) -> bool:
        for i in range(op.get_input_size()):
            src = op.input_value(i).get_node()
            if src.get_type_name() == "FakeQuantize" and _const_behind(src.input_value(0).get_node()) is None:
                return True
        return False

    for op in model.get_ops():
        kind = op.get_type_name()
        if kind == "FakeQuantize":
            counts["fake_quantize"] += 1
        elif kind == "Constant" and op.get_output_element_type(0).get_type_name() in _LOW_BIT_TYPES:
            if any(t.get_node().get_type_name() == "Convert" for t in op.output(0).get_target_inputs()):
                counts["compressed_weights"] += 1
        elif kind in conv_types:
            counts["convolutions"] += 1
            if fq_on_activation(op):
                counts["fq_on_conv"] += 1
            if is_compressed(op.input_value(1)):
                counts["compressed_conv_weights"] += 1
        elif kind == "MatMul":
            counts["matmuls"] += 1
            if fq_on_activation(op):
                counts["fq_on_matmul"] += 1
            if any(is_compressed(op.input_value(i)) for i in range(2)):
                counts["compressed_matmul_weights"] += 1
        elif kind == "MVN":
            in_head = ".head." in op.get_friendly_name()
            quantized = op.input_value(0).get_node().get_type_name() == "FakeQuantize"
            counts["mvn"] += 1
            counts["fq_on_mvn"] += quantized
            counts["head_mvn"] += in_head
            counts["fq_on_head_mvn"] += in_head and quantized
    keys = ("fake_quantize", "fq_on_conv", "fq_on_matmul", "compressed_weights", "compressed_matmul_weights",
            "compressed_conv_weights", "convolutions", "matmuls", "mvn", "fq_on_mvn", "head_mvn", "fq_on_head_mvn")
    return {k: int(counts.get(k, 0)) for k in keys}
