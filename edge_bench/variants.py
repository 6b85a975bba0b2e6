"""The OpenVINO variants of model folders: one per (folder, INFERENCE_PRECISION_HINT), stages compiled lazily,
FLOPs counted on the IR."""
from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import InputError, SDPoseError
from edge_runtime.model.metadata import POSE_KINDS

from .timing import StageBuilder, Variant

logger = logging.getLogger(__name__)

def _compiled_info(compiled: Any) -> dict[str, Any]:
    from edge_runtime.model.cpu import executed_precisions

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
    """:func:`edge_bench.peak.count_ir_flops` plus ``int8``: FLOPs of counted ops fed by a FakeQuantize."""
    from .peak import COUNTED_OPS, _batch_one, _node_flops, count_ir_flops

    counted = count_ir_flops(model)
    clone = _batch_one(model, 1)
    int8 = 0
    for node in clone.get_ordered_ops():
        if node.get_type_name() in COUNTED_OPS and _int8_fed(node):
            int8 += int(_node_flops(node) or 0)
    counted["int8"] = min(int8, counted["total"])
    return counted


def quantized_hint(core: Any, device: str) -> str | None:
    """The precision hint a quantized folder is benched with: the runtime's own per-ISA default on a CPU
    (:func:`edge_runtime.model.cpu.recommended_precision_hint`: f32 on bf16 CPUs without AMX and where
    ``ONEDNN_MAX_CPU_ISA`` caps bf16 away), else None (the device default)."""
    from edge_runtime.model.cpu import cpu_info, recommended_precision_hint

    if not device.upper().startswith("CPU"):
        return None
    return recommended_precision_hint(cpu_info(core, device), True)


def _hints_for(meta: dict[str, Any], bf16: bool = True, quantized: str | None = None) -> list[str | None]:
    """INFERENCE_PRECISION_HINTs to bench a folder with: f32 and (where the CPU has it) bf16 for float
    weights, else ``quantized`` (the per-ISA default of :func:`quantized_hint`; None = device default)."""
    if meta.get("quantized"):
        return [quantized]
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
    from edge_runtime.model.models import compile_model

    def build(earlier: dict[str, Any]) -> Callable[[], Any]:
        compiled = compile_model(core, core.read_model(str(xml)), options)
        info.setdefault("compiled", {})[stage] = _compiled_info(compiled)
        request = compiled.create_infer_request()
        data = make_input(earlier)
        return lambda: request.infer({0: data})

    return build


def _decode_stage(input_wh: tuple[int, int]) -> StageBuilder:
    from edge_runtime.model.codec import decode_heatmaps

    def build(earlier: dict[str, Any]) -> Callable[[], Any]:
        heatmaps = earlier.get("pose", earlier.get("vae_pose"))
        if heatmaps is None:
            raise SDPoseError("decode stage: no heatmaps from a pose stage of this variant")
        heatmaps = np.asarray(heatmaps.numpy() if hasattr(heatmaps, "numpy") else heatmaps, dtype=np.float32)
        return lambda: decode_heatmaps(heatmaps, input_size=input_wh)

    return build


def build_openvino_variants(folders: Sequence[str | Path], inputs: dict[str, Any], core: Any = None,
                            device: str = "CPU", with_detector: bool = True,
                            with_fused: bool = True, model_device: dict[str, str] | None = None) -> list[Variant]:
    """One :class:`Variant` per (folder, INFERENCE_PRECISION_HINT), compiled lazily per stage with the
    LATENCY hint and no model cache. The pose stage runs on the variant's own latent, decode on its own
    heatmaps. ``with_fused=False`` leaves out ``vae_pose.xml`` when the folder also has the split chain.
    ``model_device`` ({kind: device}) compiles those kinds on another device than ``device``.
    FLOPs are counted from the IRs here (once per folder)."""
    import openvino as ov

    from edge_runtime.model.cpu import cpu_info
    from edge_runtime.model.detector import PersonDetector
    from edge_runtime.model.models import CompileOptions, ModelFolder

    core = core if core is not None else ov.Core()
    bf16 = cpu_info(core, device).bf16 if device.upper().startswith("CPU") else True
    int8_hint = quantized_hint(core, device)
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
        kinds = [k for k in POSE_KINDS if folder.has(k)]
        if not with_fused and "vae_encoder" in kinds and "pose" in kinds and "vae_pose" in kinds:
            kinds.remove("vae_pose")
        if with_detector and folder.has("detector"):
            kinds.insert(0, "detector")
        flops = {k: ir_flops(folder.read_model(k)) for k in kinds}
        xml = {k: folder.ir_path(k) for k in kinds}
        component_precision = {k: folder.metadata(k).get("precision", "?") for k in kinds}
        chain, quantized = folder.chain, bool(meta.get("quantized", False))
        del folder  # drop the read models: each stage reads and compiles its IR when it runs
        for hint in _hints_for(meta, bf16, int8_hint):
            options = CompileOptions(device=device, performance_hint="LATENCY", inference_precision=hint,
                                     cache_dir=None, model_device=model_device)
            # a quantized folder's name leaves out its hint: the runtime's per-ISA default, not a choice
            name = _variant_name(precision, None if quantized else hint, taken, Path(folder_path))
            taken.add(name)
            compute = hint or _default_precision(core, device)
            compute = "bf16" if "bf16" in compute else "f32"
            shown = f"{hint} (per-ISA default)" if quantized and hint else hint or "device default"
            info: dict[str, Any] = {"folder": str(Path(folder_path).resolve()), "hint": shown,
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


