"""Keyframes, two-sided propagation and their placement: PCK@0.05 and jitter on drawn-figure videos.

    python scripts/keyframe_pck.py --models PROXY_MODELS --videos samples /tmp/seed1 ... \\
        [--budgets 2,5,10,20] [--out docs/keyframes_pck.json] [--plot docs/keyframes_pck.png]

Each video folder holds ``figures.mp4``, ``figures_detections.json`` and ``figures_gt.npz``
(``scripts/make_figures_video.py --seed N --frames 240 --out DIR``). For every video it runs the proxy
(``samples/proxy`` exported with ``sdpose-convert export``) with the ground-truth boxes on every frame:

- ``full``: every person recomputed on every frame (the file-mode pipeline);
- ``forward``: ``--schedule-poses --pose-budget 1/k --propagation forward`` (poses carried forward only);
- ``two-sided even``: two-sided, each track recomputed every k frames (no motion, scale or confidence triggers);
- ``two-sided need``: two-sided with the scheduler's placement by need (new tracks, motion, scale change,
  low confidence, pose age: ``TrackConfig`` triggers), keypoints following LK point flow;
- ``two-sided need + dense flow``: the same, with dense DIS flow where a point's flow fails its check: the
  default of ``sdpose-edge run --schedule-poses`` on files;
- ``two-sided need + dense flow + one-euro``: the same with ``--smooth one-euro`` (the keypoints of every
  output, smoothed per track), i.e. what ``sdpose-edge run --schedule-poses`` writes by default; ``full + one-euro``
  is full recompute with the same filter;
- further ``--variants`` (name=TrackConfig overrides as JSON) to compare propagation candidates.

Model outputs are cached by input (sha1 of the crop / latent): every setting crops the same ground-truth
boxes, so each crop runs the model once per process. PCK@0.05 (all keypoints and body) is scored as ``scripts/score_figures.py`` does; jitter is the mean absolute
second difference of each ground-truth person's matched keypoints over consecutive frames (image px), minus the
same of the ground truth. Deterministic (file mode): the same numbers on every run.
"""
from __future__ import annotations

import argparse
import dataclasses
import hashlib
import types
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from convert.figures import score_records  # noqa: E402
from edge_runtime.media.detections import load_detections  # noqa: E402
from edge_runtime.model.estimator import PoseEstimator  # noqa: E402
from edge_runtime.running.backends import OpenVINOBackend  # noqa: E402
from edge_runtime.running.live import LiveConfig, LiveRunner, SourceRun  # noqa: E402
from edge_runtime.model.models import CompileOptions  # noqa: E402
from edge_runtime.running.pipeline import Pipeline, PipelineConfig  # noqa: E402
from edge_runtime.running.results import FrameResult  # noqa: E402
from edge_runtime.media.sinks import ListSink  # noqa: E402
from edge_runtime.media.sources import VideoFileSource  # noqa: E402
from edge_runtime.running.tracking import box_iou  # noqa: E402
from edge_runtime.running.smoothing import SmoothConfig  # noqa: E402
from edge_runtime.running.tracks import TrackConfig  # noqa: E402

log = logging.getLogger("keyframe_pck")
#: placement of recomputes at fixed intervals: no triggers, a pose is due once it is k frames old
#: the default filter of `--smooth one-euro` (its built-in parameters)
ONE_EURO = SmoothConfig(method="one-euro")
EVEN = {"motion_threshold": float("inf"), "scale_threshold": float("inf"), "low_confidence": 0.0}


class _CachedRequest:
    """An infer request that answers an input it has seen from the cache (the model is deterministic and every
    setting crops the same ground-truth boxes): the settings then cost only their flow, not the model again."""

    def __init__(self, request: Any, cache: dict) -> None:
        self._request, self._cache, self._key, self._out = request, cache, b"", None

    def set_input_tensor(self, tensor: Any) -> None:
        self._key = hashlib.sha1(np.ascontiguousarray(tensor.data).tobytes()).digest()
        self._request.set_input_tensor(tensor)

    def infer(self) -> None:
        if self._key not in self._cache:
            self._request.infer()
            self._cache[self._key] = self._request.get_output_tensor(0).data.copy()
        self._out = self._cache[self._key]

    def get_output_tensor(self, index: int) -> Any:
        return types.SimpleNamespace(data=self._out)


class _CachedModel:
    def __init__(self, compiled: Any, cache: dict) -> None:
        self._compiled, self._cache = compiled, cache

    def create_infer_request(self) -> _CachedRequest:
        return _CachedRequest(self._compiled.create_infer_request(), self._cache)


def cached_backend_factory(cache: dict) -> Any:
    """Backends whose models answer repeated inputs from ``cache`` (one per process)."""
    def factory(stage: str, compiled: Any, num_requests: int, on_complete: Any) -> OpenVINOBackend:
        return OpenVINOBackend(stage, _CachedModel(compiled, cache), num_requests, on_complete)
    return factory


CACHE: dict = {}


def matched_tracks(results: list[FrameResult], gt_boxes: np.ndarray, k: int) -> np.ndarray:
    """[T,P,K,2] predicted keypoints of each ground-truth person (box IoU >= 0.3, as score_records), NaN where
    unmatched or where the matched person has no pose yet."""
    t_n, p_n = gt_boxes.shape[:2]
    out = np.full((t_n, p_n, k, 2), np.nan)
    for result in results:
        t = int(result.frame)
        if t >= t_n or not len(result.track_ids):
            continue
        iou = box_iou(gt_boxes[t].astype(np.float32), np.asarray(result.boxes_xyxy, np.float32))
        for p in range(p_n):
            j = int(np.argmax(iou[p]))
            if iou[p, j] >= 0.3:
                out[t, p] = result.keypoints[j]
    return out


def jitter(records: list[FrameResult], gt: Any) -> float:
    """Mean |second difference| of matched keypoints (px) minus that of the ground truth, on the same triples."""
    truth = gt["keypoints"].astype(np.float64)
    pred = matched_tracks(records, gt["boxes"], truth.shape[2])
    truth = truth[:, :, :pred.shape[2]]
    d2p = np.abs(pred[2:] - 2 * pred[1:-1] + pred[:-2])
    d2t = np.abs(truth[2:] - 2 * truth[1:-1] + truth[:-2])
    ok = np.isfinite(d2p)
    return float(d2p[ok].mean() - d2t[ok].mean()) if ok.any() else float("nan")


def run_scheduled(est: PoseEstimator, video: Path, dets: dict, budget: float, propagation: str,
                  track: TrackConfig, smooth: "SmoothConfig | None" = None) -> tuple[list[FrameResult], dict]:
    sink = ListSink()
    cfg = LiveConfig(mode="file", pose_budget=budget, propagation=propagation, track=track,
                     smooth=smooth or SmoothConfig())
    result = LiveRunner(est, cfg, detections=dets, backend_factory=cached_backend_factory(CACHE)).run([SourceRun("v", VideoFileSource(video), [sink])])
    return sink.results, result["total"]


def settings(k: int, fps: float, variants: dict[str, dict]) -> list[tuple[str, str, TrackConfig, SmoothConfig]]:
    """(name, propagation, track config, smoothing) of every setting at budget 1/k."""
    even = TrackConfig(max_pose_age_s=(k - 0.5) / fps, flow_model="points", **EVEN)
    out = [("forward", "forward", TrackConfig(flow_model="points")), ("two-sided even", "two-sided", even),
           ("two-sided need", "two-sided", TrackConfig(flow_model="points")),
           ("two-sided need + dense flow", "two-sided", TrackConfig(flow_model="dense"))]
    out = [(*setting, SmoothConfig()) for setting in out]
    out.append(("two-sided need + dense flow + one-euro", "two-sided", TrackConfig(flow_model="dense"), ONE_EURO))
    for name, overrides in variants.items():
        out.append((name, "two-sided", dataclasses.replace(TrackConfig(), **overrides), SmoothConfig()))
    return out


def measure_video(est: PoseEstimator, folder: Path, budgets: list[int], variants: dict[str, dict],
                  only: "set[str] | None" = None, full: bool = True) -> list[dict]:
    video, gt = folder / "figures.mp4", np.load(folder / "figures_gt.npz")
    dets = load_detections(folder / "figures_detections.json")
    fps = float(gt["fps"]) if "fps" in gt else 12.0
    rows: list[dict] = []

    def score(name: str, budget: float, records: list[FrameResult], recomputes: int) -> None:
        result = score_records(records, gt["keypoints"], gt["boxes"])
        person_frames = sum(len(r.track_ids) for r in records)
        rows.append({"video": folder.name, "setting": name, "budget": budget, "pck_all": round(result["all"], 4),
                     "pck_body": round(result.get("body", float("nan")), 4),
                     "jitter_px": round(jitter(records, gt), 4), "recomputes": recomputes,
                     "recompute_share": round(recomputes / max(person_frames, 1), 4)})
        log.info("%-10s %-22s 1/%-3g PCK all %.1f %% body %.1f %% jitter %+.3f px recomputes %.3f", folder.name,
                 name, round(1 / budget), 100 * rows[-1]["pck_all"], 100 * rows[-1]["pck_body"],
                 rows[-1]["jitter_px"], rows[-1]["recompute_share"])

    for name, smooth in (("full", SmoothConfig()), ("full + one-euro", ONE_EURO)):
        if full and (not only or name == "full" or name in only):
            sink = ListSink()
            summary = Pipeline(est, [sink], PipelineConfig(progress=False, smooth=smooth), detections=dets,
                               backend_factory=cached_backend_factory(CACHE)).run(VideoFileSource(video))
            score(name, 1.0, sink.results, summary["persons"])
    for k in budgets:
        for name, propagation, track, smooth in settings(k, fps, variants):
            if only and name not in only:
                continue
            records, total = run_scheduled(est, video, dets, 1.0 / k, propagation, track, smooth)
            score(name, 1.0 / k, records, total["pose_recomputes"])
    return rows


def relative_to_full(rows: list[dict]) -> None:
    """Each row's PCK as a share of its video's full-recompute PCK (pck_vs_full)."""
    full = {r["video"]: r["pck_all"] for r in rows if r["setting"] == "full"}  # the unsmoothed model
    for row in rows:
        row["pck_vs_full"] = round(row["pck_all"] / full[row["video"]], 4) if full.get(row["video"]) else None


def mean_table(rows: list[dict]) -> list[dict]:
    """Mean over the videos of each (setting, budget)."""
    keys = sorted({(r["setting"], r["budget"]) for r in rows}, key=lambda x: (x[0] != "full", x[0], -x[1]))
    out = []
    for setting, budget in keys:
        sel = [r for r in rows if r["setting"] == setting and r["budget"] == budget]
        out.append({"setting": setting, "budget": budget, "videos": len(sel),
                    **{m: round(float(np.mean([r[m] for r in sel if r[m] is not None])), 4) if any(
                        r[m] is not None for r in sel) else None
                       for m in ("pck_all", "pck_body", "jitter_px", "pck_vs_full", "recompute_share")}})
    return out


def plot(table: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    full = next(r["pck_all"] for r in table if r["setting"] == "full")
    for setting in dict.fromkeys(r["setting"] for r in table if not r["setting"].startswith("full")):
        pts = sorted((r["budget"], 100 * r["pck_all"]) for r in table if r["setting"] == setting)
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label=setting)
    ax.axhline(100 * full, color="k", lw=1, ls=":", label=f"full recompute ({100 * full:.1f} %)")
    ax.axhline(90 * full, color="grey", lw=1, ls="--", label="90 % of full")
    ax.set_xscale("log")
    ax.set_xticks([0.05, 0.1, 0.2, 0.5], ["1/20", "1/10", "1/5", "1/2"])
    ax.minorticks_off()
    ax.set_xlabel("pose budget (recomputes per person-frame)")
    ax.set_ylabel("PCK@0.05, all keypoints (%), mean over videos")
    ax.set_title("Proxy on figure videos: keyframes and propagation")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, help="the proxy converted by sdpose-convert")
    parser.add_argument("--videos", nargs="+", type=Path, default=[], help="folders of make_figures_video.py")
    parser.add_argument("--from-json", nargs="+", type=Path, default=[], help="instead of running: merge the "
                        "rows of earlier --out files (e.g. videos measured in parallel)")
    parser.add_argument("--budgets", default="2,5,10,20", help="k of the 1/k pose budgets")
    parser.add_argument("--variants", default="{}", help='JSON {"name": {TrackConfig field: value}}: more '
                        "two-sided settings (propagation candidates)")
    parser.add_argument("--no-full", action="store_true", help="skip the full-recompute run (merge it from "
                        "another --out file with --from-json)")
    parser.add_argument("--only", default="", help="comma list: run only these settings (and full)")
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG plot (needs matplotlib)")
    return parser


def main(argv: "list[str] | None" = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    for name in ("edge_runtime", "edge_runtime.running.live"):
        logging.getLogger(name).setLevel(logging.WARNING)
    merged = {(r["video"], r["setting"], r["budget"]): r for path in args.from_json
              for r in json.loads(path.read_text())["rows"]}
    rows = list(merged.values())  # a setting measured twice (deterministic: the same numbers) counts once
    if args.videos:
        if args.models is None:
            parser.error("--models is needed to measure --videos")
        est = PoseEstimator(args.models, options=CompileOptions(cache_dir=None, inference_precision="f32",
                                                                performance_hint="LATENCY", num_requests=1))
        budgets = [int(v) for v in args.budgets.split(",") if v]
        rows += [r for folder in args.videos for r in measure_video(est, folder, budgets, json.loads(args.variants),
                                                                    set(filter(None, args.only.split(","))),
                                                                    not args.no_full)]
    relative_to_full(rows)
    table = mean_table(rows)
    for r in table:
        log.info("mean %-22s %-5s PCK all %.1f %% (%.1f %% of full) body %.1f %% jitter %+.3f px", r["setting"],
                 f"1/{round(1 / r['budget'])}", 100 * r["pck_all"], 100 * (r["pck_vs_full"] or 0), 100 * r["pck_body"],
                 r["jitter_px"])
    if args.out:
        doc = {"models": str(args.models), "videos": sorted({r["video"] for r in rows}), "alpha": 0.05,
               "mean": table, "rows": rows}
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    if args.plot:
        plot(table, args.plot)
    return 0


if __name__ == "__main__":
    sys.exit(main())
