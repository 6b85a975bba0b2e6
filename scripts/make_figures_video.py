"""Drawn-figure data with exact ground truth, for the proxy model (``convert.figures``).

Video mode (default) writes ``OUT/figures.mp4`` (figures walking, turning, waving, crossing and occluding each
other), ``OUT/figures_detections.json`` (frame index -> ``[[x1, y1, x2, y2, 1.0], ...]``: the ground-truth
boxes, in the ``--detections`` format) and ``OUT/figures_gt.npz`` (``keypoints`` [T,P,133,2] and ``boxes``
[T,P,4] image px). ``--calib-images DIR`` instead writes ``--count`` still images with 1-3 figures and
``DIR/detections.json`` ({file name: boxes}, the ``sdpose-convert calib --detections`` format), from another
seed than the video so calibration never sees the test frames. Re-running reproduces every file.
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from convert import figures  # noqa: E402  (the repository root is put on the path above)

logger = logging.getLogger("make_figures_video")


def write_video(out: Path, frames: int, size_wh: tuple[int, int], persons: int, fps: float, seed: int) -> None:
    images, keypoints, boxes = figures.walk_sequence(frames, size_wh, persons, seed=seed)
    out.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(out / "figures.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), fps, size_wh)
    if not writer.isOpened():
        raise RuntimeError(f"cannot write {out / 'figures.mp4'}")
    for image in images:
        writer.write(image)
    writer.release()
    dets = {str(t): [[round(float(v), 2) for v in box] + [1.0] for box in boxes[t]] for t in range(frames)}
    (out / "figures_detections.json").write_text(json.dumps(dets) + "\n", encoding="utf-8")
    np.savez_compressed(out / "figures_gt.npz", keypoints=keypoints.astype(np.float32),
                        boxes=boxes.astype(np.float32), fps=np.float32(fps))
    logger.info("wrote %s/figures.mp4 (%d frames, %d figures), figures_detections.json, figures_gt.npz",
                out, frames, persons)


def write_calib_images(out: Path, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    dets = {}
    for i in range(count):
        w, h = 320, 240
        poses = [figures.random_pose(rng, (float(rng.uniform(0.2, 0.8) * w), float(rng.uniform(0.45, 0.6) * h)),
                                     float(rng.uniform(0.5, 0.9) * h)) for _ in range(int(rng.integers(1, 4)))]
        image, _, boxes = figures.render_scene((w, h), poses, [figures.random_look(rng) for _ in poses], rng)
        name = f"figures_{i:03d}.png"
        cv2.imwrite(str(out / name), image)
        dets[name] = [[round(float(v), 2) for v in box] + [1.0] for box in boxes]
    (out / "detections.json").write_text(json.dumps(dets) + "\n", encoding="utf-8")
    logger.info("wrote %d calibration images and detections.json to %s", count, out)


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "samples")
    parser.add_argument("--frames", type=int, default=120)
    parser.add_argument("--size", default="640x480", help="video WxH (default 640x480)")
    parser.add_argument("--persons", type=int, default=3)
    parser.add_argument("--fps", type=float, default=12.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calib-images", type=Path, default=None, metavar="DIR",
                        help="write still calibration images + detections.json here instead of the video")
    parser.add_argument("--count", type=int, default=32, help="calibration images (with --calib-images)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.calib_images is not None:
        write_calib_images(args.calib_images, args.count, args.seed + 1000)
        return 0
    w, h = (int(v) for v in args.size.lower().split("x"))
    write_video(args.out, args.frames, (w, h), args.persons, args.fps, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
