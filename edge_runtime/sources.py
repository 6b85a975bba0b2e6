"""Frame sources: image files, folders and globs, video files, cameras and network streams.

Every source is an iterable of :class:`Frame` ``(index, name, image, timestamp_ms)``:

- ``index``: 0-based position of the frame in the source (frames that failed to decode keep their index,
  so indices never shift);
- ``name``: file name for images (``"a.jpg"``), ``"<file>#<index>"`` for video frames, ``"<url>#<index>"``
  for streams and cameras;
- ``image``: ``np.ndarray`` uint8 [H,W,3] BGR, or a :class:`FrameError` describing why the frame could not
  be read (the pipeline writes an error record for it and goes on);
- ``timestamp_ms``: media time of the frame for video files (ms from the start of the file), wall-clock
  capture time (ms since the Unix epoch) for cameras and streams, ``None`` for still images.

Sources are not thread-safe; the pipeline reads each from one capture thread and calls :meth:`close`
(possibly from another thread) to stop it. Live sources (cameras, ``rtsp://``, ``http(s)://``) reconnect
with bounded exponential backoff when the feed drops.
"""
from __future__ import annotations

import glob as globmod
import logging
import re
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, NamedTuple

import cv2
import numpy as np

from .errors import InputError

logger = logging.getLogger(__name__)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                    ".mjpeg", ".mjpg", ".gif")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def list_image_files(folder: Path) -> list[Path]:
    """The image files directly inside ``folder`` (by IMAGE_EXTENSIONS, case-insensitive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


def _add_header(line: bytes, headers: dict[str, str]) -> None:
    """Parse one ``Name: value`` part-header line into ``headers`` (name lower-cased)."""
    key, _, value = line.decode("latin-1").partition(":")
    headers[key.strip().lower()] = value.strip()


class FrameError(NamedTuple):
    """Why a frame could not be read (stands in the ``image`` slot of a :class:`Frame`)."""

    message: str


class Frame(NamedTuple):
    """One frame: ``image`` is uint8 [H,W,3] BGR (image px) or a :class:`FrameError`."""

    index: int
    name: str
    image: "np.ndarray | FrameError"
    timestamp_ms: "float | None"

    @property
    def ok(self) -> bool:
        return not isinstance(self.image, FrameError)

    @property
    def error(self) -> "str | None":
        return self.image.message if isinstance(self.image, FrameError) else None


@dataclass
class ReconnectPolicy:
    """Bounded exponential backoff for live sources.

    After a read failure the source waits ``initial_s``, then doubles the wait up to ``max_s``; it gives up
    after ``max_retries`` consecutive failed (re)connection attempts (``0`` = never reconnect).
    """

    max_retries: int = 5
    initial_s: float = 0.5
    max_s: float = 8.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        for _ in range(self.max_retries):
            yield delay
            delay = min(delay * 2.0, self.max_s)


class FrameSource:
    """Base class: iterate to get :class:`Frame` objects; ``close()`` stops the iteration."""

    #: ``"file"`` for finite sources read completely, ``"live"`` for cameras/streams
    default_mode = "file"
    #: number of frames when known (for progress), else None
    total: "int | None" = None
    #: human-readable description of the source
    description = ""

    def __init__(self) -> None:
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Ask the source to stop; the iterator ends after the frame being read (thread-safe)."""
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


def _read_image(path: Path) -> "np.ndarray | FrameError":
    """Read an image file as uint8 [H,W,3] BGR or return a FrameError naming the file."""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        return FrameError(f"{path}: cannot read file ({exc})")
    if data.size == 0:
        return FrameError(f"{path}: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        return FrameError(f"{path}: not a decodable image (corrupt or unsupported format)")
    return image


class ImageFilesSource(FrameSource):
    """Still images: one file, a folder (its image files, sorted by name) or a glob (sorted)."""

    def __init__(self, paths: "list[Path]", description: str = "") -> None:
        super().__init__()
        self.paths = list(paths)
        self.total = len(self.paths)
        self.description = description or (str(self.paths[0]) if self.paths else "")

    @classmethod
    def from_spec(cls, spec: str) -> "ImageFilesSource":
        path = Path(spec)
        if path.is_dir():
            files = list_image_files(path)
            if not files:
                raise InputError(f"--source {spec}: folder contains no image files "
                                 f"(expected one of {', '.join(IMAGE_EXTENSIONS)})")
            return cls(files, description=f"folder {spec} ({len(files)} images)")
        if path.is_file():
            return cls([path], description=str(path))
        matches = sorted(Path(p) for p in globmod.glob(spec, recursive=True) if Path(p).is_file())
        if not matches:
            raise InputError(f"--source {spec}: no file, folder or glob match")
        return cls(matches, description=f"glob {spec} ({len(matches)} files)")

    def __iter__(self) -> Iterator[Frame]:
        for index, path in enumerate(self.paths):
            if self.closed:
                return
            image = _read_image(path)
            if isinstance(image, FrameError):
                logger.warning("skipping frame %d: %s", index, image.message)
            yield Frame(index, path.name, image, None)


class VideoFileSource(FrameSource):
    """Frames of a video file via cv2.VideoCapture.

    A truncated or partly corrupt file stops cleanly at the last decodable frame (logged with the number of
    frames the header announced). ``timestamp_ms`` is the media time of each frame.
    """

    def __init__(self, path: "str | Path") -> None:
        super().__init__()
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError(f"--source {path}: video file does not exist")
        cap = cv2.VideoCapture(str(self.path))
        try:
            if not cap.isOpened():
                raise InputError(f"--source {path}: cannot open as a video (corrupt or unsupported codec)")
            count = int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0)
            self.fps = float(cap.get(cv2.CAP_PROP_FPS) or 0.0)
        finally:
            cap.release()
        self.total = count if count > 0 else None
        self.description = f"video {self.path.name} ({count} frames @ {self.fps:.1f} fps)"

    def __iter__(self) -> Iterator[Frame]:
        cap = cv2.VideoCapture(str(self.path))
        index = 0
        try:
            while not self.closed:
                ok, image = cap.read()
                if not ok or image is None:
                    break
                pos = cap.get(cv2.CAP_PROP_POS_MSEC)
                if (not pos or pos < 0) and self.fps > 0:
                    pos = index * 1000.0 / self.fps
                yield Frame(index, f"{self.path.name}#{index}", image, float(pos or 0.0))
                index += 1
        finally:
            cap.release()
        if self.total is not None and index < self.total and not self.closed:
            logger.warning("%s: stopped at frame %d of the %d announced (truncated or corrupt file; "
                           "the last decodable frame was %d)", self.path, index, self.total, index - 1)
        logger.debug("%s: read %d frames", self.path, index)


class _MjpegReader:
    """Minimal reader for ``multipart/x-mixed-replace`` MJPEG over HTTP (one JPEG per part).

    A part ends after ``Content-Length`` bytes when the header is present, else at the next boundary line
    (or, without a known boundary, at the JPEG end-of-image marker).
    """

    def __init__(self, response, boundary: "bytes | None") -> None:
        self.response = response
        self.boundary = boundary
        self._buf = bytearray()
        self._eof = False

    def _fill(self) -> bool:
        if self._eof:
            return False
        read1 = getattr(self.response, "read1", None)
        chunk = read1(65536) if read1 is not None else self.response.read(4096)
        if not chunk:
            self._eof = True
            return False
        self._buf += chunk
        return True

    def _readline(self) -> bytes:
        while True:
            pos = self._buf.find(b"\n")
            if pos >= 0:
                line = bytes(self._buf[:pos + 1])
                del self._buf[:pos + 1]
                return line
            if not self._fill():
                line = bytes(self._buf)
                self._buf.clear()
                return line

    def _read_exact(self, n: int) -> "bytes | None":
        while len(self._buf) < n:
            if not self._fill():
                return None
        data = bytes(self._buf[:n])
        del self._buf[:n]
        return data

    def _read_until(self, marker: bytes, keep_marker: bool) -> "bytes | None":
        start = 0
        while True:
            pos = self._buf.find(marker, start)
            if pos >= 0:
                end = pos + len(marker)
                data = bytes(self._buf[:end] if keep_marker else self._buf[:pos])
                del self._buf[:end if keep_marker else pos]
                return data
            start = max(0, len(self._buf) - len(marker) + 1)
            if not self._fill():
                data = bytes(self._buf)
                self._buf.clear()
                return data or None

    def read(self) -> "bytes | None":
        """Return the next part's bytes, or None at the end of the stream."""
        headers: dict[str, str] = {}
        # skip to the next part boundary, then read part headers up to the blank line
        while True:
            line = self._readline()
            if not line:
                return None
            stripped = line.strip()
            if not stripped:
                continue
            if stripped.startswith(b"--"):
                if stripped.endswith(b"--") and len(stripped) > 2 and (
                        self.boundary is None or stripped[2:-2] == self.boundary):
                    return None  # closing boundary
                break
            if b":" in stripped:  # some servers omit the first boundary
                _add_header(stripped, headers)
                break
        while True:
            line = self._readline()
            if not line:
                return None
            stripped = line.strip()
            if not stripped:
                break
            _add_header(stripped, headers)
        length = headers.get("content-length")
        if length is not None and length.isdigit():
            return self._read_exact(int(length))
        if self.boundary is not None:
            data = self._read_until(b"\r\n--" + self.boundary, keep_marker=False)
            return data
        return self._read_until(b"\xff\xd9", keep_marker=True)

    def close(self) -> None:
        self.response.close()


class LiveSource(FrameSource):
    """A camera (index) or a network stream (``rtsp://``, ``http(s)://`` ...), read as fast as it delivers.

    ``http(s)://`` URLs answering ``multipart/x-mixed-replace`` (MJPEG) are read with a small urllib reader;
    everything else goes through cv2.VideoCapture (FFMPEG). When reading fails the source reconnects with
    ``policy`` (bounded exponential backoff) and ends after ``policy.max_retries`` failed attempts in a row.
    A frame that arrives but cannot be decoded is yielded as a :class:`FrameError`.
    """

    default_mode = "live"

    def __init__(self, spec: str, policy: "ReconnectPolicy | None" = None, timeout_s: float = 10.0) -> None:
        super().__init__()
        self.spec = spec
        self.policy = policy if policy is not None else ReconnectPolicy()
        self.timeout_s = timeout_s
        self.is_camera = spec.isdigit()
        self.description = f"camera {spec}" if self.is_camera else f"stream {spec}"
        self.reconnects = 0
        self._lock = threading.Lock()
        self._handle = None  # cv2.VideoCapture or _MjpegReader while open

    # -- connection -----------------------------------------------------------------------------
    def _open(self):
        if self.spec.startswith(("http://", "https://")):
            try:
                response = urllib.request.urlopen(self.spec, timeout=self.timeout_s)  # noqa: S310 (user URL)
            except (urllib.error.URLError, OSError, ValueError) as exc:
                logger.warning("%s: cannot connect (%s)", self.spec, exc)
                return None
            ctype = response.headers.get("Content-Type", "")
            if "multipart" in ctype.lower():
                match = re.search(r'boundary="?([^";]+)"?', ctype)
                boundary = match.group(1).encode("latin-1") if match else None
                if boundary is not None and boundary.startswith(b"--"):
                    boundary = boundary[2:]
                return _MjpegReader(response, boundary)
            response.close()  # not MJPEG: let FFMPEG handle it (HLS, raw mp4 ...)
        cap = cv2.VideoCapture(int(self.spec)) if self.is_camera else cv2.VideoCapture(self.spec)
        if not cap.isOpened():
            cap.release()
            logger.warning("%s: cannot open", self.description)
            return None
        return cap

    def _connect_with_backoff(self, first: bool):
        handle = self._open() if first else None
        if handle is not None:
            return handle
        for attempt, delay in enumerate(self.policy.delays(), start=1):
            if self._closed.wait(delay):
                return None
            logger.info("%s: reconnecting (attempt %d/%d after %.1f s)", self.description, attempt,
                        self.policy.max_retries, delay)
            handle = self._open()
            if handle is not None:
                self.reconnects += 1
                return handle
        return None

    def _read(self, handle) -> "tuple[bool, np.ndarray | FrameError | None]":
        """(connection ok, image or FrameError); connection ok False means reconnect."""
        if isinstance(handle, _MjpegReader):
            try:
                data = handle.read()
            except (OSError, ValueError) as exc:
                logger.warning("%s: read failed (%s)", self.spec, exc)
                return False, None
            if data is None:
                return False, None
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                return True, FrameError(f"{self.spec}: received a part of {len(data)} bytes that is not a "
                                        "decodable JPEG")
            return True, image
        ok, image = handle.read()
        if not ok or image is None:
            return False, None
        return True, image

    def _release(self, handle) -> None:
        if handle is None:
            return
        if isinstance(handle, _MjpegReader):
            handle.close()
        else:
            handle.release()

    def __iter__(self) -> Iterator[Frame]:
        handle = self._connect_with_backoff(first=True)
        if handle is None:
            if not self.closed:
                raise InputError(f"--source {self.spec}: cannot open {self.description} "
                                 f"(gave up after {self.policy.max_retries} retries)")
            return
        with self._lock:
            self._handle = handle
        index = 0
        try:
            while not self.closed:
                connected, image = self._read(handle)
                if not connected:
                    if self.closed:
                        break
                    logger.warning("%s: feed dropped after frame %d; reconnecting", self.description, index - 1)
                    self._release(handle)
                    handle = self._connect_with_backoff(first=False)
                    with self._lock:
                        self._handle = handle
                    if handle is None:
                        if not self.closed:
                            logger.error("%s: gave up after %d reconnection attempts", self.description,
                                         self.policy.max_retries)
                        break
                    continue
                name = f"{'camera' + self.spec if self.is_camera else self.spec}#{index}"
                if isinstance(image, FrameError):
                    logger.warning("skipping frame %d: %s", index, image.message)
                yield Frame(index, name, image, time.time() * 1000.0)
                index += 1
        finally:
            with self._lock:
                self._release(handle)
                self._handle = None


def is_live_spec(spec: str) -> bool:
    """True for a camera index ("0") or a stream URL."""
    return spec.isdigit() or spec.lower().startswith(STREAM_SCHEMES)


def open_source(spec: str, policy: "ReconnectPolicy | None" = None) -> FrameSource:
    """Make the FrameSource for ``--source SPEC``.

    SPEC: camera index (``"0"``), ``rtsp://`` / ``http(s)://`` ... stream, video file, image file, folder of
    images, or glob of images. Raises InputError naming SPEC when it matches nothing usable.
    """
    spec = str(spec)
    if is_live_spec(spec):
        return LiveSource(spec, policy=policy)
    path = Path(spec)
    if path.is_dir():
        return ImageFilesSource.from_spec(spec)
    if path.is_file():
        suffix = path.suffix.lower()
        if suffix in IMAGE_EXTENSIONS:
            return ImageFilesSource.from_spec(spec)
        if suffix in VIDEO_EXTENSIONS:
            return VideoFileSource(path)
        # unknown extension: try as image, then as video
        if cv2.haveImageReader(str(path)):
            return ImageFilesSource([path])
        return VideoFileSource(path)
    if any(ch in spec for ch in "*?["):
        return ImageFilesSource.from_spec(spec)
    raise InputError(f"--source {spec}: no such file or folder, not a camera index and not a stream URL")
