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

``--from-ir VAE_XML`` (an FP32 VAE encoder IR of the same checkpoint at factor 1, e.g. ``FOLDER/vae_encoder.xml``)
avoids tracing the whole encoder per factor, which at full size is a full PyTorch forward each: only the mid-block
attention is built per factor (the shipped processor, at full width), the rest comes from that IR. Each round
times the whole IR (factor 1) and each factor's attention alone on the real mid-block input; a factor's crop time
is estimated as ``whole IR - attention(1) + attention(F)``. Its latents are exact: the IR's part before the
attention (identical for every factor), the factor's attention, then the IR's part after it.
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
from edge_runtime.model.cpu import cpu_info  # noqa: E402
from edge_runtime.model.geometry import parse_size_hw  # noqa: E402
from edge_runtime.model.models import CompileOptions, compile_model  # noqa: E402

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
    parser.add_argument("--from-ir", type=Path, default=None, metavar="VAE_XML",
                        help="factor-1 FP32 VAE encoder IR of the checkpoint: build only the attention per factor")
    parser.add_argument("--out", type=Path, default=None)
    return parser


#: the exporter's names of the nodes around the VAE encoder's mid-block attention (its input and its output)
ATTENTION_IN = "__module.encoder.mid_block.resnets.0/aten::add/Add"
ATTENTION_OUT = "__module.encoder.mid_block.attentions.0/aten::add/Add"


def attention_models(checkpoint: Path, size_hw: tuple[int, int], factors: list[int]) -> dict:
    """factor -> the VAE encoder's mid-block attention alone, x [N,C,H/8,W/8] -> the same, batch dynamic."""
    import torch

    from convert.checkpoint import load_vae
    from convert.token_downsample import apply_vae_token_downsampling

    class AttentionOnly(torch.nn.Module):
        def __init__(self, attn: torch.nn.Module) -> None:
            super().__init__()
            self.attn = attn

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.attn(x)

    models = {}
    for factor in factors:
        vae = load_vae(checkpoint)
        apply_vae_token_downsampling(vae, factor)
        attn = vae.encoder.mid_block.attentions[0]
        shape = [1, attn.to_q.in_features, size_hw[0] // 8, size_hw[1] // 8]
        with torch.no_grad():
            model = ov.convert_model(AttentionOnly(attn).eval(), example_input=torch.zeros(shape))
        model.reshape({model.input(0): ov.PartialShape([-1] + shape[1:])})
        models[factor] = model
    return models


def split_ir(core: ov.Core, vae_xml: Path) -> tuple:
    """(the IR with the attention's input and output as extra outputs, the IR after the attention: its input
    replaces the attention's output)."""
    whole = core.read_model(str(vae_xml))
    ops = {op.get_friendly_name(): op for op in whole.get_ops()}
    if ATTENTION_IN not in ops or ATTENTION_OUT not in ops:
        raise SystemExit(f"--from-ir {vae_xml}: no nodes {ATTENTION_IN} / {ATTENTION_OUT}; expected a VAE encoder "
                         "IR written by sdpose-convert export")
    whole.add_outputs([ops[ATTENTION_IN].output(0), ops[ATTENTION_OUT].output(0)])
    tail = core.read_model(str(vae_xml))
    out = next(op for op in tail.get_ops() if op.get_friendly_name() == ATTENTION_OUT).output(0)
    param = ov.opset13.parameter(out.get_partial_shape(), ov.Type.f32, name="attention_out")
    for target in list(out.get_target_inputs()):
        target.replace_source_output(param.output(0))
    return whole, ov.Model(tail.get_results(), [param], "vae_after_attention")


def time_whole(core: ov.Core, whole: ov.Model, crops: np.ndarray, first: bool) -> tuple:
    """(seconds of the timed crop, [(latent, attention input) per crop] on the first visit, else None)."""
    compiled = compile_model(core, whole, OPTIONS)
    outs = [compiled(crops[:1])]  # warm-up
    t0 = time.perf_counter()
    outs.append(compiled(crops[1:2]))
    seconds = time.perf_counter() - t0
    if not first:
        return seconds, None
    outs += [compiled(crops[i:i + 1]) for i in range(2, len(crops))]
    return seconds, [(o[0], o[1]) for o in outs]


def split_rounds(core: ov.Core, args: argparse.Namespace, crops: np.ndarray, size_hw: tuple[int, int]) -> list[dict]:
    """``--from-ir``: per round the whole IR (factor 1) and each factor's attention alone; rows per factor."""
    whole, tail = split_ir(core, args.from_ir)
    attentions = attention_models(args.checkpoint, size_hw, args.factors)
    whole_s, att_s, ref = [], {f: [] for f in args.factors}, None
    for rnd in range(args.rounds):
        seconds, outs = time_whole(core, whole, crops, ref is None)
        whole_s.append(seconds)
        ref = ref or outs
        log.info("round %d: whole VAE encoder IR (factor 1) %.2f s", rnd + 1, seconds)
        for factor in args.factors[rnd % len(args.factors):] + args.factors[:rnd % len(args.factors)]:
            att = compile_model(core, attentions[factor], OPTIONS)
            att(ref[0][1])
            t0 = time.perf_counter()
            att(ref[1][1])
            att_s[factor].append(time.perf_counter() - t0)
            log.info("round %d factor %d: attention alone %.2f s", rnd + 1, factor, att_s[factor][-1])
    tail_c, rows = compile_model(core, tail, OPTIONS), []
    ref_lat = np.stack([lat[0] for lat, _ in ref])
    for factor in args.factors:
        att = compile_model(core, attentions[factor], OPTIONS)
        lat = np.stack([tail_c(att(x)[0])[0][0] for _, x in ref])
        att_med = statistics.median(att_s[factor])
        rows.append({"vae_token_downsample": factor, "attention_s": round(att_med, 3),
                     "attention_runs_s": [round(t, 3) for t in att_s[factor]],
                     "vae_s_estimated": round(statistics.median(whole_s) - statistics.median(att_s[args.factors[0]])
                                              + att_med, 3),
                     "whole_ir_factor1_runs_s": [round(t, 3) for t in whole_s],
                     "latent_cosine_vs_ref": [round(cosine(a, b), 6) for a, b in zip(lat, ref_lat)],
                     "latent_max_rel_err_vs_ref": round(float(np.abs(lat - ref_lat).max() / np.abs(ref_lat).max()), 5)})
        log.info("factor %d: attention %.2f s, estimated VAE encoder %.2f s, latent cosine vs factor %d min %.6f",
                 factor, att_med, rows[-1]["vae_s_estimated"], args.factors[0], min(rows[-1]["latent_cosine_vs_ref"]))
    return rows


def whole_rounds(core: ov.Core, args: argparse.Namespace, crops: np.ndarray, size_hw: tuple[int, int]) -> list[dict]:
    """Per round the whole encoder IR of each factor; rows per factor."""
    models = build_models(args.checkpoint, size_hw, args.factors, args.work)
    visits: dict[int, list[dict]] = {f: [] for f in args.factors}
    for rnd in range(args.rounds):
        k = rnd % len(args.factors)
        for factor in args.factors[k:] + args.factors[:k]:
            res = visit(core, models[factor], crops, first=not visits[factor])
            visits[factor].append(res)
            log.info("round %d factor %d: VAE encoder %.2f s (compile %.1f s)", rnd + 1, factor, res["vae_s"],
                     res["compile_s"])
    rows = []
    for factor in args.factors if args.rounds else []:
        first, runs, ref = visits[factor][0], visits[factor], visits[args.factors[0]][0]["latents"]
        lat = first["latents"]
        rows.append({"vae_token_downsample": factor, "vae_s": round(statistics.median(r["vae_s"] for r in runs), 3),
                     "runs_s": [round(r["vae_s"], 3) for r in runs], "gflops": first["gflops"],
                     "attention_fused": f"{first['attention']['fused']}/{first['attention']['attention_ops']}",
                     "latent_cosine_vs_ref": [round(cosine(a, b), 6) for a, b in zip(lat, ref)],
                     "latent_max_rel_err_vs_ref": round(float(np.abs(lat - ref).max() / np.abs(ref).max()), 5)})
        log.info("factor %d: %.2f s per crop, %.0f GFLOP, attention fused %s, latent cosine vs factor %d min %.6f",
                 factor, rows[-1]["vae_s"], first["gflops"], rows[-1]["attention_fused"], args.factors[0],
                 min(rows[-1]["latent_cosine_vs_ref"]))
    return rows


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    h, w = parse_size_hw(args.input_size, "--input-size")
    crops = np.stack(list(load_calibration_set(args.calib).crops(limit=args.crops, size=(w, h))))
    if args.crops < 2 or len(crops) < 2:
        raise SystemExit(f"--crops {args.crops}: need at least 2 crops (the calibration set has {len(crops)})")
    if args.from_ir is not None and args.factors[0] != 1:
        raise SystemExit("--from-ir: the first of --factors must be 1 (the IR's own)")
    core = ov.Core()
    if args.from_ir is not None:
        rows, method = split_rounds(core, args, crops, (h, w)), "attention alone per factor, the rest from --from-ir"
    else:
        rows, method = whole_rounds(core, args, crops, (h, w)), "whole encoder per factor"
    doc = {"what": "VAE encoder token downsampling: time per crop and latent agreement", "method": method,
           "checkpoint": str(args.checkpoint), "from_ir": str(args.from_ir) if args.from_ir else None,
           "input_hw": [h, w], "rounds": args.rounds, "crops": len(crops), "cpu": cpu_info(core).describe(),
           "openvino": ov.get_version(),
           "compile": {"performance_hint": "LATENCY", "inference_precision_hint": "f32", "batch": 1}, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
