"""Heatmap decoding per crop: numpy (edge_runtime.model.codec) versus the OpenVINO graph (edge_runtime.model.codec_graph).

    python scripts/decode_bench.py [--runs 20] [--out docs/decode_bench.json]

For wholebody (133 keypoints) and body (17), heatmaps 256x192 (the 1024x768 crop), batch 1 and 4:

- ``numpy``: :func:`edge_runtime.model.codec.decode_heatmaps` on heatmaps of encoded keypoints plus noise;
- ``graph_alone``: the decoder model alone (``keypoint_decoder``, what a server or the flip test runs), f32,
  LATENCY hint, on the same heatmaps (includes handing them to OpenVINO);
- ``graph_in_pose_ir``: the pose IR of the fake test models at full size with the decoder appended (what
  ``run --decode graph`` compiles) minus the same IR without it: the decoder's added cost inside the request.

Medians of ``--runs`` runs, seconds per crop. The machine's other load makes single figures noisy: compare the
columns of one run.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import openvino as ov

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))
from edge_runtime.model.codec import decode_heatmaps, encode_keypoints  # noqa: E402
from edge_runtime.model.codec_graph import decoder_model, with_keypoints  # noqa: E402
from edge_runtime.model.cpu import cpu_info  # noqa: E402
from fake_models import build_fake_model_folder  # noqa: E402

log = logging.getLogger("decode_bench")
INPUT_WH = (768, 1024)
HEATMAP_WH = (192, 256)
CONFIG = {"INFERENCE_PRECISION_HINT": "f32", "PERFORMANCE_HINT": "LATENCY"}


def median_s(fn, runs: int) -> float:
    fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def heatmaps_for(k: int, batch: int) -> np.ndarray:
    rng = np.random.default_rng(k)
    kp = rng.uniform([0, 0], [INPUT_WH[0] - 1, INPUT_WH[1] - 1], (batch, k, 2))
    heatmaps = np.stack([encode_keypoints(p, INPUT_WH, HEATMAP_WH) for p in kp])
    return heatmaps + rng.normal(0, 0.01, heatmaps.shape).astype(np.float32)


def bench_scheme(core: ov.Core, scheme: str, work: Path, runs: int) -> dict:
    k = 133 if scheme == "wholebody" else 17
    alone = core.compile_model(decoder_model(k, HEATMAP_WH, INPUT_WH, 11), "CPU", CONFIG)
    folder = build_fake_model_folder(work / scheme, scheme=scheme, input_size=INPUT_WH, fused=False)
    pose = core.read_model(str(folder / "pose.xml"))
    plain = core.compile_model(pose, "CPU", CONFIG)
    decoding = core.compile_model(with_keypoints(pose, INPUT_WH, 11, keep_heatmaps=False), "CPU", CONFIG)
    out = {}
    for batch in (1, 4):
        heatmaps = heatmaps_for(k, batch)
        latent = np.random.default_rng(0).normal(0, 1, (batch, 4, INPUT_WH[1] // 8, INPUT_WH[0] // 8)).astype(
            np.float32)
        row = {"numpy": median_s(lambda: decode_heatmaps(heatmaps, INPUT_WH), runs) / batch,
               "graph_alone": median_s(lambda: alone(heatmaps), runs) / batch}
        with_decoder = median_s(lambda: decoding(latent), runs)
        without = median_s(lambda: plain(latent), runs)
        row["graph_in_pose_ir"] = (with_decoder - without) / batch
        out[f"batch{batch}_s_per_crop"] = row
        log.info("%s batch %d: %s", scheme, batch, {key: f"{v * 1000:.1f} ms" for key, v in row.items()})
    return out


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "decode_bench.json")
    return parser


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    core = ov.Core()
    result: dict = {"cpu": cpu_info().to_dict(), "openvino": ov.get_version(), "heatmap_size_wh": list(HEATMAP_WH)}
    with tempfile.TemporaryDirectory() as tmp:
        for scheme in ("wholebody", "body"):
            result[scheme] = bench_scheme(core, scheme, Path(tmp), args.runs)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    log.info("-> %s", args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
