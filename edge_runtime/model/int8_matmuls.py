"""Matrix products of an INT8 folder on CPUs without VNNI: run them in float, from the same folder.

NNCF puts a FakeQuantize on the activation input of every MatMul (attention projections, feed-forward layers) and
the CPU plugin then runs those as INT8 ``FullyConnected`` kernels. Without VNNI (AVX2-only CPUs, or AVX-512 without
VNNI) an INT8 matrix product sums pairs of u8 x s8 products in 16 bits (saturating) and gains nothing per FLOP
over f32: the MatMul micro-benchmark of ``sdpose-edge bench`` measures 182 GFLOP/s int8 against 178 f32 on an AVX2
EPYC, and the full-size pose's 130 quantized MatMuls, timed at their own shapes, take 11.7 s as converted against
9.8 s with float activations (docs/benchmarks.md, "Per-layer profile at full size"), while INT8 *convolutions* run
about twice as fast as f32 there. With ``int8_matmuls: float`` the
runtime replaces those activation FakeQuantize nodes by their inputs before compiling (only the ones whose every
consumer is a MatMul): the weights keep their INT8 values (their FakeQuantize folds into f32 constants at compile
time), the activations stay in float, so the result moves towards the FP32 model, and the convolutions stay INT8.
``auto`` (the default) does this on CPUs whose INT8 path is ``no_vnni`` (:func:`edge_runtime.model.cpu.cpu_info`),
``int8`` never (the folder as converted). Float folders have no such FakeQuantize: nothing changes for them.
"""
from __future__ import annotations

import logging
from typing import Any

import openvino as ov

logger = logging.getLogger(__name__)

#: values of the ``int8_matmuls`` setting
MODES = ("auto", "int8", "float")


def wants_float_matmuls(mode: str, device: str, info: Any = None) -> bool:
    """Whether a compile on ``device`` runs INT8 matrix products in float: ``float`` always, ``int8`` never,
    ``auto`` on a CPU device whose INT8 path is ``no_vnni`` (``info``: a :class:`~edge_runtime.model.cpu.CpuInfo`,
    looked up when None)."""
    if mode == "float":
        return True
    if mode != "auto" or not device.upper().startswith("CPU"):
        return False
    if info is None:
        from edge_runtime.model.cpu import cpu_info

        info = cpu_info(None, "CPU")
    return info.int8_path == "no_vnni"


def _matmul_activation_quantizers(model: ov.Model) -> list[ov.Node]:
    """FakeQuantize nodes on a non-constant input whose every consumer is a MatMul."""
    found = []
    for op in model.get_ordered_ops():
        if op.get_type_name() != "FakeQuantize" or op.input_value(0).get_node().get_type_name() == "Constant":
            continue
        consumers = [target.get_node() for target in op.output(0).get_target_inputs()]
        if consumers and all(c.get_type_name() == "MatMul" for c in consumers):
            found.append(op)
    return found


def float_matmul_activations(model: ov.Model) -> int:
    """Replace, in place, each activation FakeQuantize that feeds only MatMuls by its input; returns how many
    (0 for a float model or one already done)."""
    quantizers = _matmul_activation_quantizers(model)
    for fq in quantizers:
        fq.output(0).replace(fq.input_value(0))
    if quantizers:
        model.validate_nodes_and_infer_types()
        logger.info("%s: %d INT8 matrix-product inputs run in float (int8_matmuls)", model.get_friendly_name(),
                    len(quantizers))
    return len(quantizers)
