"""``sdpose-edge bench --profile``: where each component's time goes, per layer type and executed precision.

Each component IR of each model folder is compiled alone (LATENCY hint, no cache, ``PERF_COUNT: True``) and
run ``warmup + runs`` times on batch 1; OpenVINO's performance counters (``request.get_profiling_info()``)
give each runtime node's time. The CPU plugin reports per node the *average over every call so far*, so
the counters are read after the warm-up and after the last run and the warm-up calls are taken out:
``steady = (avg_end * (warmup + runs) - avg_warmup * warmup) / runs``.

Nodes are grouped by ``layer_type`` (the profiling node type: Convolution, MatMul, Reorder, Subgraph ...)
and ``exec_precision`` (the precision the kernel really ran in: the runtime graph's ``runtimePrecision``,
else the suffix of the kernel name, e.g. ``jit_gemm_i8`` -> i8). Per group: ``time_ms`` (per inference),
``share`` (of the component's profiled time; the rows sum to it), ``gflops`` (GFLOP per inference of the
group's nodes, counted on the IR by :func:`edge_bench.peak.counted_nodes`; null when none of its nodes has
a FLOP count: element-wise ops, normalisation, softmax, reorders), ``achieved_gflop_s`` (GFLOP over the
time of the nodes that have a count) and ``of_peak`` (that rate over the measured MatMul peak of the
precision: i8/u8 -> int8 peak, bf16 -> bf16, f32 -> f32; :func:`edge_bench.peak.measure_peak`).

A runtime node's FLOPs are those of the IR nodes in its ``originalLayersNames`` (fusions keep the names of
the ops they absorbed); an IR node claimed by several runtime nodes (e.g. attention decomposed into two
MatMuls) is split equally among them. Runtime nodes that map to no counted IR op have no FLOPs.
"""
from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

#: node types reported together on their own line (layout and precision conversions, pure overhead)
REORDER_TYPES = ("Reorder", "Convert")
#: executed precision -> the measured peak it is compared with
PEAK_OF_PRECISION = {"i8": "int8", "u8": "int8", "bf16": "bf16", "f32": "f32"}
TOP_NODES = 10
#: name suffixes OpenVINO's low-precision transformations give the nodes that replace a quantized op
DEQUANTIZATION_SUFFIXES = ("/DequantizationMultiply", "/DequantizationSubtract")
PROFILE_KINDS = ("detector", "vae_encoder", "pose", "vae_pose")
_PRECISION_SUFFIX = re.compile(r"_(i8|u8|bf16|f16|f32|i32|fp32|I8|U8|BF16|FP32|FP16)$")


@dataclass
class NodeTime:
    """One runtime node's time per inference (steady state) and its FLOPs (None when not known)."""

    name: str
    layer_type: str
    exec_type: str
    exec_precision: str
    time_ms: float
    flops: float | None


def exec_precision_of(exec_type: str, runtime_precision: str | None) -> str:
    """The precision a kernel ran in: the runtime graph's ``runtimePrecision`` when known, else the kernel
    name's suffix (``jit_avx2_f32`` -> f32, ``jit_gemm_i8`` -> i8), else ``undef``."""
    if runtime_precision and runtime_precision not in ("undefined", "dynamic", "undef"):
        return runtime_precision.lower()
    found = _PRECISION_SUFFIX.search(exec_type or "")
    if found is None:
        return "undef"
    value = found.group(1).lower()
    return {"fp32": "f32", "fp16": "f16"}.get(value, value)


def _runtime_nodes(compiled: Any) -> dict[str, tuple[str | None, list[str]]]:
    """{runtime node name: (runtimePrecision, [original IR friendly names])} of the compiled model."""
    nodes: dict[str, tuple[str | None, list[str]]] = {}
    for node in compiled.get_runtime_model().get_ordered_ops():
        info = node.get_rt_info()
        precision = info["runtimePrecision"].astype(str) if "runtimePrecision" in info else None
        names = info["originalLayersNames"].astype(str) if "originalLayersNames" in info else ""
        nodes[node.get_friendly_name()] = (precision, [n for n in names.split(",") if n])
    return nodes


def _counted_names(names: Sequence[str], ir_flops: dict[str, int | None]) -> list[str]:
    """The counted IR nodes among a runtime node's original names; the low-precision transformations rename an
    INT8 MatMul ``X`` to ``X/DequantizationMultiply`` (its dequantization), which maps back to ``X``."""
    found = []
    for name in names:
        for suffix in DEQUANTIZATION_SUFFIXES:
            if name.endswith(suffix) and name[:-len(suffix)] in ir_flops:
                name = name[:-len(suffix)]
        if name in ir_flops and name not in found:
            found.append(name)
    return found


def _runtime_flops(runtime: dict[str, tuple[str | None, list[str]]],
                   ir_flops: dict[str, int | None]) -> dict[str, float | None]:
    """FLOPs per runtime node from the IR nodes it absorbed (an IR node claimed by k runtime nodes counts
    1/k in each); None for runtime nodes that absorbed no counted IR node or one with unknown FLOPs."""
    resolved = {rt_name: _counted_names(names, ir_flops) for rt_name, (_, names) in runtime.items()}
    claims: dict[str, int] = {}
    for names in resolved.values():
        for n in names:
            claims[n] = claims.get(n, 0) + 1
    out: dict[str, float | None] = {}
    for rt_name, counted in resolved.items():
        if not counted or any(ir_flops[n] is None for n in counted):
            out[rt_name] = None
            continue
        out[rt_name] = float(sum(int(ir_flops[n] or 0) / claims[n] for n in counted))
    return out


def _counter_totals(request: Any, calls: int) -> dict[str, tuple[str, str, float]]:
    """{node: (node type, exec type, total seconds over ``calls`` calls)} of executed nodes (the counters
    are averages over every call so far)."""
    if calls == 0:
        return {}
    return {p.node_name: (p.node_type, p.exec_type, p.real_time.total_seconds() * calls)
            for p in request.get_profiling_info() if str(p.status).endswith("EXECUTED")}


def profile_compiled(compiled: Any, data: np.ndarray, ir_flops: dict[str, int | None], runs: int,
                     warmup: int) -> tuple[list[NodeTime], list[float], Any]:
    """Run ``compiled`` (compiled with PERF_COUNT) ``warmup + runs`` times on ``data``; returns the steady
    per-node times, the wall seconds of the timed runs and the last output."""
    request = compiled.create_infer_request()
    for _ in range(warmup):
        request.infer({0: data})
    before = _counter_totals(request, warmup)
    walls = []
    for _ in range(runs):
        t0 = time.perf_counter()
        request.infer({0: data})
        walls.append(time.perf_counter() - t0)
    after = _counter_totals(request, warmup + runs)
    runtime = _runtime_nodes(compiled)
    flops = _runtime_flops(runtime, ir_flops)
    nodes = []
    for name, (node_type, exec_type, total) in after.items():
        steady = max(0.0, total - before.get(name, ("", "", 0.0))[2]) / runs
        precision = exec_precision_of(exec_type, runtime.get(name, (None, []))[0])
        nodes.append(NodeTime(name, node_type, exec_type, precision, 1000.0 * steady, flops.get(name)))
    output = np.array(request.get_output_tensor(0).data)
    return nodes, walls, output


def _rate(flops: float, time_ms: float, peak: dict[str, Any] | None) -> tuple[float | None, float | None]:
    """(achieved GFLOP/s, fraction of ``peak``) for ``flops`` done in ``time_ms``."""
    if not flops or time_ms <= 0:
        return None, None
    achieved = flops / (time_ms / 1000.0) / 1e9
    return achieved, (achieved / peak["gflops"]) if peak else None


def group_rows(nodes: Sequence[NodeTime], peaks: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows per (layer_type, exec_precision), costliest first: ``layer_type``, ``exec_precision``,
    ``time_ms``, ``share``, ``gflops`` (GFLOP per inference or None), ``achieved_gflop_s``, ``peak_gflop_s``,
    ``of_peak``, ``nodes``, ``nodes_without_flops``."""
    total = sum(n.time_ms for n in nodes)
    groups: dict[tuple[str, str], list[NodeTime]] = {}
    for n in nodes:
        groups.setdefault((n.layer_type, n.exec_precision), []).append(n)
    rows = []
    for (layer_type, precision), members in groups.items():
        time_ms = sum(n.time_ms for n in members)
        known = [n for n in members if n.flops]
        flops = sum(float(n.flops or 0) for n in known)
        peak = peaks.get(PEAK_OF_PRECISION.get(precision, ""))
        achieved, of_peak = _rate(flops, sum(n.time_ms for n in known), peak)
        rows.append({"layer_type": layer_type, "exec_precision": precision, "time_ms": time_ms,
                     "share": time_ms / total if total > 0 else 0.0, "gflops": flops / 1e9 if known else None,
                     "achieved_gflop_s": achieved, "peak_gflop_s": peak["gflops"] if peak else None,
                     "of_peak": of_peak, "nodes": len(members),
                     "nodes_without_flops": len(members) - len(known)})
    return sorted(rows, key=lambda r: -r["time_ms"])


def summarize_nodes(nodes: Sequence[NodeTime], walls: Sequence[float], peaks: dict[str, Any]) -> dict[str, Any]:
    """One component's profile section: rows, the ten costliest nodes, reorders/converts, times."""
    total = sum(n.time_ms for n in nodes)
    top = sorted(nodes, key=lambda n: -n.time_ms)[:TOP_NODES]
    reorders = [n for n in nodes if n.layer_type in REORDER_TYPES]
    reorder_ms = sum(n.time_ms for n in reorders)
    top_rows = []
    for n in top:
        achieved, of_peak = _rate(float(n.flops or 0), n.time_ms, peaks.get(PEAK_OF_PRECISION.get(n.exec_precision, "")))
        top_rows.append({"name": n.name, "layer_type": n.layer_type, "exec_type": n.exec_type,
                         "exec_precision": n.exec_precision, "time_ms": n.time_ms,
                         "share": n.time_ms / total if total > 0 else 0.0,
                         "gflops": n.flops / 1e9 if n.flops else None, "achieved_gflop_s": achieved,
                         "of_peak": of_peak})
    return {"rows": group_rows(nodes, peaks), "top_nodes": top_rows,
            "reorders_converts": {"layer_types": list(REORDER_TYPES), "time_ms": reorder_ms,
                                  "share": reorder_ms / total if total > 0 else 0.0, "nodes": len(reorders)},
            "profiled_ms": total, "wall_median_ms": 1000.0 * float(np.median(walls)),
            "executed_nodes": len(nodes)}


def _input_for(kind: str, model: Any, inputs: dict[str, Any], earlier: dict[str, np.ndarray]) -> np.ndarray:
    """Batch-1 input of a component: the bench crop (vae_encoder, vae_pose), the vae_encoder's latent (pose),
    else seeded random data of the input's shape and type (detector: a letterboxed frame)."""
    if kind in ("vae_encoder", "vae_pose"):
        return inputs["crop"]
    if kind == "pose" and "vae_encoder" in earlier:
        return earlier["vae_encoder"]
    shape = [1] + [d.get_length() for d in list(model.inputs[0].get_partial_shape())[1:]]
    rng = np.random.default_rng(0)
    if model.inputs[0].get_element_type().is_integral():
        return rng.integers(0, 256, size=shape, dtype=np.uint8)
    return rng.standard_normal(shape).astype(np.float32)


def profile_folder(folder_path: str | Path, inputs: dict[str, Any], peaks: dict[str, Any], *, core: Any,
                   device: str, runs: int, warmup: int, hint: str | None,
                   model_device: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """{component kind: profile section} of every component of one model folder (one compiled at a time)."""
    from edge_runtime.model.models import CompileOptions, ModelFolder, compile_model

    from .peak import counted_nodes

    folder = ModelFolder(folder_path, core=core)
    kinds = [k for k in PROFILE_KINDS if folder.has(k)]
    paths = {k: folder.ir_path(k) for k in kinds}
    del folder
    options = CompileOptions(device=device, performance_hint="LATENCY", inference_precision=hint, cache_dir=None,
                             model_device=model_device)
    sections: dict[str, dict[str, Any]] = {}
    earlier: dict[str, np.ndarray] = {}
    for kind in kinds:
        model = core.read_model(str(paths[kind]))
        ir_flops = {name: flops for name, _, flops in counted_nodes(model)}
        data = _input_for(kind, model, inputs, earlier)
        compiled = compile_model(core, model, options, extra_config={"PERF_COUNT": True})
        del model
        nodes, walls, earlier[kind] = profile_compiled(compiled, data, ir_flops, runs, max(warmup, 1))
        del compiled
        section = summarize_nodes(nodes, walls, peaks)
        section.update({"folder": str(Path(folder_path).resolve()), "component": kind,
                        "device": options.for_kind(kind).device,
                        "hint": hint or "device default", "runs": runs, "warmup": max(warmup, 1),
                        "gflops_ir": sum(f for f in ir_flops.values() if f) / 1e9,
                        "gflops_mapped": sum(r["gflops"] or 0.0 for r in section["rows"])})
        sections[kind] = section
        logger.info("profile %s/%s: %.1f ms profiled, %.1f ms wall (median), %d nodes", Path(folder_path).name,
                    kind, section["profiled_ms"], section["wall_median_ms"], section["executed_nodes"])
    return sections


def run_profiles(models: Sequence[str | Path], inputs: dict[str, Any], peaks: dict[str, Any], *, core: Any,
                 device: str, runs: int, warmup: int,
                 model_device: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """The ``profile`` section of bench.json: {component: section} for one folder, {"<folder>/<component>":
    section} for several. Float folders run with the f32 hint, quantized ones with the runtime's per-ISA default
    (:func:`edge_bench.variants.quantized_hint`)."""
    from edge_runtime.model.models import ModelFolder

    from .variants import quantized_hint

    profile: dict[str, dict[str, Any]] = {}
    for path in models:
        quantized = bool(ModelFolder(path, core=core).pose_meta.get("quantized"))
        sections = profile_folder(path, inputs, peaks, core=core, device=device, runs=runs, warmup=warmup,
                                  hint=quantized_hint(core, device) if quantized else "f32",
                                  model_device=model_device)
        for kind, section in sections.items():
            profile[kind if len(models) == 1 else f"{Path(path).name}/{kind}"] = section
    return profile
