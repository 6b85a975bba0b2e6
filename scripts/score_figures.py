"""PCK@0.05 of an ``sdpose-edge run`` on the drawn-figures video against its exact ground truth.

``python scripts/score_figures.py OUT/predictions.jsonl [--gt samples/figures_gt.npz] [--json SCORES.json]``
prints the share of correct keypoints (within 5 % of the person box's longer side) overall and per part, and the
jitter: the mean absolute second difference of the keypoints (image px) beside that of the ground truth on the same
frames (``jitter_px``, ``jitter_gt_px``; their difference is the excess jitter, 0 for a perfect tracker).
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from convert.figures import keypoint_jitter, score_records  # noqa: E402  (the repository root is put on the path above)
from edge_runtime.running.records import read_predictions  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--gt", type=Path, default=SAMPLES / "figures_gt.npz")
    parser.add_argument("--alpha", type=float, default=0.05)
    parser.add_argument("--json", type=Path, default=None, help="also write the scores (PCK shares, jitter) here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    gt = np.load(args.gt)
    records = read_predictions(args.predictions)
    scores = score_records(records, gt["keypoints"], gt["boxes"], args.alpha)
    parts = ", ".join(f"{k} {100 * v:.1f} %" for k, v in scores.items() if isinstance(v, float))
    logging.getLogger("score_figures").info("PCK@%.2f vs ground truth over %d persons (%d matched): %s",
                                            args.alpha, scores["persons"], scores["matched"], parts)
    jitter = keypoint_jitter(records, gt["keypoints"], gt["boxes"])
    logging.getLogger("score_figures").info(
        "jitter (mean |2nd difference|) %.3f px, ground truth %.3f px, excess %.3f px; body %.3f / %.3f px",
        jitter["jitter_px"], jitter["jitter_gt_px"], jitter["jitter_px"] - jitter["jitter_gt_px"],
        jitter["jitter_body_px"], jitter["jitter_body_gt_px"])
    if args.json is not None:
        doc = {f"pck_{k}": v for k, v in scores.items() if isinstance(v, float)}
        doc.update(persons=scores["persons"], matched=scores["matched"], **jitter)
        args.json.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
