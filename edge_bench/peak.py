"""The machine's compute limit, measured and counted without torch.

Two halves, both used by ``sdpose-edge bench`` and ``sdpose-convert bench`` (tools; moved out of the runtime):

* :func:`measure_peak` — a MatMul micro-benchmark built directly with OpenVINO ops: a chain of ``depth``
  square MatMuls ``X [M,K] @ W_i [K,K]`` (weights are constants), compiled with the LATENCY hint (one
  stream over all cores, as the per-stage figures use) and the precision under test:

  ======== =====================================================================================
  f32      ``INFERENCE_PRECISION_HINT=f32``
  bf16     ``INFERENCE_PRECISION_HINT=bf16`` (AMX/AVX512-BF16 when the CPU has it; the compiled
           model's actual hint is recorded, so a CPU without bf16 shows ``f32`` there)
  int8     every MatMul input goes through a ``FakeQuantize`` (256 levels, activations u8-range
           symmetric, weights i8-range) so the CPU plugin's low-precision transformations run it
           as an int8 MatMul (VNNI/AMX-INT8); the graph stays torch- and NNCF-free.
  ======== =====================================================================================

  The figure is GFLOP/s = 2*M*K*K*depth / seconds (a multiply-add counts 2 FLOPs), the best over
  repeated timed calls (the limit is optimistic by construction).

* :func:`count_ir_flops` — FLOPs of an ``openvino.Model`` read from its Convolution / GroupConvolution /
  ConvolutionBackpropData / MatMul / ScaledDotProductAttention / Einsum shapes after reshaping the batch to
  1, with the same convention as ``torch.utils.flop_counter`` (2 FLOPs per multiply-add; element-wise ops,
  normalisation and softmax are not counted). Constant sub-graphs (e.g. MatMuls on folded constants) are
  skipped: OpenVINO folds them at compile time, so they cost nothing at run time.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from edge_runtime.model.cpu import compiled_property, executed_precisions
from edge_runtime.running.metrics import time_calls

logger = logging.getLogger(__name__)

#: precision name -> value of INFERENCE_PRECISION_HINT used to compile the micro-benchmark
PRECISION_HINTS = {"f32": "f32", "bf16": "bf16", "int8": "f32"}
PRECISIONS = tuple(PRECISION_HINTS)


@dataclass
class PeakResult:
    """One micro-benchmark result (``gflops`` = best GFLOP/s over ``repeats`` timed calls)."""

    precision: str
    gflops: float
    median_gflops: float
    size: int
    depth: int
    repeats: int
    flops_per_call: int
    hint: str
    inference_precision: str
    executed_precision: str
    num_threads: int
    device: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _fake_quantize(ops: Any, node: Any, low: float, high: float, levels: int) -> Any:
    lo = ops.constant(np.float32(low))
    hi = ops.constant(np.float32(high))
    return ops.fake_quantize(node, lo, hi, lo, hi, levels)


def build_matmul_model(size: int, depth: int, precision: str, seed: int = 0) -> Any:
    """An ``openvino.Model``: input ``x`` f32 [size,size] -> ``depth`` chained MatMuls with constant
    [size,size] weights (scaled 1/sqrt(size) so values stay O(1)); with FakeQuantize on both MatMul inputs
    when ``precision == "int8"``."""
    import openvino as ov
    import openvino.opset13 as ops

    if precision not in PRECISION_HINTS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if size < 16 or depth < 1:
        raise ValueError(f"size must be >= 16 and depth >= 1, got size={size}, depth={depth}")
    rng = np.random.default_rng(seed)
    x = ops.parameter([size, size], np.float32, name="x")
    node: Any = x
    for i in range(depth):
        weight = (rng.standard_normal((size, size), dtype=np.float32) / math.sqrt(size)).astype(np.float32)
        w: Any = ops.constant(weight, name=f"w{i}")
        if precision == "int8":
            # the ranges NNCF writes: activations signed 8 bit (256 levels, [-s, s*127/128]),
            # weights symmetric (255 levels); the CPU plugin then runs an i8 x i8 MatMul
            node = _fake_quantize(ops, node, -4.0, 4.0 * 127 / 128, 256)
            bound = float(np.abs(weight).max())
            w = _fake_quantize(ops, w, -bound, bound, 255)
        node = ops.matmul(node, w, transpose_a=False, transpose_b=False)
    node.get_output_tensor(0).set_names({"y"})
    return ov.Model([ops.result(node)], [x], f"peak_matmul_{precision}")


def measure_peak(precision: str, *, core: Any = None, device: str = "CPU", size: int = 2048, depth: int = 4,
                 min_seconds: float = 1.0, min_repeats: int = 3, max_repeats: int = 200,
                 num_threads: int | None = None) -> PeakResult:
    """Measure the MatMul peak GFLOP/s of ``device`` for ``precision`` (f32, bf16 or int8).

    Compiled with PERFORMANCE_HINT=LATENCY (batch 1 per-stage figures use the same hint) and, when given,
    INFERENCE_NUM_THREADS. Runs one warm-up call, then timed calls until both ``min_seconds`` and
    ``min_repeats`` are reached (at most ``max_repeats``).
    """
    import openvino as ov

    core = core if core is not None else ov.Core()
    model = build_matmul_model(size, depth, precision)
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY",
                              "INFERENCE_PRECISION_HINT": PRECISION_HINTS[precision]}
    if num_threads:
        config["INFERENCE_NUM_THREADS"] = int(num_threads)
    compiled = core.compile_model(model, device, config)
    request = compiled.create_infer_request()
    x = np.random.default_rng(1).standard_normal((size, size), dtype=np.float32)
    # one warm-up (the first call allocates and packs weights), then min_repeats .. max_repeats timed calls
    times = time_calls(lambda: request.infer({0: x}), runs=min_repeats, warmup=1, min_seconds=min_seconds,
                       max_runs=max_repeats)
    flops = 2 * size * size * size * depth
    threads = compiled_property(compiled, "INFERENCE_NUM_THREADS")
    result = PeakResult(
        precision=precision, gflops=flops / min(times) / 1e9, median_gflops=flops / float(np.median(times)) / 1e9,
        size=size, depth=depth, repeats=len(times), flops_per_call=flops, hint="LATENCY",
        inference_precision=compiled_property(compiled, "INFERENCE_PRECISION_HINT"),
        executed_precision=",".join(executed_precisions(compiled)),
        num_threads=int(threads) if threads.isdigit() else 0, device=device)
    logger.info("peak %s: %.1f GFLOP/s (median %.1f) on %s, %dx%d x%d MatMuls executed in %s, %d calls",
                precision, result.gflops, result.median_gflops, device, size, size, depth,
                result.executed_precision, len(times))
    return result


# ---------------------------------------------------------------------------------------------------------
# FLOPs counted from the IR
# ---------------------------------------------------------------------------------------------------------

def _static(shape: Any) -> list[int] | None:
    if shape.is_dynamic:
        return None
    return [int(d) for d in shape.to_shape()]


def _variable_nodes(model: Any) -> set[str]:
    """Unique names of the nodes that depend on a Parameter; the rest are constant sub-graphs that
    OpenVINO folds at compile time. ``get_ordered_ops`` is topological, so one pass suffices."""
    variable: set[str] = set()
    for node in model.get_ordered_ops():
        if node.get_type_name() == "Parameter" or any(
                inp.get_source_output().get_node().get_name() in variable for inp in node.inputs()):
            variable.add(node.get_name())
    return variable


def _matmul_flops(a: list[int], b: list[int], transpose_a: bool, transpose_b: bool) -> int:
    a = list(a)
    b = list(b)
    if len(a) == 1:
        a = [1, a[0]]
    if len(b) == 1:
        b = [b[0], 1]
    if transpose_a:
        a[-2], a[-1] = a[-1], a[-2]
    if transpose_b:
        b[-2], b[-1] = b[-1], b[-2]
    m, k = a[-2], a[-1]
    n = b[-1]
    batch_a, batch_b = a[:-2], b[:-2]
    rank = max(len(batch_a), len(batch_b))
    batch_a = [1] * (rank - len(batch_a)) + batch_a
    batch_b = [1] * (rank - len(batch_b)) + batch_b
    batch = math.prod(max(x, y) for x, y in zip(batch_a, batch_b))
    return 2 * batch * m * n * k


def _node_flops(node: Any) -> int | None:
    """FLOPs of one node (None when the op type is not a counted kind or a shape is dynamic)."""
    kind = node.get_type_name()
    if kind in ("Convolution", "GroupConvolution"):
        out = _static(node.get_output_partial_shape(0))
        w = _static(node.get_input_partial_shape(1))
        if out is None or w is None:
            return None
        if kind == "Convolution":  # w [Co, Ci, *k]
            per_out = w[1] * math.prod(w[2:])
        else:  # w [G, Co/G, Ci/G, *k]
            per_out = w[2] * math.prod(w[3:])
        return 2 * math.prod(out) * per_out
    if kind in ("ConvolutionBackpropData", "GroupConvolutionBackpropData"):
        x = _static(node.get_input_partial_shape(0))
        w = _static(node.get_input_partial_shape(1))
        if x is None or w is None:
            return None
        if kind == "ConvolutionBackpropData":  # w [Ci, Co, *k]: each input element scatters Co*k MACs
            per_in = w[1] * math.prod(w[2:])
        else:  # w [G, Ci/G, Co/G, *k]
            per_in = w[2] * math.prod(w[3:])
        return 2 * math.prod(x) * per_in
    if kind == "MatMul":
        a = _static(node.get_input_partial_shape(0))
        b = _static(node.get_input_partial_shape(1))
        if a is None or b is None:
            return None
        attrs = node.get_attributes()
        return _matmul_flops(a, b, bool(attrs.get("transpose_a")), bool(attrs.get("transpose_b")))
    if kind == "ScaledDotProductAttention":
        q = _static(node.get_input_partial_shape(0))
        k = _static(node.get_input_partial_shape(1))
        v = _static(node.get_input_partial_shape(2))
        if q is None or k is None or v is None:
            return None
        batch = math.prod(q[:-2])
        length, dim = q[-2], q[-1]
        source = k[-2]
        return 2 * batch * length * source * dim + 2 * batch * length * source * v[-1]
    if kind == "Einsum":
        # general contraction: 2 x product of every distinct label's extent
        eq = str(node.get_attributes().get("equation", ""))
        inputs_eq = eq.split("->")[0].split(",")
        extents: dict[str, int] = {}
        for idx, labels in enumerate(inputs_eq):
            shape = _static(node.get_input_partial_shape(idx))
            if shape is None or "." in labels or len(labels) != len(shape):
                return None
            for label, dim in zip(labels, shape):
                extents[label] = max(extents.get(label, 1), dim)
        return 2 * math.prod(extents.values())
    return None


COUNTED_OPS = ("Convolution", "GroupConvolution", "ConvolutionBackpropData", "GroupConvolutionBackpropData",
               "MatMul", "ScaledDotProductAttention", "Einsum")


def _batch_one(model: Any, batch: int) -> Any:
    """A clone of ``model`` with every dynamic first (batch) input dimension set to ``batch``."""
    from edge_runtime.model.models import with_static_batch

    return with_static_batch(model, batch)


def counted_nodes(model: Any, batch: int = 1) -> list[tuple[str, str, int | None]]:
    """``(friendly name, op type, FLOPs or None)`` of every counted-kind node of ``model`` at batch ``batch``
    that depends on an input (constant sub-graphs are folded at compile time); None = shape stayed dynamic."""
    model = _batch_one(model, batch)
    variable = _variable_nodes(model)
    return [(node.get_friendly_name(), node.get_type_name(), _node_flops(node))
            for node in model.get_ordered_ops()
            if node.get_type_name() in COUNTED_OPS and node.get_name() in variable]


def count_ir_flops(model: Any, batch: int = 1) -> dict[str, Any]:
    """FLOPs of one inference of an ``openvino.Model`` at batch ``batch``.

    The model is cloned and every input's first (batch) dimension set to ``batch`` when it is dynamic, so
    all shapes become static. Returns ``{"total": int, "by_op": {op_type: int}, "uncounted": [names]}``
    where ``uncounted`` lists counted-kind nodes whose shapes stayed dynamic. Ops on constant-only
    sub-graphs are skipped (folded at compile time).
    """
    by_op: dict[str, int] = {}
    uncounted: list[str] = []
    for name, kind, flops in counted_nodes(model, batch):
        if flops is None:
            uncounted.append(name)
            continue
        by_op[kind] = by_op.get(kind, 0) + int(flops)
    if uncounted:
        logger.warning("%s: %d nodes with dynamic shapes were not counted (e.g. %s)",
                       model.get_friendly_name(), len(uncounted), uncounted[0])
    return {"total": int(sum(by_op.values())), "by_op": by_op, "uncounted": uncounted}
