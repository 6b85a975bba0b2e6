"""``sdpose-convert bench``: the runtime benchmark (:mod:`edge_bench`) side by side with the original
PyTorch pipeline, with FLOPs counted from the torch modules.

    sdpose-convert bench --checkpoint DIR --models MODELS [--models MODELS2 ...] [--input-size HxW]
        [--runs N] [--warmup N] --out BENCH [--video FILE --detections DETS.json] [--skip-torch]

The PyTorch variant ``pytorch-fp32`` is what the public SDPose app computes per crop, in float32 on CPU with
all cores (``torch.set_num_threads(os.cpu_count())``):

* detector:    ultralytics ``YOLO(<checkpoint>/yolo11*.pt).predict(frame, classes=[person])`` (letterbox,
  network, NMS) at the detector IR's input size;
* vae_encoder: BGR u8 crop -> RGB [-1, 1] tensor -> ``vae.encode(x).latent_dist.mean * 0.18215``;
* pose:        CLIP text encoder on the empty prompt (every call) + the full UNet at t=999 with a hook on
  the up-block the head reads + the HeatmapHead (:class:`convert.reference.ReferencePipeline`);
* decode:      the same DARK-UDP decoder as every variant, on the PyTorch heatmaps.

It runs first in every interleaved round and is the speed-up baseline. Its pose FLOPs are those it actually
executes (text encoder + full UNet + head: ``reference_pose``); the OpenVINO variants are charged the FLOPs of
the truncated pose graph (``pose``), counted from :class:`convert.pose_graph.PoseGraph` and cross-checked
against the IR count (``flops_torch_vs_ir`` per variant in bench.json).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path
from typing import Any

from edge_bench.cli import add_common_arguments, check_args, run_benchmark
from edge_bench.report import log_summary
from edge_bench.timing import Variant
from edge_runtime.errors import InputError

logger = logging.getLogger(__name__)

#: the injected baseline variant: the original PyTorch pipeline
PYTORCH = "pytorch-fp32"


def parse_hw(text: str) -> tuple[int, int]:
    """``"1024x768"`` -> (1024, 768) = (H, W); InputError otherwise."""
    from edge_runtime.model.geometry import parse_size_hw

    return parse_size_hw(text, "--input-size")


def _folder_input_hw(models: str | Path) -> tuple[int, int]:
    from edge_runtime.model.models import ModelFolder

    meta = ModelFolder(models).pose_meta
    return int(meta["input_height"]), int(meta["input_width"])


def _detector_imgsz(models: list[str]) -> int | None:
    """Input side of the first folder's detector IR (None when no folder has a detector)."""
    import openvino as ov

    from edge_runtime.model.metadata import read_index

    for folder in models:
        rel = read_index(folder)["components"].get("detector")
        if rel:
            shape = ov.Core().read_model(str(Path(folder) / rel)).inputs[0].get_partial_shape()
            return int(shape[1].get_length())
    return None


def pytorch_variant(checkpoint: str | Path, inputs: dict[str, Any], input_hw: tuple[int, int],
                    flops: dict[str, dict[str, Any]], detector_imgsz: int | None) -> Variant:
    """Load the checkpoint and build the ``pytorch-fp32`` variant on the bench's fixed inputs.

    The torch modules stay loaded for the whole benchmark (its stage builders only bind inputs)."""
    import torch

    from edge_runtime.model.codec import decode_heatmaps

    from .checkpoint import load_checkpoint
    from .reference import ReferencePipeline

    threads = os.cpu_count() or 1
    torch.set_num_threads(threads)
    ckpt = load_checkpoint(checkpoint, load_text_encoder=True)
    pipe = ReferencePipeline(ckpt)
    crop = inputs["crop"]
    if tuple(crop.shape[1:3]) != tuple(input_hw):
        raise InputError(f"crop {crop.shape[1:3]} does not match --input-size {input_hw}")
    wh = (input_hw[1], input_hw[0])

    def build_vae(_earlier: dict[str, Any]) -> Any:
        return lambda: pipe.encode(pipe.preprocess(crop))

    def build_pose(earlier: dict[str, Any]) -> Any:
        latent = earlier["vae_encoder"]
        return lambda: pipe.pose(latent)

    def build_decode(earlier: dict[str, Any]) -> Any:
        heatmaps = earlier["pose"].float().numpy()
        return lambda: decode_heatmaps(heatmaps, input_size=wh)

    builders: dict[str, Any] = {}
    stage_flops: dict[str, int] = {"vae_encoder": flops["vae_encoder"]["total"],
                                   "pose": flops["reference_pose"]["total"]}
    info: dict[str, Any] = {"folder": str(Path(checkpoint).resolve()), "hint": "n/a (torch float32, eager)",
                            "num_threads": torch.get_num_threads(), "torch": torch.__version__,
                            "pose_flops_counted": "text encoder + full UNet + head (what it executes)"}
    if detector_imgsz is not None and ckpt.detector_path is not None:
        from .detector import _ultralytics
        from .flops import detector_flops

        detector_path = ckpt.detector_path
        frame = inputs["frame"]

        def build_detector(_earlier: dict[str, Any]) -> Any:
            yolo = _ultralytics().YOLO(str(detector_path), task="detect")
            return lambda: yolo.predict(frame, imgsz=detector_imgsz, classes=[0], verbose=False, device="cpu")

        builders["detector"] = build_detector
        stage_flops["detector"] = detector_flops(detector_path, detector_imgsz)["total"]
        info["detector"] = f"{detector_path.name} (ultralytics predict: letterbox, network, NMS)"
    builders["vae_encoder"] = build_vae
    builders["pose"] = build_pose
    builders["decode"] = build_decode
    logger.info("PyTorch reference ready: %s (%d threads)", ckpt.path, torch.get_num_threads())
    return Variant(name=PYTORCH, kind="pytorch", precision="fp32", compute_precision="f32", builders=builders,
                   flops=stage_flops, int8_share={k: 0.0 for k in stage_flops}, info=info)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark with the PyTorch baseline; returns the exit code."""
    from .flops import checkpoint_flops

    check_args(args)
    checkpoint = Path(args.checkpoint)
    if not checkpoint.is_dir():
        raise InputError(f"--checkpoint {checkpoint}: folder does not exist (expected an SDPose checkpoint)")
    folder_hw = _folder_input_hw(args.models[0])
    input_hw = parse_hw(args.input_size) if args.input_size else folder_hw
    if input_hw != folder_hw:
        raise InputError(f"--input-size {input_hw[0]}x{input_hw[1]} differs from {args.models[0]}'s input size "
                         f"{folder_hw[0]}x{folder_hw[1]} (IRs have a static size: export at the size you bench)")
    flops = checkpoint_flops(checkpoint, input_hw, reference=not args.skip_torch)
    logger.info("FLOPs from torch at %dx%d: %s", *input_hw,
                ", ".join(f"{k} {v['total'] / 1e9:.1f} GFLOP" for k, v in flops.items()))
    det_size = _detector_imgsz(args.models)

    def prepare(inputs: dict[str, Any]) -> list[Variant]:
        if args.skip_torch:
            return []
        return [pytorch_variant(checkpoint, inputs, input_hw, flops, det_size)]

    notes = []
    if args.skip_torch:
        notes.append("--skip-torch: no PyTorch baseline; speed-ups are over OpenVINO FP32 with the f32 hint.")
    marker = checkpoint / "synthetic.json"
    if marker.is_file():
        notes.append(f"the checkpoint {checkpoint} is synthetic (random weights of the real architecture): "
                     "speed is representative, accuracy is not.")
    report = run_benchmark(args.models, args.out, runs=args.runs, warmup=args.warmup, video=args.video,
                           detections=args.detections, e2e_frames=args.e2e_frames, skip_e2e=args.skip_e2e,
                           peak_size=args.peak_size, device=args.device, skip_fused=args.skip_fused,
                           prepare_extra=prepare,
                           torch_flops=flops,
                           command="sdpose-convert " + " ".join(sys.argv[1:]), notes=notes,
                           baseline_description=None if args.skip_torch else "the original PyTorch pipeline")
    log_summary(report)
    return 0


def register(subparsers: Any, name: str = "bench") -> None:
    p = subparsers.add_parser(name, help="benchmark model folder(s) against the original PyTorch pipeline",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--checkpoint", required=True, help="SDPose checkpoint folder (the PyTorch baseline)")
    p.add_argument("--input-size", default=None, help="crop HxW (default: the model folder's)")
    p.add_argument("--skip-torch", action="store_true", help="do not time the PyTorch original")
    add_common_arguments(p)
    p.set_defaults(func=run)

