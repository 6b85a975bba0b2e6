"""Read a calibration set folder (manifest + crops + frames; the layout is described in :mod:`calib_data.builder`).
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_runtime.errors import InputError
from edge_runtime.media.sources import read_image

MANIFEST = "manifest.json"
MANIFEST_KIND = "sdpose_calibration_set"
FORMAT_VERSION = 1


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


class CalibrationSet:
    """A calibration set folder (manifest + crops + frames), read lazily.

    Attributes: path, manifest (dict), input_size (w, h) of the crops, crop_records / frame_records
    (manifest entries). Images are read from disk one at a time by the iterators.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        manifest_path = self.path / MANIFEST
        if not self.path.is_dir():
            raise InputError(f"calibration set {self.path}: no such folder (build one with `sdpose-convert calib`)")
        if not manifest_path.is_file():
            raise InputError(f"calibration set {self.path}: {MANIFEST} is missing (not a calibration set "
                             "built by `sdpose-convert calib`)")
        try:
            manifest = json.loads(manifest_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise InputError(f"{manifest_path}: not valid JSON ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
            raise InputError(f"{manifest_path}: expected kind '{MANIFEST_KIND}'")
        if manifest.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{manifest_path}: format_version {manifest.get('format_version')!r} is not "
                             f"supported (expected {FORMAT_VERSION})")
        for key in ("crops", "frames"):
            if not isinstance(manifest.get(key), list):
                raise InputError(f"{manifest_path}: field '{key}' must be a list")
        if not manifest["crops"]:
            raise InputError(f"{manifest_path}: the calibration set has no crops")
        for key in ("crops", "frames"):
            for i, rec in enumerate(manifest[key]):
                if not isinstance(rec, dict) or not isinstance(rec.get("file"), str) \
                        or not isinstance(rec.get("sha256"), str):
                    raise InputError(f"{manifest_path}: {key}[{i}] needs 'file' and 'sha256' strings")
                if self.path.resolve() not in (self.path / rec["file"]).resolve().parents:
                    raise InputError(f"{manifest_path}: {key}[{i}]: file {rec['file']!r} points outside the set")
                if not (self.path / rec["file"]).is_file():
                    raise InputError(f"{manifest_path}: {key}[{i}]: file {self.path / rec['file']} is missing")
        params = manifest.get("params") or {}
        try:
            self.input_size = (int(params["input_width"]), int(params["input_height"]))
        except (KeyError, TypeError, ValueError):
            raise InputError(f"{manifest_path}: params.input_width / input_height missing or not integers") from None
        self.manifest = manifest
        self.crop_records: list[dict[str, Any]] = manifest["crops"]
        self.frame_records: list[dict[str, Any]] = manifest["frames"]

    @property
    def name(self) -> str:
        return self.path.name

    def __len__(self) -> int:
        return len(self.crop_records)

    def _read(self, rec: dict[str, Any]) -> np.ndarray:
        return read_image(self.path / rec["file"])

    def crops(self, limit: int | None = None, size: tuple[int, int] | None = None) -> Iterator[np.ndarray]:
        """Yield crops BGR u8 [h, w, 3] (crop px of the UDP warp), streamed from disk.

        ``size`` (w, h): resize to another model input size (same UDP box, so a plain resize of the crop
        up to interpolation; the aspect must match, otherwise InputError). ``limit``: at most this many.
        """
        if size is not None:
            w, h = (int(v) for v in size)
            if abs(w / h - self.input_size[0] / self.input_size[1]) > 1e-3:
                raise InputError(f"calibration set {self.path}: crops are {self.input_size[0]}x"
                                 f"{self.input_size[1]} (WxH), cannot serve aspect {w}x{h}; rebuild the set "
                                 f"with --input-size {h}x{w}")
        for rec in self.crop_records[:limit]:
            image = self._read(rec)
            if size is not None and (image.shape[1], image.shape[0]) != tuple(size):
                interp = cv2.INTER_AREA if size[0] < image.shape[1] else cv2.INTER_LINEAR
                image = cv2.resize(image, tuple(int(v) for v in size), interpolation=interp)
            yield image

    def frames(self, limit: int | None = None) -> Iterator[np.ndarray]:
        """Yield the stored full frames BGR u8 [H, W, 3] (any size; letterbox them for the detector)."""
        for rec in self.frame_records[:limit]:
            yield self._read(rec)

    def verify(self) -> None:
        """Check every file's sha256 against the manifest; InputError naming the first mismatch."""
        for rec in self.crop_records + self.frame_records:
            path = self.path / rec["file"]
            digest = sha256_file(path)
            if digest != rec["sha256"]:
                raise InputError(f"{path}: sha256 {digest} does not match the manifest ({rec['sha256']})")

    def fingerprint(self) -> str:
        """sha256 over the manifest's file hashes: identifies the set's content (for quantization records)."""
        digest = hashlib.sha256()
        for rec in self.crop_records + self.frame_records:
            digest.update(rec["sha256"].encode())
        return digest.hexdigest()

    def __repr__(self) -> str:
        return (f"CalibrationSet({str(self.path)!r}, crops={len(self.crop_records)}, "
                f"frames={len(self.frame_records)}, input_size={self.input_size})")


def load_calibration_set(path: str | Path) -> CalibrationSet:
    """Open a calibration set folder; ``"default"`` names the shipped set (calib_data/default)."""
    if str(path) == "default" and not Path(path).exists():
        path = default_calibration_dir()
    return CalibrationSet(path)


def default_calibration_dir() -> Path:
    """The default set shipped with the package (built by scripts/build_default_calib.py)."""
    return Path(__file__).resolve().parent / "default"
