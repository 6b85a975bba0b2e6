"""Per-crop latency and FLOPs of model-folder variants (presets x token downsampling x FP32/INT8), interleaved.

    python scripts/variant_bench.py --variant full_fp32=DIR --variant fast_int8=DIR ... [--rounds 3]
        [--out docs/variants_bench.json] [--pck docs/variants_pck.json --plot docs/variants.png]

Each round visits every variant (the order rotates between rounds, so drift and thermal state spread over all
of them): compile the VAE encoder and the pose IR (CPU, LATENCY hint, INFERENCE_PRECISION_HINT f32 — exact
for FP32 IR, and the per-ISA default for INT8 on CPUs without AMX), run one warm-up crop, time one crop
(VAE and pose separately, batch 1), release. The crop is a real photo crop (the default calibration set)
resized to the variant's input size. Reported per variant: the median over rounds of VAE, pose and their sum,
FLOPs counted on the IR (:func:`edge_bench.peak.count_ir_flops`), compile time, and whether the CPU plugin
still fuses attention (:func:`convert.variant_check.attention_fusion`). Synthetic (random-weight) folders
measure speed only. With ``--pck`` (the proxy's accuracy, ``scripts/variant_pck.py``) it also plots latency
against accuracy.
"""
from __future__ import annotations

import argparse
import gc
import json
import logging
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import openvino as ov

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from calib_data import load_calibration_set  # noqa: E402
from convert.export import preset_name  # noqa: E402
from convert.variant_check import attention_fusion, udp_resize  # noqa: E402
from edge_runtime.model.cpu import cpu_info  # noqa: E402
from edge_runtime.model.models import CompileOptions, ModelFolder, compile_model  # noqa: E402
from edge_bench.peak import count_ir_flops  # noqa: E402

log = logging.getLogger("variant_bench")


def one_visit(core: ov.Core, path: Path, crop_full: np.ndarray, first: bool) -> dict:
    folder = ModelFolder(path, chain="split", core=core)
    meta = folder.pose_meta
    w, h = int(meta["input_width"]), int(meta["input_height"])
    crop = np.ascontiguousarray(udp_resize(crop_full, (w, h))[None])
    options = CompileOptions(device="CPU", performance_hint="LATENCY", inference_precision="f32", cache_dir=None,
                             num_requests=1)
    out: dict = {}
    t0 = time.perf_counter()
    models = {k: folder.read_model(k) for k in ("vae_encoder", "pose")}
    compiled = {k: compile_model(core, m, options) for k, m in models.items()}
    out["compile_s"] = time.perf_counter() - t0
    if first:
        out["flops"] = {k: count_ir_flops(m)["total"] for k, m in models.items()}
        out["attention"] = {k: attention_fusion(models[k], compiled[k]) for k in models}
        out["meta"] = {k: meta.get(k) for k in ("preset", "input_height", "input_width", "token_downsample",
                                                "token_downsample_levels", "precision", "quantized")}
    del models
    folder.release()
    for timed in (False, True):
        t0 = time.perf_counter()
        latent = compiled["vae_encoder"](crop)[0]
        t1 = time.perf_counter()
        compiled["pose"](latent)
        t2 = time.perf_counter()
        if timed:
            out["vae_s"], out["pose_s"] = t1 - t0, t2 - t1
    del compiled
    gc.collect()
    return out


def plot(rows: list[dict], pck: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from matplotlib.lines import Line2D

    by_name = {(r["name"], r["precision"]): r for r in pck["rows"]}
    colours = {"full": "C0", "balanced": "C1", "fast": "C2"}
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for row in rows:
        acc = by_name.get((row["proxy_name"], row["precision"]))
        if acc is None:
            continue
        colour = colours.get(row["preset"], "C3")
        ax.scatter(row["total_s"], 100 * acc["pck_all"], marker="o" if row["precision"] == "fp32" else "s", s=60,
                   edgecolors=colour, facecolors=colour if row["token_downsample"] == 1 else "none")
    handles = [Line2D([], [], ls="", marker="o", color=c, label=f"{p} {'x'.join(map(str, hw))}")
               for p, c, hw in (("full", "C0", (1024, 768)), ("balanced", "C1", (768, 576)), ("fast", "C2", (512, 384)))]
    handles += [Line2D([], [], ls="", marker="o", color="grey", label="FP32 IR"),
                Line2D([], [], ls="", marker="s", color="grey", label="INT8"),
                Line2D([], [], ls="", marker="o", markerfacecolor="none", color="grey", label="token downsampling x2")]
    ax.legend(handles=handles, fontsize=8, loc="lower right")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per crop at full size (VAE + pose, batch 1, f32 hint)")
    ax.set_ylabel("proxy PCK@0.05 on figures.mp4 (%)")
    ax.set_title("Cheaper crops: full-size latency (Zen 4, 2 cores) vs proxy accuracy", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", action="append", required=True, metavar="LABEL=DIR")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--calib", default="default", help="calibration set whose first crop is timed")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--pck", type=Path, default=None, help="scripts/variant_pck.py output, for the plot")
    parser.add_argument("--plot", type=Path, default=None)
    return parser


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    variants = [(label, Path(path)) for label, _, path in (v.partition("=") for v in args.variant)]
    core = ov.Core()
    crop = next(load_calibration_set(args.calib).crops(limit=1))
    visits: dict[str, list[dict]] = {label: [] for label, _ in variants}
    for rnd in range(args.rounds):
        order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
        for label, path in order:
            res = one_visit(core, path, crop, first=not visits[label])
            visits[label].append(res)
            log.info("round %d %-22s vae %.2f s pose %.2f s (compile %.1f s)", rnd + 1, label, res["vae_s"],
                     res["pose_s"], res["compile_s"])
    rows = []
    for label, path in variants:
        runs = visits[label]
        first = runs[0]
        meta = first["meta"]
        vae = statistics.median(r["vae_s"] for r in runs)
        pose = statistics.median(r["pose_s"] for r in runs)
        # folders exported before presets existed carry no preset: name it from the size
        preset = meta.get("preset") or preset_name((meta["input_height"], meta["input_width"]))
        td = int(meta.get("token_downsample") or 1)
        levels = "+".join(str(v) for v in meta.get("token_downsample_levels") or [])
        rows.append({"label": label, "path": str(path), "preset": preset,
                     "input_hw": [meta["input_height"], meta["input_width"]], "token_downsample": td,
                     "levels": levels, "precision": "int8" if meta.get("quantized") else meta.get("precision"),
                     "proxy_name": f"{preset}_td{td}" + (f"@{levels}" if td > 1 else ""),
                     "vae_s": round(vae, 3), "pose_s": round(pose, 3), "total_s": round(vae + pose, 3),
                     "runs": [{k: round(r[k], 3) for k in ("vae_s", "pose_s", "compile_s")} for r in runs],
                     "gflops": {k: round(v / 1e9, 1) for k, v in first["flops"].items()},
                     "gflops_total": round(sum(first["flops"].values()) / 1e9, 1), "attention": first["attention"]})
    base = next((r for r in rows if r["preset"] == "full" and r["token_downsample"] == 1
                 and r["precision"] == "fp32"), rows[0])
    for r in rows:
        r["speedup_vs_full_fp32"] = round(base["total_s"] / r["total_s"], 2)
    doc = {"what": "per-crop latency per variant, interleaved rounds", "rounds": args.rounds,
           "cpu": cpu_info(core).describe(), "openvino": ov.get_version(),
           "compile": {"performance_hint": "LATENCY", "inference_precision_hint": "f32", "batch": 1,
                       "num_requests": 1}, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    if args.plot and args.pck:
        plot(rows, json.loads(args.pck.read_text()), args.plot)
    for r in rows:
        log.info("%-22s %8.2f s (vae %.2f + pose %.2f)  %7.0f GFLOP  x%.2f  attention fused %s/%s", r["label"],
                 r["total_s"], r["vae_s"], r["pose_s"], r["gflops_total"], r["speedup_vs_full_fp32"],
                 r["attention"]["pose"]["fused"], r["attention"]["pose"]["attention_ops"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
