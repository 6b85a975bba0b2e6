"""Run statistics in bounded memory: latency reservoirs, busy time of a stage, and the progress bar.

A run may last days, so nothing here grows per frame: :class:`Reservoir` keeps count, mean and max exactly
and a fixed-size uniform sample for the percentiles (Vitter's algorithm R with a seeded generator), and
:class:`BusyMeter` accumulates the union of a stage's request intervals as it goes.
"""
from __future__ import annotations

import logging
import random
import sys
import time
from typing import Any, Callable, Iterable, Sequence

import numpy as np

logger = logging.getLogger(__name__)

#: samples kept per statistic for percentiles (p95 of 4096 uniform samples is within about +-0.7 percentile)
RESERVOIR_SIZE = 4096


def percentile_summary(values_ms: "Sequence[float] | Reservoir") -> dict[str, Any]:
    """{"count", "mean", "p50", "p95", "max"} in ms (None values when empty)."""
    if isinstance(values_ms, Reservoir):
        return values_ms.summary()
    if not len(values_ms):
        return {"count": 0, "mean": None, "p50": None, "p95": None, "max": None}
    arr = np.asarray(values_ms, dtype=np.float64)
    return {"count": int(arr.size), "mean": round(float(arr.mean()), 3),
            "p50": round(float(np.percentile(arr, 50)), 3), "p95": round(float(np.percentile(arr, 95)), 3),
            "max": round(float(arr.max()), 3)}


class Reservoir:
    """Values of one statistic: exact count/mean/max, percentiles from a uniform sample of ``size``."""

    def __init__(self, size: int = RESERVOIR_SIZE, seed: int = 0) -> None:
        self.size = int(size)
        self.samples: list[float] = []
        self.count = 0
        self.total = 0.0
        self.max = float("-inf")
        self._rng = random.Random(seed)

    def append(self, value: float) -> None:
        value = float(value)
        self.count += 1
        self.total += value
        self.max = max(self.max, value)
        if len(self.samples) < self.size:
            self.samples.append(value)
        else:
            j = self._rng.randrange(self.count)
            if j < self.size:
                self.samples[j] = value

    def __len__(self) -> int:
        return self.count

    def summary(self) -> dict[str, Any]:
        if not self.count:
            return percentile_summary([])
        arr = np.asarray(self.samples, dtype=np.float64)
        return {"count": self.count, "mean": round(self.total / self.count, 3),
                "p50": round(float(np.percentile(arr, 50)), 3), "p95": round(float(np.percentile(arr, 95)), 3),
                "max": round(self.max, 3)}


class Reservoirs(dict):
    """{name: Reservoir}, created on first use."""

    def __missing__(self, key: str) -> Reservoir:
        value = self[key] = Reservoir()
        return value


class BusyMeter:
    """Time during which at least one request of a stage was in flight, from start/finish events.

    ``start(t)`` at submission, ``finish(t_submit, t_done)`` at completion; ``busy_s(end)`` is the length of
    the union of the intervals (open intervals count up to ``end``). Completions processed slightly out of
    order only shift where a busy stretch ends, never double-count."""

    def __init__(self) -> None:
        self.inflight = 0
        self.busy = 0.0
        self.requests_s = 0.0
        self._since: "float | None" = None

    def start(self, t: float) -> None:
        if self.inflight == 0:
            self._since = t
        self.inflight += 1

    def finish(self, t_submit: float, t_done: float) -> None:
        self.requests_s += max(t_done - t_submit, 0.0)
        self.inflight = max(self.inflight - 1, 0)
        if self.inflight == 0 and self._since is not None:
            self.busy += max(t_done - self._since, 0.0)
            self._since = None

    def busy_s(self, end: float) -> float:
        return self.busy + (max(end - self._since, 0.0) if self._since is not None else 0.0)


def busy_share(intervals: Iterable[tuple[float, float]], start: float, end: float) -> float:
    """Fraction of [start, end] covered by the union of (t0, t1) intervals (0..1)."""
    total = end - start
    if total <= 0:
        return 0.0
    covered, cur0, cur1 = 0.0, None, None
    for t0, t1 in sorted(intervals):
        t0, t1 = max(t0, start), min(t1, end)
        if t1 <= t0:
            continue
        if cur1 is None or t0 > cur1:
            if cur1 is not None:
                covered += cur1 - cur0
            cur0, cur1 = t0, t1
        else:
            cur1 = max(cur1, t1)
    if cur1 is not None:
        covered += cur1 - cur0
    return min(1.0, covered / total)


class Progress:
    """A text progress bar on stderr for file mode (a log line every ``interval_s`` when not a TTY)."""

    def __init__(self, total: "int | None", enabled: bool, interval_s: float = 5.0) -> None:
        self.total = total
        self.enabled = enabled
        self.tty = enabled and hasattr(sys.stderr, "isatty") and sys.stderr.isatty()
        self.interval_s = interval_s if not self.tty else 0.2
        self._t0 = time.perf_counter()
        self._last = 0.0

    def update(self, done: int, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self._last < self.interval_s:
            return
        self._last = now
        elapsed = now - self._t0
        fps = done / elapsed if elapsed > 0 else 0.0
        if self.total:
            frac = min(1.0, done / self.total)
            eta = (self.total - done) / fps if fps > 0 else float("nan")
            bar = "#" * int(frac * 30) + "-" * (30 - int(frac * 30))
            text = f"[{bar}] {done}/{self.total} frames {fps:.2f} fps ETA {eta:.0f}s"
        else:
            text = f"{done} frames {fps:.2f} fps"
        if self.tty:
            sys.stderr.write("\r" + text + ("\n" if force else ""))
            sys.stderr.flush()
        else:
            logger.info("progress: %s", text)


def time_calls(call: Callable[[], Any], runs: int, warmup: int = 0, min_seconds: float = 0.0,
               max_runs: "int | None" = None) -> list[float]:
    """Seconds of each timed ``call()``: ``warmup`` untimed calls, then at least ``runs`` timed ones, more while
    the timed calls took less than ``min_seconds`` together (up to ``max_runs``). The one latency timer of the
    project's benchmarks and reports (wall clock, ``time.perf_counter``)."""
    for _ in range(warmup):
        call()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < runs or (time.perf_counter() - start < min_seconds
                                and (max_runs is None or len(times) < max_runs)):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return times


def memory_status() -> dict[str, float]:
    """This process's memory in MB from /proc/self/status (Linux): ``peak`` (VmHWM, the high-water mark of
    this process image — unlike ``ru_maxrss``, not inherited from the parent across fork+exec; reset by
    :func:`reset_peak_rss`), ``rss``, ``anon`` and ``file`` (file-backed pages, e.g. memory-mapped IR weights).
    Empty where unavailable."""
    fields = {"VmHWM": "peak", "VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}
    out: dict[str, float] = {}
    try:
        with open("/proc/self/status", encoding="ascii") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key in fields:
                    out[fields[key]] = round(int(value.split()[0]) / 1024.0, 1)
    except (OSError, ValueError):
        return {}
    return out


def peak_rss_mb() -> float | None:
    """THE peak-RSS helper: peak RSS of this process in MB (VmHWM; ``ru_maxrss`` of RUSAGE_SELF where /proc
    is missing; None where neither exists)."""
    peak = memory_status().get("peak")
    if peak is not None:
        return peak
    try:
        import resource
    except ImportError:  # not on this OS
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(rss / 1024.0 if sys.platform != "darwin" else rss / 1024.0 / 1024.0, 1)


def reset_peak_rss() -> bool:
    """Reset this process's peak RSS (VmHWM) so that the next peak is measured from now (Linux only;
    False where the kernel does not allow it)."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False
