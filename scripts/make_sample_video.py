"""Build the bundled multi-person sample video and its person boxes from photos shipped in packages.

Three real photos (scikit-image ``astronaut`` and ``camera``, matplotlib's ``grace_hopper.jpg``) are
placed side by side on a 960x540 canvas and drift/zoom slowly, so every frame holds three people with
exactly known boxes. Writes ``samples/people.mp4`` and ``samples/people_detections.json``
(frame index -> ``[[x1, y1, x2, y2, score], ...]`` in image px, the ``--detections`` format).

The boxes stand in for a detector: the synthetic test checkpoints carry a random-weight YOLO.
Re-running the script reproduces both files.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import cv2
import numpy as np

logger = logging.getLogger("make_sample_video")

CANVAS_WH = (960, 540)
#: photo name -> person box in the photo's own pixels (x1, y1, x2, y2), chosen by eye
PERSON_BOXES = {
    "astronaut": (20.0, 12.0, 365.0, 512.0),
    "camera": (0.0, 60.0, 340.0, 512.0),
    "grace_hopper": (15.0, 25.0, 512.0, 600.0),
}


def load_photos() -> dict[str, np.ndarray]:
    """The three photos as BGR u8 [H,W,3]."""
    import matplotlib.cbook as cbook
    from skimage import data

    grace = cv2.imread(str(cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)))
    if grace is None:
        raise FileNotFoundError("matplotlib sample_data/grace_hopper.jpg could not be read")
    return {
        "astronaut": cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR),
        "camera": cv2.cvtColor(data.camera(), cv2.COLOR_GRAY2BGR),
        "grace_hopper": grace,
    }


def render_frame(photos: dict[str, np.ndarray], t: float) -> tuple[np.ndarray, list[list[float]]]:
    """Frame at phase ``t`` in [0, 1]: canvas BGR u8 [540,960,3] and boxes_xyxy+score per person."""
    w, h = CANVAS_WH
    canvas = np.full((h, w, 3), 96, np.uint8)
    boxes = []
    for i, name in enumerate(("astronaut", "camera", "grace_hopper")):
        img = photos[name]
        scale = (0.78 + 0.06 * np.sin(2 * np.pi * (t + i / 3))) * h / img.shape[0]
        sw, sh = int(round(img.shape[1] * scale)), int(round(img.shape[0] * scale))
        small = cv2.resize(img, (sw, sh), interpolation=cv2.INTER_AREA)
        x0 = int(round(20 + i * 315 + 25 * np.sin(2 * np.pi * t + i)))
        y0 = int(round(h - sh - 10 - 15 * np.cos(2 * np.pi * t)))
        x1c, y1c = max(x0, 0), max(y0, 0)
        x2c, y2c = min(x0 + sw, w), min(y0 + sh, h)
        canvas[y1c:y2c, x1c:x2c] = small[y1c - y0:y2c - y0, x1c - x0:x2c - x0]
        bx1, by1, bx2, by2 = PERSON_BOXES[name]
        box = [x0 + bx1 * scale, y0 + by1 * scale, x0 + bx2 * scale, y0 + by2 * scale]
        box = [float(np.clip(box[0], 0, w - 1)), float(np.clip(box[1], 0, h - 1)),
               float(np.clip(box[2], 0, w - 1)), float(np.clip(box[3], 0, h - 1))]
        boxes.append([round(v, 2) for v in box] + [0.99])
    return canvas, boxes


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parents[1] / "samples")
    parser.add_argument("--frames", type=int, default=24)
    parser.add_argument("--fps", type=float, default=12.0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    photos = load_photos()
    video_path = args.out / "people.mp4"
    writer = cv2.VideoWriter(str(video_path), cv2.VideoWriter_fourcc(*"mp4v"), args.fps, CANVAS_WH)
    if not writer.isOpened():
        raise RuntimeError(f"cv2.VideoWriter could not open {video_path}")
    detections = {}
    for i in range(args.frames):
        frame, boxes = render_frame(photos, i / args.frames)
        writer.write(frame)
        detections[str(i)] = boxes
    writer.release()
    (args.out / "people_detections.json").write_text(json.dumps(detections, indent=1) + "\n")
    logging.info("wrote %s (%d frames) and %s", video_path, args.frames, args.out / "people_detections.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
