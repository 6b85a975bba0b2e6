"""What pose scheduling and keypoint propagation cost in accuracy: PCK@0.05 on the drawn-figures video.

    python scripts/live_pck.py --models PROXY_MODELS [--out docs/live_pck.json] [--plot docs/live_pck.png]

Runs the proxy (a tiny SDPose-architecture model trained on drawn figures, ``samples/proxy``, converted with
``sdpose-convert export``) over ``samples/figures.mp4`` (3 figures walking, turning, waving, crossing and
occluding each other; exact ground truth in ``samples/figures_gt.npz``) with the person boxes of
``samples/figures_detections.json`` on every frame, and scores against the ground truth:

- ``full``: every person recomputed on every frame (file mode, the pipeline of ``sdpose-edge run``);
- ``scheduled 1/k``: the live scheduler (``--schedule-poses --pose-budget 1/k``) with keypoint propagation
  (pyramidal LK flow with a forward-backward check) between recomputes;
- ``stale 1/k``: the same recomputes, keypoints left where the model put them (boxes still follow the
  detections): what carrying the last pose without propagation gives.

File mode applies each pose on the frame it was computed on (no pose latency); live runs add the pose
latency on top, which propagation then also has to cover. Deterministic: same numbers on every run.

Live with a bounded delay (``--delay-ms 0,500,2000 --pose-latency 0.25 --smooth none,one-euro``): the video paced
at its fps as a camera, each pose (VAE + pose requests together) made ``--pose-latency`` s slower (the delayed
backend) over a model that answers the crops of the full run from their cache (``keyframe_pck.py``), so the
pose latency is that fixed one and not the model's time on a loaded machine; output held
``--delay-ms`` (two-sided where the next pose comes back in time), each with each ``--smooth`` method; PCK,
jitter (``convert.figures.keypoint_jitter``: excess over the ground truth's, px) and the measured
capture-to-output latency. Not deterministic (live timing on a real clock).

    python scripts/live_pck.py --models PROXY_MODELS --budgets "" --delay-ms 0,500,2000 --pose-latency 0.25 \
        --smooth none,one-euro --out delay.json
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from convert.figures import keypoint_jitter, score_records  # noqa: E402
from edge_runtime.running.backends import delayed_backend_factory  # noqa: E402
from edge_runtime.model.estimator import PoseEstimator  # noqa: E402
from edge_runtime.media.sinks import ListSink  # noqa: E402
from edge_runtime.running.live import LiveConfig, LiveRunner, SourceRun  # noqa: E402
from edge_runtime.model.models import CompileOptions  # noqa: E402
from edge_runtime.media.detections import load_detections  # noqa: E402
from edge_runtime.running.pipeline import Pipeline, PipelineConfig  # noqa: E402
from edge_runtime.running.smoothing import SmoothConfig  # noqa: E402
from edge_runtime.media.sources import VideoFileSource  # noqa: E402
from edge_runtime.running.tracks import TrackConfig  # noqa: E402

SAMPLES = Path(__file__).resolve().parent.parent / "samples"
log = logging.getLogger("live_pck")


Collect = ListSink  # every FrameResult of a run, in memory


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, type=Path, help="the proxy converted by sdpose-convert")
    parser.add_argument("--video", type=Path, default=SAMPLES / "figures.mp4")
    parser.add_argument("--detections", type=Path, default=SAMPLES / "figures_detections.json")
    parser.add_argument("--gt", type=Path, default=SAMPLES / "figures_gt.npz")
    parser.add_argument("--budgets", default="2,5,10,20", help="k of the 1/k pose budgets")
    parser.add_argument("--live-delays", default="", help="also run live (paced 12 fps) with these seconds added "
                        "to every pose request, e.g. 0.25,1")
    parser.add_argument("--delay-ms", default="", help="live runs with these output delays (ms), e.g. 0,500,2000, "
                        "at the fixed --pose-latency")
    parser.add_argument("--pose-latency", type=float, default=0.25, help="seconds added to every pose request in "
                        "the --delay-ms runs")
    parser.add_argument("--flow-model", default=None, choices=("points", "dense", "bones"),
                        help="--delay-ms runs: keypoint flow (default: live mode's, points)")
    parser.add_argument("--smooth", default="none", help="--delay-ms runs: smoothing methods, e.g. none,one-euro")
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG plot (needs matplotlib)")
    return parser


def delayed_live_run(est: PoseEstimator, args: argparse.Namespace, dets: dict, gt: Any, delay_ms: float,
                     smooth: str) -> dict:
    """One live run: the video paced as a camera, poses ``--pose-latency`` s slower, output held ``delay_ms``."""
    from keyframe_pck import CACHE, _CachedModel  # scripts/ is on the path when this runs as a script

    delayed = delayed_backend_factory(args.pose_latency / len(est.kinds))  # the chain's requests add up to it

    def factory(stage: str, compiled: Any, num_requests: int, on_complete: Any) -> Any:
        # crops the full run already computed answer from the cache: the latency is the fixed one, not the
        # model's on a loaded machine
        return delayed(stage, _CachedModel(compiled, CACHE), num_requests, on_complete)
    sink = Collect()
    cfg = LiveConfig(mode="live", live_queue_size=8, delay_ms=delay_ms, smooth=SmoothConfig(method=smooth),
                     track=TrackConfig(flow_model=args.flow_model))
    result = LiveRunner(est, cfg, detections=dets, backend_factory=factory).run(
        [SourceRun("figures", VideoFileSource(args.video), [sink])])
    total, source = result["total"], result["sources"]["figures"]
    pck = score_records(sink.results, gt["keypoints"], gt["boxes"])
    posed = [r.with_pose() for r in sink.results]  # persons without a pose yet left out
    jit = keypoint_jitter(posed, gt["keypoints"], gt["boxes"])
    replay = {}
    if smooth == "none":  # the default filter replayed over this very run: one-euro against none, paired
        from smooth_sweep import smoothed_records

        euro = smoothed_records(posed, SmoothConfig(method="one-euro"))
        euro_jit = keypoint_jitter(euro, gt["keypoints"], gt["boxes"])
        replay = {"replay_one_euro_pck_all": round(score_records(euro, gt["keypoints"], gt["boxes"])["all"], 4),
                  "replay_one_euro_excess_jitter_px": round(euro_jit["jitter_px"] - euro_jit["jitter_gt_px"], 4)}
    persons = [p for r in sink.records for p in r["persons"]]
    latency = total["latency_ms"].get("frame_latency", {})
    row = {"setting": f"live +{args.pose_latency:g} s/pose, delay {delay_ms:g} ms, smooth {smooth}",
           "delay_ms": delay_ms, "smooth": smooth, "pose_latency_s": args.pose_latency, "budget": None,
           "propagation": source["propagation"], "flow_model": cfg.track.flow_model, "pck_all": round(pck["all"], 4),
           "pck_body": round(pck.get("body", float("nan")), 4),
           "excess_jitter_px": round(jit["jitter_px"] - jit["jitter_gt_px"], 4),
           "jitter_triples": jit["jitter_triples"],
           "recomputes": total["pose_recomputes"], "frames_in": total["frames_in"], "frames_out": total["frames_out"],
           "interpolated_share": round(sum(bool(p.get("interpolated")) for p in persons) / max(len(persons), 1), 4),
           "frame_latency_ms_p50": latency.get("p50"), "frame_latency_ms_p95": latency.get("p95"),
           "propagate_ms_mean": source["latency_ms"].get("propagate", {}).get("mean"),
           "carry_ms_mean": source["latency_ms"].get("carry_forward", {}).get("mean"),
           "matched": pck["matched"], "persons": pck["persons"], **replay}
    log.info("%s: PCK all %.1f %% body %.1f %%, excess jitter %+.2f px, interpolated %.0f %%, frames %d/%d, "
             "latency p50 %s ms", row["setting"], 100 * row["pck_all"], 100 * row["pck_body"], row["excess_jitter_px"],
             100 * row["interpolated_share"], row["frames_out"], row["frames_in"], row["frame_latency_ms_p50"])
    return row


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    gt = np.load(args.gt)
    dets = load_detections(args.detections)
    est = PoseEstimator(args.models, options=CompileOptions(cache_dir=None, inference_precision="f32",
                                                            performance_hint="LATENCY", num_requests=1))
    rows = []

    def score(name: str, budget: "float | None", results: list, recomputes: int) -> None:
        result = score_records(results, gt["keypoints"], gt["boxes"])
        person_frames = sum(len(r.track_ids) for r in results)
        rows.append({"setting": name, "budget": budget, "pck_all": round(result["all"], 4),
                     "pck_body": round(result.get("body", float("nan")), 4), "recomputes": recomputes,
                     "recompute_share": round(recomputes / max(person_frames, 1), 4),
                     "matched": result["matched"], "persons": result["persons"]})
        log.info("%-16s PCK all %.1f %%  body %.1f %%  recomputes %d (%.3f of person-frames)", name,
                 100 * result["all"], 100 * result.get("body", 0), recomputes, rows[-1]["recompute_share"])

    sink = Collect()
    factory = None
    if args.delay_ms:  # the full run fills the crop cache of the --delay-ms runs
        from keyframe_pck import CACHE, cached_backend_factory

        factory = cached_backend_factory(CACHE)
    summary = Pipeline(est, [sink], PipelineConfig(progress=False), detections=dets, backend_factory=factory).run(
        VideoFileSource(args.video))
    score("full", 1.0, sink.results, summary["persons"])
    full_pck = rows[0]["pck_all"]
    for k in [int(v) for v in args.budgets.split(",") if v]:
        for propagate in (True, False):
            sink = Collect()
            cfg = LiveConfig(mode="file", pose_budget=1.0 / k, propagation="forward",
                             track=TrackConfig(propagate=propagate))
            result = LiveRunner(est, cfg, detections=dets).run([SourceRun("figures", VideoFileSource(args.video),
                                                                          [sink])])
            score(f"{'scheduled' if propagate else 'stale'} 1/{k}", 1.0 / k, sink.results,
                  result["total"]["pose_recomputes"])
    for delay in [float(v) for v in args.live_delays.split(",") if v]:
        # live: the video paced at its 12 fps, each pose request made slow by ``delay`` seconds, so poses
        # arrive late and are carried forward from the frame the model saw (not deterministic)
        sink = Collect()

        result = LiveRunner(est, LiveConfig(mode="live", live_queue_size=8), detections=dets,
                            backend_factory=delayed_backend_factory(delay)).run(
            [SourceRun("figures", VideoFileSource(args.video), [sink])])
        ages = [float(a) for r in sink.results if r.pose_age_ms is not None for a in r.pose_age_ms[r.has_pose]]
        score(f"live, +{delay:g} s/pose", None, sink.results, result["total"]["pose_recomputes"])
        rows[-1].update(pose_age_ms_mean=round(float(np.mean(ages)), 1) if ages else None,
                        frames_out=result["total"]["frames_out"], frames_in=result["total"]["frames_in"])
    for delay_ms in [float(v) for v in args.delay_ms.split(",") if v]:
        for method in [v for v in args.smooth.split(",") if v]:
            rows.append(delayed_live_run(est, args, dets, gt, delay_ms, method))
    for row in rows:
        row["pck_vs_full"] = round(row["pck_all"] / full_pck, 4) if full_pck else None
    doc = {"video": str(args.video.name), "models": str(args.models), "alpha": 0.05, "rows": rows}
    if args.out:
        args.out.write_text(json.dumps(doc, indent=2) + "\n")
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(6, 4))
        for kind, marker in (("scheduled", "o-"), ("stale", "s--")):
            pts = [(r["budget"], 100 * r["pck_all"]) for r in rows if r["setting"].startswith(kind) and r["budget"]]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker, label=f"{kind} (1/k budgets)")
        ax.axhline(100 * full_pck, color="k", lw=1, ls=":", label=f"full recompute ({100 * full_pck:.1f} %)")
        ax.axhline(90 * full_pck, color="grey", lw=1, ls="--", label="90 % of full recompute")
        ax.set_ylim(0, 100)
        ax.set_xscale("log")
        ax.set_xticks([0.05, 0.1, 0.2, 0.5, 1.0], ["1/20", "1/10", "1/5", "1/2", "1"])
        ax.set_xlabel("pose recomputes per person-frame (budget)")
        ax.set_ylabel("PCK@0.05 (%)")
        ax.set_title("Proxy on figures.mp4: propagation vs stale keypoints")
        ax.legend()
        fig.tight_layout()
        fig.savefig(args.plot, dpi=100)
    return 0


if __name__ == "__main__":
    sys.exit(main())
