"""Exact forms of one self-attention on the CPU plugin: time, agreement and where the time goes.

    python scripts/attention_forms.py --shape vae [--rounds 5] [--chunks 8] [--out forms.json]
    python scripts/attention_forms.py --tokens 12288 --head-dim 64 --heads 5

Issue 28 ("look for any other exact or near-exact saving in the encoder"): the VAE encoder's mid-block attention
(one head of 512 over 12,288 tokens at 1024x768) and the pose's top-level self-attentions (5 heads of 64) are the
largest f32 items of an INT8 crop on AVX2. This screens formulations that compute the same softmax(QK^T/sqrt(d))V
and could run on other kernels:

- ``sdpa``: one ``ScaledDotProductAttention`` op, as the exported IRs hold it (the plugin fuses it into one
  snippets ``Subgraph``);
- ``sdpa_chunks``: the queries split into ``--chunks`` blocks, one SDPA op each (softmax is per query row, so
  exact), concatenated;
- ``explicit``: MatMul -> Softmax -> MatMul ops (the plugin tokenizes them into the same kind of ``Subgraph``);
- ``unfused``: the explicit form with ``SNIPPETS_MODE: DISABLE``: two brgemm MatMuls and a Softmax over the
  full [tokens x tokens] scores (the per-op split of its time is reported);
- ``unfused_chunks``: the unfused form per query block (scores of one block at a time);
- ``products_const`` (not attention: the ceiling of its two products): ``(x @ C1) @ C2`` for one head with
  constant C1 [head_dim, tokens] and C2 [tokens, head_dim], the same FLOPs per head on the weight-prepacked
  ``FullyConnected`` kernel that the bench's peak (:mod:`edge_bench.peak`) uses, where attention multiplies two
  activations; its time is per head and its GFLOP/s counts one head.

Every form is compiled first (LATENCY hint, f32 precision hint), called once for its output (largest absolute
difference to ``sdpa`` reported), then timed in rounds visiting every form in turn (order rotating; ``sdpa`` is
timed twice per round as a noise control). GFLOP/s counts the two products: 4 * heads * tokens^2 * head_dim.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
from pathlib import Path
from typing import Any

import numpy as np
import openvino as ov
import openvino.opset13 as ops

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edge_bench.timing import rotated_rounds  # noqa: E402  (the repository root is put on the path above)

logger = logging.getLogger("attention_forms")
#: (tokens, head_dim, heads) of the attentions a 1024x768 crop runs
SHAPES = {"vae": (12288, 512, 1), "pose": (12288, 64, 5)}
UNFUSED = {"SNIPPETS_MODE": "DISABLE"}


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", choices=sorted(SHAPES), default=None,
                        help="vae: 12288 tokens x 1 head of 512; pose: 12288 tokens x 5 heads of 64")
    parser.add_argument("--tokens", type=int, default=None, help="sequence length (overrides --shape)")
    parser.add_argument("--head-dim", type=int, default=None, help="channels per head (overrides --shape)")
    parser.add_argument("--heads", type=int, default=None, help="heads (overrides --shape)")
    parser.add_argument("--chunks", type=int, default=8, help="query blocks of the chunked forms (default 8)")
    parser.add_argument("--rounds", type=int, default=5, help="timed calls per form (default 5)")
    parser.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    return parser


def _shape(args: argparse.Namespace) -> tuple[int, int, int]:
    tokens, head_dim, heads = SHAPES[args.shape or "vae"]
    return (args.tokens or tokens, args.head_dim or head_dim, args.heads or heads)


def _query_blocks(q: Any, chunks: int) -> list[Any]:
    if chunks <= 1:
        return [q]
    split = ops.split(q, ops.constant(np.int64(2)), chunks)
    return [split.output(i) for i in range(chunks)]


def build_form(kind: str, shape: tuple[int, int, int], chunks: int = 1) -> ov.Model:
    """``sdpa`` or ``explicit`` attention over q, k, v [N, heads, tokens, head_dim], queries in ``chunks`` blocks."""
    tokens, head_dim, heads = shape
    q, k, v = (ops.parameter([-1, heads, tokens, head_dim], np.float32, name=n) for n in "qkv")
    k_t = ops.transpose(k, ops.constant(np.array([0, 1, 3, 2], np.int64)))
    scale = ops.constant(np.array(1.0 / np.sqrt(head_dim), np.float32))
    outs = []
    for block in _query_blocks(q, chunks):
        if kind == "sdpa":
            outs.append(ops.scaled_dot_product_attention(block, k, v, causal=False))
        else:
            scores = ops.matmul(ops.multiply(block, scale), k_t, False, False)
            outs.append(ops.matmul(ops.softmax(scores, 3), v, False, False))
    out = outs[0] if len(outs) == 1 else ops.concat(outs, 2)
    return ov.Model([out], [q, k, v], f"attention_{kind}_{chunks}")


def build_products_const(shape: tuple[int, int, int], seed: int = 0) -> ov.Model:
    """One head's two products with constant right-hand sides: x [tokens, head_dim] @ C1 @ C2."""
    tokens, head_dim, _ = shape
    rng = np.random.default_rng(seed)
    x = ops.parameter([tokens, head_dim], np.float32, name="x")
    c1 = ops.constant((rng.standard_normal((head_dim, tokens)) / np.sqrt(head_dim)).astype(np.float32))
    c2 = ops.constant((rng.standard_normal((tokens, head_dim)) / np.sqrt(tokens)).astype(np.float32))
    return ov.Model([ops.matmul(ops.matmul(x, c1, False, False), c2, False, False)], [x], "products_const")


def forms(shape: tuple[int, int, int], chunks: int) -> dict[str, tuple[ov.Model, dict[str, str]]]:
    """name -> (model, extra compile properties); ``sdpa_again`` is the noise control."""
    return {"sdpa": (build_form("sdpa", shape), {}),
            "sdpa_chunks": (build_form("sdpa", shape, chunks), {}),
            "explicit": (build_form("explicit", shape), {}),
            "unfused": (build_form("explicit", shape), UNFUSED),
            "unfused_chunks": (build_form("explicit", shape, chunks), UNFUSED),
            "sdpa_again": (build_form("sdpa", shape), {})}


def _compile(core: ov.Core, model: ov.Model, extra: dict[str, str], perf_count: bool = False) -> Any:
    config = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32", **extra}
    if perf_count:
        config["PERF_COUNT"] = True
    return core.compile_model(model, "CPU", config)


def op_split(core: ov.Core, model: ov.Model, extra: dict[str, str], inputs: list[np.ndarray]) -> list[dict]:
    """Per executed node of one call (after a warm-up): type, kernel, milliseconds; costliest first."""
    request = _compile(core, model, extra, perf_count=True).create_infer_request()
    request.infer(inputs)
    request.infer(inputs)
    rows = [{"node": p.node_name, "type": p.node_type, "exec_type": p.exec_type,
             "ms": round(p.real_time.total_seconds() * 1e3, 3)} for p in request.get_profiling_info()
            if p.status == ov.ProfilingInfo.Status.EXECUTED and p.node_type not in ("Parameter", "Result")]
    return sorted(rows, key=lambda r: -r["ms"])


def screen(shape: tuple[int, int, int], chunks: int, rounds: int) -> dict[str, Any]:
    """Compile every form, check agreement, time them interleaved; the unfused form's per-op split."""
    core = ov.Core()
    rng = np.random.default_rng(0)
    tokens, head_dim, heads = shape
    inputs = [rng.standard_normal((1, heads, tokens, head_dim)).astype(np.float32) for _ in range(3)]
    built = forms(shape, chunks)
    compiled = {name: _compile(core, model, extra) for name, (model, extra) in built.items()}
    reference = compiled["sdpa"](inputs)[0]
    max_diff = {name: float(np.abs(c(inputs)[0] - reference).max()) for name, c in compiled.items()}
    gflop = 4.0 * heads * tokens * tokens * head_dim / 1e9
    # name -> (call, GFLOP of one call): the attention forms on q, k, v; products_const on one head's queries
    cases = {name: (lambda c=c: c(inputs), gflop) for name, c in compiled.items()}
    products = _compile(core, build_products_const(shape), {})
    cases["products_const"] = (lambda: products([inputs[0][0, 0]]), gflop / heads)
    cases["products_const"][0]()  # its first call, as the forms had theirs above
    times = rotated_rounds({name: call for name, (call, _) in cases.items()}, rounds)
    rows = {name: {"median_ms": round(statistics.median(t) * 1e3, 1), "min_ms": round(min(t) * 1e3, 1),
                   "gflops": round(cases[name][1] / statistics.median(t), 1),
                   "max_abs_diff": max_diff.get(name)} for name, t in times.items()}
    model, extra = built["unfused"]
    return {"tokens": tokens, "head_dim": head_dim, "heads": heads, "chunks": chunks, "rounds": rounds,
            "gflop": round(gflop, 2), "forms": rows, "unfused_ops": op_split(core, model, extra, inputs)[:6],
            "openvino": ov.get_version(), "load_after": os.getloadavg()[0]}


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = build_parser().parse_args(argv)
    shape = _shape(args)
    logger.info("attention %s (tokens, head_dim, heads), load %.2f", shape, os.getloadavg()[0])
    result = screen(shape, args.chunks, args.rounds)
    for name, row in result["forms"].items():
        diff = "n/a (not attention)" if row["max_abs_diff"] is None else f"{row['max_abs_diff']:.2e}"
        logger.info("%-15s %9.1f ms  %6.1f GFLOP/s  max |diff| %s", name, row["median_ms"], row["gflops"], diff)
    for row in result["unfused_ops"]:
        logger.info("unfused: %-10s %-18s %8.1f ms  %s", row["type"], row["exec_type"], row["ms"], row["node"])
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
