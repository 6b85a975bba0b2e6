"""Reading MJPEG over HTTP (``multipart/x-mixed-replace``), one JPEG per part, for
:class:`edge_runtime.media.sources.LiveSource`. A bounded parser over an already opened urllib response, rather than
cv2.VideoCapture, so that closing the response wakes a blocked read, every part is size-capped, and one
undecodable part is one bad frame (the caller decodes it).
"""
from __future__ import annotations

#: largest MJPEG part accepted (a bigger Content-Length, or a part without an end, is a broken stream)
MAX_MJPEG_PART_BYTES = 32 * 1024 * 1024


def _add_header(line: bytes, headers: dict[str, str]) -> None:
    """Parse one ``Name: value`` part-header line into ``headers`` (name lower-cased)."""
    key, _, value = line.decode("latin-1").partition(":")
    headers[key.strip().lower()] = value.strip()


class MjpegReader:
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
            if pos < 0 and len(self._buf) > 65536:
                raise ValueError("MJPEG header line longer than 64 KiB")
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
            if len(self._buf) > MAX_MJPEG_PART_BYTES:
                raise ValueError(f"MJPEG part without an end after {len(self._buf)} bytes (cap "
                                 f"{MAX_MJPEG_PART_BYTES})")
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
            if int(length) > MAX_MJPEG_PART_BYTES:
                raise ValueError(f"MJPEG part announces {int(length)} bytes (more than the "
                                 f"{MAX_MJPEG_PART_BYTES}-byte cap)")
            return self._read_exact(int(length))
        if self.boundary is not None:
            data = self._read_until(b"\r\n--" + self.boundary, keep_marker=False)
            return data
        return self._read_until(b"\xff\xd9", keep_marker=True)

    def close(self) -> None:
        self.response.close()
