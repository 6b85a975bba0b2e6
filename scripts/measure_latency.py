"""Per-IR batch-1 latency of model folders, per INFERENCE_PRECISION_HINT the CPU supports.

``python scripts/measure_latency.py MODELS [MODELS ...] [--runs 3] [--out lat.json]`` times the VAE encoder
(on a crop of ``calib_data/default``) and the pose IR (on that crop's FP32 latent, from the first folder)
with :func:`convert.validate.measure_latency` (LATENCY hint, 1 warm-up run). Run it again under
``ONEDNN_MAX_CPU_ISA=AVX512_CORE`` for the no-VNNI path (the f32 hint only, which this script then picks).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import openvino as ov

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from calib_data import load_calibration_set  # noqa: E402  (the repository root is put on the path above)
from convert.validate import FolderChain, iter_crops, measure_latency  # noqa: E402
from edge_runtime.model.cpu import cpu_info  # noqa: E402
from edge_runtime.model.models import ModelFolder  # noqa: E402

logger = logging.getLogger("measure_latency")


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    core = ov.Core()
    info = cpu_info(core)
    hints = ["f32", "bf16"] if info.bf16 else ["f32"]
    first = ModelFolder(args.models[0], core=core)
    w, h = int(first.pose_meta["input_width"]), int(first.pose_meta["input_height"])
    crop = next(iter_crops(load_calibration_set("default"), [0], (w, h)))
    latent = FolderChain(first, core, ["vae_encoder"]).run("vae_encoder", crop)
    out = {"cpu": info.to_dict(), "hints": hints, "runs": args.runs, "latency_ms": {}}
    for folder in args.models:
        for kind, sample in (("vae_encoder", crop), ("pose", latent)):
            ms = measure_latency(core, folder / f"{kind}.xml", hints, args.runs, sample)
            out["latency_ms"][f"{folder.name}/{kind}"] = ms
            logger.info("%s %s: %s ms (%s)", folder.name, kind, ms, info.describe())
    if args.out is not None:
        args.out.write_text(json.dumps(out, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
