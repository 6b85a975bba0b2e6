"""VAE encoder token downsampling (``--vae-token-downsample F``): per-crop time and latent agreement with F=1.

    python scripts/vae_token_bench.py --checkpoint CKPT --input-size 1024x768 --factors 1 2 4 [--rounds 2]
        [--work DIR] [--out vae_token_bench.json]

Only the checkpoint's VAE is loaded. For each factor the VAE encoder IR is built exactly as ``sdpose-convert
export --vae-token-downsample F`` builds it (:func:`convert.export.vae_encoder_model`; with ``--work`` also saved
as ``DIR/vae_td{F}.xml``, and read from there when it exists: ``--rounds 0`` only builds). Each round visits every factor (the order rotates between rounds): compile on CPU
(LATENCY hint, ``INFERENCE_PRECISION_HINT`` f32, exact for an FP32 IR), one warm-up crop, one timed crop
(batch 1), release. Reported per factor: the median time, the IR's FLOPs, whether the CPU plugin fuses the
attention, and the cosine / max relative error of its latents against factor 1's on the first ``--crops`` crops
of the calibration set (resized to the input size). On a synthetic checkpoint the agreement measures how much
the pooling changes a random network's latent, not pose accuracy.
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
from convert.fidelity import cosine  # noqa: E402
from convert.variant_check import attention_fusion  # noqa: E402
from edge_bench.peak import count_ir_flops  # noqa: E402
from edge_runtime.cpu import cpu_info  # noqa: E402
from edge_runtime.geometry import parse_size_hw  # noqa: E402
from edge_runtime.models import CompileOptions, compile_model  # noqa: E402

log = logging.getLogger("vae_token_bench")
OPTIONS = CompileOptions(device="CPU", performance_hint="LATENCY", inference_precision="f32", cache_dir=None,
                         num_requests=1)


def build_models(checkpoint: Path, size_hw: tuple[int, int], factors: list[int], work: Path | None) -> dict:
    """factor -> the VAE encoder ``openvino.Model`` (each from a freshly loaded VAE: the processor is installed
    in place)."""
    from convert.checkpoint import load_vae
    from convert.export import vae_encoder_model
    from convert.pose_graph import LATENT_SCALE, VaeEncoderGraph

    models = {}
    for factor in factors:
        saved = None if work is None else work / f"vae_td{factor}.xml"
        if saved is not None and saved.is_file():
            models[factor] = ov.Core().read_model(str(saved))
            continue
        graph = VaeEncoderGraph(load_vae(checkpoint), LATENT_SCALE)
        models[factor] = vae_encoder_model(graph, size_hw, factor)
        del graph
        gc.collect()
        if work is not None:
            work.mkdir(parents=True, exist_ok=True)
            ov.save_model(models[factor], str(saved), compress_to_fp16=False)
    return models


def visit(core: ov.Core, model: ov.Model, crops: np.ndarray, first: bool) -> dict:
    """Compile, one warm-up crop, one timed crop; on the first visit also the latents of every crop, the FLOPs and
    the attention fusion."""
    out: dict = {}
    t0 = time.perf_counter()
    compiled = compile_model(core, model, OPTIONS)
    out["compile_s"] = time.perf_counter() - t0
    latents = [compiled(crops[:1])[0][0]]  # warm-up
    t0 = time.perf_counter()
    latents.append(compiled(crops[1:2])[0][0])
    out["vae_s"] = time.perf_counter() - t0
    if first:
        out["latents"] = np.stack(latents + [compiled(crops[i:i + 1])[0][0] for i in range(2, len(crops))])
        out["gflops"] = round(count_ir_flops(model)["total"] / 1e9, 1)
        out["attention"] = attention_fusion(model, compiled)
    del compiled
    gc.collect()
    return out


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="SDPose checkpoint folder (its vae/ is used)")
    parser.add_argument("--input-size", default="1024x768", help="crop HxW (default 1024x768)")
    parser.add_argument("--factors", type=int, nargs="+", default=[1, 2, 4], help="factors; the first is the reference")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--crops", type=int, default=2, help="crops for the latent agreement (>= 2; the first two "
                        "are the warm-up and the timed crop)")
    parser.add_argument("--calib", default="default", help="calibration set the crops come from")
    parser.add_argument("--work", type=Path, default=None, help="also save each factor's IR here")
    parser.add_argument("--out", type=Path, default=None)
    return parser


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    h, w = parse_size_hw(args.input_size, "--input-size")
    crops = np.stack(list(load_calibration_set(args.calib).crops(limit=args.crops, size=(w, h))))
    core = ov.Core()
    if args.crops < 2 or len(crops) < 2:
        raise SystemExit(f"--crops {args.crops}: need at least 2 crops (the calibration set has {len(crops)})")
    models = build_models(args.checkpoint, (h, w), args.factors, args.work)
    if args.rounds < 1:
        return 0
    visits: dict[int, list[dict]] = {f: [] for f in args.factors}
    for rnd in range(args.rounds):
        k = rnd % len(args.factors)
        for factor in args.factors[k:] + args.factors[:k]:
            res = visit(core, models[factor], crops, first=not visits[factor])
            visits[factor].append(res)
            log.info("round %d factor %d: VAE encoder %.2f s (compile %.1f s)", rnd + 1, factor, res["vae_s"],
                     res["compile_s"])
    ref = visits[args.factors[0]][0]["latents"]
    rows = []
    for factor in args.factors:
        first, runs = visits[factor][0], visits[factor]
        lat = first["latents"]
        rows.append({"vae_token_downsample": factor, "vae_s": round(statistics.median(r["vae_s"] for r in runs), 3),
                     "runs_s": [round(r["vae_s"], 3) for r in runs], "gflops": first["gflops"],
                     "attention_fused": f"{first['attention']['fused']}/{first['attention']['attention_ops']}",
                     "latent_cosine_vs_ref": [round(cosine(a, b), 6) for a, b in zip(lat, ref)],
                     "latent_max_rel_err_vs_ref": round(float(np.abs(lat - ref).max() / np.abs(ref).max()), 5)})
        log.info("factor %d: %.2f s per crop, %.0f GFLOP, attention fused %s, latent cosine vs factor %d min %.6f",
                 factor, rows[-1]["vae_s"], first["gflops"], rows[-1]["attention_fused"], args.factors[0],
                 min(rows[-1]["latent_cosine_vs_ref"]))
    doc = {"what": "VAE encoder token downsampling: time per crop and latent agreement", "checkpoint":
           str(args.checkpoint), "input_hw": [h, w], "rounds": args.rounds, "crops": len(crops),
           "cpu": cpu_info(core).describe(), "openvino": ov.get_version(),
           "compile": {"performance_hint": "LATENCY", "inference_precision_hint": "f32", "batch": 1}, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
