"""``int8_matmuls``: an INT8 model's matrix products with float activations (convolutions untouched), the setting's
way from YAML / command line to the compile, and ``auto``'s choice per CPU."""
from __future__ import annotations

import dataclasses

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from edge_runtime.config import validate
from edge_runtime.errors import InputError
from edge_runtime.model.cpu import cpu_info, executed_precisions
from edge_runtime.model.int8_matmuls import float_matmul_activations, wants_float_matmuls
from edge_runtime.model.models import CompileOptions, compile_model
from edge_runtime.settings.compile import compile_options


def _fq(node: ov.Output, low: float, high: float, levels: int = 256) -> ov.Node:
    lo, hi = ops.constant(np.float32(low)), ops.constant(np.float32(high))
    return ops.fake_quantize(node, lo, hi, lo, hi, levels)


def _quantized_model(quantized: bool = True) -> ov.Model:
    """x [1,64,8,8] -> INT8 conv (FakeQuantize on input and weights) -> reshape [64,64] -> INT8 MatMul
    (``quantized=False``: the same in float, no FakeQuantize)."""
    rng = np.random.default_rng(0)
    fq = _fq if quantized else (lambda node, *_: node)
    x = ops.parameter([1, 64, 8, 8], np.float32, name="x")
    conv_w = ops.constant(rng.uniform(-1, 1, (64, 64, 3, 3)).astype(np.float32))
    conv = ops.convolution(fq(x, -4, 4 * 127 / 128), fq(conv_w, -1, 1, 255), [1, 1], [1, 1], [1, 1], [1, 1])
    flat = ops.reshape(conv, ops.constant(np.array([64, 64], np.int64)), False)
    mm_w = ops.constant(rng.uniform(-1, 1, (64, 64)).astype(np.float32))
    out = ops.matmul(fq(flat, -50, 50 * 127 / 128), fq(mm_w, -1, 1, 255), False, True)
    return ov.Model([ops.result(out)], [x], "int8_toy")


def _fake_quantize_count(model: ov.Model) -> int:
    return sum(op.get_type_name() == "FakeQuantize" for op in model.get_ops())


def test_only_the_matmul_activation_quantizer_is_removed():
    model = _quantized_model()
    assert _fake_quantize_count(model) == 4
    assert float_matmul_activations(model) == 1
    assert _fake_quantize_count(model) == 3  # conv input + both weights keep theirs
    matmul = next(op for op in model.get_ops() if op.get_type_name() == "MatMul")
    assert matmul.input_value(0).get_node().get_type_name() == "Reshape"
    assert matmul.input_value(1).get_node().get_type_name() == "FakeQuantize"
    assert float_matmul_activations(model) == 0  # done already
    assert float_matmul_activations(_quantized_model().clone()) == 1


def test_compile_runs_the_matmul_in_float_and_the_convolution_in_int8():
    core = ov.Core()
    x = np.random.default_rng(1).uniform(-3, 3, (1, 64, 8, 8)).astype(np.float32)
    base = CompileOptions(device="CPU", performance_hint="LATENCY", inference_precision="f32", cache_dir=None)
    as_converted = compile_model(core, _quantized_model(), dataclasses.replace(base, int8_matmuls="int8"))
    floated = compile_model(core, _quantized_model(), dataclasses.replace(base, int8_matmuls="float"))
    int8_kinds = {"i8", "u8"}
    assert set(executed_precisions(as_converted, ("FullyConnected", "MatMul"))) & int8_kinds
    assert not set(executed_precisions(floated, ("FullyConnected", "MatMul"))) & int8_kinds
    assert set(executed_precisions(floated, ("Convolution",))) & int8_kinds
    exact = compile_model(core, _quantized_model(quantized=False), base)(x)[0]

    def cosine(a: np.ndarray) -> float:
        return float(np.sum(a * exact) / np.linalg.norm(a) / np.linalg.norm(exact))

    # the same INT8 weights; the MatMul's input no longer rounded (nor clipped) to 8 bits: closer to float
    assert cosine(floated(x)[0]) > cosine(as_converted(x)[0]) > 0.9


def test_auto_floats_only_on_a_cpu_without_vnni():
    info = cpu_info(None, "CPU")
    no_vnni = dataclasses.replace(info, int8_path="no_vnni")
    vnni = dataclasses.replace(info, int8_path="vnni")
    assert wants_float_matmuls("auto", "CPU", no_vnni) and not wants_float_matmuls("auto", "CPU", vnni)
    assert wants_float_matmuls("float", "CPU", vnni) and not wants_float_matmuls("int8", "CPU", no_vnni)
    assert not wants_float_matmuls("auto", "GPU", no_vnni)


def test_setting_reaches_the_compile_options():
    assert compile_options(validate({})).int8_matmuls == "auto"
    assert compile_options(validate({"int8_matmuls": "FLOAT"})).int8_matmuls == "float"
    assert compile_options(validate({"int8_matmuls": "int8"}, source="command line")).int8_matmuls == "int8"
    with pytest.raises(InputError, match="int8_matmuls"):
        validate({"int8_matmuls": "fp16"})
    with pytest.raises(InputError, match="int8_matmuls"):
        CompileOptions(int8_matmuls="half")
