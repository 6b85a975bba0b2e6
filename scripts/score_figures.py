"""PCK@0.05 of an ``sdpose-edge run`` on the drawn-figures video against its exact ground truth.

``python scripts/score_figures.py OUT/predictions.jsonl [--gt samples/figures_gt.npz]`` prints the share of
correct keypoints (within 5 % of the person box's longer side) overall and per part.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from convert.figures import score_records  # noqa: E402  (the repository root is put on the path above)

SAMPLES = Path(__file__).resolve().parent.parent / "samples"


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("predictions", type=Path)
    parser.add_argument("--gt", type=Path, default=SAMPLES / "figures_gt.npz")
    parser.add_argument("--alpha", type=float, default=0.05)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    gt = np.load(args.gt)
    records = [json.loads(line) for line in args.predictions.read_text(encoding="utf-8").splitlines() if line]
    scores = score_records(records, gt["keypoints"], gt["boxes"], args.alpha)
    parts = ", ".join(f"{k} {100 * v:.1f} %" for k, v in scores.items() if isinstance(v, float))
    logging.getLogger("score_figures").info("PCK@%.2f vs ground truth over %d persons (%d matched): %s",
                                            args.alpha, scores["persons"], scores["matched"], parts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
