"""The inputs of a calibration set build: image and video sources in a deterministic order, their frames, and the
person boxes given for them in a detections JSON (format in :mod:`calib_data.builder`).
"""
from __future__ import annotations

import dataclasses
import json
import logging
import math
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_runtime.errors import InputError
from edge_runtime.media.sources import IMAGE_EXTENSIONS, list_image_files

logger = logging.getLogger(__name__)


@dataclasses.dataclass
class Source:
    path: Path
    name: str          # manifest name: "<folder name>/<file>" for images, "<file name>" for videos
    kind: str          # "image" | "video"
    keys: tuple[str, ...]  # detections JSON keys that refer to it


def collect_sources(images: Sequence[str | Path] = (), videos: Sequence[str | Path] = ()) -> list[Source]:
    """Image files (from folders or given directly) and video files, in a deterministic order.

    Raises InputError for a missing path, a folder without images, or no input at all.
    """
    sources: list[Source] = []
    for entry in images:
        root = Path(entry)
        if root.is_dir():
            files = list_image_files(root)
            if not files:
                raise InputError(f"--images {root}: no images found (expected files ending in "
                                 f"{', '.join(IMAGE_EXTENSIONS)})")
            for f in files:
                name = f"{root.resolve().name}/{f.name}"
                sources.append(Source(f, name, "image", (str(f), str(f.resolve()), name, f.name)))
        elif root.is_file():
            if root.suffix.lower() not in IMAGE_EXTENSIONS:
                raise InputError(f"--images {root}: not an image file (expected {', '.join(IMAGE_EXTENSIONS)})")
            name = f"{root.resolve().parent.name}/{root.name}"
            sources.append(Source(root, name, "image", (str(root), str(root.resolve()), name, root.name)))
        else:
            raise InputError(f"--images {root}: no such file or folder")
    for entry in videos:
        path = Path(entry)
        if not path.is_file():
            raise InputError(f"--videos {path}: no such file")
        sources.append(Source(path, path.name, "video", (str(path), str(path.resolve()), path.name)))
    if not sources:
        raise InputError("no calibration input: give --images DIR... and/or --videos FILE...")
    names = [s.name for s in sources]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise InputError(f"inputs given twice or with clashing names: {dup}")
    return sources


def load_detections(path: str | Path) -> dict[str, Any]:
    """Read and validate a detections JSON (see module doc); InputError naming the file and entry."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"--detections {path}: no such file")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"--detections {path}: not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise InputError(f"--detections {path}: expected an object mapping source -> boxes")

    def boxes_of(value: Any, where: str) -> np.ndarray:
        if not isinstance(value, list):
            raise InputError(f"{path}: {where}: expected a list of [x1, y1, x2, y2(, score)] boxes")
        rows = []
        for i, box in enumerate(value):
            if (not isinstance(box, list) or len(box) not in (4, 5)
                    or not all(isinstance(v, (int, float)) and math.isfinite(v) for v in box)):
                raise InputError(f"{path}: {where}[{i}]: expected [x1, y1, x2, y2] or [x1, y1, x2, y2, score] "
                                 f"numbers, got {box!r}")
            if box[2] <= box[0] or box[3] <= box[1]:
                raise InputError(f"{path}: {where}[{i}]: box {box[:4]} needs x2 > x1 and y2 > y1 (image px)")
            rows.append([float(v) for v in box[:4]] + [float(box[4]) if len(box) == 5 else math.nan])
        return np.asarray(rows, dtype=np.float64).reshape(-1, 5)

    out: dict[str, Any] = {}
    for key, value in data.items():
        if isinstance(value, dict):
            frames = {}
            for frame, boxes in value.items():
                try:
                    index = int(frame)
                except ValueError:
                    raise InputError(f"{path}: {key!r}: frame key {frame!r} is not an integer frame index") from None
                frames[index] = boxes_of(boxes, f"{key!r}[{frame!r}]")
            out[str(key)] = frames
        else:
            out[str(key)] = boxes_of(value, repr(key))
    return out


def video_frames(path: Path, count: int) -> Iterator[tuple[int, np.ndarray]]:
    """``count`` frames sampled evenly over the video (first and last included) as (index, BGR u8)."""
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise InputError(f"{path}: cannot open the video (unreadable or unsupported format)")
    try:
        total = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
        if total <= 0:  # container without a frame count: count by decoding headers
            total = 0
            while cap.grab():
                total += 1
            cap.release()
            cap = cv2.VideoCapture(str(path))
        if total <= 0:
            raise InputError(f"{path}: the video has no readable frames")
        wanted = sorted({int(round(v)) for v in np.linspace(0, total - 1, min(count, total))})
        index, produced = 0, 0
        for target in wanted:
            while index < target:
                if not cap.grab():
                    break
                index += 1
            ok, frame = cap.read()
            if not ok or frame is None:
                break
            index += 1
            produced += 1
            yield target, frame
        if produced == 0:
            raise InputError(f"{path}: cannot decode any frame of the video (unreadable or corrupt)")
        if produced < len(wanted):
            logger.warning("%s: the video ended after %d of the %d sampled frames (frame count %d was wrong)",
                           path, produced, len(wanted), total)
    finally:
        cap.release()
