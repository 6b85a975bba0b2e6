"""Run a function in a fresh process: the one child-process runner of the project.

``run_in_fresh_process(fn, *args, env=..., timeout_s=...)`` spawns one worker (``spawn`` start method: no
inherited OpenVINO or torch state), sets ``env`` in it before anything is imported there (so e.g.
``ONEDNN_MAX_CPU_ISA`` applies to the child's OpenVINO), calls ``fn(*args)`` and returns its (picklable)
result; the child's memory is returned to the OS when it ends. Used by the benchmark's end-to-end runs (each
measures its own peak RSS), by ``sdpose-convert convert`` (the FP32 export, so torch's memory is freed) and by
the INT8 no-VNNI check (a capped CPU ISA).
"""
from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Callable, Mapping
from typing import Any

from edge_runtime.errors import SDPoseError


def _set_env(env: Mapping[str, str]) -> None:
    os.environ.update(env)


def run_in_fresh_process(fn: Callable[..., Any], *args: Any, env: "Mapping[str, str] | None" = None,
                         timeout_s: "float | None" = None, what: str = "child process") -> Any:
    """``fn(*args)`` in a new spawned process; SDPoseError naming ``what`` if it dies or times out (an
    exception raised by ``fn`` itself is re-raised here as it is)."""
    ctx = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=1, mp_context=ctx, initializer=_set_env,
                                                initargs=(dict(env or {}),)) as pool:
        future = pool.submit(fn, *args)
        try:
            return future.result(timeout=timeout_s)
        except concurrent.futures.process.BrokenProcessPool as exc:
            raise SDPoseError(f"{what}: the process died ({exc})") from exc
        except concurrent.futures.TimeoutError as exc:
            for process in list(getattr(pool, "_processes", {}).values()):
                process.kill()
            raise SDPoseError(f"{what}: no result within {timeout_s:.0f} s") from exc
