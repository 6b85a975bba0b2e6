"""``sdpose-convert convert``: checkpoint -> quantized, self-describing model folder, in one command.

    sdpose-convert convert --checkpoint DIR --calib calib_data/NAME --precision int8|hybrid|fp32|fp16|
        int8_weights|int4_weights --out MODELS [--input-size HxW] [--detector PATH] [--config YAML]
        [--subset-size N] [--component-precision pose=hybrid,vae_encoder=int8,...]

Stages (each logs its wall time and peak RSS; both go into ``report.json``):

1. ``export_fp32``: the checkpoint -> FP32 IRs (VAE encoder, pose, detector from ``<checkpoint>/yolo11*.pt``
   or ``--detector``) in a temporary folder beside ``--out``, in a *child process*: torch and every torch
   module are gone (memory returned to the OS) before NNCF starts. ``--fp32-from`` reuses an existing FP32
   export of the same checkpoint instead.
2. ``capture_pose_inputs``: the calibration crops run through the FP32 chain up to the pose IR (crop -> FP32
   VAE encoder IR -> latent); the latents the pose IR receives are collected (4 x H/8 x W/8 floats each,
   small). Crops are read from disk one at a time.
3. ``quantize_<kind>``: one component at a time, read from the FP32 folder, quantized
   (:func:`convert.quantize.quantize_component`), saved, released. Detector: letterboxed calibration
   frames; VAE encoder: crops (streamed at every NNCF pass); pose: the captured latents.
4. ``validate``: :func:`convert.validate.validate_folder` against the FP32 export on held-out crops
   (report.json + report.md).
5. The finished folder is moved to ``--out`` (never half-written); the FP32 export is deleted unless
   ``--keep-fp32 DIR``.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from convert.quantize import (CALIBRATED_MODES, MODES, OVERFLOW_FIX, QUANTIZED_MODES, QuantizeOptions,
                              QuantizationError,
                              Reiterable, quantize_component, save_component)
from convert.export import add_variant_arguments, resolve_input_size
from edge_bench.child import run_in_fresh_process
from edge_runtime.errors import InputError, SDPoseError
from edge_runtime.metrics import peak_rss_mb, reset_peak_rss
from edge_runtime.metadata import read_index, read_metadata

logger = logging.getLogger(__name__)

#: components in conversion order
COMPONENTS = ("detector", "vae_encoder", "pose")
#: the config file used when --config is not given (if it exists), found relative to the working directory
#: as ``sdpose-edge``'s configs/edge.yaml: an installed package has no configs/ folder, a project has its own
DEFAULT_CONFIG = Path("configs") / "convert.yaml"
#: the built-in defaults; the shipped configs/convert.yaml states exactly these (tests/convert/test_convert_cmd.py)
DEFAULT_CONFIG_VALUES: dict[str, Any] = {
    "input_size": "1024x768",
    "detector_imgsz": 640,
    "components": {
        "detector": {"precision": "int8", "subset_size": 32},
        "vae_encoder": {"precision": "int8", "subset_size": 64},
        "pose": {"precision": "int8", "subset_size": 64},
    },
    "calibration": {"held_out": 4, "capture_precision_hint": "f32"},
    "validation": {"latency_runs": 3, "latency_hints": ["f32", "bf16"]},
    "advanced": {},
}
_TOP_KEYS = {"input_size", "detector_imgsz", "components", "calibration", "validation", "advanced"}
_COMPONENT_KEYS = {"precision", "subset_size", "advanced"}
_CALIB_KEYS = {"held_out", "capture_precision_hint"}
_VALIDATION_KEYS = {"latency_runs", "latency_hints"}
_HINTS = ("f32", "bf16", "f16")


# ---------------------------------------------------------------------------------------------- config

@dataclasses.dataclass
class ComponentPlan:
    """How one component is converted: precision mode, NNCF subset size, NNCF options."""

    precision: str
    subset_size: int
    options: QuantizeOptions


@dataclasses.dataclass
class ConvertConfig:
    """Resolved conversion settings (YAML + CLI overrides)."""

    input_size: tuple[int, int]  # (H, W)
    detector_imgsz: int
    components: dict[str, ComponentPlan]
    held_out: int
    capture_precision_hint: str
    latency_runs: int
    latency_hints: list[str]
    token_downsample: int = 1  # attention token downsampling factor (1 = off)
    token_levels: tuple[int, ...] = (0,)  # UNet levels it applies to

    def describe(self) -> dict[str, Any]:
        from convert.quantize import describe_options

        return {"input_size_hw": list(self.input_size), "detector_imgsz": self.detector_imgsz,
                "components": {k: {"precision": p.precision, "subset_size": p.subset_size,
                                   "advanced": describe_options(p.options)} for k, p in self.components.items()},
                "held_out": self.held_out, "capture_precision_hint": self.capture_precision_hint,
                "latency_runs": self.latency_runs, "latency_hints": list(self.latency_hints),
                "token_downsample": self.token_downsample, "token_levels": list(self.token_levels)}


def parse_input_size(text: Any, where: str = "--input-size") -> tuple[int, int]:
    """'HxW' (or [H, W]) -> (H, W), positive multiples of 8; InputError otherwise."""
    from edge_runtime.geometry import parse_size_hw

    return parse_size_hw(text, where)


def _check_keys(d: Any, allowed: set[str], where: str) -> dict[str, Any]:
    if d is None:
        return {}
    if not isinstance(d, Mapping):
        raise InputError(f"{where}: expected a mapping, got {type(d).__name__}")
    unknown = sorted(str(k) for k in d if str(k) not in allowed)
    if unknown:
        raise InputError(f"{where}: unknown key(s) {unknown}; expected some of {sorted(allowed)}")
    return dict(d)


def _positive_int(value: Any, where: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(f"{where}: expected an integer >= {minimum}, got {value!r}")
    return value


def _check_mode(mode: Any, where: str) -> str:
    if mode not in MODES:
        raise InputError(f"{where}: precision {mode!r} is unknown; expected one of {', '.join(MODES)}")
    return str(mode)


def parse_component_precision(text: str) -> dict[str, str]:
    """'pose=hybrid,vae_encoder=int8' -> {"pose": "hybrid", "vae_encoder": "int8"}; InputError on bad items."""
    out: dict[str, str] = {}
    for item in (t.strip() for t in str(text).split(",")):
        if not item:
            continue
        if "=" not in item:
            raise InputError(f"--component-precision: expected COMPONENT=MODE items, got {item!r}")
        kind, mode = (s.strip() for s in item.split("=", 1))
        if kind not in COMPONENTS:
            raise InputError(f"--component-precision: component {kind!r} is unknown; expected one of "
                             f"{', '.join(COMPONENTS)}")
        out[kind] = _check_mode(mode, f"--component-precision {kind}")
    return out


def load_config(path: str | Path | None = None, *, precision: str | None = None,
                component_precision: Mapping[str, str] | None = None, subset_size: int | None = None,
                input_size: tuple[int, int] | None = None, held_out: int | None = None,
                latency_runs: int | None = None, overflow_fix: str | None = None, token_downsample: int = 1,
                token_levels: tuple[int, ...] | None = None) -> ConvertConfig:
    """Read ``configs/convert.yaml`` (or ``path``), apply CLI overrides, validate everything.

    Precedence: ``component_precision`` > ``precision`` > YAML components.<kind>.precision;
    ``overflow_fix`` (--overflow-fix) overrides ``advanced.overflow_fix`` of every component.
    Raises InputError naming the file and key for unknown keys or bad values.
    """
    raw: dict[str, Any] = json.loads(json.dumps(DEFAULT_CONFIG_VALUES))
    source = "built-in defaults"
    if overflow_fix is not None and overflow_fix not in OVERFLOW_FIX:
        raise InputError(f"--overflow-fix: expected one of {list(OVERFLOW_FIX)}, got {overflow_fix!r}")
    cfg_path = Path(path) if path is not None else DEFAULT_CONFIG
    if path is not None or cfg_path.is_file():
        if not cfg_path.is_file():
            raise InputError(f"--config {cfg_path}: no such file")
        try:
            loaded = yaml.safe_load(cfg_path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise InputError(f"{cfg_path}: not valid YAML ({exc})") from exc
        loaded = _check_keys(loaded, _TOP_KEYS, str(cfg_path))
        source = str(cfg_path)
        for key, value in loaded.items():
            if key == "components":
                comps = _check_keys(value, set(COMPONENTS), f"{cfg_path}: components")
                for kind, spec in comps.items():
                    raw["components"][kind].update(_check_keys(spec, _COMPONENT_KEYS,
                                                               f"{cfg_path}: components.{kind}"))
            elif key in ("calibration", "validation"):
                allowed = _CALIB_KEYS if key == "calibration" else _VALIDATION_KEYS
                raw[key].update(_check_keys(value, allowed, f"{cfg_path}: {key}"))
            else:
                raw[key] = value

    size = input_size if input_size is not None else parse_input_size(raw["input_size"], f"{source}: input_size")
    imgsz = _positive_int(raw["detector_imgsz"], f"{source}: detector_imgsz")
    if imgsz % 32:
        raise InputError(f"{source}: detector_imgsz must be a multiple of 32, got {imgsz}")
    if overflow_fix is not None:
        raw["advanced"] = dict(raw.get("advanced") or {}, overflow_fix=overflow_fix)
        for spec in raw["components"].values():
            if spec.get("advanced"):
                spec["advanced"] = dict(spec["advanced"], overflow_fix=overflow_fix)
    try:
        global_opts = QuantizeOptions.from_dict(raw.get("advanced") or {}, f"{source}: advanced")
    except QuantizationError as exc:
        raise InputError(str(exc)) from exc
    plans: dict[str, ComponentPlan] = {}
    overrides = dict(component_precision or {})
    for kind in COMPONENTS:
        spec = raw["components"][kind]
        mode = overrides.get(kind) or precision or spec.get("precision")
        mode = _check_mode(mode, f"{source}: components.{kind}.precision")
        subset = subset_size if subset_size is not None else spec.get("subset_size")
        subset = _positive_int(subset, f"{source}: components.{kind}.subset_size")
        adv = dict(raw.get("advanced") or {})
        adv.update(spec.get("advanced") or {})
        try:
            opts = QuantizeOptions.from_dict(adv, f"{source}: components.{kind}.advanced") if spec.get(
                "advanced") else global_opts
        except QuantizationError as exc:
            raise InputError(str(exc)) from exc
        plans[kind] = ComponentPlan(mode, subset, opts)
    calib = raw["calibration"]
    held = held_out if held_out is not None else calib.get("held_out")
    held = _positive_int(held, f"{source}: calibration.held_out", minimum=0)
    hint = calib.get("capture_precision_hint")
    if hint not in _HINTS:
        raise InputError(f"{source}: calibration.capture_precision_hint: expected one of {_HINTS}, got {hint!r}")
    val = raw["validation"]
    runs = latency_runs if latency_runs is not None else val.get("latency_runs")
    runs = _positive_int(runs, f"{source}: validation.latency_runs", minimum=0)
    hints = val.get("latency_hints")
    if not isinstance(hints, list) or any(h not in _HINTS for h in hints):
        raise InputError(f"{source}: validation.latency_hints: expected a list of {_HINTS}, got {hints!r}")
    from convert.token_downsample import check_settings

    factor, levels = check_settings(token_downsample, token_levels)
    return ConvertConfig(size, imgsz, plans, held, hint, runs, list(hints), factor, levels)


# ---------------------------------------------------------------------------------------------- stages

def _peak_rss_gb() -> float:
    """Peak RSS of this process since the last :func:`reset_peak_rss`, GB."""
    return (peak_rss_mb() or 0.0) / 1024.0


class StageLog:
    """Wall time and peak RSS of each conversion stage (logged, and embedded in the report)."""

    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.overall_peak = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        gc.collect()
        exact = reset_peak_rss()
        t0 = time.perf_counter()
        record: dict[str, Any] = {"stage": name}
        logger.info("stage %s ...", name)
        try:
            yield record
        finally:
            gc.collect()
            record["wall_s"] = round(time.perf_counter() - t0, 2)
            peak = max(_peak_rss_gb(), float(record.pop("child_peak_rss_gb", 0.0)))
            record["peak_rss_gb"] = round(peak, 3)
            record["peak_rss_exact"] = exact
            self.overall_peak = max(self.overall_peak, peak)
            self.stages.append(record)
            logger.info("stage %s: %.1f s, peak RSS %.2f GB", name, record["wall_s"], peak)

    def summary(self) -> dict[str, Any]:
        return {"stages": self.stages, "wall_s": round(time.perf_counter() - self.started, 2),
                "peak_rss_gb": round(self.overall_peak, 3)}


def _export_fp32_child(checkpoint: str, out: str, input_size: tuple[int, int], detector: str | None,
                       imgsz: int, log_level: int, token_downsample: int = 1,
                       token_levels: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Child-process body of the ``export_fp32`` stage: returns {"written": {kind: path}, "peak_rss_gb"}."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from convert.export import export_models

    written = {k: str(v) for k, v in export_models(checkpoint, out, "fp32", tuple(input_size),
                                                   token_downsample=token_downsample,
                                                   token_levels=tuple(token_levels)).items()}
    if detector is not None:
        from convert.detector import export_detector

        written["detector"] = str(export_detector(detector, out, imgsz=imgsz, precision="fp32"))
    peak = _peak_rss_gb()
    return {"written": written, "peak_rss_gb": peak}


def export_fp32(checkpoint: Path, out: Path, input_size: tuple[int, int], detector: Path | None,
                imgsz: int, token_downsample: int = 1, token_levels: tuple[int, ...] = (0,)) -> dict[str, Any]:
    """Run the FP32 export in a fresh (spawned) process so that torch's memory is released afterwards."""
    return run_in_fresh_process(_export_fp32_child, str(checkpoint), str(out), tuple(input_size),
                                str(detector) if detector else None, imgsz, logging.getLogger().getEffectiveLevel(),
                                token_downsample, tuple(token_levels), what="FP32 export")


def capture_component_inputs(fp32_folder: Path, kind: str, images: Iterator[Any], limit: int,
                             hint: str) -> list[Any]:
    """Run the FP32 chain up to component ``kind`` and collect the inputs ``kind`` receives.

    ``images``: crops u8 [1,H,W,3]. For ``pose`` this is crop -> FP32 VAE encoder IR -> latent f32
    [1,4,H/8,W/8]; at most ``limit`` inputs are collected (one per crop).
    """
    from edge_runtime.models import CompileOptions, ModelFolder, compile_model

    chains = {"pose": "split", "vae_encoder": "split", "vae_pose": "fused"}
    folder = ModelFolder(fp32_folder, chain=chains.get(kind))
    kinds = list(folder.kinds)
    if kind not in kinds:
        raise SDPoseError(f"{fp32_folder}: chain {kinds} has no component '{kind}'")
    before = kinds[: kinds.index(kind)]
    options = CompileOptions(performance_hint="LATENCY", inference_precision=hint, cache_dir=None)
    requests = [compile_model(folder.core, folder.read_model(k), options).create_infer_request() for k in before]
    collected: list[Any] = []
    for image in images:
        if len(collected) >= limit:
            break
        data = image
        for request in requests:
            data = request.infer({0: data})[0]
        collected.append(data.copy())
        logger.info("captured %s input %d/%d %s", kind, len(collected), limit, tuple(collected[-1].shape))
    return collected


# ---------------------------------------------------------------------------------------------- convert

def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out} already exists and is not empty; choose a new folder (existing output is "
                         "never overwritten)")


def _open_calibration(calib: str | Path) -> Any:
    from calib_data import load_calibration_set

    path = Path(calib)
    if path.is_dir() and not any(path.iterdir()):
        raise InputError(f"--calib {path}: the calibration folder is empty (build one with `sdpose-convert calib "
                         "--images DIR --out calib_data/NAME`, or use calib_data/default)")
    cset = load_calibration_set(calib)
    if len(cset.crop_records) == 0:
        raise InputError(f"--calib {path}: the calibration set has no crops")
    return cset


def convert(checkpoint: str | Path, out: str | Path, config: ConvertConfig, calib: str | Path | None = None,
            detector: str | Path | None = None, use_detector: bool = True, keep_fp32: str | Path | None = None,
            fp32_from: str | Path | None = None, synthetic_note: bool | None = None) -> dict[str, Any]:
    """Convert a checkpoint into a model folder at ``out`` following ``config``; returns the report dict.

    Clear errors (InputError) before any heavy work: missing checkpoint, non-empty ``out``, quantized
    precision without ``calib``, empty/unreadable calibration set, crop aspect not matching the input size.
    """
    from convert.checkpoint import checkpoint_sha256
    from convert.detector import find_detector_checkpoint
    from convert.validate import calibration_record, iter_crops, split_calibration, validate_folder, write_report

    checkpoint = Path(checkpoint).expanduser()
    out = Path(out).expanduser()
    if not checkpoint.is_dir():
        raise InputError(f"--checkpoint {checkpoint}: no such folder (expected the SDPose layout: unet/, vae/, "
                         "text_encoder/, tokenizer/, decoder/decoder.safetensors)")
    _check_out(out)
    keep_path = Path(keep_fp32).expanduser() if keep_fp32 is not None else None
    if keep_path is not None:
        _check_out(keep_path)
    modes = {k: p.precision for k, p in config.components.items()}
    needs_calib = sorted(k for k, m in modes.items() if m in CALIBRATED_MODES)

    # detector source
    det_pt: Path | None = None
    if use_detector:
        det_pt = Path(detector).expanduser() if detector is not None else find_detector_checkpoint(checkpoint)
        if detector is not None and not det_pt.is_file():
            raise InputError(f"--detector {det_pt}: no such file (expected an ultralytics YOLO .pt)")
        if det_pt is None:
            logger.warning("no %s/yolo11*.pt and no --detector: the model folder will have no detector "
                           "(sdpose-edge then needs --detections)", checkpoint)
    if det_pt is None:
        needs_calib = [k for k in needs_calib if k != "detector"]

    # calibration set (checked before any heavy work)
    cset = None
    if calib is None and needs_calib:
        raise InputError(f"--calib is required: component(s) {needs_calib} use calibrated precision(s) "
                         f"{sorted({modes[k] for k in needs_calib})} (use e.g. --calib calib_data/default, or "
                         "fp32/fp16/int8_weights/int4_weights which need none)")
    if calib is not None:
        cset = _open_calibration(calib)
    else:
        try:
            cset = _open_calibration("default")
            logger.info("no --calib: the fidelity report uses the default calibration set's crops")
        except InputError as exc:
            logger.warning("no calibration set for the fidelity report (%s)", exc)
    h, w = config.input_size
    calib_idx: list[int] = []
    held_idx: list[int] = []
    calib_info: dict[str, Any] | None = None
    if cset is not None:
        cw, ch = cset.input_size
        if abs(cw / ch - w / h) > 1e-3:
            raise InputError(f"--calib {cset.path}: crops are {ch}x{cw} (HxW) but --input-size is {h}x{w}; the "
                             "aspect ratios differ (rebuild the set with --input-size)")
        calib_idx, held_idx = split_calibration(cset, config.held_out)
        calib_info = calibration_record(cset, calib_idx, held_idx)
    if synthetic_note is None:
        synthetic_note = (checkpoint / "synthetic.json").is_file()

    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    stage_dir = work / "models"
    fp32_dir = Path(fp32_from).expanduser() if fp32_from is not None else work / "fp32"
    log = StageLog()
    logger.info("converting %s -> %s: %s (calibration: %s)", checkpoint, out, modes,
                calib_info["name"] if calib_info else "none")
    try:
        # 1. FP32 export (child process) or reuse
        if fp32_from is None:
            with log.stage("export_fp32") as rec:
                res = export_fp32(checkpoint, fp32_dir, config.input_size, det_pt, config.detector_imgsz,
                                  config.token_downsample, config.token_levels)
                rec["child_peak_rss_gb"] = res["peak_rss_gb"]
                rec["note"] = "child process (torch)"
        else:
            _check_fp32_from(fp32_dir, checkpoint_sha256(checkpoint), config.input_size, det_pt is not None,
                             config.token_downsample, config.token_levels)
            logger.info("reusing the FP32 export %s", fp32_dir)
        fp32_index = read_index(fp32_dir)
        kinds = [k for k in ("detector", "vae_encoder", "pose", "vae_pose") if k in fp32_index["components"]]
        if det_pt is None and "detector" in kinds:
            kinds.remove("detector")

        # 2. pose calibration inputs: crops through the FP32 chain up to the pose IR
        pose_modes = {k: modes["pose"] for k in ("pose", "vae_pose") if k in kinds}
        latents: list[Any] | None = None
        if "pose" in pose_modes and pose_modes["pose"] in CALIBRATED_MODES:
            with log.stage("capture_pose_inputs") as rec:
                latents = capture_component_inputs(
                    fp32_dir, "pose", iter_crops(cset, calib_idx, (w, h)),
                    config.components["pose"].subset_size, config.capture_precision_hint)
                rec["samples"] = len(latents)

        # 3. quantize one component at a time
        import openvino as ov

        core = ov.Core()
        stage_dir.mkdir(parents=True)
        for kind in kinds:
            plan = config.components["pose" if kind == "vae_pose" else kind]
            xml = fp32_dir / fp32_index["components"][kind]
            with log.stage(f"quantize_{kind}") as rec:
                rec["precision"] = plan.precision
                model = core.read_model(str(xml))
                options = plan.options
                data: Any = None
                if plan.precision in CALIBRATED_MODES:
                    if kind == "detector":
                        data, options = _detector_calibration(model, cset, config, options)
                    elif kind == "pose":
                        data = latents
                    else:  # vae_encoder / vae_pose take crops
                        n = min(plan.subset_size, len(calib_idx))
                        data = Reiterable(lambda: iter_crops(cset, calib_idx[:n], (w, h)), n)
                quantized = quantize_component(
                    model, kind, plan.precision, data, subset_size=plan.subset_size, options=options,
                    calib_info=calib_info if plan.precision in CALIBRATED_MODES else None, source=xml)
                save_component(quantized, stage_dir / xml.name, plan.precision)
                del model, quantized, data
        latents = None
        _write_index(stage_dir, fp32_index, kinds, {k: config.components["pose" if k == "vae_pose" else k].precision
                                                    for k in kinds})

        # 4. fidelity report against the FP32 export
        notes = []
        if synthetic_note:
            notes.append("Synthetic checkpoint (random weights): the figures measure quantization error on a "
                         "random-weight network, not pose accuracy.")
        if (checkpoint / "proxy.json").is_file():
            notes.append("Proxy checkpoint: a tiny SDPose-architecture model trained on drawn figures "
                         "(convert.train_proxy); fidelity figures are real for it, but say nothing about the "
                         "released model on real people.")
        report: dict[str, Any]
        with log.stage("validate"):
            report = validate_folder(stage_dir, reference=fp32_dir, calib=cset.path if cset else None,
                                     held_out=config.held_out, latency_runs=config.latency_runs,
                                     latency_hints=config.latency_hints, notes=notes, write=False) \
                if cset is not None else _report_without_calibration(stage_dir, notes)
        report["models"] = str(out.resolve())
        if fp32_from is not None:
            report["reference"] = str(fp32_dir.resolve())
        elif keep_path is not None:
            report["reference"] = str(keep_path.resolve())
        else:
            report["reference"] = "temporary FP32 export (deleted after the conversion; use --keep-fp32 DIR)"
        report["conversion"] = dict(log.summary(), checkpoint=str(checkpoint.resolve()),
                                    config=config.describe(), detector_source=str(det_pt) if det_pt else None)
        write_report(stage_dir, report)

        # 5. install
        if out.exists():
            out.rmdir()
        stage_dir.rename(out)
        if keep_path is not None and fp32_from is None:
            if keep_path.exists():
                keep_path.rmdir()
            shutil.move(str(fp32_dir), str(keep_path))
            logger.info("kept the FP32 export in %s", keep_path)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("conversion done in %.1f s (peak RSS %.2f GB): %s", report["conversion"]["wall_s"],
                report["conversion"]["peak_rss_gb"], out)
    return report


def _detector_calibration(model: Any, cset: Any, config: ConvertConfig,
                          options: QuantizeOptions) -> tuple[Reiterable, QuantizeOptions]:
    """Calibration inputs (letterboxed frames) and options (+ ignored box-decoding tail) for the detector."""
    from convert.detector import detector_calibration_inputs, detector_ignored_scope
    from convert.validate import iter_crops, iter_frames, split_calibration, split_frames

    imgsz = int(model.inputs[0].get_partial_shape()[1].get_length())
    scope = detector_ignored_scope(model)
    options = dataclasses.replace(options, ignored_names=tuple(options.ignored_names) + tuple(scope.names),
                                  ignored_types=tuple(options.ignored_types) + tuple(scope.types))
    n_sub = config.components["detector"].subset_size
    frame_idx, _ = split_frames(cset, config.held_out)
    if frame_idx:
        n = min(n_sub, len(frame_idx))
        return Reiterable(lambda: detector_calibration_inputs(iter_frames(cset, frame_idx[:n]), imgsz), n), options
    logger.warning("calibration set %s has no frames: the detector is calibrated on the person crops", cset.path)
    calib_idx, _ = split_calibration(cset, config.held_out)
    n = min(n_sub, len(calib_idx))
    return Reiterable(lambda: detector_calibration_inputs(
        (c[0] for c in iter_crops(cset, calib_idx[:n], cset.input_size)), imgsz), n), options


def _check_fp32_from(folder: Path, sha: str, input_size: tuple[int, int], want_detector: bool,
                     token_downsample: int = 1, token_levels: tuple[int, ...] = (0,)) -> None:
    """--fp32-from must be an unquantized export of the same checkpoint at the same input size and token
    downsampling."""
    from edge_runtime.models import ModelFolder

    mf = ModelFolder(folder)
    meta = mf.pose_meta
    if meta.get("checkpoint_sha256") != sha:
        raise InputError(f"--fp32-from {folder}: exported from checkpoint {meta.get('checkpoint_sha256')}, not "
                         f"from --checkpoint (sha256 {sha})")
    if (meta.get("input_height"), meta.get("input_width")) != tuple(input_size):
        raise InputError(f"--fp32-from {folder}: input size {meta.get('input_height')}x{meta.get('input_width')} "
                         f"differs from {input_size[0]}x{input_size[1]}")
    if int(meta.get("token_downsample", 1)) != token_downsample:
        raise InputError(f"--fp32-from {folder}: token_downsample {meta.get('token_downsample', 1)} differs from "
                         f"--token-downsample {token_downsample}")
    recorded_levels = tuple(int(v) for v in meta.get("token_downsample_levels") or ())
    if token_downsample > 1 and recorded_levels != tuple(token_levels):
        raise InputError(f"--fp32-from {folder}: token downsampling levels {list(recorded_levels)} differ from "
                         f"--levels {','.join(map(str, token_levels))}")
    for kind in mf.components:
        m = mf.metadata(kind)
        if m.get("quantized") or m.get("precision") != "fp32":
            raise InputError(f"--fp32-from {folder}: component {kind} is {m.get('precision')} "
                             f"(quantized={m.get('quantized')}); an FP32 export is needed")
    if want_detector and not mf.has("detector"):
        raise InputError(f"--fp32-from {folder}: has no detector; pass --no-detector or export one into it")


def _write_index(stage_dir: Path, fp32_index: dict[str, Any], kinds: list[str], modes: dict[str, str]) -> None:
    from edge_runtime.metadata import write_index

    index = {k: v for k, v in fp32_index.items() if k != "components"}
    distinct = sorted(set(modes.values()))
    index.update({
        "components": {k: fp32_index["components"][k] for k in kinds},
        "precision": distinct[0] if len(distinct) == 1 else "mixed",
        "component_precision": modes,
        "quantized": any(m in QUANTIZED_MODES for m in modes.values()),
        "report": "report.json",
    })
    write_index(stage_dir, index)


def _report_without_calibration(stage_dir: Path, notes: list[str]) -> dict[str, Any]:
    from convert.validate import REPORT_VERSION, bin_size_mb

    from edge_runtime.models import ModelFolder

    mf = ModelFolder(stage_dir)
    comps = {}
    for kind, xml in mf.components.items():
        meta = read_metadata(mf.read_model(kind), xml)
        comps[kind] = {"file": xml.name, "precision": meta.get("precision"),
                       "quantized": bool(meta.get("quantized")), "size_mb": bin_size_mb(xml)}
    return {"format_version": REPORT_VERSION, "components": comps, "notes": notes,
            "fidelity": {"status": "skipped: no calibration set to take held-out crops from"}}


# ---------------------------------------------------------------------------------------------- CLI

def register(subparsers: Any, name: str = "convert") -> None:
    """Add the ``convert`` sub-command."""
    p = subparsers.add_parser(name, help="checkpoint -> quantized model folder with a fidelity report",
                              description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", required=True, type=Path, help="SDPose checkpoint folder (public layout)")
    p.add_argument("--out", required=True, type=Path, help="model folder to create (must not exist or be empty)")
    p.add_argument("--precision", choices=MODES, default=None,
                   help="precision of every component (default: per component from the config)")
    p.add_argument("--calib", default=None,
                   help="calibration set folder (calib_data/NAME); needed for int8 / hybrid")
    p.add_argument("--input-size", default=None, metavar="HxW", help="crop size (default from the config: 1024x768)")
    add_variant_arguments(p)
    p.add_argument("--detector", type=Path, default=None,
                   help="ultralytics YOLO .pt (default: <checkpoint>/yolo11*.pt when present)")
    p.add_argument("--no-detector", action="store_true", help="do not convert a detector")
    p.add_argument("--config", type=Path, default=None, help=f"YAML settings (default {DEFAULT_CONFIG.name})")
    p.add_argument("--subset-size", type=int, default=None, help="calibration samples per component (NNCF)")
    p.add_argument("--component-precision", default=None, metavar="KIND=MODE,...",
                   help="per-component precision, e.g. pose=hybrid,vae_encoder=int8,detector=fp32")
    p.add_argument("--held-out", type=int, default=None, help="calibration crops held out for the report")
    p.add_argument("--overflow-fix", choices=list(OVERFLOW_FIX), default=None,
                   help="INT8 weights narrowed to 7 bits so CPUs without VNNI do not saturate: on every layer "
                        "(enable, the default from configs/convert.yaml), the first layer only (first_layer, "
                        "NNCF's default) or none (disable)")
    p.add_argument("--latency-runs", type=int, default=None, help="timed runs per component and hint (0: none)")
    p.add_argument("--keep-fp32", type=Path, default=None, metavar="DIR",
                   help="keep the intermediate FP32 export (the report's reference) in DIR")
    p.add_argument("--fp32-from", type=Path, default=None, metavar="DIR",
                   help="reuse this FP32 export of the same checkpoint instead of exporting again")
    p.set_defaults(func=run)


def _input_size(args: argparse.Namespace) -> tuple[int, int] | None:
    """--preset / --input-size -> (H, W), or None for the config's input_size."""
    size = parse_input_size(args.input_size) if args.input_size else None
    return resolve_input_size(args.preset, size) if args.preset is not None else size


def run(args: argparse.Namespace) -> int:
    """``sdpose-convert convert`` entry point."""
    overrides = parse_component_precision(args.component_precision) if args.component_precision else None
    if args.subset_size is not None:
        _positive_int(args.subset_size, "--subset-size")
    config = load_config(args.config, precision=args.precision, component_precision=overrides,
                         subset_size=args.subset_size,
                         input_size=_input_size(args),
                         token_downsample=args.token_downsample, token_levels=args.levels,
                         held_out=args.held_out, latency_runs=args.latency_runs,
                         overflow_fix=args.overflow_fix)
    report = convert(args.checkpoint, args.out, config, calib=args.calib, detector=args.detector,
                     use_detector=not args.no_detector, keep_fp32=args.keep_fp32, fp32_from=args.fp32_from)
    e2e = (report.get("fidelity") or {}).get("end_to_end")
    if e2e:
        logger.info("end to end vs FP32: heatmap cosine %.5f, keypoint displacement mean %.3f px, p95 %.3f px",
                    e2e["heatmap_cosine"]["mean"], e2e["keypoint_displacement"]["mean_px"],
                    e2e["keypoint_displacement"]["p95_px"])
    logger.info("model folder: %s (report: %s)", args.out, Path(args.out) / "report.md")
    return 0
