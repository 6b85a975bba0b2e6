"""Where a model folder's memory goes: RSS, heap (RssAnon) and mapped IR file pages (RssFile) per step.

    python scripts/memory_probe.py MODELS [--release] [--as-read]

Compiles ``vae_encoder`` and ``pose`` of MODELS (CPU, LATENCY, f32 hint, one request each) as the runtime does
(``edge_runtime.model.models.compile_model``: attention fused where quantized keys break it; ``--as-read`` compiles
the IRs as they are, for comparison), runs two random
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
from edge_runtime.model.attention import runtime_attention  # noqa: E402
from edge_runtime.running.metrics import memory_status  # noqa: E402
from edge_runtime.model.models import CompileOptions, compile_model  # noqa: E402


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", type=Path)
    parser.add_argument("--release", action="store_true")
    parser.add_argument("--as-read", action="store_true", help="compile the IRs as read (no attention fix)")
    return parser


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    libc = ctypes.CDLL("libc.so.6")
    core = ov.Core()
    props = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    options = CompileOptions(performance_hint="LATENCY", inference_precision="f32", cache_dir=None)

    def compile_ir(name: str) -> ov.CompiledModel:
        if args.as_read:
            return core.compile_model(str(args.models / name), "CPU", props)
        return compile_model(core, core.read_model(str(args.models / name)), options)

    trace = [("start", memory_status())]
    vae = compile_ir("vae_encoder.xml")
    trace.append(("vae compiled", memory_status()))
    pose = compile_ir("pose.xml")
    trace.append(("pose compiled", memory_status()))
    fusion = {k: runtime_attention(c) for k, c in (("vae_encoder", vae), ("pose", pose))}
    attention = {k: {"fused": sum(f.values()), "unfused_softmax": u} for k, (f, _, u) in fusion.items()}
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
    sys.stdout.write(json.dumps({"models": str(args.models), "release": args.release, "as_read": args.as_read,
                                 "attention": attention, "trace": trace}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
