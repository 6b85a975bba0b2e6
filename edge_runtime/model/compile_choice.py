"""What the runtime chooses when the user left it unset: compile options and the inference threads' OS priority
(``summary.json`` ``compile_choice``).

Live feeds promise every frame out about one frame interval after capture, whatever the pose model costs. The
frames go through one coordinator thread (keypoint flow, detections, scheduling, output) fed by one capture
thread per source (MJPEG/H.264 decoding). On a small CPU, pose and VAE requests that take every core starve
those threads: frames are dropped (newest wins) and the latency grows. So in live mode on a small CPU the
runtime leaves the coordinator a core and puts inference behind it:

    live mode, CPU device, local pose chain, at most SMALL_CPU_CORES cores available:
        num_threads = cores - 1 (at least 1), hint LATENCY, num_requests 1,
        inference_nice = LIVE_INFERENCE_NICE: every thread but the coordinator's and the capture threads runs
        at that much higher a nice value (Linux; the OpenVINO and request threads)
    otherwise (file mode, --schedule-poses, bigger CPUs, other devices, --pose-server):
        hint THROUGHPUT, OpenVINO's threads and OPTIMAL_NUMBER_OF_INFER_REQUESTS (the device defaults), nice 0

Each of ``hint``, ``num_threads``, ``num_requests`` and ``inference_nice`` that the user set (command line or
YAML) wins over the rule; the others still follow it. The figures behind the rule (2-core AMD EPYC Zen 3, AVX2
only: two 12 fps MJPEG cameras, a tiny synthetic model exported at 1024x768) are in docs/benchmarks.md, "Live
defaults on a small CPU", measured with ``scripts/live_defaults_bench.py``. Bigger CPUs keep the
device defaults: with more cores than inference threads the scheduler gives the coordinator its share
(not measured here: this machine has 2 cores).
"""
from __future__ import annotations

import dataclasses
import logging
import os
import threading
import time
from typing import Any, Collection, Mapping, Sequence

logger = logging.getLogger(__name__)

#: the live rule applies on CPUs with at most this many cores available to the process
SMALL_CPU_CORES = 4
#: PERFORMANCE_HINT when neither the user nor the live rule sets one
DEFAULT_HINT = "THROUGHPUT"
#: nice value the live rule adds to the inference threads
LIVE_INFERENCE_NICE = 10
_KEYS = ("hint", "num_threads", "num_requests", "inference_nice")


@dataclasses.dataclass(frozen=True)
class CompileChoice:
    """What the compile options became and why. None: the device's own choice (OpenVINO); ``inference_nice``:
    added to the nice value of every thread but the coordinator and capture threads (0: left alone)."""

    num_threads: "int | None"
    hint: str
    num_requests: "int | None"
    reason: str
    inference_nice: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def apply(self, options: Any) -> Any:
        """``options`` (:class:`~edge_runtime.model.models.CompileOptions`) with this choice's hint, threads and
        requests (``inference_nice`` goes to :class:`~edge_runtime.running.modes.LiveConfig`)."""
        return dataclasses.replace(options, performance_hint=self.hint, inference_num_threads=self.num_threads,
                                   num_requests=self.num_requests)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. ``taskset`` or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def choose_compile_options(settings: Mapping[str, Any], mode: str, cores: "int | None" = None) -> CompileChoice:
    """The hint, inference threads, requests per model and inference nice value for a run (see the module
    docstring).

    ``settings``: the run's effective settings (``hint``, ``num_threads``, ``num_requests``, ``inference_nice``
    None = not set by the user; ``device``, ``pose_server``); ``mode``: "live" or "file"; ``cores``: default
    :func:`available_cores`. Only a CPU device gets the live rule (INFERENCE_NUM_THREADS is a CPU property, and
    other devices do not take the coordinator's cores), as :func:`edge_runtime.settings.compile.per_isa_options` does."""
    user = {key: settings.get(key) for key in _KEYS}
    given = [f"--{key.replace('_', '-')} {value}" for key, value in user.items() if value is not None]
    cores = available_cores() if cores is None else int(cores)
    why_not = None
    if mode != "live":
        why_not = f"{mode} mode: device defaults"
    elif settings.get("pose_server") is not None:
        why_not = "pose server: the pose chain runs elsewhere"
    elif not str(settings.get("device") or "CPU").upper().startswith("CPU"):
        why_not = f"device {settings.get('device')}: inference does not take the CPU's cores"
    elif cores > SMALL_CPU_CORES:
        why_not = f"live mode on {cores} cores (more than {SMALL_CPU_CORES}): device defaults"
    if why_not is not None:
        auto: dict[str, Any] = {"hint": DEFAULT_HINT, "num_threads": None, "num_requests": None, "inference_nice": 0}
        reason = why_not
    else:
        auto = {"hint": "LATENCY", "num_threads": max(1, cores - 1), "num_requests": 1,
                "inference_nice": LIVE_INFERENCE_NICE}
        reason = (f"live mode on {cores} core(s) (at most {SMALL_CPU_CORES}): inference leaves a core to capture "
                  f"and the coordinator and runs behind them (threads = cores - 1, LATENCY, 1 request per model, "
                  f"nice +{LIVE_INFERENCE_NICE})")
    if given:
        reason += "; set by the user: " + ", ".join(given)
    chosen = {key: user[key] if user[key] is not None else auto[key] for key in auto}
    return CompileChoice(chosen["num_threads"], chosen["hint"], chosen["num_requests"], reason,
                         chosen["inference_nice"])


def other_threads(keep: Collection[int]) -> list[int]:
    """Native ids of this process's threads that are not in ``keep`` (Linux: ``/proc/self/task``; [] where
    threads cannot be listed)."""
    try:
        tids = [int(t) for t in os.listdir("/proc/self/task")]
    except OSError:
        return []
    return [t for t in tids if t not in keep]


def lower_priority(tids: Collection[int], nice: int) -> int:
    """Raise each thread's nice value to at least ``nice`` (Linux sets it per thread; a thread an OS call cannot
    reach, or an OS without ``setpriority``, is left alone); returns how many threads changed. A process may
    lower its threads' priority but not raise it back, and threads they start inherit it."""
    changed = 0
    for tid in tids:
        try:
            if os.getpriority(os.PRIO_PROCESS, tid) < nice:
                os.setpriority(os.PRIO_PROCESS, tid, nice)
                changed += 1
        except (OSError, AttributeError):  # the thread ended; no setpriority on this OS
            continue
    return changed


class InferencePriority:
    """Keeps every thread of the process but the coordinator (the thread that creates this) and the capture
    threads (``keep``, added as they start) at ``nice`` more than the coordinator (``LiveConfig.inference_nice``;
    0: off; used by :class:`~edge_runtime.running.live.LiveRunner`). OpenVINO starts its threads when it needs them, so
    the threads are looked at again after each submit and every second."""

    def __init__(self, nice: int, capture_tids: Sequence[int] = ()) -> None:
        self.keep = {threading.get_native_id(), *capture_tids}
        self.nice, self.changed, self._next = nice, 0, 0.0
        self.target = min(19, _own_nice() + nice)  # the coordinator's own nice is the base
        if nice:
            logger.info("inference threads at nice %d (the coordinator's + %d)", self.target, nice)

    def update(self, now: bool = False) -> None:
        if not self.nice or not now and time.perf_counter() < self._next:
            return
        self.changed += lower_priority(other_threads(self.keep), self.target)
        self._next = time.perf_counter() + 1.0


def _own_nice() -> int:
    try:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    except (OSError, AttributeError):  # no getpriority on this OS
        return 0
