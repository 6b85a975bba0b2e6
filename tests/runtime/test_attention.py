"""Attention fusion (edge_runtime.model.attention): key FakeQuantize nodes found and removed on a hand-built graph, the
model otherwise unchanged, and the compile path that removes them only where attention does not fuse."""
from __future__ import annotations

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from edge_runtime.model.attention import (FusionReport, attention_fusion, compile_fused, count_attention_ops,
                                    dequantize_attention_keys)

TOKENS, HEADS, DIM = 64, 2, 8


def _fq(node, levels=256):
    lo, hi = ops.constant(np.float32(-4.0)), ops.constant(np.float32(4.0))
    return ops.fake_quantize(node, lo, hi, lo, hi, levels)


def _to_heads(node):
    shaped = ops.reshape(node, ops.constant(np.array([1, TOKENS, HEADS, DIM], np.int64)), special_zero=False)
    return ops.transpose(shaped, ops.constant(np.array([0, 2, 1, 3], np.int64)))


def attention_model(quantize_key: bool = True, key_fq_shared: bool = False) -> ov.Model:
    """x [1,T,C] -> self-attention with q, k, v projections; FakeQuantize on the query and (optionally) the key
    before their Reshape/Transpose, as NNCF places them. ``key_fq_shared``: the key's FakeQuantize also feeds a
    second output, so it must not be removed."""
    rng = np.random.default_rng(0)
    x = ops.parameter([1, TOKENS, HEADS * DIM], np.float32, name="x")
    proj = {n: ops.matmul(x, ops.constant(rng.standard_normal((HEADS * DIM, HEADS * DIM)).astype(np.float32)),
                          False, False) for n in "qkv"}
    key = _fq(proj["k"]) if quantize_key else proj["k"]
    sdpa = ops.scaled_dot_product_attention(_to_heads(_fq(proj["q"])), _to_heads(key), _to_heads(proj["v"]),
                                            causal=False)
    results = [ops.result(sdpa)]
    if key_fq_shared:
        results.append(ops.result(ops.relu(key)))
    return ov.Model(results, [x], "attention")


def _count(model: ov.Model, type_name: str) -> int:
    return sum(op.get_type_name() == type_name for op in model.get_ops())


def _infer(model: ov.Model, x: np.ndarray) -> np.ndarray:
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled({0: x})[0]


def test_key_fake_quantize_is_removed_and_nothing_else():
    model = attention_model()
    x = np.random.default_rng(1).standard_normal((1, TOKENS, HEADS * DIM)).astype(np.float32)
    reference = attention_model(quantize_key=False)
    assert _count(model, "FakeQuantize") == 2 and count_attention_ops(model) == 1
    assert dequantize_attention_keys(model) == 1
    assert _count(model, "FakeQuantize") == 1  # the query keeps its quantization
    # the key now enters the attention in float: the model computes what the model without key FQ computes
    np.testing.assert_allclose(_infer(model, x), _infer(reference, x), rtol=1e-5, atol=1e-5)
    assert dequantize_attention_keys(model) == 0  # idempotent


def test_a_fake_quantize_with_other_consumers_is_kept():
    model = attention_model(key_fq_shared=True)
    assert dequantize_attention_keys(model) == 0
    assert _count(model, "FakeQuantize") == 2


def test_float_model_has_nothing_to_remove():
    assert dequantize_attention_keys(attention_model(quantize_key=False)) == 0


def test_compile_fused_recompiles_only_when_attention_is_unfused():
    """compile_fused compiles once when the compiled graph runs every attention fused; otherwise it removes the
    key FakeQuantize nodes and compiles again (the report says how many)."""
    core = ov.Core()
    calls: list[int] = []

    def compile_fn(m: ov.Model) -> ov.CompiledModel:
        calls.append(_count(m, "FakeQuantize"))
        return core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    model = attention_model()
    compiled, report = compile_fused(compile_fn, model)
    assert isinstance(report, FusionReport) and report.attention_ops == 1
    if len(calls) == 1:  # this CPU fused the quantized attention as read
        assert report.all_fused and report.keys_dequantized == 0 and _count(model, "FakeQuantize") == 2
    else:
        assert calls == [2, 1] and report.keys_dequantized == 1
    assert report.to_dict() == attention_fusion(model, compiled, report.keys_dequantized).to_dict()


def test_compile_fused_can_dequantize_before_the_first_compile():
    calls: list[int] = []
    core = ov.Core()

    def compile_fn(m: ov.Model) -> ov.CompiledModel:
        calls.append(_count(m, "FakeQuantize"))
        return core.compile_model(m, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})

    _, report = compile_fused(compile_fn, attention_model(), dequantize_first=True)
    assert calls == [1] and report.keys_dequantized == 1 and report.all_fused


@pytest.mark.parametrize("fused,unfused,ops_,expected", [(1, 0, 1, True), (0, 1, 1, False), (0, 0, 0, True),
                                                          (13, 13, 26, False)])
def test_all_fused(fused, unfused, ops_, expected):
    assert FusionReport(ops_, fused, {}, {}, unfused).all_fused is expected
