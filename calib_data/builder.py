"""Build and read calibration sets: person crops (pose IRs) and full frames (detector IR).

A calibration set is a folder::

    NAME/manifest.json          what was built, from what, with which parameters (see below)
    NAME/crops/crop_0000.jpg    UDP crops at the pose model input size (w x h), BGR, exactly the runtime's
                                crops (edge_runtime.model.geometry.udp_warp_matrix + warp_crop, padding 1.25)
    NAME/frames/frame_0000.jpg  full frames (long side <= frame_max_side) for the detector's INT8 pass;
                                the detector letterboxes them like any frame (convert.detector
                                .detector_calibration_inputs)

How :func:`build_calibration_set` works (one streaming pass, nothing held at full size beyond one frame):

1. Sources: every image in the ``images`` folders (jpg/jpeg/png/bmp/tif/tiff/webp, sorted, not recursive;
   image files may also be given directly) and ``frames_per_video`` frames sampled evenly from each video.
2. Persons per frame, in this order of preference: boxes given in the ``detections`` JSON for that source;
   else the converted person detector (``detector``: a model folder or detector.xml); else - last resort,
   logged as a warning - the full frame as one box.
3. Each box (>= ``min_box_size`` px on both sides) becomes the runtime's UDP crop. Near-duplicates are
   skipped: a crop whose 16x16 grey thumbnail differs from an already accepted one by less than
   ``dedup_threshold`` grey levels (mean absolute difference) is dropped (static video, repeated photos).
4. If more than ``max_crops`` distinct crops are found, a uniform random subset is kept (reservoir
   sampling driven by ``seed``), likewise ``max_frames`` frames. Same inputs + same seed -> same
   manifest and the same file hashes (deterministic encoders; no timestamps or absolute paths stored).

Crops are stored as JPEG (quality ``jpeg_quality``, default 95: ~4x smaller than PNG; the coding error is
far below the variation between calibration images and only shifts activation statistics negligibly) or
PNG (lossless, ``image_format="png"``).

Detections JSON: an object mapping a source to its person boxes ``[[x1, y1, x2, y2(, score)], ...]`` in
image px. Images: key = file name, path relative to its ``--images`` folder's parent ("photos/a.jpg"),
or the path as given. Videos: the value is an object ``{"<frame index>": [[...], ...]}``. A source listed
with an empty list has no persons (it is not given to the detector).

Manifest (``format_version`` 1): ``params`` (input size, padding, seed, limits, format), ``sources``
(name, type, sha256, frames read), ``crops`` (file, source, frame (null for images), box [x1,y1,x2,y2]
image px, box_source detections|detector|full_frame, score, sha256, dhash), ``frames`` (file, source,
frame, scale to the stored size, sha256), ``counts``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import heapq
import json
import logging
import math
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_runtime.model.detector import DEFAULT_CONF_THRESHOLD
from edge_runtime.errors import InputError
from edge_runtime.model.geometry import DEFAULT_INPUT_SIZE, DEFAULT_PADDING, udp_warp_matrix, warp_crop
from edge_runtime.media.sources import read_image

from .inputs import Source, collect_sources, load_detections, video_frames
from .reader import (FORMAT_VERSION, MANIFEST, MANIFEST_KIND, CalibrationSet,  # noqa: F401  (the reader was
                     default_calibration_dir, load_calibration_set, sha256_file)  # part of this module)

logger = logging.getLogger(__name__)

THUMB_SIZE = 16


@dataclasses.dataclass
class BuildParams:
    """Parameters of a calibration set build (all recorded in the manifest).

    input_size: crop (w, h) px = the pose model input (default 768x1024). padding: box padding (1.25).
    max_crops / max_frames: upper bounds on stored crops / detector frames. frames_per_video: frames
    sampled evenly per video. frame_max_side: stored frames are downscaled to this long side.
    dedup_threshold: thumbnail mean-abs-difference (grey levels) under which a crop is a duplicate.
    min_box_size: boxes narrower or lower than this (image px) are skipped. image_format: "jpg"|"png".
    jpeg_quality: 1..100. conf_threshold: detector score threshold. seed: sampling seed.
    """

    input_size: tuple[int, int] = DEFAULT_INPUT_SIZE
    padding: float = DEFAULT_PADDING
    max_crops: int = 64
    max_frames: int = 32
    frames_per_video: int = 16
    frame_max_side: int = 640
    dedup_threshold: float = 4.0
    min_box_size: float = 16.0
    image_format: str = "jpg"
    jpeg_quality: int = 95
    conf_threshold: float = DEFAULT_CONF_THRESHOLD
    seed: int = 0

    def validate(self) -> None:
        """InputError naming the field when a value is out of range."""
        try:
            w, h = (int(v) for v in self.input_size)
        except (TypeError, ValueError):
            raise InputError(f"input_size: expected (w, h) ints, got {self.input_size!r}") from None
        if w < 2 or h < 2:
            raise InputError(f"input_size: expected (w, h) >= 2 px, got {self.input_size!r}")
        self.input_size = (w, h)
        for name in ("max_crops", "frames_per_video", "frame_max_side"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"{name}: expected a positive integer, got {value!r}")
        if isinstance(self.max_frames, bool) or not isinstance(self.max_frames, int) or self.max_frames < 0:
            raise InputError(f"max_frames: expected an integer >= 0, got {self.max_frames!r}")
        if not (self.padding > 0 and math.isfinite(self.padding)):
            raise InputError(f"padding: expected a positive number, got {self.padding!r}")
        if not self.dedup_threshold >= 0:
            raise InputError(f"dedup_threshold: expected >= 0, got {self.dedup_threshold!r}")
        if not self.min_box_size >= 0:
            raise InputError(f"min_box_size: expected >= 0, got {self.min_box_size!r}")
        if self.image_format not in ("jpg", "png"):
            raise InputError(f"image_format: expected 'jpg' or 'png', got {self.image_format!r}")
        if not 1 <= int(self.jpeg_quality) <= 100:
            raise InputError(f"jpeg_quality: expected 1..100, got {self.jpeg_quality!r}")
        if not 0.0 <= self.conf_threshold <= 1.0:
            raise InputError(f"conf_threshold: expected a value in [0, 1], got {self.conf_threshold!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise InputError(f"seed: expected an integer >= 0, got {self.seed!r}")

    def to_json(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["input_width"], d["input_height"] = self.input_size
        del d["input_size"]
        return d


# ----------------------------------------------------------------------------------------------- helpers
def _sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _thumb(image: np.ndarray) -> np.ndarray:
    """16x16 grey thumbnail f32 (area-averaged) used for near-duplicate detection."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    return cv2.resize(grey, (THUMB_SIZE, THUMB_SIZE), interpolation=cv2.INTER_AREA).astype(np.float32)


def _keep_if_new(image: np.ndarray, kept_thumbs: list[np.ndarray], threshold: float) -> bool:
    """False when ``image`` is a near-duplicate (mean abs thumbnail difference < threshold) of one already
    kept; otherwise remember its thumbnail in ``kept_thumbs`` and return True."""
    thumb = _thumb(image)
    if any(float(np.abs(thumb - t).mean()) < threshold for t in kept_thumbs):
        return False
    kept_thumbs.append(thumb)
    return True


def dhash(image: np.ndarray) -> str:
    """64-bit difference hash (9x8 grey, horizontal gradients) as 16 hex digits (recorded per crop)."""
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)
    small = cv2.resize(grey, (9, 8), interpolation=cv2.INTER_AREA).astype(np.int16)
    bits = (small[:, 1:] > small[:, :-1]).reshape(-1)
    return f"{int(''.join('1' if b else '0' for b in bits), 2):016x}"


def _encode(image: np.ndarray, params: BuildParams) -> tuple[bytes, str]:
    if params.image_format == "png":
        ok, buf = cv2.imencode(".png", image, [cv2.IMWRITE_PNG_COMPRESSION, 6])
        ext = ".png"
    else:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, int(params.jpeg_quality)])
        ext = ".jpg"
    if not ok:
        raise InputError(f"could not encode an image of shape {image.shape} as {ext}")
    return buf.tobytes(), ext


class _Reservoir:
    """Keeps the ``size`` items with the smallest random keys (uniform subset), files on disk."""

    def __init__(self, size: int, rng: np.random.Generator, folder: Path, prefix: str):
        self.size, self.rng, self.folder, self.prefix = size, rng, folder, prefix
        self.heap: list[tuple[float, int, dict[str, Any]]] = []  # (-key, seq, record)

    def offer(self, seq: int, data: bytes, ext: str, record: dict[str, Any]) -> None:
        key = float(self.rng.random())
        if self.size <= 0:
            return
        if len(self.heap) >= self.size:
            if key >= -self.heap[0][0]:
                return
            _, _, evicted = heapq.heappop(self.heap)
            (self.folder / evicted["_tmp"]).unlink()
        tmp = f"{self.prefix}{seq:07d}{ext}"
        (self.folder / tmp).write_bytes(data)
        record = dict(record, _tmp=tmp, _ext=ext, sha256=_sha256_bytes(data))
        heapq.heappush(self.heap, (-key, seq, record))

    def records(self) -> list[dict[str, Any]]:
        """Kept records in stream order."""
        return [r for _, _, r in sorted(self.heap, key=lambda item: item[1])]


def _finalise(reservoir: _Reservoir, stage: Path, sub: str, stem: str) -> list[dict[str, Any]]:
    (stage / sub).mkdir(exist_ok=True)
    out = []
    for i, rec in enumerate(reservoir.records()):
        rel = f"{sub}/{stem}_{i:04d}{rec.pop('_ext')}"
        (reservoir.folder / rec.pop("_tmp")).rename(stage / rel)
        out.append({"file": rel, **rec})
    return out


# ----------------------------------------------------------------------------------------------- build
def build_calibration_set(out: str | Path, images: Sequence[str | Path] = (), videos: Sequence[str | Path] = (),
                          detections: str | Path | None = None, detector: Any = None,
                          params: BuildParams | None = None, overwrite: bool = False,
                          detector_info: dict[str, Any] | None = None) -> Path:
    """Build a calibration set folder at ``out`` (see module doc). Returns the manifest path.

    Args:
        out: output folder; must not exist or be empty unless ``overwrite`` (then replaced only once the
            new set is complete).
        images / videos: inputs. detections: detections JSON path. detector: a callable
            ``image_bgr -> (boxes_xyxy [M,4] image px, scores [M])`` (e.g. ``edge_runtime.model.detector
            .PersonDetector``) or None; ``detector_info``: what to record about it in the manifest.
        params: :class:`BuildParams` (defaults if None).

    Raises InputError: no/unreadable input, bad detections file, no crop produced, ``out`` not empty.
    """
    params = dataclasses.replace(params) if params is not None else BuildParams()
    params.validate()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        if not overwrite:
            raise InputError(f"--out {out}: exists and is not empty (choose a new folder or pass --overwrite)")
        _check_replaceable(out)
    sources = collect_sources(images, videos)
    _check_not_an_input(out, images, videos, detections)
    dets = load_detections(detections) if detections is not None else {}
    if detector is None and not dets:
        logger.warning("no --detector and no --detections: every frame is used whole as one person box "
                       "(last resort; crops will not be person-centred)")

    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    try:
        build = _Build(params, stage, dets, detector)
        source_records = [build.add_source(src) for src in sources]
        manifest = build.finish(sources, source_records)
        manifest["person_boxes"] = {
            "detections": None if detections is None else Path(detections).name,
            "detections_sha256": None if detections is None else sha256_file(Path(detections)),
            "detector": (dict(detector_info or {}) or None) if detector is not None else None}
        (stage / MANIFEST).write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
        _install(stage, out)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    counts = manifest["counts"]
    logger.info("calibration set %s: %d crops (%dx%d), %d frames from %d source(s); %d duplicates skipped",
                out, counts["crops"], params.input_size[0], params.input_size[1], counts["frames"],
                len(sources), counts["duplicates_skipped"])
    return out / MANIFEST


class _Build:
    """The state of one build in its staging folder: both reservoirs, the counts and the near-duplicate
    thumbnails; sources are added one at a time, frame by frame."""

    def __init__(self, params: BuildParams, stage: Path, dets: dict[str, Any], detector: Any) -> None:
        self.params, self.stage, self.dets, self.detector = params, stage, dets, detector
        self.dets_used: set[str] = set()
        (stage / "pending").mkdir()
        self.crops = _Reservoir(params.max_crops, np.random.default_rng(params.seed), stage / "pending", "c")
        self.frames = _Reservoir(params.max_frames, np.random.default_rng([params.seed, 1]), stage / "pending", "f")
        self.counts = {"frames_read": 0, "boxes": 0, "boxes_too_small": 0, "duplicates_skipped": 0,
                       "frames_without_person": 0, "full_frame_fallbacks": 0, "frame_duplicates_skipped": 0}
        self.kept_thumbs: list[np.ndarray] = []
        self.frame_thumbs: list[np.ndarray] = []
        self.seq = 0

    def add_source(self, src: Source) -> dict[str, Any]:
        """Read every frame of ``src`` (its boxes from the detections, the detector or the full frame);
        returns its manifest record."""
        entry = next((self.dets[k] for k in src.keys if k in self.dets), None)
        if entry is not None:
            self.dets_used.update(k for k in src.keys if k in self.dets)
        if src.kind == "image":
            if isinstance(entry, dict):
                raise InputError(f"--detections: entry for image {src.name} must be a list of boxes, "
                                 "not a per-frame object")
            stream: Iterable[tuple[int | None, np.ndarray]] = [(None, read_image(src.path))]
        else:
            if entry is not None and not isinstance(entry, dict):
                raise InputError(f"--detections: entry for video {src.name} must be an object "
                                 "{frame index: boxes}")
            stream = video_frames(src.path, self.params.frames_per_video)
        n_read = 0
        for frame_index, image in stream:
            n_read += 1
            self.counts["frames_read"] += 1
            given = entry if entry is None or src.kind != "video" else entry.get(frame_index)
            boxes, scores, how = self._boxes(given, image, src, frame_index)
            _offer_frame(self.frames, self.frame_thumbs, image, src, frame_index, self.params, self.counts)
            if len(boxes) == 0:
                self.counts["frames_without_person"] += 1
            for box, score in zip(boxes, scores):
                self._add_crop(image, box, score, how, src, frame_index)
        return {"name": src.name, "type": src.kind, "sha256": sha256_file(src.path), "frames_read": n_read}

    def _boxes(self, given: np.ndarray | None, image: np.ndarray, src: Source,
               frame_index: int | None) -> tuple[np.ndarray, np.ndarray, str]:
        """Person boxes [M,4] image px, scores [M] (nan: none) and where they came from, for one frame."""
        if given is not None:
            return given[:, :4], given[:, 4], "detections"
        if self.detector is not None:
            boxes, scores = self.detector(image)
            return (np.asarray(boxes, np.float64).reshape(-1, 4), np.asarray(scores, np.float64).reshape(-1),
                    "detector")
        h, w = image.shape[:2]
        self.counts["full_frame_fallbacks"] += 1
        logger.warning("%s%s: no person boxes, using the full frame", src.name,
                       "" if frame_index is None else f" frame {frame_index}")
        return np.array([[0.0, 0.0, float(w), float(h)]]), np.array([math.nan]), "full_frame"

    def _add_crop(self, image: np.ndarray, box: np.ndarray, score: float, how: str, src: Source,
                  frame_index: int | None) -> None:
        """The runtime's UDP crop of ``box``, offered to the crop reservoir unless too small or a duplicate."""
        params = self.params
        self.counts["boxes"] += 1
        if min(box[2] - box[0], box[3] - box[1]) < params.min_box_size:
            self.counts["boxes_too_small"] += 1
            return
        crop = warp_crop(image, udp_warp_matrix(box, params.input_size, params.padding), params.input_size)
        if not _keep_if_new(crop, self.kept_thumbs, params.dedup_threshold):
            self.counts["duplicates_skipped"] += 1
            return
        data, ext = _encode(crop, params)
        self.seq += 1
        self.crops.offer(self.seq, data, ext, {
            "source": src.name, "frame": frame_index, "box": [round(float(v), 3) for v in box],
            "box_source": how, "score": None if math.isnan(score) else round(float(score), 5),
            "dhash": dhash(crop)})

    def finish(self, sources: Sequence[Source], source_records: list[dict[str, Any]]) -> dict[str, Any]:
        """Move the kept crops and frames into place; the manifest (without ``person_boxes``)."""
        unused = sorted(set(self.dets) - self.dets_used)
        if unused:
            logger.warning("--detections: %d entries match no input: %s", len(unused), unused[:5])
        counts = self.counts
        if not self.crops.heap:
            raise InputError(
                f"no crops produced from {len(sources)} input(s) ({counts['frames_read']} frames, "
                f"{counts['boxes']} boxes, {counts['boxes_too_small']} too small, "
                f"{counts['duplicates_skipped']} duplicates): nothing to calibrate with")
        crop_records = _finalise(self.crops, self.stage, "crops", "crop")
        frame_records = _finalise(self.frames, self.stage, "frames", "frame")
        (self.stage / "pending").rmdir()
        counts.update(crops=len(crop_records), frames=len(frame_records), candidates=self.seq)
        import openvino as ov

        return {"kind": MANIFEST_KIND, "format_version": FORMAT_VERSION, "seed": self.params.seed,
                "params": self.params.to_json(),
                "versions": {"opencv": cv2.__version__, "numpy": np.__version__, "openvino": ov.get_version()},
                "counts": counts, "sources": source_records, "crops": crop_records, "frames": frame_records}


def _offer_frame(frames: _Reservoir, thumbs: list[np.ndarray], image: np.ndarray, src: Source,
                 frame_index: int | None, params: BuildParams, counts: dict[str, int]) -> None:
    """Offer a full frame (downscaled to frame_max_side) to the detector-frame reservoir."""
    if params.max_frames == 0:
        return
    h, w = image.shape[:2]
    scale = min(1.0, params.frame_max_side / max(h, w))
    small = image if scale == 1.0 else cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))),
                                                  interpolation=cv2.INTER_AREA)
    if not _keep_if_new(small, thumbs, params.dedup_threshold):
        counts["frame_duplicates_skipped"] += 1
        return
    data, ext = _encode(small, params)
    frames.offer(counts["frames_read"], data, ext,
                 {"source": src.name, "frame": frame_index, "scale": round(scale, 6),
                  "width": small.shape[1], "height": small.shape[0]})


def _check_replaceable(out: Path) -> None:
    """``--overwrite`` replaces only a calibration set: a folder whose manifest.json says so."""
    manifest = out / MANIFEST
    kind = None
    if out.is_dir() and manifest.is_file():
        try:
            doc = json.loads(manifest.read_text())
            kind = doc.get("kind") if isinstance(doc, dict) else None
        except (OSError, ValueError):
            kind = None
    if kind != MANIFEST_KIND:
        raise InputError(f"--out {out}: --overwrite only replaces a calibration set (a folder with a {MANIFEST} of "
                         f"kind '{MANIFEST_KIND}'); this one is not, so nothing was deleted. Choose a new folder.")


def _check_not_an_input(out: Path, images: Sequence[str | Path], videos: Sequence[str | Path],
                        detections: "str | Path | None") -> None:
    """The output folder may not hold (or be) any input: replacing it would delete them."""
    root = out.resolve()
    for item in [*images, *videos, *([detections] if detections is not None else [])]:
        path = Path(item).resolve()
        if path == root or root in path.parents:
            raise InputError(f"--out {out}: the input {item} is inside it; write the calibration set elsewhere")


def _install(stage: Path, out: Path) -> None:
    """Move the finished set into place; an existing ``out`` is replaced only after the move succeeds, and
    restored if it does not."""
    if out.exists():
        backup = out.with_name(f".{out.name}.old")
        if backup.exists():
            shutil.rmtree(backup)
        out.rename(backup)
        try:
            stage.rename(out)
        except OSError:
            backup.rename(out)  # put the old set back where it was
            raise
        shutil.rmtree(backup)
    else:
        stage.rename(out)


