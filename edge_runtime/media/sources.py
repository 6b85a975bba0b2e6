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
import http.client
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

from edge_runtime.config import linked
from edge_runtime.errors import InputError
from edge_runtime.media.mjpeg import MjpegReader

logger = logging.getLogger(__name__)

_USERINFO = re.compile(r"(?P<scheme>[a-zA-Z][a-zA-Z0-9+.-]*://)(?P<user>[^:/@\s]*):(?P<password>[^@/\s]*)@")



def mask_credentials(text: str) -> str:
    """``rtsp://user:pass@host/x`` -> ``rtsp://user:***@host/x`` anywhere in ``text`` (logs, records, errors)."""
    return _USERINFO.sub(lambda m: f"{m.group('scheme')}{m.group('user')}:***@", str(text))


def split_credentials(url: str) -> "tuple[str, str | None, str | None]":
    """(url without user:password@, user, password); user/password None when the URL has none."""
    from urllib.parse import unquote, urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None, None
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    return (urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)),
            unquote(parts.username or ""), unquote(parts.password or ""))

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm")

VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv", ".flv", ".ts",
                    ".mjpeg", ".mjpg", ".gif")
STREAM_SCHEMES = ("rtsp://", "rtsps://", "rtmp://", "http://", "https://", "udp://", "tcp://")


def list_image_files(folder: Path) -> list[Path]:
    """The image files directly inside ``folder`` (by IMAGE_EXTENSIONS, case-insensitive), sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTENSIONS)


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
    after ``max_retries`` (re)connection attempts in one outage (``0`` = never reconnect) or after
    ``max_outage_s`` seconds without a frame. An outage ends only when a frame arrives: a server that
    accepts the connection and sends nothing does not reset the count. The first three are the ``reconnect_*``
    settings (their defaults; the settings' checks apply to the YAML and the command line, while a caller may
    use zero waits, as the tests do).
    """

    max_retries: int = linked("reconnect_retries")
    initial_s: float = linked("reconnect_initial_s")
    max_s: float = linked("reconnect_max_s")
    max_outage_s: "float | None" = 120.0

    def delays(self) -> Iterator[float]:
        delay = self.initial_s
        for _ in range(self.max_retries):
            yield delay
            delay = min(delay * 2.0, self.max_s)


class ConnectionStats:
    """A source's connection record for ``summary.json`` (zeros for files): ``connection_drops`` (an open feed
    was lost: read failure or end of stream), ``reconnects`` (reconnections that succeeded) and ``longest_outage_s``
    (from the loss, or a failed first connection, to the next frame; an outage that never ended counts up to
    when the source gave up or stopped). Written by the capture thread, read by the coordinator."""

    def __init__(self) -> None:
        self.connection_drops = 0
        self.reconnects = 0
        self.longest_outage_s = 0.0
        self._outage_t0: "float | None" = None

    def outage_started(self, dropped: bool) -> None:
        self.connection_drops += int(dropped)
        if self._outage_t0 is None:
            self._outage_t0 = time.monotonic()

    def outage_ended(self) -> None:
        t0, self._outage_t0 = self._outage_t0, None
        if t0 is not None:
            self.longest_outage_s = max(self.longest_outage_s, time.monotonic() - t0)

    def to_summary(self) -> dict:
        """{"connection_drops", "reconnects", "longest_outage_s"} (an outage still going counts until now)."""
        t0 = self._outage_t0
        longest = max(self.longest_outage_s, time.monotonic() - t0 if t0 is not None else 0.0)
        return {"connection_drops": self.connection_drops, "reconnects": self.reconnects,
                "longest_outage_s": round(longest, 3)}


class FrameSource:
    """Base class: iterate to get :class:`Frame` objects; ``close()`` stops the iteration. ``connections``:
    its :class:`ConnectionStats` (live sources count their drops there)."""

    #: ``"file"`` for finite sources read completely, ``"live"`` for cameras/streams
    default_mode = "file"
    #: number of frames when known (for progress), else None
    total: "int | None" = None
    #: human-readable description of the source
    description = ""

    def __init__(self) -> None:
        self._closed = threading.Event()
        self.connections = ConnectionStats()

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        """Ask the source to stop; the iterator ends after the frame being read (thread-safe)."""
        self._closed.set()

    @property
    def closed(self) -> bool:
        return self._closed.is_set()


def read_image(path: str | Path) -> np.ndarray:
    """THE image-file reader: uint8 [H,W,3] BGR; InputError naming the file when it cannot be read or decoded.
    (``np.fromfile`` + ``cv2.imdecode`` rather than ``cv2.imread``: any path encoding, and a clear reason.)"""
    try:
        data = np.fromfile(str(path), dtype=np.uint8)
    except OSError as exc:
        raise InputError(f"{path}: cannot read the image file ({exc})") from exc
    if data.size == 0:
        raise InputError(f"{path}: cannot read the image: empty file")
    image = cv2.imdecode(data, cv2.IMREAD_COLOR)
    if image is None:
        raise InputError(f"{path}: cannot read the image: not a decodable image (corrupt or unsupported format)")
    return image


def _read_image(path: Path) -> "np.ndarray | FrameError":
    """:func:`read_image`, with a FrameError (one bad frame of a stream) instead of an exception."""
    try:
        return read_image(path)
    except InputError as exc:
        return FrameError(str(exc))


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
        self.safe_spec = mask_credentials(spec)
        self.description = f"camera {spec}" if self.is_camera else f"stream {self.safe_spec}"
        self._lock = threading.Lock()
        self._handle = None  # cv2.VideoCapture or MjpegReader while open

    # -- connection -----------------------------------------------------------------------------
    def _open_http(self):
        url, user, password = split_credentials(self.spec)
        request = urllib.request.Request(url)
        if user is not None:  # basic auth: urllib would take user:pass@host for the host name
            import base64

            token = base64.b64encode(f"{user}:{password or ''}".encode()).decode("ascii")
            request.add_header("Authorization", f"Basic {token}")
        try:
            response = urllib.request.urlopen(request, timeout=self.timeout_s)  # noqa: S310 (user URL)
        except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as exc:
            logger.warning("%s: cannot connect (%s)", self.safe_spec, mask_credentials(str(exc)))
            return None
        ctype = response.headers.get("Content-Type", "")
        if "multipart" in ctype.lower():
            match = re.search(r'boundary="?([^";]+)"?', ctype)
            boundary = match.group(1).encode("latin-1") if match else None
            if boundary is not None and boundary.startswith(b"--"):
                boundary = boundary[2:]
            return MjpegReader(response, boundary)
        response.close()  # not MJPEG: let FFMPEG handle it (HLS, raw mp4 ...)
        return False

    def _open(self):
        if self.spec.startswith(("http://", "https://")):
            handle = self._open_http()
            if handle is None or handle is not False:
                return handle
        cap = cv2.VideoCapture(int(self.spec)) if self.is_camera else cv2.VideoCapture(self.spec)
        if not cap.isOpened():
            cap.release()
            logger.warning("%s: cannot open", self.description)
            return None
        return cap

    def _reconnect(self, outage: dict):
        """Reconnect within the outage's budget (attempts and time); None when it is spent or closed."""
        delays = outage["delays"]
        for delay in delays:
            elapsed = time.monotonic() - outage["t0"]
            if self.policy.max_outage_s is not None and elapsed + delay > self.policy.max_outage_s:
                return None
            if self._closed.wait(delay):
                return None
            outage["attempts"] += 1
            logger.info("%s: reconnecting (attempt %d/%d after %.1f s)", self.description, outage["attempts"],
                        self.policy.max_retries, delay)
            handle = self._open()
            if handle is not None:
                self.connections.reconnects += 1
                return handle
        return None

    @property
    def reconnects(self) -> int:
        """Reconnections that succeeded (``connections.reconnects``)."""
        return self.connections.reconnects

    def _read(self, handle) -> "tuple[bool, np.ndarray | FrameError | None]":
        """(connection ok, image or FrameError); connection ok False means reconnect."""
        if isinstance(handle, MjpegReader):
            try:
                data = handle.read()
            except (OSError, ValueError, http.client.HTTPException) as exc:
                logger.warning("%s: read failed (%s: %s)", self.safe_spec, type(exc).__name__,
                               mask_credentials(str(exc)))
                return False, None
            if data is None:
                return False, None
            image = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
            if image is None:
                return True, FrameError(f"{self.safe_spec}: received a part of {len(data)} bytes that is not a "
                                        "decodable JPEG")
            return True, image
        try:
            ok, image = handle.read()
        except cv2.error as exc:
            logger.warning("%s: read failed (%s)", self.description, mask_credentials(str(exc)))
            return False, None
        if not ok or image is None:
            return False, None
        return True, image

    def close(self) -> None:
        """Stop; an MJPEG read blocked on the socket is woken by closing the response (a cv2.VideoCapture
        read cannot be interrupted safely from another thread: it ends at its own timeout)."""
        super().close()
        with self._lock:
            if isinstance(self._handle, MjpegReader):
                try:
                    self._handle.close()
                except OSError as exc:  # the socket is being torn down anyway
                    logger.debug("%s: closing the MJPEG connection: %s", self.safe_spec, exc)

    def _release(self, handle) -> None:
        if handle is None:
            return
        if isinstance(handle, MjpegReader):
            handle.close()
        else:
            handle.release()

    def __iter__(self) -> Iterator[Frame]:
        outage = {"delays": iter(self.policy.delays()), "attempts": 0, "t0": time.monotonic()}
        handle = self._open()
        if handle is None and not self.closed:
            self.connections.outage_started(dropped=False)
            handle = self._reconnect(outage)
        if handle is None:
            self.connections.outage_ended()
            if not self.closed:
                raise InputError(f"--source {self.safe_spec}: cannot open {self.description} "
                                 f"(gave up after {outage['attempts']} retries)")
            return
        with self._lock:
            self._handle = handle
        index = 0
        in_outage = False
        try:
            while not self.closed:
                connected, image = self._read(handle)
                if not connected:
                    if self.closed:
                        break
                    if not in_outage:  # a new outage: a fresh budget of attempts and time
                        outage = {"delays": iter(self.policy.delays()), "attempts": 0, "t0": time.monotonic()}
                        in_outage = True
                        self.connections.outage_started(dropped=True)
                        logger.warning("%s: feed dropped after frame %d; reconnecting", self.description, index - 1)
                    self._release(handle)
                    with self._lock:
                        self._handle = None
                    handle = self._reconnect(outage)
                    with self._lock:
                        self._handle = handle
                    if handle is None:
                        if self.closed:
                            break
                        raise InputError(f"{self.description}: no frames for {time.monotonic() - outage['t0']:.1f} s; "
                                         f"gave up after {outage['attempts']} reconnection attempts "
                                         f"(--reconnect-retries {self.policy.max_retries})")
                    continue
                in_outage = False
                self.connections.outage_ended()
                name = f"{'camera' + self.spec if self.is_camera else self.safe_spec}#{index}"
                if isinstance(image, FrameError):
                    logger.warning("skipping frame %d: %s", index, image.message)
                yield Frame(index, name, image, time.time() * 1000.0)
                index += 1
        finally:
            self.connections.outage_ended()
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
