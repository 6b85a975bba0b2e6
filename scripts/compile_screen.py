"""Single-crop latency of a model folder's components under OpenVINO compile-property variants, interleaved.

    python scripts/compile_screen.py --models DIR --variant base= --variant denorm=CPU_DENORMALS_OPTIMIZATION:YES
        [--variant threads1=INFERENCE_NUM_THREADS:1,ENABLE_CPU_PINNING:NO ...] [--components vae_encoder pose]
        [--rounds 5] [--hint LATENCY] [--out screen.json]

Issue 28 ("close the gap where the profile points"): which compile properties make one crop faster on this CPU.
Every variant is the runtime's own compile (:func:`edge_runtime.model.models.compile_model`: LATENCY hint, f32
precision hint, no cache, attention kept fused) plus the variant's raw OpenVINO properties (``KEY:VALUE``,
comma-separated; keys that name a :class:`CompileOptions` field, e.g. ``static_batch:true``, set that
option instead; an empty variant is the baseline). Per component, every variant is compiled first; one warm-up
call each; then each round visits every variant in turn, the order rotating between rounds, so drift and other
jobs on a shared machine hit every variant alike. Inputs: the bench's fixed crop (:func:`edge_bench.timing.
load_inputs`) and, for the pose, the first variant's latent of it. Reported: per component and variant the median
and the spread of the timed calls, the ratio to the first variant, and the load average before and after.
"""
from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edge_bench.timing import load_inputs, rotated_rounds  # noqa: E402  (the repository root is put on the path above)
from edge_runtime.errors import InputError  # noqa: E402
from edge_runtime.model.models import CompileOptions, ModelFolder, compile_model  # noqa: E402

logger = logging.getLogger("compile_screen")
COMPONENTS = ("vae_encoder", "pose")


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, type=Path, help="model folder")
    parser.add_argument("--variant", action="append", required=True,
                        help="NAME=KEY:VALUE[,KEY:VALUE...] raw OpenVINO properties over the runtime's compile "
                             "(NAME= alone: the baseline); the first variant is the reference of the ratios")
    parser.add_argument("--components", nargs="+", default=list(COMPONENTS), choices=COMPONENTS)
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per variant (default 5)")
    parser.add_argument("--hint", default="LATENCY", choices=("LATENCY", "THROUGHPUT"),
                        help="performance hint of every variant (a variant may override PERFORMANCE_HINT)")
    parser.add_argument("--precision-hint", default="f32", help="INFERENCE_PRECISION_HINT (default f32)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return parser


def parse_variant(text: str) -> tuple[str, dict[str, str]]:
    """``NAME=KEY:VALUE,KEY:VALUE`` -> (NAME, {KEY: VALUE}); ``NAME=`` -> (NAME, {})."""
    name, sep, spec = text.partition("=")
    if not sep or not name:
        raise InputError(f"--variant {text!r}: expected NAME=KEY:VALUE[,KEY:VALUE...] (or NAME= for the baseline)")
    props: dict[str, str] = {}
    for item in filter(None, spec.split(",")):
        key, colon, value = item.partition(":")
        if not colon or not key or not value:
            raise InputError(f"--variant {text!r}: property {item!r} is not KEY:VALUE")
        props[key.strip()] = value.strip()
    return name, props


def split_options(options: CompileOptions, props: dict[str, str]) -> tuple[CompileOptions, dict[str, str]]:
    """A variant's properties split into the runtime's own compile options (keys that are
    :class:`CompileOptions` field names, e.g. ``static_batch:true``, ``num_streams:2``) applied to ``options``,
    and the raw OpenVINO properties left (``CPU_DENORMALS_OPTIMIZATION:YES``)."""
    fields = {f.name: f for f in dataclasses.fields(CompileOptions)}
    own: dict[str, Any] = {}
    for key, value in props.items():
        if key in fields:
            own[key] = value.lower() in ("1", "true", "yes") if key == "static_batch" else (
                int(value) if value.isdigit() else value)
    rest = {k: v for k, v in props.items() if k not in fields}
    return dataclasses.replace(options, **own), rest


def _load() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3]) if Path("/proc/loadavg").exists() else "n/a"


def _time_component(core: ov.Core, ir: Path, data: np.ndarray, variants: list[tuple[str, dict[str, str]]],
                    options: CompileOptions, rounds: int) -> tuple[dict[str, Any], np.ndarray]:
    """Compile every variant of one IR, warm each up once, time ``rounds`` interleaved rounds; returns
    ({variant: figures}, the first variant's output)."""
    compiled = {}
    for name, props in variants:
        t0 = time.perf_counter()
        model = compile_model(core, core.read_model(str(ir)), *split_options(options, props))
        compiled[name] = (model, model.create_infer_request(), time.perf_counter() - t0)
    first_out = None
    for name, (_, request, _) in compiled.items():
        request.infer({0: data})
        if first_out is None:
            first_out = np.array(request.get_output_tensor(0).data)
    times = rotated_rounds({name: (lambda request=request: request.infer({0: data}))
                            for name, (_, request, _) in compiled.items()}, rounds)
    names = list(compiled)
    figures = {}
    for name, (model, _, compile_s) in compiled.items():
        figures[name] = {"median_ms": 1000 * statistics.median(times[name]), "min_ms": 1000 * min(times[name]),
                         "max_ms": 1000 * max(times[name]), "compile_s": compile_s,
                         "streams": int(model.get_property("NUM_STREAMS")),
                         "threads": int(model.get_property("INFERENCE_NUM_THREADS")),
                         "pinning": str(model.get_property("ENABLE_CPU_PINNING"))}
    ref = figures[names[0]]["median_ms"]
    for name in names:
        figures[name]["ratio_to_first"] = figures[name]["median_ms"] / ref
    return figures, first_out


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    variants = [parse_variant(v) for v in args.variant]
    core = ov.Core()
    folder = ModelFolder(args.models, core=core)
    wh = (int(folder.pose_meta["input_width"]), int(folder.pose_meta["input_height"]))
    data = load_inputs(wh)["crop"]
    if "pose" in args.components and "vae_encoder" not in args.components:  # the pose runs on the crop's latent
        vae = compile_model(core, folder.ir_path("vae_encoder"), CompileOptions(device="CPU", cache_dir=None,
                            performance_hint="LATENCY", inference_precision=args.precision_hint))
        data = np.array(vae.create_infer_request().infer({0: data})[vae.output(0)])
        del vae
    options = CompileOptions(device="CPU", performance_hint=args.hint, inference_precision=args.precision_hint,
                             cache_dir=None)
    report: dict[str, Any] = {"models": str(args.models), "variants": dict(variants), "rounds": args.rounds,
                              "hint": args.hint, "precision_hint": args.precision_hint,
                              "env": {k: v for k, v in os.environ.items() if k.startswith("ONEDNN")},
                              "load_before": _load(), "components": {}}
    for kind in args.components:
        figures, data = _time_component(core, folder.ir_path(kind), data, variants, options, args.rounds)
        report["components"][kind] = figures
        for name, f in figures.items():
            logger.info("%s %-12s median %8.1f ms (x%.3f)  min %8.1f  max %8.1f  streams %d threads %d pinning %s",
                        kind, name, f["median_ms"], f["ratio_to_first"], f["min_ms"], f["max_ms"], f["streams"],
                        f["threads"], f["pinning"])
        gc.collect()
    report["load_after"] = _load()
    logger.info("load average before %s, after %s", report["load_before"], report["load_after"])
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
