"""Live defaults on a small CPU: two loopback MJPEG cameras through one ``sdpose-edge run`` process, per setting.

    python scripts/live_defaults_bench.py --models MODELS [--frames 600] [--fps 12] [--cameras 2]
        [--variant NAME=OPTIONS ...] [--json-out F.json]

Each camera is an MJPEG server on 127.0.0.1 (``scripts/soak.py``'s Streamer, here in this process) looping
``samples/people.mp4`` (3 persons) at ``--fps``; ``sdpose-edge run`` reads both in one live process with the
boxes of ``samples/people_detections.json`` given for every frame (``--detections``, keyed by frame index), for
``--frames`` frames per camera. Every variant is one such run (a child process) with its extra options, e.g.
``latency1="--hint LATENCY --num-requests 1"``; ``nice`` in the options (``"nice --hint ..."``) additionally
runs every thread of the child except the main (coordinator) thread and the capture threads at nice +10 from
outside the runtime (how ``--inference-nice`` was first tried), and ``root=DIR`` runs another checkout's
edge_runtime (e.g. an older commit's defaults). Reported per variant:
frames out / in, capture-to-output p50 / p95, pose recomputes per minute, the share of output frames with every
given person in it (all tracked persons) and with a pose for every person, and what the runtime chose
(``compile_choice`` of summary.json). Random weights: speed is real, keypoints are not.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "samples"
log = logging.getLogger("live_defaults_bench")
#: the default comparison: what the issue measured, and the rules considered for the runtime's choice
DEFAULT_VARIANTS = (
    "throughput=--hint THROUGHPUT --num-threads 2 --num-requests 2 --inference-nice 0",
    "latency1=--hint LATENCY --num-requests 1 --num-threads 2 --inference-nice 0",
    "latency1-t1=--inference-nice 0",
    "auto=",
    "auto-t2=--num-threads 2",
    "auto-slots1=--chain-slots 1",
)


def _renice_loop(stop: threading.Event, nice: int) -> None:
    """Every 0.5 s: nice +``nice`` for every thread of this process but the main and capture threads."""
    keep = {threading.main_thread().native_id}
    while not stop.wait(0.5):
        keep |= {t.native_id for t in threading.enumerate() if t.name.startswith("sdpose-capture-")}
        for tid in os.listdir("/proc/self/task"):
            if int(tid) in keep:
                continue
            try:
                if os.getpriority(os.PRIO_PROCESS, int(tid)) < nice:
                    os.setpriority(os.PRIO_PROCESS, int(tid), nice)
            except OSError:
                pass  # the thread ended


def child(argv: list[str]) -> int:
    """Run ``sdpose-edge run argv`` here (edge_runtime from the first PYTHONPATH entry); with a leading
    ``nice``, inference threads at nice +10."""
    sys.path.insert(0, os.environ.get("PYTHONPATH", str(ROOT)).split(os.pathsep)[0])
    from edge_runtime.cli import main

    if argv and argv[0] == "nice":
        argv = argv[1:]
        threading.Thread(target=_renice_loop, args=(threading.Event(), 10), daemon=True).start()
    return main(argv)


def score(out: Path, boxes_per_frame: dict[int, int]) -> dict:
    """Figures of one run from its summary.json and per-camera predictions.jsonl."""
    from edge_runtime.running.records import read_predictions  # here: the runs themselves may use root=DIR's runtime

    summary = json.loads((out / "summary.json").read_text())
    frames = all_in = all_posed = 0
    for name in summary["sources"]:
        for result in read_predictions(out / name / "predictions.jsonl"):
            frames += 1
            want = boxes_per_frame[int(result.frame) % len(boxes_per_frame)]
            all_in += len(result.track_ids) >= want
            all_posed += len(result.track_ids) >= want and bool(result.has_pose.all())
    lat = summary["latency_ms"]["frame_latency"]
    pose_ms = summary["latency_ms"].get("pose", {})
    return {"frames_in": summary["frames_in"], "frames_out": summary["frames_out"],
            "output_share": round(summary["frames_out"] / max(summary["frames_in"], 1), 4),
            "latency_p50_ms": lat.get("p50"), "latency_p95_ms": lat.get("p95"),
            "pose_recomputes": summary["pose_recomputes"],
            "pose_recomputes_per_min": round(summary["pose_recomputes"] / summary["wall_s"] * 60.0, 2),
            "pose_request_p50_ms": pose_ms.get("p50"),
            "frames_with_all_persons": round(all_in / max(frames, 1), 4),
            "frames_with_all_poses": round(all_posed / max(frames, 1), 4),
            "person_presence": summary.get("person_presence"), "pose_presence": summary.get("pose_presence"),
            "compile_choice": summary.get("compile_choice"), "threads_reniced": summary.get("threads_reniced"),
            "wall_s": summary["wall_s"]}


def run_variant(name: str, options: str, args: argparse.Namespace, jpegs: list[bytes], dets: Path,
                boxes_per_frame: dict[int, int], work: Path) -> dict:
    from soak import Streamer  # the loopback MJPEG server of the soak benchmark

    """One run; ``options``: extra ``sdpose-edge run`` options, after the bench's own words ``nice`` (inference
    threads at nice +10) and ``root=DIR`` (run the edge_runtime of another checkout, e.g. an older commit's
    defaults)."""
    words = shlex.split(options)
    root = next((w[5:] for w in words if w.startswith("root=")), str(ROOT))
    extra = [w for w in words if w != "nice" and not w.startswith("root=")]
    streamers = [Streamer(jpegs, args.fps, 10 ** 9) for _ in range(args.cameras)]
    out = work / name
    cmd = [sys.executable, __file__, "--child"] + (["nice"] if "nice" in words else []) + [
        "run", "--models", str(args.models), "--output", str(out), "--detections", str(dets),
        "--max-frames", str(args.frames), "--no-cache"] + [a for s in streamers for a in ("--source", s.url)] + extra
    log.info("%s: %s (edge_runtime from %s)", name, " ".join(cmd[2:]), root)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=dict(os.environ, PYTHONPATH=root), capture_output=True, text=True,
                          cwd=root)  # that checkout's configs/edge.yaml
    for s in streamers:
        s.close()
    if not (out / "summary.json").is_file() or "frames_in" not in json.loads((out / "summary.json").read_text()):
        log.error("%s failed (%d): %s", name, proc.returncode, proc.stderr[-2000:])
        return {"options": options, "error": proc.stderr[-500:]}
    if proc.returncode != 0:  # e.g. the process aborted at exit after writing its outputs
        log.warning("%s: exit code %d after writing its outputs: %s", name, proc.returncode, proc.stderr[-300:])
    figures = score(out, boxes_per_frame)
    figures.update(options=options, run_s=round(time.perf_counter() - t0, 1), exit_code=proc.returncode)
    log.info("%s: %s", name, json.dumps(figures))
    return figures


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, type=Path)
    parser.add_argument("--frames", type=int, default=600, help="frames per camera")
    parser.add_argument("--fps", type=float, default=12.0)
    parser.add_argument("--cameras", type=int, default=2)
    parser.add_argument("--variant", action="append", default=None, help="NAME=OPTIONS (repeat)")
    parser.add_argument("--json-out", type=Path, default=None)
    return parser


def main(argv: "list[str] | None" = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        logging.basicConfig(level=logging.WARNING)
        return child(argv[1:])
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    sys.path.insert(0, str(ROOT / "scripts"))
    sys.path.insert(0, str(ROOT))
    from soak import video_jpegs

    jpegs = video_jpegs(SAMPLES / "people.mp4")
    raw = json.loads((SAMPLES / "people_detections.json").read_text())
    boxes_per_frame = {i: len(raw[str(i)]) for i in range(len(jpegs))}
    results = {}
    with tempfile.TemporaryDirectory(prefix="live_defaults_") as tmp:
        work = Path(tmp)
        dets = work / "detections.json"  # camera frame i shows video frame i % len
        dets.write_text(json.dumps({str(i): raw[str(i % len(jpegs))] for i in range(args.frames + 100)}))
        for spec in args.variant or DEFAULT_VARIANTS:
            name, _, options = spec.partition("=")
            results[name] = run_variant(name, options, args, jpegs, dets, boxes_per_frame, work)
    from edge_runtime.model.cpu import cpu_info

    doc = {"cpu": cpu_info().to_dict(), "cores": len(os.sched_getaffinity(0)), "models": str(args.models),
           "cameras": args.cameras, "fps": args.fps, "frames_per_camera": args.frames, "variants": results}
    text = json.dumps(doc, indent=2)
    log.info("%s", text)
    if args.json_out:
        args.json_out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
