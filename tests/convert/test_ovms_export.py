"""``sdpose-convert export-ovms``: the OVMS repository layout and config, checked by the runtime's reader, served
by ``sdpose-edge serve REPO`` and used by a ``--pose-server`` client."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from convert.cli import main as convert_main
from edge_runtime.errors import ModelFolderError
from edge_runtime.serving.ovms_repo import is_linear, read_repository, tensor_names as model_tensor_names


def tensor_names(xml: Path) -> tuple[set[str], set[str]]:
    """The reader's tensor check on the IR at ``xml``."""
    import openvino as ov

    return model_tensor_names(ov.Core().read_model(str(xml)))


def export(models: Path, out: Path, *extra: str) -> int:
    return convert_main(["export-ovms", str(models), "--out", str(out), *extra])


def test_split_folder_becomes_models_plus_dag(fake_models_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert export(fake_models_dir, repo, "--num-streams", "2", "--nireq", "3", "--precision-hint", "f32") == 0
    for kind in ("vae_encoder", "pose"):
        assert (repo / kind / "1" / "model.xml").is_file() and (repo / kind / "1" / "model.bin").is_file()
        assert (repo / kind / "1" / "model.bin").read_bytes() == (fake_models_dir / f"{kind}.bin").read_bytes()
    doc = json.loads((repo / "config.json").read_text())
    configs = [m["config"] for m in doc["model_config_list"]]
    assert [c["name"] for c in configs] == ["vae_encoder", "pose", "keypoint_decoder"]
    assert all(c["base_path"] == c["name"] and c["target_device"] == "CPU" and c["nireq"] == 3 for c in configs)
    assert configs[0]["plugin_config"] == {"PERFORMANCE_HINT": "THROUGHPUT", "NUM_STREAMS": "2",
                                           "INFERENCE_PRECISION_HINT": "f32"}
    pipe, keypoints_pipe = doc["pipeline_config_list"]
    assert pipe["name"] == "sdpose" and pipe["inputs"] == ["image"]
    assert [n["model_name"] for n in pipe["nodes"]] == ["vae_encoder", "pose"]
    assert pipe["nodes"][1]["inputs"] == [{"latent": {"node_name": "vae_encoder_node", "data_item": "latent"}}]
    assert pipe["outputs"] == [{"heatmaps": {"node_name": "pose_node", "data_item": "heatmaps"}}]
    # sdpose_keypoints: the same nodes, then the decoder (heatmaps -> keypoints)
    assert keypoints_pipe["name"] == "sdpose_keypoints" and keypoints_pipe["inputs"] == ["image"]
    assert [n["model_name"] for n in keypoints_pipe["nodes"]] == ["vae_encoder", "pose", "keypoint_decoder"]
    assert keypoints_pipe["nodes"][2]["inputs"] == [{"heatmaps": {"node_name": "pose_node", "data_item": "heatmaps"}}]
    assert keypoints_pipe["outputs"] == [{"keypoints": {"node_name": "keypoint_decoder_node",
                                                        "data_item": "keypoints"}}]
    models, pipelines = read_repository(repo, tensor_names=tensor_names)
    assert set(models) == {"vae_encoder", "pose", "keypoint_decoder"} and all(is_linear(p) for p in pipelines)
    # the sdpose metadata travels inside model.xml
    import openvino as ov

    from edge_runtime.model.metadata import read_metadata
    meta = read_metadata(ov.Core().read_model(str(repo / "pose" / "1" / "model.xml")))
    assert meta["kind"] == "pose" and meta["num_keypoints"] == 133
    decoder = ov.Core().read_model(str(repo / "keypoint_decoder" / "1" / "model.xml"))
    meta = read_metadata(decoder)
    assert meta["kind"] == "keypoint_decoder" and meta["num_keypoints"] == 133 and meta["codec"]["type"] == "UDPHeatmap"
    assert list(decoder.output(0).get_partial_shape()) == list(ov.PartialShape([-1, 133, 3]))
    # the decoder computes in f32 whatever the hint of the other models
    assert configs[2]["plugin_config"]["INFERENCE_PRECISION_HINT"] == "f32"


def test_fused_chain_is_a_one_node_pipeline(fake_models_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert export(fake_models_dir, repo, "--chain", "fused", "--pipeline-name", "wholebody") == 0
    doc = json.loads((repo / "config.json").read_text())
    assert [m["config"]["name"] for m in doc["model_config_list"]] == ["vae_pose", "keypoint_decoder"]
    assert [p["name"] for p in doc["pipeline_config_list"]] == ["wholebody", "wholebody_keypoints"]
    assert [n["model_name"] for n in doc["pipeline_config_list"][0]["nodes"]] == ["vae_pose"]
    assert [n["model_name"] for n in doc["pipeline_config_list"][1]["nodes"]] == ["vae_pose", "keypoint_decoder"]


def test_existing_output_and_bad_options_are_refused(fake_models_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert export(fake_models_dir, repo) == 0
    before = (repo / "config.json").read_text()
    assert export(fake_models_dir, repo) == 2  # not empty, no --overwrite: kept
    assert (repo / "config.json").read_text() == before
    assert export(fake_models_dir, repo, "--overwrite", "--chain", "fused") == 0
    assert not (repo / "pose").exists()
    assert export(fake_models_dir, tmp_path / "r2", "--pipeline-name", "pose") == 2  # clashes with a model
    assert export(fake_models_dir, tmp_path / "r5", "--pipeline-name", "keypoint_decoder") == 2
    assert export(fake_models_dir, tmp_path / "r3", "--nireq", "0") == 2
    assert export(tmp_path / "missing", tmp_path / "r4") == 2


def test_reader_names_what_is_wrong(fake_models_dir: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    assert export(fake_models_dir, repo) == 0
    config = repo / "config.json"
    good = json.loads(config.read_text())

    def broken(mutate) -> str:
        doc = json.loads(json.dumps(good))
        mutate(doc)
        config.write_text(json.dumps(doc))
        with pytest.raises(ModelFolderError) as info:
            read_repository(repo, tensor_names=tensor_names)
        return str(info.value)

    assert "model_name 'nope'" in broken(lambda d: d["pipeline_config_list"][0]["nodes"][1].update(model_name="nope"))
    msg = broken(lambda d: d["pipeline_config_list"][0]["nodes"][1]["outputs"][0].update(data_item="x"))
    assert "outputs ['heatmaps']" in msg and "output 'x'" in msg
    assert "no version folder" in broken(lambda d: d["model_config_list"][0]["config"].update(base_path="elsewhere"))
    assert "listed twice" in broken(lambda d: d["model_config_list"].append(d["model_config_list"][0]))
    assert "which no earlier node" in broken(
        lambda d: d["pipeline_config_list"][0]["nodes"][1]["inputs"][0]["latent"].update(node_name="ghost"))
    config.write_text("{not json")
    with pytest.raises(ModelFolderError, match="config.json: not readable JSON"):
        read_repository(repo)


def test_exported_repository_served_gives_the_folder_heatmaps(fake_models_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("tritonclient.grpc")
    if importlib.util.find_spec("kserve") is None:
        pytest.skip("sdpose-edge serve needs the serve extra")
    from edge_runtime.model.estimator import PoseEstimator
    from edge_runtime.model.models import CompileOptions
    from edge_runtime.serving.remote import RemotePoseEstimator

    from tests.runtime.test_pipeline import person_image
    from tests.runtime.test_remote import Server

    repo = tmp_path / "repo"
    assert export(fake_models_dir, repo) == 0
    srv = Server(repo, tmp_path / "serve.log", http=False).start()
    try:
        remote = RemotePoseEstimator(fake_models_dir, srv.grpc_url)
        image, boxes = person_image((70, 50)), np.array([[20, 5, 120, 115]], np.float32)
        kp_remote, _ = remote(image, boxes)
        # the sdpose_keypoints pipeline: decoded on the server
        remote_kp = RemotePoseEstimator(fake_models_dir, srv.grpc_url, model_name="sdpose_keypoints")
        assert remote_kp.chain_keypoints
        kp_server, sc_server = remote_kp(image, boxes)
    finally:
        srv.kill()
    local = PoseEstimator(fake_models_dir, options=CompileOptions(performance_hint="LATENCY",
                                                                  inference_precision="f32", cache_dir=None))
    kp_local, sc_local = local(image, boxes)
    np.testing.assert_allclose(kp_remote, kp_local, atol=1e-3)
    np.testing.assert_allclose(kp_server, kp_local, atol=0.05 * 100 / 48)  # 0.05 crop px in image px
    np.testing.assert_allclose(sc_server, sc_local, atol=1e-3)
