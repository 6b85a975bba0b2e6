"""Capture: one thread per source reads frames into a bounded :class:`FrameFeed` for a coordinator.

File mode blocks the reader while the feed is full (every frame is processed); live mode never blocks the
reader: the oldest waiting frame is dropped (counted), so the coordinator always takes the newest frames.
Whatever ends the reader (end of stream, a bounded reconnect that gave up, any exception in the source or
the decoder) is recorded in :class:`CaptureStatus` rather than lost with the thread.
"""
from __future__ import annotations

import collections
import dataclasses
import logging
import threading
import time
from typing import Any, Callable, Iterable

from edge_runtime.media.sources import ConnectionStats, FrameSource, mask_credentials

logger = logging.getLogger(__name__)


class FrameFeed:
    """Frames between a capture thread and the coordinator: items are ``(frame, capture_t)``.

    ``drop_oldest=False`` (file mode): ``put`` blocks while ``maxsize`` frames wait. ``drop_oldest=True``
    (live mode): ``put`` never blocks; when full, the oldest waiting frame is discarded (``skipped`` += 1).
    """

    def __init__(self, maxsize: int, drop_oldest: bool) -> None:
        self.maxsize = max(1, int(maxsize))
        self.drop_oldest = drop_oldest
        self._items: collections.deque = collections.deque()
        self._cond = threading.Condition()
        self._closed = False
        self.skipped = 0
        self.last_skipped_index: "int | None" = None

    def put(self, item: Any) -> bool:
        """Add a frame; False if the feed was closed (the frame is discarded)."""
        with self._cond:
            if not self.drop_oldest:
                while len(self._items) >= self.maxsize and not self._closed:
                    self._cond.wait()
            if self._closed:
                return False
            while len(self._items) >= self.maxsize:
                dropped = self._items.popleft()
                self.skipped += 1
                self.last_skipped_index = getattr(dropped[0], "index", None)
            self._items.append(item)
            return True

    def get_nowait(self) -> Any:
        """The next frame or None if none is waiting."""
        with self._cond:
            if not self._items:
                return None
            item = self._items.popleft()
            self._cond.notify_all()
            return item

    def close(self) -> None:
        """No more frames will come (waiting ``put`` calls return False)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    def discard(self) -> int:
        """Drop every waiting frame (on stop); returns how many."""
        with self._cond:
            count = len(self._items)
            self._items.clear()
            self._cond.notify_all()
            return count

    @property
    def closed(self) -> bool:
        return self._closed

    def __len__(self) -> int:
        with self._cond:
            return len(self._items)


@dataclasses.dataclass
class CaptureStatus:
    """What a capture thread did: frames read, why it stopped if not at the end of the source, and the
    source's connection record (set when the capture starts)."""

    frames_read: int = 0
    error: "str | None" = None
    connections: "ConnectionStats | None" = None

    def to_summary(self) -> dict[str, Any]:
        """The summary.json fields of the capture: ``capture_error`` and the source's ``connection_drops``,
        ``reconnects`` and ``longest_outage_s`` (lost connections are not dropped frames: ``frames_skipped``)."""
        stats = self.connections if self.connections is not None else ConnectionStats()
        return {"capture_error": self.error, **stats.to_summary()}


def connection_totals(entries: "Iterable[dict[str, Any]]") -> dict[str, Any]:
    """Totals over per-source summaries: drops and reconnects summed, the longest outage of any source."""
    entries = [e for e in entries if "connection_drops" in e]
    return {"connection_drops": sum(e["connection_drops"] for e in entries),
            "reconnects": sum(e["reconnects"] for e in entries),
            "longest_outage_s": max((e["longest_outage_s"] for e in entries), default=0.0)}


def capture_loop(source: FrameSource, feed: FrameFeed, stop: threading.Event, wake: Callable[[], None],
                 status: CaptureStatus, pace: bool = False, max_frames: "int | None" = None) -> None:
    """Read ``source`` into ``feed`` until it ends, ``stop`` is set or ``max_frames`` were read.

    ``pace``: hold each frame until its timestamp (a video file played as a camera). Any exception ends
    the capture with ``status.error`` set (credentials masked); ``wake()`` is called after each frame and
    at the end, so the coordinator never waits on a dead thread."""
    start_wall: "float | None" = None
    status.connections = getattr(source, "connections", None)
    try:
        for frame in source:
            if stop.is_set():
                break
            now = time.perf_counter()
            if pace and frame.timestamp_ms is not None:
                if start_wall is None:
                    start_wall = now - frame.timestamp_ms / 1000.0
                delay = start_wall + frame.timestamp_ms / 1000.0 - now
                if delay > 0 and stop.wait(delay):
                    break
                now = time.perf_counter()
            status.frames_read += 1
            if not feed.put((frame, now)):
                break
            wake()
            if max_frames is not None and status.frames_read >= max_frames:
                break
    except Exception as exc:  # noqa: BLE001 - a capture thread must never die silently (cv2.error, IncompleteRead, MemoryError ...)
        status.error = mask_credentials(f"{type(exc).__name__}: {exc}" if not str(exc) else str(exc))
        logger.error("capture stopped: %s", status.error)
    finally:
        feed.close()
        wake()
