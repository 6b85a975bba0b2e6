"""The pose chain on a KServe v2 server: ``sdpose-edge serve`` started on 127.0.0.1 inside the tests, and
``sdpose-edge run --pose-server`` / :class:`RemotePoseEstimator` as its client (tritonclient, gRPC and REST).

The server runs in its own process: kserve and tritonclient register the same protobuf names and cannot share
one process (edge_runtime/serving/serve.py)."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tritonclient.grpc", reason="the remote client needs the remote extra")
pytest.importorskip("tritonclient.http", reason="the remote client needs the remote extra")
if importlib.util.find_spec("kserve") is None:  # the server runs in a child process: never import kserve here
    pytest.skip("sdpose-edge serve needs the serve extra (pip install '.[serve]')", allow_module_level=True)

from edge_bench.serve_process import ServeProcess, free_port  # noqa: E402
from edge_runtime.cli import main  # noqa: E402
from edge_runtime.errors import InputError  # noqa: E402
from edge_runtime.model.estimator import PoseEstimator  # noqa: E402
from edge_runtime.model.models import CompileOptions  # noqa: E402
from edge_runtime.running.live import LiveConfig, LiveRunner, SourceRun  # noqa: E402
from edge_runtime.running.pipeline import Pipeline, PipelineConfig  # noqa: E402
from edge_runtime.serving.remote import PoseServerError, RemotePoseEstimator, ServerAddress  # noqa: E402
from edge_runtime.media.sinks import ListSink  # noqa: E402
from edge_runtime.media.sources import Frame, FrameSource, ReconnectPolicy  # noqa: E402

from .test_pipeline import dets_for, make_frames, person_image  # noqa: E402
from .test_run_cli import read_jsonl, write_people_images  # noqa: E402

REPO = Path(__file__).resolve().parents[2]
LOCAL = CompileOptions(performance_hint="LATENCY", inference_precision="f32", cache_dir=None)


class Server(ServeProcess):
    """The server of these tests: f32 (so it matches the local run), its own model cache."""

    def __init__(self, models: Path, log: Path, http: bool = True) -> None:
        super().__init__(models, log, http=http,
                         extra=("--precision-hint", "f32", "--cache-dir", str(log.parent / "cache")))


@pytest.fixture(scope="module")
def server(fake_models_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    srv = Server(fake_models_dir, tmp_path_factory.mktemp("serve") / "serve.log").start()
    yield srv
    srv.kill()


def boxes_and_image():
    image = person_image((50, 60))
    return image, np.array([[10, 10, 90, 110, 0.9], [40, 20, 150, 115, 0.8]], np.float32)


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_remote_estimator_gives_the_local_keypoints(server: Server, fake_models_dir: Path, protocol: str) -> None:
    image, boxes = boxes_and_image()
    local = PoseEstimator(fake_models_dir, options=LOCAL)
    remote = RemotePoseEstimator(fake_models_dir, server.grpc_url if protocol == "grpc" else server.http_url)
    kp_local, sc_local = local(image, boxes)
    kp_remote, sc_remote = remote(image, boxes)
    assert kp_remote.shape == (2, 133, 2)
    np.testing.assert_allclose(kp_remote, kp_local, atol=1e-3)
    np.testing.assert_allclose(sc_remote, sc_local, atol=1e-4)
    # the fake models put every keypoint on the bright blob: the remote result is a real pose, not zeros
    assert np.abs(kp_remote[0] - [50, 60]).max() < 6
    assert remote.kinds == ("pose_server",) and remote.runtime_info["pose_server"]["url"] == str(
        ServerAddress.parse(server.grpc_url if protocol == "grpc" else server.http_url))


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_run_with_pose_server_writes_the_local_predictions(server: Server, fake_models_dir: Path, tmp_path: Path,
                                                           protocol: str) -> None:
    dets = write_people_images(tmp_path / "imgs", 6)
    (tmp_path / "d.json").write_text(json.dumps(dets))
    common = ["--models", str(fake_models_dir), "--source", str(tmp_path / "imgs"), "--detections",
              str(tmp_path / "d.json"), "--precision-hint", "f32", "--no-cache", "--no-progress"]
    assert main(["run", *common, "--output", str(tmp_path / "local")]) == 0
    url = server.grpc_url if protocol == "grpc" else server.http_url
    assert main(["run", *common, "--output", str(tmp_path / "remote"), "--pose-server", url, "--batch", "3",
                 "--num-requests", "2"]) == 0
    local, remote = read_jsonl(tmp_path / "local" / "predictions.jsonl"), read_jsonl(tmp_path / "remote" / "predictions.jsonl")
    assert [r["frame"] for r in remote] == list(range(6))
    for a, b in zip(local, remote):
        assert "error" not in b and len(b["persons"]) == len(a["persons"]) == 2
        for pa, pb in zip(a["persons"], b["persons"]):
            np.testing.assert_allclose(np.array(pb["keypoints"]), np.array(pa["keypoints"]), atol=1e-2)
    summary = json.loads((tmp_path / "remote" / "summary.json").read_text())
    assert summary["chain"] == "pose_server" and summary["frames_failed"] == 0
    assert summary["settings"]["pose_server"] == url


def test_server_answers_bad_requests_with_clear_errors(server: Server) -> None:
    import tritonclient.grpc as grpcclient
    import tritonclient.http as httpclient
    from tritonclient.utils import InferenceServerException

    def call(module, client, name, array, datatype, model="sdpose"):
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        with pytest.raises(InferenceServerException) as info:
            client.infer(model, [tensor])
        return info.value

    for module, client in ((grpcclient, grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")),
                           (httpclient, httpclient.InferenceServerClient(f"127.0.0.1:{server.http_port}"))):
        good = np.zeros((1, 64, 48, 3), np.uint8)
        err = call(module, client, "image", np.zeros((1, 32, 48, 3), np.uint8), "UINT8")
        assert "model sdpose" in err.message() and "[-1,64,48,3]" in err.message() and "[1, 32, 48, 3]" in err.message()
        assert str(err.status()) in ("StatusCode.INVALID_ARGUMENT", "400")
        err = call(module, client, "latent", good, "UINT8")
        assert "named 'latent'" in err.message()
        err = call(module, client, "image", good.astype(np.float32), "FP32")
        assert "datatype FP32" in err.message()
        err = call(module, client, "image", np.zeros((9, 64, 48, 3), np.uint8), "UINT8")
        assert "batch of 9" in err.message() and "1-8" in err.message()
        err = call(module, client, "image", good, "UINT8", model="no_such_model")
        assert "no_such_model" in err.message()
        # each component is served too, with the IR's own tensor names
        meta = client.get_model_metadata("pose", **({"as_json": True} if module is grpcclient else {}))
        assert [i["name"] for i in meta["inputs"]] == ["latent"] and [o["name"] for o in meta["outputs"]] == ["heatmaps"]
        # and the server still answers good requests afterwards
        tensor = module.InferInput("image", list(good.shape), "UINT8")
        tensor.set_data_from_numpy(good)
        assert client.infer("sdpose", [tensor]).as_numpy("heatmaps").shape == (1, 133, 16, 12)


class KillingSource(FrameSource):
    """Frames of one person; kills the server before frame ``kill_at`` and restarts it before ``restart_at``
    (waiting until it is ready), so the frames in between meet a dead server."""

    def __init__(self, frames: list[Frame], srv: Server, kill_at: int, restart_at: int) -> None:
        super().__init__()
        self.frames, self.srv, self.kill_at, self.restart_at = frames, srv, kill_at, restart_at
        self.total = len(frames)

    def __iter__(self):
        for f in self.frames:
            if f.index == self.kill_at:
                time.sleep(0.5)  # let the earlier frames' requests finish
                self.srv.kill()
            if f.index == self.restart_at:
                self.srv.start()
            yield f


@pytest.mark.parametrize("scheduled", [False, True])
def test_killed_server_gives_error_records_then_recovers(fake_models_dir: Path, tmp_path: Path,
                                                         scheduled: bool) -> None:
    """File mode and the scheduler (--schedule-poses: the held frame waits for its poses) over a server that
    is killed and restarted: error records for the outage only, then poses again."""
    srv = Server(fake_models_dir, tmp_path / "serve.log", http=False).start()
    try:
        estimator = RemotePoseEstimator(fake_models_dir, srv.grpc_url, in_flight=1,
                                        retry=ReconnectPolicy(max_retries=1, initial_s=0.05, max_s=0.05))
        frames = make_frames(16)
        sink = ListSink()
        source = KillingSource(frames, srv, kill_at=5, restart_at=10)
        if scheduled:
            result = LiveRunner(estimator, LiveConfig(mode="file"), detections=dets_for(frames, 1)).run(
                [SourceRun("s", source, [sink])])
            summary = result["total"]
        else:
            pipe = Pipeline(estimator, [sink], PipelineConfig(batch=1, max_inflight_frames=1),
                            detections=dets_for(frames, 1))
            summary = pipe.run(source)
    finally:
        srv.kill()
    records = sink.records
    assert [r["frame"] for r in records] == list(range(16))
    errors = [r["frame"] for r in records if "error" in r]
    assert errors and set(errors) <= set(range(5, 11)), errors
    assert all("pose server grpc://127.0.0.1" in r["error"] for r in records if "error" in r)
    assert all(len(r["persons"]) == 1 for r in records[:5] + records[11:])  # before the kill and after the restart
    assert summary["frames_failed"] == len(errors) and summary["frames_out"] == 16
    assert estimator.remote.stats["reconnects"] >= 1


def test_unreachable_or_mismatched_server_is_a_clear_error(server: Server, fake_body_models_dir: Path,
                                                           fake_models_dir: Path) -> None:
    closed = f"grpc://127.0.0.1:{free_port()}"
    with pytest.raises(PoseServerError, match=f"pose server {closed} unreachable"):
        RemotePoseEstimator(fake_models_dir, closed, retry=ReconnectPolicy(max_retries=1, initial_s=0.05))
    # a body folder (K=17) against a server running the wholebody model
    with pytest.raises(PoseServerError, match="neither the model folder's heatmaps"):
        RemotePoseEstimator(fake_body_models_dir, server.grpc_url)
    with pytest.raises(PoseServerError, match="refused the model metadata of model 'nope'"):
        RemotePoseEstimator(fake_models_dir, server.grpc_url, model_name="nope")
    for bad in ("localhost:8001", "tcp://h:1", "grpc://h", "http://h:99999", ""):
        with pytest.raises(InputError, match="--pose-server"):
            ServerAddress.parse(bad)


def test_pose_server_settings_are_checked(fake_models_dir: Path, tmp_path: Path) -> None:
    from edge_runtime import config

    assert config.validate({"pose_server": "grpc://10.0.0.2:8001"})["pose_server"] == "grpc://10.0.0.2:8001"
    with pytest.raises(InputError, match="'pose_server' = 'grpc:/x' is invalid"):
        config.validate({"pose_server": "grpc:/x"})
    dets = write_people_images(tmp_path / "imgs", 1)
    (tmp_path / "d.json").write_text(json.dumps(dets))
    code = main(["run", "--models", str(fake_models_dir), "--source", str(tmp_path / "imgs"), "--output",
                 str(tmp_path / "out"), "--detections", str(tmp_path / "d.json"), "--pose-server", "ftp://h:1",
                 "--no-progress"])
    assert code == 2


def test_serve_rejects_bad_options(fake_models_dir: Path, tmp_path: Path) -> None:
    assert main(["serve", str(fake_models_dir), "--port", "0"]) == 2
    assert main(["serve", str(fake_models_dir), "--port", "9000", "--http-port", "9000"]) == 2
    assert main(["serve", str(tmp_path / "missing"), "--port", "9000"]) == 2


def test_scheduled_poses_run_on_the_server(server: Server, fake_models_dir: Path, tmp_path: Path) -> None:
    """The live scheduler (--schedule-poses: live mode's tracks, scheduling and propagation, deterministic on a
    file) sends its crops to the server too."""
    dets = write_people_images(tmp_path / "imgs", 8)
    (tmp_path / "d.json").write_text(json.dumps(dets))
    out = tmp_path / "out"
    assert main(["run", "--models", str(fake_models_dir), "--source", str(tmp_path / "imgs"), "--output", str(out),
                 "--detections", str(tmp_path / "d.json"), "--schedule-poses", "--pose-server", server.grpc_url,
                 "--no-cache", "--no-progress"]) == 0
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["frame"] for r in records] == list(range(8))
    assert all("error" not in r for r in records)
    persons = [p for r in records for p in r["persons"]]
    assert persons and all(len(p["keypoints"]) == 133 for p in persons)
    assert any(not p.get("propagated", False) for p in persons)  # poses computed by the server, not only carried
    summary = json.loads((out / "summary.json").read_text())
    assert summary["chain"] == "pose_server" and summary["variant"]["input_size_hw"] == [64, 48]


@pytest.mark.parametrize("http", [False, True])
def test_serve_stops_cleanly_on_sigterm_and_refuses_a_busy_port(fake_models_dir: Path, tmp_path: Path,
                                                                 http: bool) -> None:
    import signal

    srv = Server(fake_models_dir, tmp_path / "serve.log", http=http).start()
    try:
        busy = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "serve", str(fake_models_dir), "--port",
                               str(srv.port)], cwd=REPO, capture_output=True, text=True, timeout=120)
        assert busy.returncode == 2 and f"--port: cannot listen on 127.0.0.1:{srv.port}" in busy.stderr
        srv.proc.send_signal(signal.SIGTERM)
        assert srv.proc.wait(timeout=60) == 0
        assert "Traceback" not in srv.log.read_text()
    finally:
        srv.kill()


@pytest.mark.parametrize("protocol,model,decode", [("grpc", "sdpose_keypoints", "numpy"),
                                                   ("http", "sdpose_keypoints", "numpy"),
                                                   ("grpc", "sdpose", "graph")])
def test_keypoints_decoded_on_the_server_or_here_give_the_local_ones(server: Server, fake_models_dir: Path,
                                                                     protocol: str, model: str, decode: str) -> None:
    """--pose-server-model decides where decoding happens: sdpose_keypoints on the server (the answer is
    keypoints [N,K,3]), sdpose here (with --decode's decoder); all give the local numpy-decoded keypoints."""
    image, boxes = boxes_and_image()
    url = server.grpc_url if protocol == "grpc" else server.http_url
    remote = RemotePoseEstimator(fake_models_dir, url, model_name=model, decode=decode)
    assert remote.chain_keypoints is (model == "sdpose_keypoints")
    assert remote.remote.output_name == ("keypoints" if model == "sdpose_keypoints" else "heatmaps")
    assert remote.runtime_info["pose_server"]["decoded_by"] == ("server" if model == "sdpose_keypoints" else
                                                                "client (graph)")
    assert remote.infer(remote.preprocess(image, boxes)).shape == ((2, 133, 3) if remote.chain_keypoints else
                                                                    (2, 133, 16, 12))
    kp_local, sc_local = PoseEstimator(fake_models_dir, options=LOCAL)(image, boxes)
    kp_remote, sc_remote = remote(image, boxes)
    np.testing.assert_allclose(kp_remote, kp_local, atol=0.05 * 110 / 48)  # 0.05 crop px in image px
    np.testing.assert_allclose(sc_remote, sc_local, atol=1e-3)
    assert np.abs(kp_remote[0] - [50, 60]).max() < 6


def test_run_with_server_keypoints_and_local_graph_decoding(server: Server, fake_models_dir: Path,
                                                            tmp_path: Path) -> None:
    dets = write_people_images(tmp_path / "imgs", 4)
    (tmp_path / "d.json").write_text(json.dumps(dets))
    common = ["--models", str(fake_models_dir), "--source", str(tmp_path / "imgs"), "--detections",
              str(tmp_path / "d.json"), "--precision-hint", "f32", "--no-cache", "--no-progress"]
    assert main(["run", *common, "--output", str(tmp_path / "numpy"), "--decode", "numpy"]) == 0
    assert main(["run", *common, "--output", str(tmp_path / "graph"), "--decode", "graph"]) == 0
    assert main(["run", *common, "--output", str(tmp_path / "server"), "--pose-server", server.grpc_url,
                 "--pose-server-model", "sdpose_keypoints", "--batch", "2"]) == 0
    ref = read_jsonl(tmp_path / "numpy" / "predictions.jsonl")
    for name in ("graph", "server"):
        records = read_jsonl(tmp_path / name / "predictions.jsonl")
        assert [r["frame"] for r in records] == list(range(4))
        for a, b in zip(ref, records):
            assert "error" not in b and len(b["persons"]) == len(a["persons"]) == 2
            for pa, pb in zip(a["persons"], b["persons"]):
                np.testing.assert_allclose(np.array(pb["keypoints"]), np.array(pa["keypoints"]), atol=0.2)
    assert json.loads((tmp_path / "graph" / "summary.json").read_text())["settings"]["decode"] == "graph"


def test_server_keypoints_are_checked_against_the_folder(server: Server, fake_body_models_dir: Path,
                                                         fake_models_dir: Path) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(f"127.0.0.1:{server.port}")
    meta = client.get_model_metadata("keypoint_decoder", as_json=True)  # the decoder is served alone too
    assert [(i["name"], i["shape"]) for i in meta["inputs"]] == [("heatmaps", ["-1", "133", "16", "12"])]
    assert [(o["name"], o["shape"]) for o in meta["outputs"]] == [("keypoints", ["-1", "133", "3"])]
    meta = client.get_model_metadata("sdpose_keypoints", as_json=True)
    assert [(o["name"], o["datatype"]) for o in meta["outputs"]] == [("keypoints", "FP32")]
    with pytest.raises(PoseServerError, match=r"nor its keypoints FP32 \[-1, 17, 3\]"):
        RemotePoseEstimator(fake_body_models_dir, server.grpc_url, model_name="sdpose_keypoints")
    with pytest.raises(InputError, match="--flip-test averages heatmaps"):
        RemotePoseEstimator(fake_models_dir, server.grpc_url, model_name="sdpose_keypoints", flip_test=True)
