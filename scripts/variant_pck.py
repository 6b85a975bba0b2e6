"""Accuracy cost of the cheaper variants (presets x token downsampling x FP32/INT8), measured on the proxy.

    python scripts/variant_pck.py --work WORK [--int8] [--out docs/variants_pck.json]

The proxy (``samples/proxy``: a tiny SDPose-architecture model with the released head layout, trained on drawn
figures at 128x96) is converted with the real commands (``sdpose-convert export|convert``) at the three
presets scaled to its size (full 128x96, balanced 96x72, fast 64x48: the same 1 : 0.75 : 0.5 ratios as
1024x768 / 768x576 / 512x384), each with and without attention token downsampling, and run over
``samples/figures.mp4`` with the boxes of ``samples/figures_detections.json`` (file mode, every person on
every frame). Per variant:

- PCK@0.05 against the exact ground truth (``samples/figures_gt.npz``), all keypoints and body;
- agreement with the full-resolution FP32 proxy: the share of keypoints within 0.05 x the box's longer side of
  the full model's keypoint (PCK with the full model as ground truth);
- ``sdpose-convert validate VARIANT --against FULL_FP32`` on a calibration set cut from the same video
  (keypoint displacement in image px, heatmap cosine / channel correlation after resizing).

What it can say: how a model of this architecture, trained at one input size, degrades when run at smaller
crops or with pooled attention keys/values. What it cannot: the released model's absolute accuracy, or its
exact loss — the proxy is ~1000x smaller, sees 128x96 crops (a latent of 16x12, not 128x96), and was trained
on drawn figures.
"""
from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from convert.figures import score_records  # noqa: E402
from edge_runtime.model.estimator import PoseEstimator  # noqa: E402
from edge_runtime.media.sinks import ListSink  # noqa: E402
from edge_runtime.model.geometry import parse_size_hw  # noqa: E402
from edge_runtime.model.models import CompileOptions  # noqa: E402
from edge_runtime.media.detections import load_detections  # noqa: E402
from edge_runtime.running.pipeline import Pipeline, PipelineConfig  # noqa: E402
from edge_runtime.running.results import FrameResult  # noqa: E402
from edge_runtime.media.sources import VideoFileSource  # noqa: E402

SAMPLES = ROOT / "samples"
#: preset -> scale of the proxy's own input size (the presets' ratios to 1024x768)
SCALES = {"full": 1.0, "balanced": 0.75, "fast": 0.5}
log = logging.getLogger("variant_pck")


Collect = ListSink  # every FrameResult of a run, in memory


def sdpose_convert(*args: str) -> None:
    cmd = [sys.executable, "-m", "convert.cli", *args]
    log.info("$ sdpose-convert %s", " ".join(args))
    subprocess.run(cmd, cwd=ROOT, check=True)


def parse_td(text: str) -> tuple[int, str]:
    """'1' -> (1, ''); '2@0' -> (2, '0'); '2@0,1' -> (2, '0,1')."""
    factor, _, levels = text.partition("@")
    return int(factor), levels or "0"


def run_records(models: Path, video: Path, dets: dict) -> list[FrameResult]:
    est = PoseEstimator(models, options=CompileOptions(cache_dir=None, inference_precision="f32",
                                                       performance_hint="LATENCY", num_requests=1))
    sink = Collect()
    Pipeline(est, [sink], PipelineConfig(progress=False), detections=dets).run(VideoFileSource(video))
    return sink.results


def agreement(records: list[FrameResult], full: list[FrameResult], gt_boxes: np.ndarray, alpha: float = 0.05) -> float:
    """Share of keypoints within alpha x the ground-truth box's longer side of the full model's keypoint (the
    persons come from the same given boxes, so they are paired by frame and box)."""
    ok: list[np.ndarray] = []
    by_frame = {int(r.frame): r.with_pose() for r in full}  # with_pose: tracked persons without a pose yet skipped
    for rec in records:
        ref = by_frame.get(int(rec.frame))
        if ref is None:
            continue
        posed = rec.with_pose()
        for box, a in zip(posed.boxes_xyxy, posed.keypoints):
            match = next((j for j, b in enumerate(ref.boxes_xyxy) if np.allclose(b, box)), None)
            if match is None:
                continue
            size = max(box[2] - box[0], box[3] - box[1])
            dist = np.nan_to_num(np.linalg.norm(a - ref.keypoints[match], axis=-1), nan=np.inf)
            ok.append(dist <= alpha * size)
    return float(np.concatenate(ok).mean()) if ok else 0.0


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", required=True, type=Path, help="folder for the exported variants")
    parser.add_argument("--checkpoint", type=Path, default=SAMPLES / "proxy")
    parser.add_argument("--size", default="128x96", help="the proxy's own input size HxW (= preset full)")
    parser.add_argument("--td", nargs="+", default=["1", "2@0"],
                        help="token downsampling settings F[@levels], e.g. 1 2@0 2@0,1")
    parser.add_argument("--int8", action="store_true", help="also convert and score INT8 variants")
    parser.add_argument("--video", type=Path, default=SAMPLES / "figures.mp4")
    parser.add_argument("--detections", type=Path, default=SAMPLES / "figures_detections.json")
    parser.add_argument("--gt", type=Path, default=SAMPLES / "figures_gt.npz")
    parser.add_argument("--out", type=Path, default=None)
    return parser


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    h0, w0 = parse_size_hw(args.size, "--size")
    gt = np.load(args.gt)
    dets = load_detections(args.detections)
    args.work.mkdir(parents=True, exist_ok=True)

    calib = args.work / "calib_figures"
    if not calib.is_dir():
        video_dets = args.work / "figures_video_detections.json"
        video_dets.write_text(json.dumps({args.video.name: json.loads(args.detections.read_text())}))
        sdpose_convert("calib", "--videos", str(args.video), "--detections", str(video_dets), "--out", str(calib),
                       "--input-size", f"{h0}x{w0}", "--max-crops", "48", "--frames-per-video", "48")

    variants = []
    for preset, scale in SCALES.items():
        h, w = int(round(h0 * scale / 8) * 8), int(round(w0 * scale / 8) * 8)
        for td in args.td:
            factor, levels = parse_td(td)
            name = f"{preset}_td{factor}" + (f"@{levels.replace(',', '+')}" if factor > 1 else "")
            fp32 = args.work / f"fp32_{name}"
            if not (fp32 / "sdpose_models.json").is_file():
                sdpose_convert("export", "--checkpoint", str(args.checkpoint), "--out", str(fp32), "--input-size",
                               f"{h}x{w}", "--token-downsample", str(factor), "--levels", levels)
            variants.append({"name": name, "preset": preset, "input_hw": [h, w], "token_downsample": factor,
                             "levels": levels if factor > 1 else "", "precision": "fp32", "path": fp32})
            if args.int8:
                int8 = args.work / f"int8_{name}"
                if not (int8 / "sdpose_models.json").is_file():
                    sdpose_convert("convert", "--checkpoint", str(args.checkpoint), "--out", str(int8),
                                   "--fp32-from", str(fp32), "--input-size", f"{h}x{w}", "--precision", "int8",
                                   "--token-downsample", str(factor), "--levels", levels, "--calib", str(calib),
                                   "--no-detector", "--latency-runs", "0")
                variants.append(dict(variants[-1], precision="int8", path=int8))

    full = next(v for v in variants if v["preset"] == "full" and v["token_downsample"] == 1
                and v["precision"] == "fp32")
    full_records = run_records(full["path"], args.video, dets)
    rows = []
    for v in variants:
        records = full_records if v is full else run_records(v["path"], args.video, dets)
        score = score_records(records, gt["keypoints"], gt["boxes"])
        row = {k: v[k] for k in ("name", "preset", "input_hw", "token_downsample", "levels", "precision")}
        row.update(pck_all=round(score["all"], 4), pck_body=round(score.get("body", float("nan")), 4),
                   matched=score["matched"], persons=score["persons"],
                   agreement_pck_vs_full=round(agreement(records, full_records, gt["boxes"]), 4))
        if v is not full:
            report = args.work / f"against_{v['name']}_{v['precision']}.json"
            sdpose_convert("validate", str(v["path"]), "--against", str(full["path"]), "--calib", str(calib),
                           "--no-write", "--json-out", str(report))
            section = json.loads(report.read_text())
            row["against_full"] = {
                "keypoint_displacement_mean_px": round(section["keypoint_displacement"]["mean_px"], 3),
                "agreement_pck": round(section["agreement_pck"]["share"], 4),
                "heatmap_cosine": round(section["heatmap_agreement"]["cosine"]["mean"], 4),
                "heatmap_channel_correlation": round(section["heatmap_agreement"]["channel_correlation"]["mean"], 4)}
        rows.append(row)
        log.info("%-22s %-5s PCK all %.1f %%  body %.1f %%  agreement with full %.1f %%", v["name"], v["precision"],
                 100 * row["pck_all"], 100 * row["pck_body"], 100 * row["agreement_pck_vs_full"])
    doc = {"what": "proxy PCK@0.05 per preset / token downsampling / precision on figures.mp4",
           "checkpoint": str(args.checkpoint), "proxy_input_hw": [h0, w0], "alpha": 0.05,
           "compile": {"inference_precision_hint": "f32", "performance_hint": "LATENCY"}, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
