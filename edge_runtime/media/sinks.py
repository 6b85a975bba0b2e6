"""Output sinks. Every sink takes the results of a run in frame order: ``write(result, image=None)``, ``close()``;
``result`` is a :class:`~edge_runtime.running.results.FrameResult` (as
:meth:`~edge_runtime.running.results.FrameResult.as_output` gives it). Only :class:`JsonlSink` serialises it.

A frame record (one per input frame; what ``OUT/predictions.jsonl`` holds, :meth:`FrameResult.to_record`;
read back with :meth:`FrameResult.from_record` or :func:`edge_runtime.running.records.read_predictions`)::

    {"frame": 0, "source": "a.jpg", "timestamp_ms": 0.0,
     "width": 640, "height": 480,                    # image px (optional; needed without an image)
     "persons": [{"bbox_xyxy": [x1, y1, x2, y2], "score": s, "track_id": 3,
                  "keypoints": [[x, y, score], ...K]}],  # image px; null: tracked, no pose yet (live)
     "error": "..."}                                 # only for frames that failed

``image`` is the frame [H,W,3] u8 BGR (or None if it could not be read). Sinks:

- :class:`JsonlSink` ``predictions.jsonl``: one line per record, flushed per line, so an interrupted
  run leaves valid JSONL (every complete line parses).
- :class:`edge_runtime.media.coco.CocoResultsSink` ``coco_results.json``: COCO(-WholeBody) keypoint results and
  their image-id mapping, written atomically on close.
- :class:`OpenPoseSink` ``openpose/<frame>.json`` (see :mod:`edge_runtime.media.openpose`).
- :class:`VideoSink` / :class:`ImageSink`: skeleton overlays (:mod:`edge_runtime.media.draw`).
"""
from __future__ import annotations

import abc
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any, Iterable

import cv2
import numpy as np

from edge_runtime.media.draw import DrawOptions, draw_result
from edge_runtime.errors import InputError, SDPoseError
from edge_runtime.model.keypoints import ALL_GROUPS
from edge_runtime.media.coco import CocoResultsSink, coco_instance_score  # noqa: F401  (sinks of a run, re-exported)
from edge_runtime.running.records import json_safe as _clean
from edge_runtime.running.results import FrameResult
from edge_runtime.media.openpose import DEFAULT_THRESHOLD, to_openpose_person, write_openpose_json

#: OpenPose file naming: our frame index, or OpenPose's own <name>_keypoints.json
OPENPOSE_NAMING = ("frame", "openpose")

logger = logging.getLogger(__name__)


class Sink(abc.ABC):
    """Base: ``write(result, image=None)``, ``close()``, context manager. close() is idempotent."""

    closed = False

    @abc.abstractmethod
    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        """Consume one frame's result (frame order); ``image`` [H,W,3] u8 BGR or None."""

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> "Sink":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


class ListSink(Sink):
    """Keeps every result (and image, if ``keep_images``) in memory: for scripts and tests that score a run.
    ``records`` is their ``predictions.jsonl`` records (serialised when first asked for)."""

    def __init__(self, keep_images: bool = False) -> None:
        self.results: list[FrameResult] = []
        self.images: list[np.ndarray | None] = []
        self.keep_images = bool(keep_images)
        self._records: list[dict[str, Any]] = []

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        self.results.append(result)
        if self.keep_images:
            self.images.append(image)

    @property
    def records(self) -> list[dict[str, Any]]:
        """The results' records (:meth:`FrameResult.to_record`), in frame order."""
        self._records.extend(r.to_record() for r in self.results[len(self._records):])
        return self._records


class JsonlSink(Sink):
    """``predictions.jsonl``: one JSON object per line, flushed after every line."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = self.path.open("w", encoding="utf-8")
        self.count = 0

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        line = json.dumps(_clean(result.to_record()), allow_nan=False, separators=(",", ":"))
        self._file.write(line + "\n")
        self._file.flush()
        self.count += 1

    def close(self) -> None:
        if not self.closed:
            self._file.flush()
            try:
                os.fsync(self._file.fileno())  # the records survive a power cut after the run
            except OSError:
                pass  # not a regular file (a pipe): nothing to sync
            self._file.close()
            super().close()


def _frame_size(result: FrameResult, image: np.ndarray | None) -> tuple[int, int] | None:
    if image is not None:
        return int(image.shape[1]), int(image.shape[0])
    if result.image_size is not None and all(result.image_size):
        return int(result.image_size[0]), int(result.image_size[1])
    return None


class OpenPoseSink(Sink):
    """One OpenPose JSON per input frame (:mod:`edge_runtime.media.openpose`), so sequence readers never shift.

    Names: ``<directory>/<frame:06d>.json``, or with ``naming="openpose"`` OpenPose's own
    ``<name>_keypoints.json`` (image inputs: the image's stem; videos and streams: ``<source stem>_<frame:012d>``).
    A failed frame gets ``"people": []`` with the last known canvas size; failed frames before any size is
    known are written once one is (or with a 0 x 0 canvas at close). ``confidence``: "binary" (default, 1.0
    for kept points: what ControlNet readers show) or "score" (clipped to [0, 1]). ``person_id`` is the track ID.
    """

    def __init__(self, directory: str | Path, score_threshold: float = DEFAULT_THRESHOLD, face_points: int = 70,
                 confidence: str = "binary", naming: str = "frame"):
        if naming not in OPENPOSE_NAMING:
            raise InputError(f"openpose naming: expected one of {OPENPOSE_NAMING}, got {naming!r}")
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.score_threshold = float(score_threshold)
        self.face_points = face_points
        self.confidence = confidence
        self.naming = naming
        self.count = 0
        self._size: tuple[int, int] | None = None
        self._waiting: list[FrameResult] = []

    def path_for(self, result: FrameResult) -> Path:
        if self.naming == "frame":
            return self.directory / f"{int(result.frame):06d}.json"
        source = Path(str(result.source or "frame"))
        from edge_runtime.media.sources import IMAGE_EXTENSIONS

        stem = source.stem if source.suffix.lower() in IMAGE_EXTENSIONS else \
            f"{re.sub(r'[^A-Za-z0-9_.-]+', '_', source.stem or 'stream')}_{int(result.frame):012d}"
        return self.directory / f"{stem}_keypoints.json"

    def _write(self, result: FrameResult, people: list[dict[str, Any]], size: tuple[int, int]) -> None:
        write_openpose_json(self.path_for(result), people, *size)
        self.count += 1

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        size = None if result.error else _frame_size(result, image)
        if size is None:
            if self._size is None:
                self._waiting.append(result)
            else:
                self._write(result, [], self._size)
            return
        if self._size is None:
            for waiting in self._waiting:
                self._write(waiting, [], size)
            self._waiting.clear()
        self._size = size
        posed = result.with_pose()
        people = [to_openpose_person(k, s, self.score_threshold, self.face_points, self.confidence, size, int(tid))
                  for k, s, tid in zip(posed.keypoints, posed.scores, posed.track_ids)]
        self._write(result, people, size)

    def close(self) -> None:
        if self.closed:
            return
        for waiting in self._waiting:
            self._write(waiting, [], (0, 0))
        self._waiting.clear()
        super().close()


class _DrawingSink(Sink):
    def __init__(self, parts: Iterable[str] = ALL_GROUPS, score_threshold: float = DEFAULT_THRESHOLD,
                 draw_boxes: bool = False):
        self.options = DrawOptions(parts=frozenset(parts), threshold=float(score_threshold), draw_boxes=draw_boxes)

    def render(self, result: FrameResult, image: np.ndarray | None,
               size: tuple[int, int] | None = None) -> np.ndarray | None:
        """Draw the result onto ``image`` (or a black canvas of the result's size); None if neither."""
        if image is None:
            size = size or _frame_size(result, None)
            if size is None:
                return None
            image = np.zeros((size[1], size[0], 3), np.uint8)
        return draw_result(image, result, self.options)


class VideoSink(_DrawingSink):
    """Skeleton overlay video (``cv2.VideoWriter``, fourcc mp4v), released on close so it is playable.

    ``size`` (w, h) defaults to the first frame's size; frames of another size are resized. Frames without
    an image are written as a black canvas (so the video keeps one frame per input frame).
    """

    def __init__(self, path: str | Path, fps: float, size: tuple[int, int] | None = None,
                 parts: Iterable[str] = ALL_GROUPS, score_threshold: float = DEFAULT_THRESHOLD,
                 draw_boxes: bool = False):
        super().__init__(parts, score_threshold, draw_boxes)
        if not fps or fps <= 0 or not math.isfinite(float(fps)):
            raise InputError(f"video fps: expected a positive number, got {fps!r}")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.fps = float(fps)
        self.size = (int(size[0]), int(size[1])) if size is not None else None
        self._writer: cv2.VideoWriter | None = None
        self.count = 0

    def _open(self, size: tuple[int, int]) -> cv2.VideoWriter:
        writer = cv2.VideoWriter(str(self.path), cv2.VideoWriter_fourcc(*"mp4v"), self.fps, size)
        if not writer.isOpened():
            raise SDPoseError(f"{self.path}: OpenCV cannot open a mp4v video writer of size {size[0]}x{size[1]}")
        return writer

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        if self.size is None:
            self.size = _frame_size(result, image)
            if self.size is None:
                logger.warning("video: frame %s has no image and no size; skipped", result.frame)
                return
        frame = self.render(result, image, self.size)
        if frame is None:
            return
        if (frame.shape[1], frame.shape[0]) != self.size:
            frame = cv2.resize(frame, self.size, interpolation=cv2.INTER_AREA)
        if self._writer is None:
            self._writer = self._open(self.size)
        self._writer.write(frame)
        self.count += 1

    def close(self) -> None:
        if self.closed:
            return
        if self._writer is not None:
            self._writer.release()
            self._writer = None
        super().close()


class ImageSink(_DrawingSink):
    """``<directory>/<frame:06d>.jpg`` skeleton overlays (frames without an image are skipped)."""

    def __init__(self, directory: str | Path, parts: Iterable[str] = ALL_GROUPS,
                 score_threshold: float = DEFAULT_THRESHOLD, draw_boxes: bool = False, ext: str = ".jpg"):
        super().__init__(parts, score_threshold, draw_boxes)
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.ext = ext if ext.startswith(".") else f".{ext}"
        self.count = 0

    def path_for(self, result: FrameResult) -> Path:
        return self.directory / f"{int(result.frame):06d}{self.ext}"

    def write(self, result: FrameResult, image: np.ndarray | None = None) -> None:
        if image is None:
            return
        frame = self.render(result, image)
        path = self.path_for(result)
        if not cv2.imwrite(str(path), frame):
            raise SDPoseError(f"{path}: OpenCV could not write the image")
        self.count += 1
