"""Choosing the One Euro parameters of ``--smooth one-euro``: replays the filter over unsmoothed runs and scores them.

    python scripts/smooth_sweep.py --run OUT1/predictions.jsonl:GT1.npz [--run ...] [--min-cutoffs 0.5,1,2]
        [--betas 0,1,4] [--d-cutoffs 1] [--out sweep.json]

Each ``--run`` is the ``predictions.jsonl`` of an ``sdpose-edge run --smooth none`` on a drawn-figures video and its
ground truth (``scripts/make_figures_video.py``). The filter (:class:`edge_runtime.running.smoothing.OneEuroSmoother`, the
one the runtime applies) runs over the records afterwards, which gives what ``--smooth one-euro`` with those
parameters writes (to the records' 0.001 px rounding). Prints, per parameter set, the mean over the runs of
PCK@0.05 (all, body) and the excess jitter (mean |2nd difference| minus the ground truth's, px).
"""
from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from convert.figures import keypoint_jitter, score_records  # noqa: E402
from edge_runtime.running.records import read_predictions  # noqa: E402
from edge_runtime.running.results import FrameResult  # noqa: E402
from edge_runtime.running.smoothing import OneEuroSmoother, SmoothConfig  # noqa: E402

log = logging.getLogger("smooth_sweep")


def smoothed_records(results: list[FrameResult], config: SmoothConfig) -> list[FrameResult]:
    """The results (of ``predictions.jsonl``) with their keypoints passed through the One Euro filter (per track, in
    frame order; boxes float32 as the runtime's). A frame without persons, failed or not, drops the source's tracks,
    as in the runtime."""
    smoother, out = OneEuroSmoother(config), []
    for result in results:
        if not len(result.track_ids):
            out.append(result)
            smoother(dataclasses.replace(result, error=None))
            continue
        out.append(smoother(dataclasses.replace(result, boxes_xyxy=result.boxes_xyxy.astype(np.float32))))
    return out


def score(records: list[FrameResult], gt: dict) -> dict[str, float]:
    pck = score_records(records, gt["keypoints"], gt["boxes"])
    jitter = keypoint_jitter(records, gt["keypoints"], gt["boxes"])
    return {"pck_all": pck["all"], "pck_body": pck["body"], "jitter_excess_px": jitter["jitter_px"] - jitter["jitter_gt_px"],
            "jitter_px": jitter["jitter_px"], "jitter_gt_px": jitter["jitter_gt_px"]}


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", action="append", required=True, help="PREDICTIONS.jsonl:GT.npz (repeat)")
    parser.add_argument("--min-cutoffs", default="0.5,1,2,4", help="Hz")
    parser.add_argument("--betas", default="0,0.5,1,2,4,8")
    parser.add_argument("--d-cutoffs", default="1")
    parser.add_argument("--out", type=Path, default=None, help="write every row as JSON")
    return parser


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    runs = []
    for spec in args.run:
        pred, gt = spec.rsplit(":", 1)
        runs.append((pred, read_predictions(pred), dict(np.load(gt))))
    grid = [None] + list(itertools.product(*(map(float, s.split(",")) for s in
                                             (args.min_cutoffs, args.betas, args.d_cutoffs))))
    rows = []
    for params in grid:
        config = None if params is None else SmoothConfig("one-euro", *params)
        per_run = [score(recs if config is None else smoothed_records(recs, config), gt) for _, recs, gt in runs]
        mean = {k: float(np.mean([r[k] for r in per_run])) for k in per_run[0]}
        rows.append({"min_cutoff_hz": None if params is None else params[0], "beta": None if params is None else params[1],
                     "d_cutoff_hz": None if params is None else params[2], "mean": mean, "runs": per_run})
        log.info("%-22s PCK all %5.1f %%  body %5.1f %%  excess jitter %6.3f px",
                 "none" if params is None else "fc %.2g beta %.2g dc %.2g" % params, 100 * mean["pck_all"],
                 100 * mean["pck_body"], mean["jitter_excess_px"])
    if args.out is not None:
        args.out.write_text(json.dumps({"runs": [r[0] for r in runs], "rows": rows}, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
