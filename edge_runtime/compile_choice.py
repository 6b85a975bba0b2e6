"""The compile options the runtime chooses when the user left them unset (``summary.json`` ``compile_choice``).

Live feeds promise every frame out about one frame interval after capture, whatever the pose model costs. The
frames go through one coordinator thread (keypoint flow, detections, scheduling, output) fed by one capture
thread per source (MJPEG/H.264 decoding). On a small CPU, pose and VAE requests that take every core starve
those threads: frames are dropped (newest wins) and the latency grows. So in live mode on a small CPU the
runtime leaves the coordinator a core:

    live mode, CPU device, local pose chain, at most SMALL_CPU_CORES cores available:
        num_threads = cores - 1 (at least 1), hint LATENCY, num_requests 1
    otherwise (file mode, --schedule-poses, bigger CPUs, other devices, --pose-server):
        hint THROUGHPUT, OpenVINO's threads and OPTIMAL_NUMBER_OF_INFER_REQUESTS (the device defaults)

Each of ``hint``, ``num_threads`` and ``num_requests`` that the user set (command line or YAML) wins over the
rule; the others still follow it. The figures behind the rule (2-core AMD EPYC Zen 3, AVX2 only: two 12 fps
MJPEG cameras, a tiny synthetic model exported at 1024x768) are in docs/benchmarks.md, "Live feeds: default
compile options on a small CPU", measured with ``scripts/live_defaults_bench.py``. Bigger CPUs keep the
device defaults: with more cores than inference threads the scheduler gives the coordinator its share
(not measured here: this machine has 2 cores).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping

#: the live rule applies on CPUs with at most this many cores available to the process
SMALL_CPU_CORES = 4
#: PERFORMANCE_HINT when neither the user nor the live rule sets one
DEFAULT_HINT = "THROUGHPUT"


@dataclasses.dataclass(frozen=True)
class CompileChoice:
    """What the compile options became and why. None: the device's own choice (OpenVINO)."""

    num_threads: "int | None"
    hint: str
    num_requests: "int | None"
    reason: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def apply(self, options: Any) -> Any:
        """``options`` (:class:`~edge_runtime.models.CompileOptions`) with this choice's three fields."""
        return dataclasses.replace(options, performance_hint=self.hint, inference_num_threads=self.num_threads,
                                   num_requests=self.num_requests)


def available_cores() -> int:
    """Cores this process may run on (its CPU affinity, e.g. ``taskset`` or a container's cpuset)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def choose_compile_options(settings: Mapping[str, Any], mode: str, cores: "int | None" = None) -> CompileChoice:
    """The hint, inference threads and requests per model for a run (see the module docstring).

    ``settings``: the run's effective settings (``hint``, ``num_threads``, ``num_requests`` None = not set by
    the user; ``device``, ``pose_server``); ``mode``: "live" or "file"; ``cores``: default
    :func:`available_cores`."""
    user = {key: settings.get(key) for key in ("hint", "num_threads", "num_requests")}
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
        auto: dict[str, Any] = {"hint": DEFAULT_HINT, "num_threads": None, "num_requests": None}
        reason = why_not
    else:
        auto = {"hint": "LATENCY", "num_threads": max(1, cores - 1), "num_requests": 1}
        reason = (f"live mode on {cores} core(s) (at most {SMALL_CPU_CORES}): inference leaves a core to capture "
                  "and the coordinator (threads = cores - 1, LATENCY, 1 request per model)")
    if given:
        reason += "; set by the user: " + ", ".join(given)
    chosen = {key: user[key] if user[key] is not None else auto[key] for key in auto}
    return CompileChoice(chosen["num_threads"], chosen["hint"], chosen["num_requests"], reason)
