"""Local versus remote pose chain on one machine over loopback: what the KServe v2 hop costs per crop.

    python scripts/remote_bench.py --models MODELS [--crops 3] [--transport-crops 20] [--out docs/remote_bench.json]
        [--server-models sdpose sdpose_keypoints] [--transport-only]

Two measurements, each with ``sdpose-edge serve`` started here on 127.0.0.1 and compiled exactly as the local
side (LATENCY hint, one request, f32 precision hint: the per-ISA default for INT8 on CPUs without AMX), so the
difference is the hop alone:

1. **Transport** (payload of the real size, almost no compute): a model folder with the fake models of the
   tests at MODELS' input size and keypoint count (crop u8 [N,h,w,3] in, heatmaps f32 [N,K,h/4,w/4] out).
   Per crop: remote minus local seconds, gRPC and REST, batch 1 and 4 = serialisation + copies + loopback.
   Then, per served model of ``--server-models`` (``sdpose``: heatmaps down, decoded in the client with numpy;
   ``sdpose_keypoints``: decoded on the server, keypoints [N,K,3] down), the bytes per crop and the end-to-end
   seconds per crop and crops/s of the client (request, answer and decoding: ``infer`` + ``postprocess``), against
   the local chain with numpy decoding. ``--transport-only`` stops there (no compute model needed: MODELS gives
   only the input size and keypoint count, e.g. a fake folder of the full size).
2. **Compute** (MODELS, e.g. the full-size INT8 folder): per crop local and remote (gRPC, batch 1), interleaved,
   ``--crops`` each. The overhead ratio is the transport cost of (1) over the local compute time of (2).

Then the throughput of each side with requests in flight (local: 2 requests on the THROUGHPUT hint; remote:
2 in flight to a THROUGHPUT server), as ``--crops`` crops in a row. The client and the server share this
machine's cores, so remote throughput here is a lower bound of a separate server's.
"""
from __future__ import annotations

import argparse
import json
import logging
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from edge_bench.serve_process import ServeProcess  # noqa: E402
from edge_runtime.model.cpu import cpu_info  # noqa: E402
from edge_runtime.model.chain import ChainRunner  # noqa: E402
from edge_runtime.model.estimator import PoseEstimator  # noqa: E402
from edge_runtime.model.models import CompileOptions, ModelFolder  # noqa: E402
from edge_runtime.serving.remote import RemotePoseEstimator  # noqa: E402

log = logging.getLogger("remote_bench")


def start_server(models: Path, hint: str, requests: int, log_path: Path) -> ServeProcess:
    """``sdpose-edge serve`` compiled as the local side (f32 hint, ``hint``, ``requests`` per model)."""
    return ServeProcess(models, log_path, extra=("--hint", hint, "--num-requests", str(requests), "--precision-hint",
                                                 "f32", "--cache-dir", str(log_path.parent / "cache"))).start(900)


def crops_for(est: PoseEstimator, n: int, seed: int = 0) -> np.ndarray:
    w, h = est.input_size
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def time_infer(est: PoseEstimator, crops: np.ndarray) -> float:
    t0 = time.perf_counter()
    est.infer(crops)
    return time.perf_counter() - t0


def transport(models: Path, work: Path, n: int, names: "list[str]") -> dict:
    sys.path.insert(0, str(ROOT / "tests"))
    from fake_models import build_fake_model_folder

    meta = ModelFolder(models).pose_meta
    size = (int(meta["input_width"]), int(meta["input_height"]))
    scheme = "wholebody" if int(meta["num_keypoints"]) == 133 else "body"
    fake = build_fake_model_folder(work / "fake_full", scheme=scheme, input_size=size, fused=False)
    options = CompileOptions(performance_hint="LATENCY", inference_precision="f32", cache_dir=None, num_requests=1)
    local = PoseEstimator(fake, options=options)
    server = start_server(fake, "LATENCY", 1, work / "serve_fake.log")
    out: dict = {"input_size_wh": list(size), "num_keypoints": int(meta["num_keypoints"])}
    try:
        for batch in (1, 4):
            crops = crops_for(local, batch)
            local.max_batch = batch
            time_infer(local, crops)
            loc = [time_infer(local, crops) / batch for _ in range(n)]
            out[f"local_batch{batch}_s_per_crop"] = statistics.median(loc)
            for proto, url in (("grpc", server.grpc_url),
                               ("http", server.http_url)):
                remote = RemotePoseEstimator(fake, url)
                remote.max_batch = batch
                time_infer(remote, crops)
                rem = [time_infer(remote, crops) / batch for _ in range(n)]
                out[f"{proto}_batch{batch}_s_per_crop"] = statistics.median(rem)
                out[f"{proto}_batch{batch}_overhead_s_per_crop"] = statistics.median(rem) - statistics.median(loc)
        w, h = size
        k = int(meta["num_keypoints"])
        out["request_bytes_per_crop"] = h * w * 3
        out["response_bytes_per_crop"] = k * (h // 4) * (w // 4) * 4
        out["served_models"] = served_models(fake, server, names, n)
    finally:
        server.stop()
    return out


def time_e2e(est: PoseEstimator, crops: np.ndarray, boxes: np.ndarray) -> float:
    """Seconds for crops -> keypoints in image px: the chain (local or remote) and the client's decoding."""
    t0 = time.perf_counter()
    est.postprocess(est.infer(crops), boxes)
    return time.perf_counter() - t0


def served_models(fake: Path, server: ServeProcess, names: "list[str]", n: int) -> dict:
    """Bytes per crop and end-to-end seconds per crop / crops per s of each served model, gRPC and REST, batch 1
    and 4, against the local chain (numpy decoding)."""
    options = CompileOptions(performance_hint="LATENCY", inference_precision="f32", cache_dir=None, num_requests=1)
    local = PoseEstimator(fake, options=options, decode="numpy")
    w, h = local.input_size
    k = local.num_keypoints
    out: dict = {"request_bytes_per_crop": h * w * 3}
    for batch in (1, 4):
        crops = crops_for(local, batch)
        boxes = np.tile(np.array([[0, 0, w, h]], np.float32), (batch, 1))
        local.max_batch = batch
        time_e2e(local, crops, boxes)
        loc = statistics.median(time_e2e(local, crops, boxes) / batch for _ in range(n))
        out[f"local_batch{batch}_e2e_s_per_crop"] = loc
        for name in names:
            for proto, url in (("grpc", server.grpc_url), ("http", server.http_url)):
                remote = RemotePoseEstimator(fake, url, model_name=name, decode="numpy")
                remote.max_batch = batch
                out[f"{name}_response_bytes_per_crop"] = k * 3 * 4 if remote.chain_keypoints else \
                    k * (h // 4) * (w // 4) * 4
                time_e2e(remote, crops, boxes)
                rem = statistics.median(time_e2e(remote, crops, boxes) / batch for _ in range(n))
                out[f"{name}_{proto}_batch{batch}_e2e_s_per_crop"] = rem
                out[f"{name}_{proto}_batch{batch}_crops_per_s"] = 1.0 / rem
                log.info("%s %s batch %d: %.4f s per crop end to end (local %.4f)", name, proto, batch, rem, loc)
    return out


def compute(models: Path, work: Path, n: int) -> dict:
    options = CompileOptions(performance_hint="LATENCY", inference_precision="f32", cache_dir=None, num_requests=1)
    local = PoseEstimator(models, options=options)
    server = start_server(models, "LATENCY", 1, work / "serve_models.log")
    try:
        remote = RemotePoseEstimator(models, server.grpc_url)
        crops = crops_for(local, 1)
        time_infer(local, crops), time_infer(remote, crops)  # warm-up
        loc, rem = [], []
        for i in range(n):  # interleaved
            loc.append(time_infer(local, crops_for(local, 1, seed=i)))
            rem.append(time_infer(remote, crops_for(local, 1, seed=i)))
            log.info("crop %d: local %.2f s, remote %.2f s", i, loc[-1], rem[-1])
    finally:
        server.stop()
        del local
    return {"local_s_per_crop": statistics.median(loc), "remote_grpc_s_per_crop": statistics.median(rem),
            "local_runs_s": loc, "remote_runs_s": rem}


def throughput(models: Path, work: Path, n: int) -> dict:
    """Crops per second with 2 requests in flight, local THROUGHPUT vs a THROUGHPUT server."""
    def chain_local(est: PoseEstimator):
        return ChainRunner.of(est.compiled).run  # one request per component per thread

    def run(est: PoseEstimator) -> float:
        crops = crops_for(est, 1)
        infers = [chain_local(est) if isinstance(est, PoseEstimator) else est.infer for _ in range(2)]
        threads = [threading.Thread(target=lambda f=f: [f(crops) for _ in range(n // 2)]) for f in infers]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return (2 * (n // 2)) / (time.perf_counter() - t0)

    local = PoseEstimator(models, options=CompileOptions(performance_hint="THROUGHPUT", inference_precision="f32",
                                                         cache_dir=None))
    local_rate = run(local)
    del local
    server = start_server(models, "THROUGHPUT", 2, work / "serve_tput.log")
    try:
        remote_rate = run(RemotePoseEstimator(models, server.grpc_url, in_flight=2))
    finally:
        server.stop()
    return {"local_crops_per_s": local_rate, "remote_grpc_crops_per_s": remote_rate, "crops": 2 * (n // 2)}


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", required=True, type=Path)
    parser.add_argument("--crops", type=int, default=3)
    parser.add_argument("--transport-crops", type=int, default=20)
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--server-models", nargs="+", default=["sdpose", "sdpose_keypoints"],
                        help="served models compared end to end (sdpose: heatmaps decoded here; sdpose_keypoints: "
                             "decoded on the server)")
    parser.add_argument("--transport-only", action="store_true", help="only the transport part (fake models)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "remote_bench.json")
    return parser


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    cpu = cpu_info()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        result = {"cpu": cpu.to_dict(), "models": str(args.models),
                  "transport": transport(args.models, work, args.transport_crops, args.server_models)}
        log.info("transport: %s", result["transport"])
        if args.transport_only:
            args.out.write_text(json.dumps(result, indent=1) + "\n")
            log.info("-> %s", args.out)
            return 0
        result["compute"] = compute(args.models, work, args.crops)
        log.info("compute: %s", result["compute"])
        if not args.skip_throughput:
            result["throughput"] = throughput(args.models, work, args.crops * 2)
            log.info("throughput: %s", result["throughput"])
    t = result["transport"]
    c = result["compute"]
    result["overhead_ratio"] = {key: t[f"{key}_overhead_s_per_crop"] / c["local_s_per_crop"]
                                for key in ("grpc_batch1", "grpc_batch4", "http_batch1", "http_batch4")}
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    log.info("overhead / compute: %s -> %s", result["overhead_ratio"], args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
