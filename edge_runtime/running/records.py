"""The ``predictions.jsonl`` file (record layout in :mod:`edge_runtime.media.sinks`): the JSON-safe copy the JSONL
sink and the COCO writer write, and the file read back as :class:`~edge_runtime.running.results.FrameResult`
objects (through :meth:`~edge_runtime.running.results.FrameResult.from_record`, the one reader of records).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import InputError
from edge_runtime.running.results import FrameResult


def json_safe(value: Any) -> Any:
    """JSON-safe copy: numpy -> python, non-finite floats -> None."""
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if isinstance(value, np.ndarray):
        return json_safe(value.tolist())
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        f = float(value)
        return f if math.isfinite(f) else None
    return value


def read_predictions(path: "str | Path") -> list[FrameResult]:
    """``predictions.jsonl`` -> one FrameResult per line (blank lines skipped); InputError names the file and line."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise InputError(f"{path}: cannot read the predictions ({exc})") from exc
    results = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            results.append(FrameResult.from_record(json.loads(line)))
        except (ValueError, InputError) as exc:
            raise InputError(f"{path}:{number}: not a frame record ({exc})") from exc
    return results
