"""``--detections DETS.json``: person boxes given per image file name or frame index (bypasses the detector)."""
from __future__ import annotations

import math
from typing import Any

import numpy as np

from edge_runtime.errors import InputError


def load_detections(path: "str | Any") -> dict[str, np.ndarray]:
    """Read ``--detections DETS.json``: {image file name or frame index (string): [[x1,y1,x2,y2,score],...]}.

    Boxes are image px; the score may be omitted ([x1,y1,x2,y2] -> score 1.0). Returns {key: float32 [M,5]}.
    Raises InputError naming the file and the bad entry (key and box position) otherwise.
    """
    import json
    from pathlib import Path

    path = Path(path)
    if not path.is_file():
        raise InputError(f"--detections {path}: file does not exist")
    try:
        doc = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"--detections {path}: not valid JSON ({exc})") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"--detections {path}: cannot read ({exc})") from exc
    if not isinstance(doc, dict):
        raise InputError(f"--detections {path}: expected an object mapping image file name or frame index to "
                         f"[[x1, y1, x2, y2, score], ...], got {type(doc).__name__}")
    out: dict[str, np.ndarray] = {}
    for key, boxes in doc.items():
        where = f"--detections {path}: entry {key!r}"
        if not isinstance(boxes, list):
            raise InputError(f"{where}: expected a list of [x1, y1, x2, y2, score] boxes, got "
                             f"{type(boxes).__name__}")
        rows = []
        for i, box in enumerate(boxes):
            if not isinstance(box, (list, tuple)) or len(box) not in (4, 5) or not all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) for v in box):
                raise InputError(f"{where}, box {i}: expected [x1, y1, x2, y2, score] numbers, got {box!r}")
            values = [float(v) for v in box] + ([1.0] if len(box) == 4 else [])
            if not all(math.isfinite(v) for v in values):
                raise InputError(f"{where}, box {i}: values must be finite, got {box!r}")
            if any(abs(v) > 1e7 for v in values[:4]):
                raise InputError(f"{where}, box {i}: coordinates beyond 1e7 px (float32 and any image size), "
                                 f"got {box!r}")
            x1, y1, x2, y2, _ = values
            if x2 <= x1 or y2 <= y1:
                raise InputError(f"{where}, box {i}: needs x2 > x1 and y2 > y1 (image px), got {box!r}")
            rows.append(values)
        out[str(key)] = np.asarray(rows, np.float32).reshape(-1, 5)
    return out
