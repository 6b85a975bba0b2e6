"""Benchmark suite, runtime side: ``sdpose-edge bench --models MODELS [--models MODELS2 ...] --out BENCH``.

Measures, on this machine and in one run so that a noisy shared machine still gives trustworthy ratios:

1. **Per stage and variant latency** (batch 1, one crop, PERFORMANCE_HINT=LATENCY): stages ``detector``
   (letterbox + IR + NMS on one frame), ``vae_encoder`` (crop u8 -> latent), ``pose`` (latent -> heatmaps),
   ``vae_pose`` (fused IR, when the folder has one), ``decode`` (DARK-UDP decoding of the heatmaps) and
   ``crop`` (vae_encoder + pose + decode of the same run). Variants: every model folder given, read by its
   ``rt_info`` precision; an unquantized folder runs twice, with INFERENCE_PRECISION_HINT f32 and bf16; a
   quantized one (int8, hybrid, ...) with the device's default hint (recorded). Stages run one after
   another; for each stage every variant's model is compiled first, then each of the ``warmup + runs``
   rounds visits every variant in turn (A B C, A B C, ...), so drift and other jobs on the machine hit all
   variants alike; then that stage's models are freed (at full size all variants' models together would
   not fit in 24 GB next to the PyTorch original). Median and p95 over ``runs``; ``crop`` sums the i-th
   run of its stages.
   ``sdpose-convert bench`` adds the original PyTorch pipeline as the first variant (the speed-up baseline).
2. **Compute limit**: FLOPs of each stage (from the IR here, :func:`edge_runtime.peak.count_ir_flops`;
   from the torch modules in ``sdpose-convert bench``) divided by the measured MatMul peak
   (:func:`edge_runtime.peak.measure_peak`) of the precision each part runs in (int8 for ops fed by a
   FakeQuantize, else the variant's float precision) -> ``limit_ms``, and the achieved fraction
   ``limit_ms / median_ms``.
3. **End to end** in file mode on a multi-person video with ``--video``/``--detections``: frames/s and
   persons/s of the async THROUGHPUT :class:`~edge_runtime.pipeline.Pipeline` vs a plain synchronous loop
   (LATENCY hint, one ``PoseEstimator`` call per frame), each in its own subprocess that reports its peak
   RSS; cold start (empty CACHE_DIR) vs warm start (cache populated): compile time and time to the first
   result.
4. Writes ``BENCH/bench.json``, ``BENCH/bench.md`` and ``BENCH/bench.png`` (bar chart, needs matplotlib,
   which is not a runtime dependency: without it the chart is skipped and bench.md says so).

Only openvino, numpy, cv2 and the standard library are imported at module level (matplotlib lazily).
"""
from __future__ import annotations

import argparse
import datetime as _dt
import gc
import json
import logging
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import InputError, SDPoseError
from .metrics import memory_status, peak_rss_mb  # noqa: F401  (memory_status re-exported for scripts)

logger = logging.getLogger(__name__)

BENCH_FORMAT_VERSION = 1
#: stage order in tables and the chart
STAGE_ORDER = ("detector", "vae_encoder", "pose", "vae_pose", "decode", "crop")
#: stages that make up one crop (split chain)
CROP_STAGES = ("vae_encoder", "pose", "decode")
PYTORCH = "pytorch-fp32"
DEFAULT_RUNS = 5
DEFAULT_WARMUP = 1
DEFAULT_PEAK_SIZE = 2048


# ================================================================================================ timing
#: a stage builder gets the variant's outputs of earlier stages ({stage: output}) and returns the runner:
#: a zero-argument callable that runs the stage once on fixed inputs and returns its output
StageBuilder = Callable[[dict[str, Any]], Callable[[], Any]]


@dataclass
class Variant:
    """One implementation of the stages, timed side by side with the others.

    name: unique label (e.g. ``openvino-fp32/f32``). kind: ``pytorch`` or ``openvino``.
    precision: the weights' precision (rt_info ``precision``: fp32, fp16, int8, hybrid, ...).
    compute_precision: float precision of non-quantized ops for the limit (``f32`` or ``bf16``).
    builders: {stage: :data:`StageBuilder`}; a builder compiles/loads what the stage needs, so only one
        stage's models are in memory at a time.
    flops: {stage: FLOPs of one call (batch 1)}; int8_share: {stage: share of those FLOPs in int8 ops}.
    info: anything recorded with the variant (folder, hint, compiled properties, threads, ...).
    """

    name: str
    kind: str
    precision: str
    compute_precision: str
    builders: dict[str, StageBuilder]
    flops: dict[str, int] = field(default_factory=dict)
    int8_share: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def stages(self) -> list[str]:
        return [s for s in STAGE_ORDER if s in self.builders] + [s for s in self.builders if s not in STAGE_ORDER]


def _output_of(value: Any) -> Any:
    """The output to hand to later stages: the first output of an OpenVINO result, else the value."""
    if type(value).__name__ == "OVDict":
        return np.array(value[0])
    return value


def run_interleaved(variants: Sequence[Variant], runs: int, warmup: int,
                    memory_log: list[dict[str, Any]] | None = None) -> dict[str, dict[str, list[float]]]:
    """Time every stage of every variant, one stage at a time, variants interleaved.

    For each stage (in :data:`STAGE_ORDER`): build the runner of every variant that has the stage
    (compiling its model), then ``warmup + runs`` rounds each visiting every variant in order (A B C, A B C,
    ...), then drop the runners (and their compiled models) before the next stage, so that only one
    stage's models are in memory at once. A stage's last output is passed to the variant's later stages.
    Returns {variant: {stage: [seconds] x runs}} (warm-up rounds dropped). ``memory_log`` (when given)
    receives this process's memory after each stage's models were built.
    """
    memory_log = memory_log if memory_log is not None else []
    if runs < 1 or warmup < 0:
        raise InputError(f"--runs must be >= 1 and --warmup >= 0, got runs={runs}, warmup={warmup}")
    times: dict[str, dict[str, list[float]]] = {v.name: {} for v in variants}
    outputs: dict[str, dict[str, Any]] = {v.name: {} for v in variants}
    stages: list[str] = []
    for v in variants:
        stages += [s for s in v.stages if s not in stages]
    for stage in stages:
        members = [v for v in variants if stage in v.builders]
        runners: dict[str, Callable[[], Any]] = {}
        for v in members:
            t0 = time.perf_counter()
            runners[v.name] = v.builders[stage](outputs[v.name])
            v.info.setdefault("build_s", {})[stage] = round(time.perf_counter() - t0, 3)
            times[v.name][stage] = []
        mem = memory_status()
        if mem:
            memory_log.append({"stage": stage, "after_build": mem})
            logger.info("%s: %d variants built; memory %s", stage, len(members),
                        ", ".join(f"{k} {v / 1024:.1f} GB" for k, v in mem.items()))
        last: dict[str, Any] = {}
        for round_index in range(warmup + runs):
            took: list[str] = []
            for v in members:
                t0 = time.perf_counter()
                last[v.name] = runners[v.name]()
                elapsed = time.perf_counter() - t0
                took.append(f"{v.name} {1000 * elapsed:.1f} ms")
                if round_index >= warmup:
                    times[v.name][stage].append(elapsed)
            label = "warm-up" if round_index < warmup else f"run {round_index - warmup + 1}/{runs}"
            logger.info("%s %s: %s", stage, label, ", ".join(took))
        for v in members:
            outputs[v.name][stage] = _output_of(last[v.name])
        runners.clear()
        last.clear()
        gc.collect()
    return times


def summarize(samples_s: Sequence[float]) -> dict[str, Any]:
    """Seconds -> {"median_ms", "p95_ms", "mean_ms", "min_ms", "max_ms", "runs", "samples_ms"}."""
    ms = np.asarray(samples_s, dtype=np.float64) * 1000.0
    return {"median_ms": float(np.median(ms)), "p95_ms": float(np.percentile(ms, 95)),
            "mean_ms": float(ms.mean()), "min_ms": float(ms.min()), "max_ms": float(ms.max()),
            "runs": int(ms.size), "samples_ms": [round(float(v), 4) for v in ms]}


# ================================================================================================ inputs
def load_inputs(input_size_wh: tuple[int, int], video: str | Path | None = None,
                detections: str | Path | None = None, seed: int = 0) -> dict[str, Any]:
    """The fixed inputs every variant gets: ``frame`` u8 [H,W,3] BGR image px (detector input) and
    ``crop`` u8 [1,h,w,3] BGR crop px (the pose input size ``input_size_wh`` = (w, h)).

    With ``video`` (+ ``detections``): the first frame and the UDP crop of its first box; otherwise a
    seeded random 960x540 frame and its centre crop. ``source`` says which.
    """
    import cv2

    from .geometry import udp_warp_matrix, warp_crop

    w, h = input_size_wh
    frame = None
    box = None
    source = "random"
    if video is not None:
        cap = cv2.VideoCapture(str(video))
        try:
            ok, frame = cap.read()
        finally:
            cap.release()
        if not ok or frame is None:
            raise InputError(f"--video {video}: cannot read its first frame")
        source = f"{Path(video).name} frame 0"
        if detections is not None:
            from .pipeline import load_detections

            dets = load_detections(detections)
            boxes = dets.get("0")
            if boxes is None:
                boxes = dets.get(f"{Path(video).name}#0")
            if boxes is not None and len(boxes):
                box = boxes[0, :4]
                source += " first box"
    if frame is None:
        frame = np.random.default_rng(seed).integers(0, 256, size=(540, 960, 3), dtype=np.uint8)
    if box is None:
        fh, fw = frame.shape[:2]
        box = np.array([fw * 0.25, fh * 0.1, fw * 0.75, fh * 0.9], np.float32)
    matrix = udp_warp_matrix(box, input_size=(w, h))
    crop = warp_crop(frame, matrix, (w, h))[None]
    return {"frame": np.ascontiguousarray(frame), "crop": np.ascontiguousarray(crop), "source": source,
            "box_xyxy": [float(v) for v in box]}


# ================================================================================================ IR side
def _compiled_info(compiled: Any) -> dict[str, Any]:
    from .peak import executed_precisions

    info: dict[str, Any] = {}
    for key in ("PERFORMANCE_HINT", "INFERENCE_PRECISION_HINT", "NUM_STREAMS", "INFERENCE_NUM_THREADS",
                "OPTIMAL_NUMBER_OF_INFER_REQUESTS"):
        try:
            value = compiled.get_property(key)
        except RuntimeError:
            continue
        info[key] = str(value.get_type_name() if hasattr(value, "get_type_name") else value)
    info["executed_precisions"] = executed_precisions(compiled)
    return info


def _int8_fed(node: Any, depth: int = 4) -> bool:
    """True when the data input of ``node`` comes (through layout/convert ops) from a FakeQuantize."""
    current = node.input(0).get_source_output().get_node()
    for _ in range(depth):
        kind = current.get_type_name()
        if kind == "FakeQuantize":
            return True
        if kind not in ("Reshape", "Transpose", "Convert", "Squeeze", "Unsqueeze", "Concat"):
            return False
        current = current.input(0).get_source_output().get_node()
    return False


def ir_flops(model: Any) -> dict[str, Any]:
    """:func:`edge_runtime.peak.count_ir_flops` plus ``int8``: FLOPs of counted ops fed by a FakeQuantize."""
    from openvino import PartialShape

    from .peak import COUNTED_OPS, _node_flops, count_ir_flops

    counted = count_ir_flops(model)
    clone = model.clone()
    shapes = {p: PartialShape([1] + list(p.get_partial_shape())[1:]) for p in clone.inputs
              if p.get_partial_shape().rank.is_static and len(p.get_partial_shape()) > 0
              and p.get_partial_shape()[0].is_dynamic}
    if shapes:
        clone.reshape(shapes)
    int8 = 0
    for node in clone.get_ordered_ops():
        if node.get_type_name() in COUNTED_OPS and _int8_fed(node):
            int8 += int(_node_flops(node) or 0)
    counted["int8"] = min(int8, counted["total"])
    return counted


def _hints_for(meta: dict[str, Any], bf16: bool = True) -> list[str | None]:
    """INFERENCE_PRECISION_HINTs to bench a folder with: f32 and (where the CPU has it) bf16 for float
    weights, else the default."""
    if meta.get("quantized"):
        return [None]
    return ["f32", "bf16"] if bf16 else ["f32"]


def _variant_name(precision: str, hint: str | None, taken: set[str], folder: Path) -> str:
    base = f"openvino-{precision}" + (f"/{hint}" if hint else "")
    name = base if base not in taken else f"{base} ({folder.name})"
    n = 2
    while name in taken:
        name = f"{base} ({folder.name} #{n})"
        n += 1
    return name


def _default_precision(core: Any, device: str) -> str:
    try:
        value = core.get_property(device, "INFERENCE_PRECISION_HINT")
    except RuntimeError:
        return "f32"
    return str(value.get_type_name() if hasattr(value, "get_type_name") else value)


def _ov_stage(core: Any, xml: Path, options: Any, info: dict[str, Any], stage: str,
              make_input: Callable[[dict[str, Any]], np.ndarray]) -> StageBuilder:
    """Builder: compile ``xml`` with ``options`` (recording its properties in ``info``) -> runner that runs
    one synchronous inference on ``make_input(earlier outputs)``."""
    from .models import compile_model

    def build(earlier: dict[str, Any]) -> Callable[[], Any]:
        compiled = compile_model(core, core.read_model(str(xml)), options)
        info.setdefault("compiled", {})[stage] = _compiled_info(compiled)
        request = compiled.create_infer_request()
        data = make_input(earlier)
        return lambda: request.infer({0: data})

    return build


def _decode_stage(input_wh: tuple[int, int]) -> StageBuilder:
    from .codec import decode_heatmaps

    def build(earlier: dict[str, Any]) -> Callable[[], Any]:
        heatmaps = earlier.get("pose", earlier.get("vae_pose"))
        if heatmaps is None:
            raise SDPoseError("decode stage: no heatmaps from a pose stage of this variant")
        heatmaps = np.asarray(heatmaps.numpy() if hasattr(heatmaps, "numpy") else heatmaps, dtype=np.float32)
        return lambda: decode_heatmaps(heatmaps, input_size=input_wh)

    return build


def build_openvino_variants(folders: Sequence[str | Path], inputs: dict[str, Any], core: Any = None,
                            device: str = "CPU", with_detector: bool = True,
                            with_fused: bool = True) -> list[Variant]:
    """One :class:`Variant` per (folder, INFERENCE_PRECISION_HINT), compiled lazily per stage with the
    LATENCY hint and no model cache. The pose stage runs on the variant's own latent, decode on its own
    heatmaps. ``with_fused=False`` leaves out ``vae_pose.xml`` when the folder also has the split chain.
    FLOPs are counted from the IRs here (once per folder)."""
    import openvino as ov

    from .cpu import cpu_info
    from .detector import PersonDetector
    from .models import CompileOptions, ModelFolder

    core = core if core is not None else ov.Core()
    bf16 = cpu_info(core, device).bf16 if device.upper().startswith("CPU") else True
    variants: list[Variant] = []
    taken: set[str] = set()
    input_wh: tuple[int, int] | None = None
    crop, frame = inputs["crop"], inputs["frame"]
    for folder_path in folders:
        folder = ModelFolder(folder_path, core=core)
        meta = folder.pose_meta
        wh = (int(meta["input_width"]), int(meta["input_height"]))
        if input_wh is None:
            input_wh = wh
        elif wh != input_wh:
            raise InputError(f"--models {folder_path}: input size {wh[0]}x{wh[1]} (WxH) differs from the first "
                             f"folder's {input_wh[0]}x{input_wh[1]}; bench folders exported at one size")
        precision = str(meta.get("precision", "unknown"))
        kinds = [k for k in ("vae_encoder", "pose", "vae_pose") if folder.has(k)]
        if not with_fused and "vae_encoder" in kinds and "pose" in kinds and "vae_pose" in kinds:
            kinds.remove("vae_pose")
        if with_detector and folder.has("detector"):
            kinds.insert(0, "detector")
        flops = {k: ir_flops(folder.read_model(k)) for k in kinds}
        xml = {k: folder.ir_path(k) for k in kinds}
        component_precision = {k: folder.metadata(k).get("precision", "?") for k in kinds}
        chain, quantized = folder.chain, bool(meta.get("quantized", False))
        del folder  # drop the read models: each stage reads and compiles its IR when it runs
        for hint in _hints_for(meta, bf16):
            options = CompileOptions(device=device, performance_hint="LATENCY", inference_precision=hint,
                                     cache_dir=None)
            name = _variant_name(precision, hint, taken, Path(folder_path))
            taken.add(name)
            compute = hint or _default_precision(core, device)
            compute = "bf16" if "bf16" in compute else "f32"
            info: dict[str, Any] = {"folder": str(Path(folder_path).resolve()), "hint": hint or "device default",
                                    "inference_precision": hint or _default_precision(core, device),
                                    "chain": chain, "quantized": quantized,
                                    "component_precision": component_precision,
                                    "flops_ir": {k: {"total": v["total"], "int8": v["int8"], "by_op": v["by_op"]}
                                                 for k, v in flops.items()}}
            builders: dict[str, StageBuilder] = {}
            if "detector" in kinds:
                def build_detector(_earlier: dict[str, Any], options: Any = options, info: dict = info,
                                   path: Path = xml["detector"]) -> Callable[[], Any]:
                    detector = PersonDetector(path, options=options, core=core)
                    info.setdefault("compiled", {})["detector"] = _compiled_info(detector.compiled)
                    return lambda: detector(frame)

                builders["detector"] = build_detector
            if "vae_encoder" in kinds and "pose" in kinds:
                builders["vae_encoder"] = _ov_stage(core, xml["vae_encoder"], options, info, "vae_encoder",
                                                    lambda _e: crop)
                builders["pose"] = _ov_stage(core, xml["pose"], options, info, "pose",
                                             lambda e: np.asarray(e["vae_encoder"]))
            if "vae_pose" in kinds:
                builders["vae_pose"] = _ov_stage(core, xml["vae_pose"], options, info, "vae_pose", lambda _e: crop)
            builders["decode"] = _decode_stage(wh)
            variants.append(Variant(
                name=name, kind="openvino", precision=precision, compute_precision=compute, builders=builders,
                flops={k: v["total"] for k, v in flops.items()},
                int8_share={k: v["int8"] / max(v["total"], 1) for k, v in flops.items()}, info=info))
            logger.info("variant %s: %s, stages %s, float ops in %s", name, folder_path,
                        ", ".join(builders), compute)
    return variants


# ================================================================================================ analysis
def _limit_ms(flops: int | None, int8_share: float, compute: str, peaks: dict[str, Any]) -> float | None:
    if not flops:
        return None
    float_peak = peaks.get(compute) or peaks.get("f32")
    if float_peak is None:
        return None
    seconds = flops * (1.0 - int8_share) / (float_peak["gflops"] * 1e9)
    if int8_share > 0:
        int8_peak = peaks.get("int8")
        if int8_peak is None:
            return None
        seconds += flops * int8_share / (int8_peak["gflops"] * 1e9)
    return seconds * 1000.0


def analyse(variants: Sequence[Variant], times: dict[str, dict[str, list[float]]],
            peaks: dict[str, Any], baseline: str | None) -> dict[str, dict[str, dict[str, Any]]]:
    """{variant: {stage: stats + flops, limit_ms, limit_fraction, speedup}} incl. the ``crop`` total."""
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for v in variants:
        per = times[v.name]
        out: dict[str, dict[str, Any]] = {}
        for stage, samples in per.items():
            stats = summarize(samples)
            flops = v.flops.get(stage)
            share = float(v.int8_share.get(stage, 0.0))
            limit = _limit_ms(flops, share, v.compute_precision, peaks)
            stats.update({"flops": flops, "int8_flops_share": round(share, 4) if flops else None,
                          "limit_ms": limit,
                          "limit_fraction": (limit / stats["median_ms"]) if limit and stats["median_ms"] > 0
                          else None})
            out[stage] = stats
        if all(s in per for s in CROP_STAGES):
            total = [sum(vals) for vals in zip(*(per[s] for s in CROP_STAGES))]
            stats = summarize(total)
            limits = [out[s]["limit_ms"] for s in CROP_STAGES if s != "decode"]
            limit = sum(limits) if all(x is not None for x in limits) else None
            flops = sum(int(v.flops.get(s) or 0) for s in CROP_STAGES) or None
            stats.update({"flops": flops, "limit_ms": limit,
                          "limit_fraction": (limit / stats["median_ms"]) if limit else None,
                          "stages": list(CROP_STAGES)})
            out["crop"] = stats
        results[v.name] = out
    if baseline is not None and baseline in results:
        base = results[baseline]
        for per_stage in results.values():
            for stage, stats in per_stage.items():
                ref = base.get(stage)
                stats["speedup"] = (ref["median_ms"] / stats["median_ms"]) if ref and stats["median_ms"] > 0 \
                    else None
    return results


def headline(results: dict[str, dict[str, dict[str, Any]]], baseline: str | None) -> dict[str, Any] | None:
    """The best variant per crop (lowest crop median) vs the baseline."""
    if baseline is None or baseline not in results or "crop" not in results[baseline]:
        return None
    candidates = [(per["crop"]["median_ms"], name) for name, per in results.items()
                  if name != baseline and "crop" in per]
    if not candidates:
        return None
    best_ms, best = min(candidates)
    base_ms = results[baseline]["crop"]["median_ms"]
    return {"baseline": baseline, "baseline_crop_median_ms": base_ms, "best_variant": best,
            "best_crop_median_ms": best_ms, "speedup": base_ms / best_ms,
            "best_limit_fraction": results[best]["crop"].get("limit_fraction")}


# ================================================================================================ machine
def machine_info() -> dict[str, Any]:
    """CPU model, cores, RAM, OS and package versions (openvino, numpy, cv2; torch etc. when imported)."""
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "logical_cpus": os.cpu_count()}
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10, check=False).stdout
        fields = {}
        for line in out.splitlines():
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
        info["cpu_model"] = fields.get("Model name", "")
        info["cores_per_socket"] = fields.get("Core(s) per socket", "")
        info["sockets"] = fields.get("Socket(s)", "")
    except (OSError, subprocess.SubprocessError) as exc:
        logger.debug("lscpu not available: %s", exc)
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    info["ram_gb"] = round(int(line.split()[1]) / 1024 / 1024, 1)
                    break
    except OSError as exc:
        logger.debug("/proc/meminfo not readable: %s", exc)
    versions: dict[str, str] = {}
    import cv2
    import openvino

    versions["openvino"] = openvino.__version__
    versions["numpy"] = np.__version__
    versions["opencv"] = cv2.__version__
    for mod in ("torch", "diffusers", "transformers", "nncf", "ultralytics"):
        if mod in sys.modules:
            versions[mod] = str(getattr(sys.modules[mod], "__version__", "?"))
    info["versions"] = versions
    from .cpu import cpu_info

    info["cpu"] = cpu_info().to_dict()
    info["isa"] = list(info["cpu"]["flags"] or [])
    return info


# ================================================================================================ end to end
def _spawn_child(argv: list[str], timeout: float) -> dict[str, Any]:
    """Run ``python -m edge_runtime.bench --child ...``; return its JSON report plus the parent-side
    wall time and time to the first result (from process start)."""
    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = package_root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, "-m", "edge_runtime.bench", "--child", *argv]
    logger.info("end-to-end: %s", " ".join(cmd[3:]))
    spawned = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False)
    wall = time.time() - spawned
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise SDPoseError(f"end-to-end child failed (exit {proc.returncode}): {' '.join(argv)}\n{tail}")
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise SDPoseError(f"end-to-end child printed no report: {proc.stdout[-500:]} {proc.stderr[-500:]}")
    report = json.loads(lines[-1])
    report["process_wall_s"] = round(wall, 3)
    if report.get("first_result_epoch") is not None:
        report["time_to_first_result_s"] = round(report["first_result_epoch"] - spawned, 3)
    return report


def run_end_to_end(models: str | Path, video: str | Path, detections: str | Path | None,
                   max_frames: int | None, hint: str | None, device: str = "CPU",
                   timeout: float = 7200.0) -> dict[str, Any]:
    """Three runtime subprocesses on ``video``: async THROUGHPUT pipeline with an empty model cache
    (cold), the same with the cache populated (warm), and the synchronous loop (LATENCY, warm cache).

    Returns {"async": report, "sync": report, "cold": report, "throughput_ratio": async fps / sync fps, ...};
    a report holds frames, persons, wall_s, fps, persons_per_s, compile_s, time_to_first_result_s,
    max_rss_mb.
    """
    common = ["--models", str(models), "--video", str(video), "--device", device]
    if detections is not None:
        common += ["--detections", str(detections)]
    if max_frames:
        common += ["--max-frames", str(int(max_frames))]
    if hint:
        common += ["--precision-hint", hint]
    with tempfile.TemporaryDirectory(prefix="sdpose-bench-cache-") as cache:
        cold = _spawn_child(common + ["--mode", "async", "--cache-dir", cache], timeout)
        warm = _spawn_child(common + ["--mode", "async", "--cache-dir", cache], timeout)
        sync = _spawn_child(common + ["--mode", "sync", "--cache-dir", cache], timeout)
    result = {"models": str(Path(models).resolve()), "video": str(Path(video).resolve()),
              "detections": str(Path(detections).resolve()) if detections else None,
              "precision_hint": hint or "device default", "max_frames": max_frames,
              "async": warm, "sync": sync, "cold": cold,
              "throughput_ratio": (warm["fps"] / sync["fps"]) if sync.get("fps") else None,
              "cold_vs_warm_compile_s": [cold.get("compile_s"), warm.get("compile_s")],
              "cold_vs_warm_first_result_s": [cold.get("time_to_first_result_s"),
                                              warm.get("time_to_first_result_s")]}
    logger.info("end-to-end: async %.3f fps (%.3f persons/s) vs sync %.3f fps; cold compile %.1f s vs warm %.1f s",
                warm["fps"], warm["persons_per_s"], sync["fps"], cold["compile_s"], warm["compile_s"])
    return result


class _FirstResult:
    """A pipeline sink that stamps the wall time of the first written record."""

    def __init__(self) -> None:
        self.epoch: float | None = None
        self.frames = 0
        self.persons = 0

    def write(self, record: dict[str, Any], image: Any = None) -> None:
        if self.epoch is None:
            self.epoch = time.time()
        self.frames += 1
        self.persons += len(record.get("persons", []))

    def close(self) -> None:
        """Nothing to flush."""


def _child_main(argv: Sequence[str]) -> int:
    """One end-to-end measurement in this process; prints a JSON report as the last stdout line."""
    parser = argparse.ArgumentParser(prog="python -m edge_runtime.bench --child")
    parser.add_argument("--models", required=True)
    parser.add_argument("--video", required=True)
    parser.add_argument("--detections", default=None)
    parser.add_argument("--mode", choices=("async", "sync"), required=True)
    parser.add_argument("--cache-dir", default=None)
    parser.add_argument("--max-frames", type=int, default=None)
    parser.add_argument("--precision-hint", default=None)
    parser.add_argument("--device", default="CPU")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)

    import openvino as ov

    from .detector import PersonDetector
    from .estimator import PoseEstimator
    from .models import CompileOptions
    from .pipeline import Pipeline, PipelineConfig, load_detections
    from .sources import VideoFileSource

    hint = "THROUGHPUT" if args.mode == "async" else "LATENCY"
    options = CompileOptions(device=args.device, performance_hint=hint, inference_precision=args.precision_hint,
                             cache_dir=args.cache_dir)
    core = ov.Core()
    t0 = time.perf_counter()
    estimator = PoseEstimator(args.models, options=options, core=core)
    detections = load_detections(args.detections) if args.detections else None
    detector = None if detections is not None else PersonDetector(args.models, options=options, core=core)
    compile_s = time.perf_counter() - t0
    source = VideoFileSource(args.video)
    sink = _FirstResult()
    t_run = time.perf_counter()
    summary: dict[str, Any] = {}
    if args.mode == "async":
        pipeline = Pipeline(estimator, [sink], PipelineConfig(mode="file", max_frames=args.max_frames),
                            detector=detector, detections=detections)
        summary = pipeline.run(source)
    else:
        for frame in source:
            if args.max_frames is not None and frame.index >= args.max_frames:
                break
            if not frame.ok:
                sink.write({"frame": frame.index, "persons": [], "error": frame.error})
                continue
            if detections is not None:
                boxes = detections.get(str(frame.index))
                if boxes is None:
                    boxes = detections.get(frame.name, np.zeros((0, 5), np.float32))
            else:
                boxes, _ = detector(frame.image)
            keypoints, _ = estimator(frame.image, boxes)
            sink.write({"frame": frame.index, "persons": [None] * len(keypoints)})
    wall = time.perf_counter() - t_run
    report = {"mode": args.mode, "performance_hint": hint, "cache_dir_used": bool(args.cache_dir),
              "compile_s": round(compile_s, 3), "frames": sink.frames, "persons": sink.persons,
              "wall_s": round(wall, 3), "fps": sink.frames / wall if wall > 0 else None,
              "persons_per_s": sink.persons / wall if wall > 0 else None,
              "first_result_epoch": sink.epoch, "max_rss_mb": peak_rss_mb(),
              "requests": summary.get("requests"), "pose_busy_share": summary.get("pose_busy_share"),
              "chain": estimator.chain}
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0


# ================================================================================================ writing
def _fmt_ms(value: float | None) -> str:
    if value is None:
        return "–"
    if value >= 1000:
        return f"{value / 1000:.2f} s"
    if value >= 10:
        return f"{value:.0f} ms"
    return f"{value:.2f} ms"


def _fmt_pct(fraction: float | None) -> str:
    if not fraction:
        return "–"
    pct = 100.0 * fraction
    return f"{pct:.1f}%" if pct >= 1 else f"{pct:.2f}%"


def _fmt_flops(value: int | None) -> str:
    if not value:
        return "–"
    for unit, scale in (("TFLOP", 1e12), ("GFLOP", 1e9), ("MFLOP", 1e6)):
        if value >= scale:
            return f"{value / scale:.2f} {unit}"
    return f"{value} FLOP"


def write_chart(report: dict[str, Any], path: Path) -> str | None:
    """Bar chart of the median latency per stage and variant (log scale, p95 whiskers, limit marked).
    Returns None when written, else the reason it was skipped (matplotlib missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return f"matplotlib is not installed ({exc}); the chart was skipped"
    results = report["results"]
    variants = list(results)
    stages = [s for s in STAGE_ORDER if any(s in results[v] for v in variants)]
    width = 0.8 / max(len(variants), 1)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.6 * len(stages) * max(1, len(variants)) / 2), 5.5))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    limit_drawn = False
    for i, name in enumerate(variants):
        xs, heights, errs, limits = [], [], [], []
        for j, stage in enumerate(stages):
            stats = results[name].get(stage)
            if stats is None:
                continue
            x = j + (i - (len(variants) - 1) / 2) * width
            xs.append(x)
            heights.append(stats["median_ms"])
            errs.append(max(stats["p95_ms"] - stats["median_ms"], 0.0))
            limits.append((x, stats.get("limit_ms")))
        ax.bar(xs, heights, width * 0.95, yerr=[np.zeros(len(errs)), errs], capsize=2, label=name,
               color=colors[i % len(colors)])
        for x, limit in limits:
            if limit:
                ax.hlines(limit, x - width * 0.45, x + width * 0.45, colors="black", linewidth=2,
                          label=None if limit_drawn else "compute limit (FLOPs / peak)")
                limit_drawn = True
    ax.set_xticks(range(len(stages)))
    ax.set_xticklabels(stages)
    ax.set_yscale("log")
    ax.set_ylabel("latency per call, ms (median; whisker p95; log scale)")
    size = report["settings"]["input_size_hw"]
    ax.set_title(f"SDPose stages, batch 1, {size[0]}x{size[1]} crop, {report['machine'].get('cpu_model', '')}"
                 , fontsize=9)
    ax.legend(fontsize=7, loc="best")
    ax.grid(axis="y", which="both", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def write_markdown(report: dict[str, Any], path: Path) -> None:
    """``bench.md``: settings, the stage x variant table, peaks, end to end, notes."""
    lines = ["# sdpose-edge benchmark", ""]
    m = report["machine"]
    s = report["settings"]
    lines += [f"- date: {report['created']}", f"- command: `{report['command']}`",
              f"- machine: {m.get('cpu_model', '?')}, {m.get('logical_cpus')} logical CPUs, "
              f"{m.get('ram_gb', '?')} GB RAM, ISA {', '.join(m.get('isa', []))}"
              + (f"; INT8 path {m['cpu']['int8_path']} ({m['cpu']['int8_isa']}), bf16 "
                 f"{'yes' if m['cpu']['bf16'] else 'no'}" if m.get("cpu") else ""),
              f"- versions: {', '.join(f'{k} {v}' for k, v in m.get('versions', {}).items())}",
              f"- settings: batch 1, one {s['input_size_hw'][0]}x{s['input_size_hw'][1]} crop ({s['input_source']}), "
              f"{s['runs']} runs after {s['warmup']} warm-up, variants interleaved within each stage, "
              "OpenVINO PERFORMANCE_HINT=LATENCY, no model cache", ""]
    hl = report.get("headline")
    if hl:
        base = "the original PyTorch pipeline" if hl["baseline"] == PYTORCH else hl["baseline"]
        lines += [f"**Headline:** {hl['best_variant']} runs a crop (VAE encoder + pose + decode) in "
                  f"{_fmt_ms(hl['best_crop_median_ms'])} vs {_fmt_ms(hl['baseline_crop_median_ms'])} for "
                  f"{base}: speed-up **{hl['speedup']:.2f}x**"
                  + (f", at {_fmt_pct(hl['best_limit_fraction'])} of this machine's compute limit "
                     "(FLOPs / measured peak)." if hl.get("best_limit_fraction") else "."), ""]
    lines += ["## Latency per stage (median / p95 per call)", "",
              "| stage | variant | median | p95 | speed-up | FLOPs | limit | of limit |",
              "|---|---|---|---|---|---|---|---|"]
    results = report["results"]
    for stage in STAGE_ORDER:
        for name, per in results.items():
            st = per.get(stage)
            if st is None:
                continue
            speed = f"{st['speedup']:.2f}x" if st.get("speedup") else "–"
            frac = _fmt_pct(st.get("limit_fraction"))
            lines.append(f"| {stage} | {name} | {_fmt_ms(st['median_ms'])} | {_fmt_ms(st['p95_ms'])} | {speed} | "
                         f"{_fmt_flops(st.get('flops'))} | {_fmt_ms(st.get('limit_ms'))} | {frac} |")
    lines += ["", "speed-up: over " + (report.get("baseline") or "–") + " (median / median). "
              "limit = FLOPs / measured peak of the precision each op runs in (int8 for FakeQuantize-fed ops); "
              "of limit = limit / median (the achieved fraction of the machine's peak).", ""]
    lines += ["## Variants", "", "| variant | precision | hint | float ops in | threads | folder |",
              "|---|---|---|---|---|---|"]
    for v in report["variants"]:
        compiled = next(iter((v.get("compiled") or {}).values()), {})
        threads = v.get("num_threads") or compiled.get("INFERENCE_NUM_THREADS", "–")
        if compiled.get("NUM_STREAMS"):
            threads = f"{threads} ({compiled['NUM_STREAMS']} stream)"
        lines.append(f"| {v['name']} | {v['precision']} | {v.get('hint', '–')} | {v['compute_precision']} | "
                     f"{threads} | {v.get('folder', '–')} |")
    lines += ["", "## Measured peak (MatMul micro-benchmark, OpenVINO, LATENCY hint)", "",
              "Measured before and after the timing loop; the peak is the best single call of either.", "",
              "| precision | peak GFLOP/s | best before | best after | median call | executed as | MatMuls |",
              "|---|---|---|---|---|---|---|"]
    for prec, p in report.get("peaks", {}).items():
        lines.append(f"| {prec} | {p['gflops']:.0f} | {p.get('gflops_before', p['gflops']):.0f} | "
                     f"{p.get('gflops_after', p['gflops']):.0f} | {p['median_gflops']:.0f} | "
                     f"{p['executed_precision']} | {p['depth']} x {p['size']}^3 |")
    mem = report.get("memory_mb") or {}
    if mem.get("stages"):
        lines += ["", "## Memory of the bench process (all variants of one stage compiled at once)", "",
                  "| stage | RSS | anonymous | file-backed (mmapped weights) |", "|---|---|---|---|"]
        for row in mem["stages"]:
            m = row["after_build"]
            lines.append(f"| {row['stage']} | {m.get('rss', 0) / 1024:.1f} GB | {m.get('anon', 0) / 1024:.1f} GB | "
                         f"{m.get('file', 0) / 1024:.1f} GB |")
        peak = mem.get("bench_process", {}).get("peak")
        if peak:
            lines += ["", f"Peak RSS of the bench process: {peak / 1024:.1f} GB."]
    e2e = report.get("end_to_end")
    lines += ["", "## End to end (file mode)", ""]
    if isinstance(e2e, dict) and "async" in e2e:
        a, sy, c = e2e["async"], e2e["sync"], e2e["cold"]
        lines += [f"models {e2e['models']}, video {e2e['video']}, {a['frames']} frames, {a['persons']} persons, "
                  f"precision hint {e2e['precision_hint']}.", "",
                  "| run | frames/s | persons/s | compile | first result | peak RSS |", "|---|---|---|---|---|---|"]
        for label, r in (("async THROUGHPUT pipeline (warm cache)", a), ("synchronous loop, LATENCY (warm cache)", sy),
                         ("async, cold start (empty cache)", c)):
            lines.append(f"| {label} | {r['fps']:.3f} | {r['persons_per_s']:.3f} | {r['compile_s']:.2f} s | "
                         f"{r.get('time_to_first_result_s', float('nan')):.2f} s | {r.get('max_rss_mb')} MB |")
        if e2e.get("throughput_ratio"):
            lines += ["", f"async / sync throughput: **{e2e['throughput_ratio']:.2f}x**. First result is timed from "
                      "process start (interpreter, imports, compile, first frame)."]
    else:
        lines.append(str(e2e or "not run (pass --video and --detections)"))
    lines += ["", "## Notes", ""] + [f"- {n}" for n in report.get("notes", [])]
    chart = report.get("chart")
    lines += ["", f"![latency per stage]({chart})" if chart else f"Chart: {report.get('chart_skipped')}", ""]
    path.write_text("\n".join(lines), encoding="utf-8")


def write_report(report: dict[str, Any], out: Path) -> dict[str, Path]:
    """Write bench.json, bench.png (when matplotlib is importable) and bench.md into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = {}
    skipped = write_chart(report, out / "bench.png")
    if skipped is None:
        report["chart"] = "bench.png"
        written["png"] = out / "bench.png"
    else:
        report["chart"] = None
        report["chart_skipped"] = skipped
        logger.warning("%s", skipped)
    (out / "bench.json").write_text(json.dumps(report, indent=2, default=str) + "\n", encoding="utf-8")
    written["json"] = out / "bench.json"
    write_markdown(report, out / "bench.md")
    written["md"] = out / "bench.md"
    return written


# ================================================================================================ driver
def _cross_check_flops(variants: Sequence[Variant], torch_flops: dict[str, Any]) -> None:
    """Record torch count / IR count per stage on every OpenVINO variant (``flops_torch_vs_ir``)."""
    for variant in variants:
        if variant.kind != "openvino":
            continue
        variant.info["flops_torch_vs_ir"] = {
            stage: (torch_flops[stage]["total"] / variant.flops[stage]) if variant.flops.get(stage) else None
            for stage in torch_flops if stage in variant.flops}


def run_benchmark(models: Sequence[str | Path], out: str | Path, *, runs: int = DEFAULT_RUNS,
                  warmup: int = DEFAULT_WARMUP, video: str | Path | None = None,
                  detections: str | Path | None = None, e2e_frames: int | None = None, skip_e2e: bool = False,
                  peak_size: int = DEFAULT_PEAK_SIZE, device: str = "CPU", skip_fused: bool = False,
                  extra_variants: Sequence[Variant] = (),
                  prepare_extra: Callable[[dict[str, Any]], Sequence[Variant]] | None = None,
                  torch_flops: dict[str, Any] | None = None, command: str = "",
                  notes: Sequence[str] = ()) -> dict[str, Any]:
    """The whole benchmark; returns the report dict (also written to ``out``).

    ``prepare_extra(inputs)`` (used by ``sdpose-convert bench``) builds more variants (the PyTorch
    reference) from the same inputs; they run first and the first of them is the speed-up baseline.
    ``torch_flops``: {stage: {"total": ...}} counted from the torch modules, recorded and cross-checked
    against the IR counts.
    """
    import openvino as ov

    from .models import ModelFolder
    from .peak import measure_peak

    if not models:
        raise InputError("--models: give at least one model folder")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} exists and is not a folder")
    if detections is not None and video is None:
        raise InputError("--detections needs --video (the boxes belong to the video's frames)")
    core = ov.Core()
    first = ModelFolder(models[0], core=core).pose_meta
    input_wh = (int(first["input_width"]), int(first["input_height"]))
    inputs = load_inputs(input_wh, video, detections)

    variants: list[Variant] = list(extra_variants)
    if prepare_extra is not None:
        variants += list(prepare_extra(inputs))
    baseline = variants[0].name if variants else None
    variants += build_openvino_variants(models, inputs, core=core, device=device, with_fused=not skip_fused)
    if baseline is None:  # runtime only: speed-ups over OpenVINO FP32 with the f32 hint
        baseline = next((v.name for v in variants if v.precision == "fp32" and v.name.endswith("/f32")),
                        variants[0].name)
    if torch_flops:
        _cross_check_flops(variants, torch_flops)

    precisions = {"f32"} | {v.compute_precision for v in variants}
    if any(share > 0 for v in variants for share in v.int8_share.values()):
        precisions.add("int8")
    wanted = [p for p in ("f32", "bf16", "int8") if p in precisions]
    before = {p: measure_peak(p, core=core, device=device, size=peak_size).to_dict() for p in wanted}

    logger.info("timing %d variants x %d runs (+%d warm-up), interleaved: %s", len(variants), runs, warmup,
                ", ".join(v.name for v in variants))
    started = time.perf_counter()
    memory_log: list[dict[str, Any]] = []
    times = run_interleaved(variants, runs, warmup, memory_log)
    # the peak is measured before and after the timing loop; the better of the two counts (a busy machine
    # can only lower a measured peak)
    after = {p: measure_peak(p, core=core, device=device, size=peak_size).to_dict() for p in wanted}
    peaks = {p: dict(max(before[p], after[p], key=lambda r: r["gflops"]),
                     gflops_before=before[p]["gflops"], gflops_after=after[p]["gflops"]) for p in wanted}
    results = analyse(variants, times, peaks, baseline)
    logger.info("timing took %.1f s", time.perf_counter() - started)

    report: dict[str, Any] = {
        "format_version": BENCH_FORMAT_VERSION,
        "created": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "command": command or " ".join(sys.argv),
        "machine": machine_info(),
        "settings": {"runs": runs, "warmup": warmup, "batch": 1, "interleaved": True,
                     "performance_hint": "LATENCY", "input_size_hw": [input_wh[1], input_wh[0]],
                     "input_source": inputs["source"], "device": device, "peak_size": peak_size},
        "baseline": baseline,
        "variants": [{"name": v.name, "kind": v.kind, "precision": v.precision,
                      "compute_precision": v.compute_precision, "stages": list(v.stages), **v.info}
                     for v in variants],
        "peaks": peaks,
        "flops_torch": {k: v["total"] for k, v in (torch_flops or {}).items()},
        "results": results,
        "headline": headline(results, baseline),
        "memory_mb": {"stages": memory_log, "bench_process": memory_status()},
        "notes": list(notes),
    }
    machine_cpu = report["machine"]["cpu"]
    if not machine_cpu["bf16"]:
        report["notes"].append(
            "bf16 is not supported on this CPU (OPTIMIZATION_CAPABILITIES / ONEDNN_MAX_CPU_ISA): unquantized "
            "folders are timed with the f32 hint only; a 'bf16' column here would really be f32.")
    report["notes"].append(f"INT8 path of this CPU: {machine_cpu['int8_path']} ({machine_cpu['int8_isa']}).")
    report["notes"] += [
        "stages are timed one after another; within a stage the variants are interleaved (A B C, A B C, ...) "
        "after all of them were compiled, so machine drift and other jobs hit every variant alike; crop = "
        "vae_encoder + pose + decode of the same run index.",
        "decode is the same numpy/OpenCV DARK-UDP code for every variant (the original pipeline decodes with "
        "mmpose in numpy as well); it runs on each variant's own heatmaps.",
        "detector = letterbox + network + NMS on one frame; its limit counts the network only.",
        "limits use the best of repeated MatMul calls (an optimistic peak); 'of limit' can exceed what "
        "memory-bound layers (normalisation, element-wise ops, not counted) allow.",
    ]
    ov_variants = [v for v in variants if v.kind == "openvino" and "crop" in results[v.name]]
    best = min(ov_variants, key=lambda v: results[v.name]["crop"]["median_ms"]) if ov_variants else None
    best_name, best_folder, best_hint = (best.name, best.info["folder"], best.info.get("hint")) if best else \
        (None, None, None)
    # free every compiled model and torch module before the end-to-end subprocesses load their own
    del best, ov_variants
    variants.clear()
    gc.collect()
    if not skip_e2e and video is not None and best_folder is not None:
        # write the per-stage figures first: a failing or interrupted end-to-end part must not lose them
        report["end_to_end"] = "running"
        write_report(report, out)
        try:
            report["end_to_end"] = run_end_to_end(best_folder, video, detections, e2e_frames,
                                                  best_hint if best_hint in ("f32", "bf16") else None,
                                                  device=device)
            report["end_to_end"]["variant"] = best_name
        except (SDPoseError, subprocess.SubprocessError, OSError, ValueError) as exc:
            logger.error("end-to-end part failed: %s", exc)
            report["end_to_end"] = f"failed: {exc}"
    elif video is None:
        report["end_to_end"] = "not run: pass --video FILE --detections DETS.json (a multi-person video)"
    else:
        report["end_to_end"] = "skipped (--skip-e2e)"
    write_report(report, out)
    logger.info("wrote %s/bench.json, bench.md%s", out, ", bench.png" if report.get("chart") else "")
    return report


# ================================================================================================ CLI
def add_common_arguments(p: argparse.ArgumentParser) -> None:
    """Options shared by ``sdpose-edge bench`` and ``sdpose-convert bench``."""
    p.add_argument("--models", action="append", required=True,
                   help="model folder (repeat for several: fp32, int8, hybrid ...)")
    p.add_argument("--runs", type=int, default=DEFAULT_RUNS,
                   help=f"timed runs per stage and variant (default {DEFAULT_RUNS})")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP,
                   help=f"untimed warm-up runs (default {DEFAULT_WARMUP})")
    p.add_argument("--out", required=True, help="output folder for bench.json, bench.md, bench.png")
    p.add_argument("--video", default=None, help="multi-person video for the end-to-end figures")
    p.add_argument("--detections", default=None, help="boxes of the video's frames (bypasses the detector)")
    p.add_argument("--e2e-frames", type=int, default=None, help="end to end: only the first N frames (default: all)")
    p.add_argument("--skip-e2e", action="store_true", help="skip the end-to-end part")
    p.add_argument("--peak-size", type=int, default=DEFAULT_PEAK_SIZE,
                   help=f"side of the square MatMuls of the peak micro-benchmark (default {DEFAULT_PEAK_SIZE})")
    p.add_argument("--device", default="CPU", help="OpenVINO device")
    p.add_argument("--skip-fused", action="store_true",
                   help="do not bench vae_pose.xml when the folder also has vae_encoder.xml + pose.xml")


def _check_args(args: argparse.Namespace) -> None:
    if args.runs < 1:
        raise InputError(f"--runs must be >= 1, got {args.runs}")
    if args.warmup < 0:
        raise InputError(f"--warmup must be >= 0, got {args.warmup}")
    if args.e2e_frames is not None and args.e2e_frames < 1:
        raise InputError(f"--e2e-frames must be >= 1, got {args.e2e_frames}")
    if args.peak_size < 16:
        raise InputError(f"--peak-size must be >= 16, got {args.peak_size}")
    for name in ("video", "detections"):
        value = getattr(args, name)
        if value is not None and not Path(value).is_file():
            raise InputError(f"--{name} {value}: file does not exist")


def log_summary(report: dict[str, Any]) -> None:
    """Final result lines (stdout via logging)."""
    for name, per in report["results"].items():
        crop = per.get("crop")
        if crop:
            logger.info("%-28s crop median %s p95 %s%s", name, _fmt_ms(crop["median_ms"]), _fmt_ms(crop["p95_ms"]),
                        f" speed-up {crop['speedup']:.2f}x" if crop.get("speedup") else "")
    hl = report.get("headline")
    if hl:
        logger.info("headline: best per crop %s, speed-up %.2fx over %s", hl["best_variant"], hl["speedup"],
                    hl["baseline"])


def run(args: argparse.Namespace) -> int:
    """``sdpose-edge bench``: runtime-only benchmark (no PyTorch baseline; speed-ups over OpenVINO FP32)."""
    _check_args(args)
    report = run_benchmark(args.models, args.out, runs=args.runs, warmup=args.warmup, video=args.video,
                           detections=args.detections, e2e_frames=args.e2e_frames, skip_e2e=args.skip_e2e,
                           peak_size=args.peak_size, device=args.device, skip_fused=args.skip_fused,
                           command="sdpose-edge " + " ".join(sys.argv[1:]),
                           notes=["runtime-only run (sdpose-edge bench): FLOPs counted from the IR, speed-ups "
                                  "over OpenVINO FP32 with the f32 hint; sdpose-convert bench adds the PyTorch "
                                  "original."])
    log_summary(report)
    return 0


def register(subparsers: Any, name: str = "bench") -> None:
    p = subparsers.add_parser(name, help="benchmark the model folder(s): per-stage latency, compute limit, "
                                         "end to end", description=__doc__.split("\n\n")[0])
    add_common_arguments(p)
    p.set_defaults(func=run)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        sys.exit(_child_main(sys.argv[2:]))
    sys.exit("usage: sdpose-edge bench ... (this module's __main__ is the end-to-end child process)")
