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
import logging
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from convert.calibration import (CalibrationPlan, calibration_record, capture_component_inputs,  # noqa: F401
                                 component_calibration, iter_crops, open_calibration, split_calibration)
from convert.convert_config import (COMPONENTS, DEFAULT_CONFIG, DEFAULT_CONFIG_VALUES, ComponentPlan,  # noqa: F401
                                    ConvertConfig, checked_int, load_config, parse_component_precision,
                                    parse_input_size, plan_kind)
from convert.export import add_variant_arguments, resolve_input_size
from convert.fidelity import bin_size_mb
from convert.quantize import CALIBRATED_MODES, MODES, OVERFLOW_FIX, QUANTIZED_MODES, quantize_component, save_component
from convert.report import REPORT_VERSION, write_report
from convert.validate import validate_folder
from edge_runtime.running.backends import release_heap
from edge_runtime.running.child import run_in_fresh_process
from edge_runtime.errors import InputError
from edge_runtime.model.metadata import COMPONENT_KINDS, read_index, read_metadata
from edge_runtime.running.metrics import peak_rss_mb, reset_peak_rss

# The settings (convert.convert_config) and the calibration data (convert.calibration) were parts of this module:
# their names stay importable from here (noqa: F401 above).

logger = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------- stages

#: bytes per GB (10^9) and per GiB (2^30); peak_rss_mb() counts MB of 2^20 bytes
_GB, _GIB, _MB = 1e9, float(1 << 30), float(1 << 20)


def _peak_rss_gb() -> float:
    """Peak RSS of this process since the last :func:`reset_peak_rss`, GB (10^9 bytes; reports before issue 28
    gave GiB under this name)."""
    return (peak_rss_mb() or 0.0) * _MB / _GB


def _gib(gb: float) -> float:
    return round(gb * _GB / _GIB, 3)


class StageLog:
    """Wall time and peak RSS of each conversion stage (logged, and embedded in the report)."""

    def __init__(self) -> None:
        self.stages: list[dict[str, Any]] = []
        self.started = time.perf_counter()
        self.overall_peak = 0.0

    @contextmanager
    def stage(self, name: str) -> Iterator[dict[str, Any]]:
        gc.collect()
        release_heap()  # the earlier stage's freed heap back to the OS: this stage's peak starts from what lives
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
            record["peak_rss_gib"] = _gib(peak)
            record["peak_rss_exact"] = exact
            self.overall_peak = max(self.overall_peak, peak)
            self.stages.append(record)
            logger.info("stage %s: %.1f s, peak RSS %.2f GB (%.2f GiB)", name, record["wall_s"], peak,
                        record["peak_rss_gib"])

    def summary(self) -> dict[str, Any]:
        return {"stages": self.stages, "wall_s": round(time.perf_counter() - self.started, 2),
                "peak_rss_gb": round(self.overall_peak, 3), "peak_rss_gib": _gib(self.overall_peak)}


def _export_fp32_child(checkpoint: str, out: str, input_size: tuple[int, int], detector: str | None,
                       imgsz: int, log_level: int, token_downsample: int = 1,
                       token_levels: tuple[int, ...] = (0,), vae_token_downsample: int = 1) -> dict[str, Any]:
    """Child-process body of the ``export_fp32`` stage: returns {"written": {kind: path}, "peak_rss_gb"}."""
    logging.basicConfig(level=log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from convert.export import export_models

    written = {k: str(v) for k, v in export_models(checkpoint, out, "fp32", tuple(input_size),
                                                   token_downsample=token_downsample,
                                                   token_levels=tuple(token_levels),
                                                   vae_token_downsample=vae_token_downsample).items()}
    if detector is not None:
        from convert.detector import export_detector

        written["detector"] = str(export_detector(detector, out, imgsz=imgsz, precision="fp32"))
    peak = _peak_rss_gb()
    return {"written": written, "peak_rss_gb": peak}


def export_fp32(checkpoint: Path, out: Path, input_size: tuple[int, int], detector: Path | None,
                imgsz: int, token_downsample: int = 1, token_levels: tuple[int, ...] = (0,),
                vae_token_downsample: int = 1) -> dict[str, Any]:
    """Run the FP32 export in a fresh (spawned) process so that torch's memory is released afterwards."""
    return run_in_fresh_process(_export_fp32_child, str(checkpoint), str(out), tuple(input_size),
                                str(detector) if detector else None, imgsz, logging.getLogger().getEffectiveLevel(),
                                token_downsample, tuple(token_levels), vae_token_downsample, what="FP32 export")


# ---------------------------------------------------------------------------------------------- convert

def _check_out(out: Path) -> None:
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"--out {out} already exists and is not empty; choose a new folder (existing output is "
                         "never overwritten)")


@dataclasses.dataclass
class ConversionJob:
    """One conversion, checked before any heavy work: where from and to, how, and on what calibration data."""

    checkpoint: Path
    out: Path
    config: ConvertConfig
    detector: Path | None  # the YOLO .pt converted (None: no detector)
    cset: Any  # calibration set (also the fidelity report's held-out crops), or None
    calib_info: dict[str, Any] | None  # what rt_info and the report record about the calibration split
    calibration: CalibrationPlan | None
    keep_fp32: Path | None
    fp32_from: Path | None
    synthetic: bool

    @property
    def modes(self) -> dict[str, str]:
        return {k: p.precision for k, p in self.config.components.items()}


def convert(checkpoint: str | Path, out: str | Path, config: ConvertConfig, calib: str | Path | None = None,
            detector: str | Path | None = None, use_detector: bool = True, keep_fp32: str | Path | None = None,
            fp32_from: str | Path | None = None, synthetic_note: bool | None = None) -> dict[str, Any]:
    """Convert a checkpoint into a model folder at ``out`` following ``config``; returns the report dict.

    Clear errors (InputError) before any heavy work: missing checkpoint, non-empty ``out``, quantized
    precision without ``calib``, empty/unreadable calibration set, crop aspect not matching the input size.
    Then the stages of the module docstring: :func:`export_stage`, :func:`capture_stage`,
    :func:`quantize_stage`, :func:`validate_stage`, :func:`install_stage`.
    """
    job = prepare_job(checkpoint, out, config, calib, detector, use_detector, keep_fp32, fp32_from, synthetic_note)
    job.out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{job.out.name}.partial-", dir=job.out.parent))
    stage_dir = work / "models"
    fp32_dir = job.fp32_from if job.fp32_from is not None else work / "fp32"
    log = StageLog()
    logger.info("converting %s -> %s: %s (calibration: %s)", job.checkpoint, job.out, job.modes,
                job.calib_info["name"] if job.calib_info else "none")
    try:
        kinds = export_stage(job, fp32_dir, log)
        capture_stage(job, fp32_dir, kinds, log)
        quantize_stage(job, fp32_dir, kinds, stage_dir, log)
        report = validate_stage(job, stage_dir, fp32_dir, log)
        install_stage(job, stage_dir, fp32_dir)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("conversion done in %.1f s (peak RSS %.2f GB): %s", report["conversion"]["wall_s"],
                report["conversion"]["peak_rss_gb"], job.out)
    return report


def prepare_job(checkpoint: str | Path, out: str | Path, config: ConvertConfig, calib: str | Path | None,
                detector: str | Path | None, use_detector: bool, keep_fp32: str | Path | None,
                fp32_from: str | Path | None, synthetic_note: bool | None) -> ConversionJob:
    """Check the inputs of :func:`convert` (InputError) and resolve the detector and calibration set."""
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
    det_pt = _detector_source(checkpoint, detector) if use_detector else None
    needs_calib = sorted(k for k, m in modes.items() if m in CALIBRATED_MODES and (k != "detector" or det_pt))
    cset = _calibration_set(calib, needs_calib, modes)
    plan, calib_info = None, None
    if cset is not None:
        h, w = config.input_size
        cw, ch = cset.input_size
        if abs(cw / ch - w / h) > 1e-3:
            raise InputError(f"--calib {cset.path}: crops are {ch}x{cw} (HxW) but --input-size is {h}x{w}; the "
                             "aspect ratios differ (rebuild the set with --input-size)")
        calib_idx, held_idx = split_calibration(cset, config.held_out)
        calib_info = calibration_record(cset, calib_idx, held_idx)
        plan = CalibrationPlan(cset, calib_idx, (w, h), config.held_out)
    synthetic = (checkpoint / "synthetic.json").is_file() if synthetic_note is None else bool(synthetic_note)
    return ConversionJob(checkpoint, out, config, det_pt, cset, calib_info, plan, keep_path,
                         Path(fp32_from).expanduser() if fp32_from is not None else None, synthetic)


def _detector_source(checkpoint: Path, detector: str | Path | None) -> Path | None:
    """The YOLO .pt to convert: ``--detector``, else ``<checkpoint>/yolo11*.pt``, else None (with a warning)."""
    from convert.detector import find_detector_checkpoint

    det_pt = Path(detector).expanduser() if detector is not None else find_detector_checkpoint(checkpoint)
    if detector is not None and not det_pt.is_file():
        raise InputError(f"--detector {det_pt}: no such file (expected an ultralytics YOLO .pt)")
    if det_pt is None:
        logger.warning("no %s/yolo11*.pt and no --detector: the model folder will have no detector "
                       "(sdpose-edge then needs --detections)", checkpoint)
    return det_pt


def _calibration_set(calib: str | Path | None, needs_calib: list[str], modes: dict[str, str]) -> Any:
    """``--calib`` opened and checked; without it the default set (for the fidelity report only), or None."""
    if calib is None and needs_calib:
        raise InputError(f"--calib is required: component(s) {needs_calib} use calibrated precision(s) "
                         f"{sorted({modes[k] for k in needs_calib})} (use e.g. --calib calib_data/default, or "
                         "fp32/fp16/int8_weights/int4_weights which need none)")
    if calib is not None:
        return open_calibration(calib)
    try:
        cset = open_calibration("default")
        logger.info("no --calib: the fidelity report uses the default calibration set's crops")
        return cset
    except InputError as exc:
        logger.warning("no calibration set for the fidelity report (%s)", exc)
        return None


def export_stage(job: ConversionJob, fp32_dir: Path, log: StageLog) -> list[str]:
    """Stage 1: the FP32 export (child process), or the check of ``--fp32-from``; returns the kinds to convert."""
    from convert.checkpoint import checkpoint_sha256

    config = job.config
    if job.fp32_from is None:
        with log.stage("export_fp32") as rec:
            res = export_fp32(job.checkpoint, fp32_dir, config.input_size, job.detector, config.detector_imgsz,
                              config.token_downsample, config.token_levels, config.vae_token_downsample)
            rec["child_peak_rss_gb"] = res["peak_rss_gb"]
            rec["note"] = "child process (torch)"
    else:
        _check_fp32_from(fp32_dir, checkpoint_sha256(job.checkpoint), config.input_size, job.detector is not None,
                         config.token_downsample, config.token_levels, config.vae_token_downsample)
        logger.info("reusing the FP32 export %s", fp32_dir)
    components = read_index(fp32_dir)["components"]
    return [k for k in COMPONENT_KINDS if k in components and (k != "detector" or job.detector is not None)]


def capture_stage(job: ConversionJob, fp32_dir: Path, kinds: list[str], log: StageLog) -> None:
    """Stage 2: the pose IR's calibration inputs (crops through the FP32 chain up to it), when it needs them."""
    if "pose" not in kinds or job.modes["pose"] not in CALIBRATED_MODES or job.calibration is None:
        return
    plan = job.calibration
    with log.stage("capture_pose_inputs") as rec:
        plan.latents = capture_component_inputs(
            fp32_dir, "pose", iter_crops(plan.cset, plan.calib_idx, plan.size_wh),
            job.config.components["pose"].subset_size, job.config.capture_precision_hint)
        rec["samples"] = len(plan.latents)


def quantize_stage(job: ConversionJob, fp32_dir: Path, kinds: list[str], stage_dir: Path, log: StageLog) -> None:
    """Stage 3: one component at a time read from the FP32 folder, quantized, saved and released; then the
    folder index."""
    import openvino as ov

    core = ov.Core()
    fp32_index = read_index(fp32_dir)
    stage_dir.mkdir(parents=True)
    for kind in kinds:
        plan = job.config.components[plan_kind(kind)]
        xml = fp32_dir / fp32_index["components"][kind]
        calibrated = plan.precision in CALIBRATED_MODES
        with log.stage(f"quantize_{kind}") as rec:
            rec["precision"] = plan.precision
            model = core.read_model(str(xml))
            data, options = component_calibration(kind, model, plan.precision, plan.subset_size, plan.options,
                                                  job.calibration)
            quantized = quantize_component(
                model, kind, plan.precision, data, subset_size=plan.subset_size, options=options,
                calib_info=job.calib_info if calibrated else None, source=xml)
            save_component(quantized, stage_dir / xml.name, plan.precision)
            del model, quantized, data
    if job.calibration is not None:
        job.calibration.latents = None
    _write_index(stage_dir, fp32_index, kinds, {k: job.config.components[plan_kind(k)].precision for k in kinds})


def validate_stage(job: ConversionJob, stage_dir: Path, fp32_dir: Path, log: StageLog) -> dict[str, Any]:
    """Stage 4: the fidelity report against the FP32 export (written into the staged folder)."""
    notes = []
    if job.synthetic:
        notes.append("Synthetic checkpoint (random weights): the figures measure quantization error on a "
                     "random-weight network, not pose accuracy.")
    if (job.checkpoint / "proxy.json").is_file():
        notes.append("Proxy checkpoint: a tiny SDPose-architecture model trained on drawn figures "
                     "(convert.train_proxy); fidelity figures are real for it, but say nothing about the "
                     "released model on real people.")
    config = job.config
    with log.stage("validate"):
        report = validate_folder(stage_dir, reference=fp32_dir, calib=job.cset.path, held_out=config.held_out,
                                 latency_runs=config.latency_runs, latency_hints=config.latency_hints,
                                 notes=notes, write=False) \
            if job.cset is not None else _report_without_calibration(stage_dir, notes)
    report["models"] = str(job.out.resolve())
    if job.fp32_from is not None:
        report["reference"] = str(fp32_dir.resolve())
    elif job.keep_fp32 is not None:
        report["reference"] = str(job.keep_fp32.resolve())
    else:
        report["reference"] = "temporary FP32 export (deleted after the conversion; use --keep-fp32 DIR)"
    report["conversion"] = dict(log.summary(), checkpoint=str(job.checkpoint.resolve()), config=config.describe(),
                                detector_source=str(job.detector) if job.detector else None)
    write_report(stage_dir, report)
    return report


def install_stage(job: ConversionJob, stage_dir: Path, fp32_dir: Path) -> None:
    """Stage 5: the finished folder moved to ``--out``; the FP32 export kept in ``--keep-fp32`` if asked."""
    if job.out.exists():
        job.out.rmdir()
    stage_dir.rename(job.out)
    if job.keep_fp32 is not None and job.fp32_from is None:
        if job.keep_fp32.exists():
            job.keep_fp32.rmdir()
        shutil.move(str(fp32_dir), str(job.keep_fp32))
        logger.info("kept the FP32 export in %s", job.keep_fp32)


def _check_fp32_from(folder: Path, sha: str, input_size: tuple[int, int], want_detector: bool,
                     token_downsample: int = 1, token_levels: tuple[int, ...] = (0,),
                     vae_token_downsample: int = 1) -> None:
    """--fp32-from must be an unquantized export of the same checkpoint at the same input size and token
    downsampling (UNet and VAE encoder)."""
    from edge_runtime.model.models import ModelFolder

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
    if int(meta.get("vae_token_downsample", 1)) != vae_token_downsample:
        raise InputError(f"--fp32-from {folder}: vae_token_downsample {meta.get('vae_token_downsample', 1)} differs "
                         f"from --vae-token-downsample {vae_token_downsample}")
    for kind in mf.components:
        m = mf.metadata(kind)
        if m.get("quantized") or m.get("precision") != "fp32":
            raise InputError(f"--fp32-from {folder}: component {kind} is {m.get('precision')} "
                             f"(quantized={m.get('quantized')}); an FP32 export is needed")
    if want_detector and not mf.has("detector"):
        raise InputError(f"--fp32-from {folder}: has no detector; pass --no-detector or export one into it")


def _write_index(stage_dir: Path, fp32_index: dict[str, Any], kinds: list[str], modes: dict[str, str]) -> None:
    from edge_runtime.model.metadata import write_index

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
    from edge_runtime.model.models import ModelFolder

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
    p.add_argument("--input-size", default=None, metavar="HxW", help="crop size (default from the config; built in: "
                   f"{DEFAULT_CONFIG_VALUES['input_size']})")
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
        checked_int(args.subset_size, "--subset-size")
    config = load_config(args.config, precision=args.precision, component_precision=overrides,
                         subset_size=args.subset_size,
                         input_size=_input_size(args),
                         token_downsample=args.token_downsample, token_levels=args.levels,
                         vae_token_downsample=args.vae_token_downsample,
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
