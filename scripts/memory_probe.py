"""Where a model folder's memory goes: RSS, heap (RssAnon) and mapped IR file pages (RssFile) per step.

    python scripts/memory_probe.py MODELS [--release]

Compiles ``vae_encoder`` and ``pose`` of MODELS (CPU, LATENCY, f32 hint, one request each), runs two random
crops through them and prints one JSON line with ``/proc/self/status`` figures after each step.
``--release`` frees each model's buffers after each request (``CompiledModel.release_memory`` and
``malloc_trim``), as ``sdpose-edge run --release-memory`` does. Linux only. Figures in MB: ``rss``, ``peak``
(VmHWM), ``anon`` (heap) and ``file`` (mapped IR pages).
"""
from __future__ import annotations

import argparse
import ctypes
import json
import sys
from pathlib import Path

import numpy as np
import openvino as ov

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edge_runtime.metrics import memory_status  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path)
    parser.add_argument("--release", action="store_true")
    return parser


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    libc = ctypes.CDLL("libc.so.6")
    core = ov.Core()
    props = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    trace = [("start", memory_status())]
    vae = core.compile_model(str(args.models / "vae_encoder.xml"), "CPU", props)
    trace.append(("vae compiled", memory_status()))
    pose = core.compile_model(str(args.models / "pose.xml"), "CPU", props)
    trace.append(("pose compiled", memory_status()))
    shape = vae.input(0).get_partial_shape()  # [N,H,W,3], dynamic N
    h, w = shape[1].get_length(), shape[2].get_length()
    rv, rp = vae.create_infer_request(), pose.create_infer_request()
    rng = np.random.default_rng(0)
    for i in range(2):
        latent = rv.infer({0: rng.integers(0, 255, (1, h, w, 3), dtype=np.uint8)})[0].copy()
        trace.append((f"vae crop {i}", memory_status()))
        if args.release:
            vae.release_memory()
            libc.malloc_trim(0)
            trace.append(("vae buffers released", memory_status()))
        rp.infer({0: latent})
        trace.append((f"pose crop {i}", memory_status()))
        if args.release:
            pose.release_memory()
            libc.malloc_trim(0)
            trace.append(("pose buffers released", memory_status()))
    sys.stdout.write(json.dumps({"models": str(args.models), "release": args.release, "trace": trace}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
