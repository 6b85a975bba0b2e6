"""``sdpose-edge devices --models MODELS``: which OpenVINO devices this box has and whether each compiles each model.

Lists ``core.available_devices`` with their FULL_DEVICE_NAME, then compiles every component of the model folder
on every device (or on the ``--device`` values given, e.g. ``AUTO:GPU,CPU``) with the LATENCY hint and no model
cache, through the runtime's own :func:`edge_runtime.model.models.compile_model` (so a device that cannot compile the
dynamic batch gets the static-batch reshape the runtime would do). Reports per (device, model) ``ok`` and the
compile time, or the device's error. Nothing is inferred. ``--json FILE`` also writes the report as JSON.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from edge_runtime.errors import InputError, SDPoseError

logger = logging.getLogger(__name__)

#: the components tried, in this order, when the folder has them
KINDS = ("detector", "vae_encoder", "pose", "vae_pose")


@dataclass
class CompileTry:
    """One (device, model) compile: ``ok`` with ``compile_s``, or the device's ``error``."""

    device: str
    model: str
    ok: bool
    compile_s: float | None
    error: str | None
    static_batch: int | None


def device_names(core: Any) -> dict[str, str]:
    """{device: FULL_DEVICE_NAME} of ``core.available_devices`` (the name is '?' when a device does not say)."""
    names = {}
    for device in core.available_devices:
        try:
            names[device] = str(core.get_property(device, "FULL_DEVICE_NAME"))
        except RuntimeError as exc:
            logger.debug("%s: no FULL_DEVICE_NAME (%s)", device, exc)
            names[device] = "?"
    return names


def try_compile(core: Any, model: Any, kind: str, device: str) -> CompileTry:
    """Compile ``model`` (component ``kind``) on ``device``; the error of a device that refuses is kept."""
    from edge_runtime.model.models import CompileOptions, compile_model, static_batch_of

    t0 = time.perf_counter()
    try:
        compiled = compile_model(core, model, CompileOptions(device=device, performance_hint="LATENCY",
                                                             cache_dir=None))
    except SDPoseError as exc:
        return CompileTry(device, kind, False, None, str(exc), None)
    took = round(time.perf_counter() - t0, 3)
    return CompileTry(device, kind, True, took, None, static_batch_of(compiled))


def check_devices(models: str | Path, devices: list[str] | None = None) -> dict[str, Any]:
    """The report: ``{"devices": {device: full name}, "models": path, "compiles": [CompileTry as dict]}``."""
    import openvino as ov

    from edge_runtime.model.models import ModelFolder, error_reason

    core = ov.Core()
    folder = ModelFolder(models, core=core)
    names = device_names(core)
    wanted = list(devices) if devices else list(names)
    if not wanted:
        raise InputError("OpenVINO reports no available devices on this machine")
    tries = []
    for kind in (k for k in KINDS if folder.has(k)):
        model = folder.read_model(kind)
        for device in wanted:
            result = try_compile(core, model, kind, device)
            tries.append(asdict(result))
            if result.ok:
                logger.info("%-12s %-12s ok   compiled in %.2f s%s", device, kind, result.compile_s,
                            f" (static batch {result.static_batch})" if result.static_batch else "")
            else:
                logger.info("%-12s %-12s FAIL %s", device, kind, error_reason(RuntimeError(result.error or "")))
        folder.release()
    return {"devices": names, "models": str(Path(models).resolve()), "compiles": tries}


def run(args: argparse.Namespace) -> int:
    """``sdpose-edge devices``: list the devices, try every model on each; exit 0 (failures are reported)."""
    import openvino as ov

    report = check_devices(args.models, args.device)
    for device, name in report["devices"].items():
        logger.info("device %-10s %s", device, name)
    failed = sum(1 for t in report["compiles"] if not t["ok"])
    logger.info("%d compiles, %d failed (OpenVINO %s)", len(report["compiles"]), failed, ov.__version__)
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    return 0


def register(subparsers: Any, name: str = "devices") -> None:
    p = subparsers.add_parser(name, help="list OpenVINO devices and try to compile each model on each",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--models", required=True, help="model folder written by sdpose-convert export")
    p.add_argument("--device", action="append", default=None,
                   help="device to try (repeat for several; default: every available device)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the report as JSON")
    p.set_defaults(func=run)
