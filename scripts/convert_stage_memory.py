"""Peak RSS of one conversion stage, alone, with a timeline: where ``sdpose-convert convert``'s memory goes.

    python scripts/convert_stage_memory.py --fp32 FP32 --stage vae_encoder|pose [--subset-size N]
        [--calib DIR] [--held-out N] [--nncf-order] [--timeline FILE]

Runs what the convert stage ``quantize_<stage>`` runs (``convert.quantize.quantize_component`` on the FP32 IR of
an existing export, INT8 with the config's settings, calibration split as the conversion makes it; ``pose``
first captures its latents through the FP32 VAE encoder, as ``capture_pose_inputs`` does) without saving, and
writes one JSON line: the peak RSS (VmHWM) of the capture and of the quantization, in GB and GiB.
``--timeline FILE`` samples VmRSS once a second into FILE. ``--nncf-order`` collects the statistics in NNCF's
own order (the behaviour before ``convert.nncf_memory``). NNCF reduces each statistic as it goes, so the peak
does not grow with ``--subset-size`` (default 1): one sample measures it. The validate stage alone is
``sdpose-convert validate INT8 --reference FP32 --no-write`` under ``/usr/bin/time -v``. Linux only.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from convert import quantize as quantize_mod  # noqa: E402
from convert.calibration import (CalibrationPlan, capture_component_inputs, component_calibration,  # noqa: E402
                                 iter_crops, open_calibration, split_calibration)
from convert.convert_config import load_config  # noqa: E402
from edge_runtime.model.metadata import read_index  # noqa: E402
from edge_runtime.running.metrics import memory_status, reset_peak_rss  # noqa: E402

logger = logging.getLogger("convert_stage_memory")
_MB_PER_GB = 1e9 / (1 << 20)  # memory_status() figures are MB of 2^20 bytes


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fp32", type=Path, required=True, help="FP32 export (sdpose-convert convert --keep-fp32)")
    parser.add_argument("--stage", choices=("vae_encoder", "pose"), required=True)
    parser.add_argument("--subset-size", type=int, default=1)
    parser.add_argument("--calib", default="calib_data/default")
    parser.add_argument("--held-out", type=int, default=2)
    parser.add_argument("--nncf-order", action="store_true", help="NNCF's own statistics order (before the fix)")
    parser.add_argument("--timeline", type=Path, default=None, help="VmRSS once a second into this file")
    return parser


def _sample(path: Path, stop: threading.Event) -> None:
    t0 = time.time()
    with path.open("w", encoding="utf-8") as fh:
        while not stop.is_set():
            status = memory_status()
            fh.write(f"{time.strftime('%H:%M:%S')} {time.time() - t0:8.1f} s rss "
                     f"{status.get('rss', 0) / _MB_PER_GB:.2f} peak {status.get('peak', 0) / _MB_PER_GB:.2f} GB\n")
            fh.flush()
            stop.wait(1.0)


def _peak_gb() -> float:
    return round((memory_status().get("peak") or 0.0) / _MB_PER_GB, 2)


def run_stage(args: argparse.Namespace) -> dict:
    """Capture (pose) and quantize one component as the conversion does; the peaks in GB and GiB."""
    config = load_config(None, precision="int8", subset_size=args.subset_size, held_out=args.held_out)
    cset = open_calibration(args.calib)
    calib_idx, _ = split_calibration(cset, config.held_out)
    h, w = config.input_size
    plan = CalibrationPlan(cset, calib_idx, (w, h), config.held_out)
    out: dict = {"stage": args.stage, "subset_size": args.subset_size, "nncf_order": args.nncf_order}
    if args.stage == "pose":
        plan.latents = capture_component_inputs(args.fp32, "pose", iter_crops(cset, calib_idx, (w, h)),
                                                args.subset_size, config.capture_precision_hint)
        out["capture_peak_gb"] = _peak_gb()
        reset_peak_rss()
    import openvino as ov

    xml = args.fp32 / read_index(args.fp32)["components"][args.stage]
    component = config.components[args.stage]
    model = ov.Core().read_model(str(xml))
    data, options = component_calibration(args.stage, model, "int8", args.subset_size, component.options, plan)
    quantize_mod.quantize_component(model, args.stage, "int8", data, subset_size=args.subset_size, options=options)
    out["quantize_peak_gb"] = _peak_gb()
    out["quantize_peak_gib"] = round(out["quantize_peak_gb"] / 1.073741824, 2)
    return out


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.nncf_order:
        quantize_mod.statistics_outputs_first = contextlib.nullcontext
    stop = threading.Event()
    if args.timeline is not None:
        threading.Thread(target=_sample, args=(args.timeline, stop), daemon=True).start()
    try:
        result = run_stage(args)
    finally:
        stop.set()
    sys.stdout.write(json.dumps(result) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
