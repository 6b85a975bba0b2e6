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
"""
from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from convert.figures import score_records  # noqa: E402
from edge_runtime.running.backends import delayed_backend_factory  # noqa: E402
from edge_runtime.model.estimator import PoseEstimator  # noqa: E402
from edge_runtime.media.sinks import ListSink  # noqa: E402
from edge_runtime.running.live import LiveConfig, LiveRunner, SourceRun  # noqa: E402
from edge_runtime.model.models import CompileOptions  # noqa: E402
from edge_runtime.media.detections import load_detections  # noqa: E402
from edge_runtime.running.pipeline import Pipeline, PipelineConfig  # noqa: E402
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
    parser.add_argument("--out", type=Path, default=None, help="write the table as JSON")
    parser.add_argument("--plot", type=Path, default=None, help="write a PNG plot (needs matplotlib)")
    return parser


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
    summary = Pipeline(est, [sink], PipelineConfig(progress=False), detections=dets).run(VideoFileSource(args.video))
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
