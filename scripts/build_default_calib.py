"""Rebuild the default calibration set ``calib_data/default`` from photos that ship with installed packages.

Photos (no download): scikit-image ``astronaut`` (Eileen Collins) and ``camera`` (cameraman), matplotlib's
sample ``grace_hopper.jpg``. Each is augmented five ways (horizontal flips, rescaling, cut-outs, box
variations: full body / upper body / jittered / loose, and photometric changes: brightness, contrast,
gamma) -> 15 images, with hand-chosen person boxes (the synthetic detector has random weights, so boxes
are given, not detected). The real builder (:func:`calib_data.builder.build_calibration_set`) then makes
the runtime's UDP crops at 768x1024 (WxH) as quality-90 JPEG plus 8 detector frames (long side 640).

Deterministic: no random numbers except the builder's seeded sampling; rerunning gives the same files
(same OpenCV/libjpeg, scikit-image and matplotlib data). Usage (from the repository root)::

    .venv/bin/python scripts/build_default_calib.py [--out calib_data/default] [--overwrite]
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from calib_data.builder import BuildParams, build_calibration_set  # noqa: E402

logger = logging.getLogger("build_default_calib")

#: hand-chosen person boxes (x1, y1, x2, y2 image px) in the original photos
PHOTO_BOXES = {
    "astronaut": {"full": (20, 15, 372, 512), "upper": (105, 10, 335, 300)},
    "camera": {"full": (0, 64, 334, 512), "upper": (30, 64, 334, 300)},
    "grace_hopper": {"full": (15, 20, 512, 600), "upper": (150, 25, 375, 330)},
}

#: (name, flip, scale, cut-out (x1,y1,x2,y2) in original px or None, box key, box grow, shift (dx,dy) as
#:  a fraction of the box size, photometric (alpha, beta, gamma))
VARIANTS = (
    ("orig", False, 1.0, None, "full", 1.0, (0.0, 0.0), (1.0, 0.0, 1.0)),
    ("flip_upper", True, 1.0, None, "upper", 1.0, (0.0, 0.0), (1.0, 0.0, 1.0)),
    ("small_bright", False, 0.6, None, "full", 1.0, (0.06, -0.04), (1.0, 25.0, 1.0)),
    ("cutout_lowcontrast", False, 1.0, "top70", "full", 1.0, (0.0, 0.0), (0.75, 20.0, 1.0)),
    ("flip_large_loose", True, 1.5, None, "full", 1.2, (-0.05, 0.03), (1.0, 0.0, 0.8)),
)


def load_photos() -> dict[str, np.ndarray]:
    """The three photos as BGR u8 [H,W,3]."""
    import matplotlib.cbook
    import skimage.data

    grace = cv2.imread(str(matplotlib.cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)), cv2.IMREAD_COLOR)
    if grace is None:
        raise FileNotFoundError("matplotlib sample data grace_hopper.jpg not found")
    return {
        "astronaut": cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR),
        "camera": cv2.cvtColor(skimage.data.camera(), cv2.COLOR_GRAY2BGR),
        "grace_hopper": grace,
    }


def augment(image: np.ndarray, box: tuple[float, ...], flip: bool, scale: float, cutout: str | None,
            grow: float, shift: tuple[float, float], photometric: tuple[float, float, float]):
    """Apply one variant; returns (image BGR u8, box [x1,y1,x2,y2] image px of the new image)."""
    x1, y1, x2, y2 = (float(v) for v in box)
    h, w = image.shape[:2]
    if cutout == "top70":  # keep the top 70 % of the photo: the person is cut at the bottom edge
        image = image[: int(h * 0.7)]
        y2 = min(y2, image.shape[0])
        h = image.shape[0]
    bw, bh = x2 - x1, y2 - y1
    cx, cy = (x1 + x2) / 2 + shift[0] * bw, (y1 + y2) / 2 + shift[1] * bh
    bw, bh = bw * grow, bh * grow
    x1, x2 = max(0.0, cx - bw / 2), min(float(w), cx + bw / 2)
    y1, y2 = max(0.0, cy - bh / 2), min(float(h), cy + bh / 2)
    if flip:
        image = image[:, ::-1].copy()
        x1, x2 = w - x2, w - x1
    if scale != 1.0:
        new = (int(round(w * scale)), int(round(h * scale)))
        image = cv2.resize(image, new, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
        x1, y1, x2, y2 = (v * scale for v in (x1, y1, x2, y2))
    alpha, beta, gamma = photometric
    if (alpha, beta) != (1.0, 0.0):
        image = cv2.convertScaleAbs(image, alpha=alpha, beta=beta)
    if gamma != 1.0:
        lut = np.clip(((np.arange(256) / 255.0) ** gamma) * 255.0 + 0.5, 0, 255).astype(np.uint8)
        image = cv2.LUT(image, lut)
    return np.ascontiguousarray(image), [round(x1, 2), round(y1, 2), round(x2, 2), round(y2, 2)]


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "calib_data" / "default"))
    parser.add_argument("--overwrite", action="store_true", help="replace an existing set")
    parser.add_argument("--seed", type=int, default=0)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")

    with tempfile.TemporaryDirectory(prefix="sdpose-default-calib-") as tmp:
        photos_dir = Path(tmp) / "default_photos"
        photos_dir.mkdir()
        detections: dict[str, list[list[float]]] = {}
        for photo, image in load_photos().items():
            for name, flip, scale, cutout, box_key, grow, shift, photometric in VARIANTS:
                out_img, box = augment(image, PHOTO_BOXES[photo][box_key], flip, scale, cutout, grow, shift,
                                       photometric)
                file = f"{photo}_{name}.png"
                cv2.imwrite(str(photos_dir / file), out_img)
                detections[f"default_photos/{file}"] = [box]
        dets_path = Path(tmp) / "default_detections.json"
        dets_path.write_text(json.dumps(detections, indent=1, sort_keys=True))
        params = BuildParams(max_crops=16, max_frames=8, jpeg_quality=90, dedup_threshold=2.0, seed=args.seed)
        manifest = build_calibration_set(args.out, images=[photos_dir], detections=dets_path, params=params,
                                         overwrite=args.overwrite)
    total = sum(p.stat().st_size for p in Path(args.out).rglob("*") if p.is_file())
    logger.info("default calibration set: %s (%.2f MB)", manifest, total / 1e6)
    return 0


if __name__ == "__main__":
    sys.exit(main())
