"""``sdpose-convert export``: the model folder contract (files, index, rt_info, tensors), dynamic batch, fp16,
and clear errors. Numerical parity with the PyTorch reference is in test_parity.py."""
from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from convert.checkpoint import checkpoint_sha256
from convert.cli import main as convert_main
from convert.export import CODEC, DEFAULT_CHAIN, check_input_size, export_models, parse_input_size
from edge_runtime.errors import InputError, SDPoseError
from edge_runtime.model.metadata import COMPONENT_FILES, INDEX_FILE, read_index, read_metadata
from tests.fixtures_export import TINY_INPUT_SIZE

H, W = TINY_INPUT_SIZE
F32 = {"INFERENCE_PRECISION_HINT": "f32"}
KINDS = ("vae_encoder", "pose", "vae_pose")


@pytest.fixture(scope="module")
def wholebody(exported_models) -> Path:
    return exported_models("wholebody")


@pytest.fixture(scope="module")
def core() -> ov.Core:
    return ov.Core()


def _dims(shape: ov.PartialShape) -> list:
    return [d.get_length() if d.is_static else None for d in shape]


def test_folder_contents(wholebody: Path):
    names = sorted(p.name for p in wholebody.iterdir())
    expected = sorted([INDEX_FILE] + [f"{Path(COMPONENT_FILES[k]).stem}{ext}" for k in KINDS
                                      for ext in (".xml", ".bin")])
    assert names == expected  # no temporary/partial files left behind


def test_index(wholebody: Path, tiny_checkpoint_wholebody: Path):
    index = read_index(wholebody)
    assert index["format_version"] == 1
    assert index["components"] == {k: COMPONENT_FILES[k] for k in KINDS}
    assert index["default_chain"] == ("fused" if DEFAULT_CHAIN == "fused" else "split")
    assert index["scheme"] == "wholebody" and index["num_keypoints"] == 133
    assert (index["input_height"], index["input_width"]) == (H, W)
    assert index["checkpoint_sha256"] == checkpoint_sha256(tiny_checkpoint_wholebody)
    json.loads((wholebody / INDEX_FILE).read_text())  # plain JSON


@pytest.mark.parametrize("kind", KINDS)
def test_rt_info(wholebody: Path, tiny_checkpoint_wholebody: Path, core: ov.Core, kind: str):
    meta = read_metadata(core.read_model(str(wholebody / COMPONENT_FILES[kind])), kind)
    assert meta["kind"] == kind
    assert meta["format_version"] == 1
    assert meta["scheme"] == "wholebody" and meta["num_keypoints"] == 133
    assert (meta["input_height"], meta["input_width"]) == (H, W)
    assert (meta["heatmap_height"], meta["heatmap_width"]) == (H // 4, W // 4)
    assert meta["latent_channels"] == 4 and meta["latent_scale"] == pytest.approx(0.18215)
    assert meta["bbox_padding"] == 1.25
    assert meta["codec"] == CODEC == {"type": "UDPHeatmap", "sigma": 6, "refine": "dark_udp",
                                      "blur_kernel_size": 11}
    pre = meta["preprocessing"]
    assert (pre["element_type"], pre["layout"], pre["color"], pre["mean"], pre["scale"]) == \
        ("u8", "NHWC", "BGR", 127.5, 127.5)
    assert meta["precision"] == "fp32" and meta["quantized"] is False
    assert meta["checkpoint_sha256"] == checkpoint_sha256(tiny_checkpoint_wholebody)
    assert set(meta["versions"]) == {"torch", "diffusers", "openvino", "nncf", "sdpose-edge"}
    assert meta["versions"]["openvino"] != "unknown"
    assert meta["unet_feature"] == "up_blocks.2"


@pytest.mark.parametrize("kind, inp, out, in_shape, out_shape, in_type", [
    ("vae_encoder", "image", "latent", [None, H, W, 3], [None, 4, H // 8, W // 8], ov.Type.u8),
    ("pose", "latent", "heatmaps", [None, 4, H // 8, W // 8], [None, 133, H // 4, W // 4], ov.Type.f32),
    ("vae_pose", "image", "heatmaps", [None, H, W, 3], [None, 133, H // 4, W // 4], ov.Type.u8),
])
def test_tensors(wholebody: Path, core: ov.Core, kind, inp, out, in_shape, out_shape, in_type):
    model = core.read_model(str(wholebody / COMPONENT_FILES[kind]))
    assert len(model.inputs) == 1 and len(model.outputs) == 1
    assert inp in model.input(0).get_names() and out in model.output(0).get_names()
    assert model.input(0).get_element_type() == in_type
    assert model.output(0).get_element_type() == ov.Type.f32
    assert _dims(model.input(0).get_partial_shape()) == in_shape
    assert _dims(model.output(0).get_partial_shape()) == out_shape


def test_dynamic_batch(wholebody: Path, core: ov.Core):
    """N=1 and N=3 both run; each row of the batch equals the same crop run alone."""
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (3, H, W, 3), dtype=np.uint8)
    vae = core.compile_model(str(wholebody / "vae_encoder.xml"), "CPU", F32)
    pose = core.compile_model(str(wholebody / "pose.xml"), "CPU", F32)
    fused = core.compile_model(str(wholebody / "vae_pose.xml"), "CPU", F32)
    lat3 = vae(crops)["latent"]
    hm3 = pose(lat3)["heatmaps"]
    fz3 = fused(crops)["heatmaps"]
    assert lat3.shape == (3, 4, H // 8, W // 8) and hm3.shape == fz3.shape == (3, 133, H // 4, W // 4)
    scale = np.abs(hm3).max()
    assert scale > 0
    for i in range(3):
        lat1 = vae(crops[i:i + 1])["latent"]
        hm1 = pose(lat1)["heatmaps"]
        assert lat1.shape == (1, 4, H // 8, W // 8) and hm1.shape == (1, 133, H // 4, W // 4)
        np.testing.assert_allclose(lat3[i], lat1[0], atol=1e-5 * np.abs(lat3).max())
        np.testing.assert_allclose(hm3[i], hm1[0], atol=1e-5 * scale)
    # the fused IR computes the split chain
    np.testing.assert_allclose(fz3, hm3, atol=1e-5 * scale)
    assert not np.allclose(hm3[0], hm3[1])  # different crops, different heatmaps


def test_fp16_export_via_cli_keeps_other_components(tiny_checkpoint_body: Path, tmp_path: Path, core: ov.Core,
                                                     caplog):
    """fp16 through the CLI, odd latent size (upsample_size path), into a folder that already lists a
    detector and holds a stale vae_pose.xml: the detector entry survives, vae_pose is not listed."""
    out = tmp_path / "models"
    out.mkdir()
    (out / "detector.xml").write_text("<net/>")
    (out / "vae_pose.xml").write_text("<stale/>")
    (out / INDEX_FILE).write_text(json.dumps({"format_version": 1, "default_chain": "fused", "components": {
        "detector": "detector.xml", "vae_pose": "vae_pose.xml"}}))
    with caplog.at_level(logging.INFO):
        code = convert_main(["export", "--checkpoint", str(tiny_checkpoint_body), "--out", str(out),
                             "--precision", "fp16", "--input-size", "64x48", "--no-fused"])
    assert code == 0
    index = read_index(out)
    assert index["components"] == {"detector": "detector.xml", "vae_encoder": "vae_encoder.xml",
                                   "pose": "pose.xml"}
    assert index["default_chain"] == "split" and index["precision"] == "fp16"
    assert (out / "detector.xml").read_text() == "<net/>"
    pose_model = core.read_model(str(out / "pose.xml"))
    meta = read_metadata(pose_model)
    assert meta["precision"] == "fp16" and meta["scheme"] == "body" and meta["num_keypoints"] == 17
    assert meta["unet_feature"] == "up_blocks.3"
    assert (meta["input_height"], meta["input_width"], meta["heatmap_height"], meta["heatmap_width"]) == \
        (64, 48, 16, 12)
    consts = [op for op in pose_model.get_ops() if op.get_type_name() == "Constant"]
    assert any(c.get_element_type() == ov.Type.f16 for c in consts)
    assert pose_model.input(0).get_element_type() == ov.Type.f32
    # fp16 weights still compute (close to) the PyTorch reference
    from convert.checkpoint import load_checkpoint
    from convert.reference import ReferencePipeline

    crops = np.random.default_rng(2).integers(0, 256, (2, 64, 48, 3), dtype=np.uint8)
    vae = core.compile_model(str(out / "vae_encoder.xml"), "CPU", F32)
    pose = core.compile_model(str(out / "pose.xml"), "CPU", F32)
    heat = pose(vae(crops)["latent"])["heatmaps"]
    ref = ReferencePipeline(load_checkpoint(tiny_checkpoint_body))(crops).numpy()
    assert heat.shape == ref.shape == (2, 17, 16, 12)
    scale = np.abs(ref).max()
    assert np.abs(heat - ref).max() < 2e-2 * scale


def test_missing_checkpoint_is_a_clear_error(tmp_path: Path, caplog):
    missing = tmp_path / "no_such_ckpt"
    with pytest.raises(SDPoseError, match="no_such_ckpt"):
        export_models(missing, tmp_path / "out")
    with caplog.at_level(logging.ERROR):
        code = convert_main(["export", "--checkpoint", str(missing), "--out", str(tmp_path / "out")])
    assert code == 2
    assert "no_such_ckpt" in caplog.text and "does not exist" in caplog.text
    assert not (tmp_path / "out").exists()


def test_incomplete_checkpoint_is_a_clear_error(tmp_path: Path):
    broken = tmp_path / "ckpt"
    (broken / "unet").mkdir(parents=True)
    with pytest.raises(SDPoseError, match="vae"):
        export_models(broken, tmp_path / "out")


@pytest.mark.parametrize("text, expected", [("1024x768", (1024, 768)), ("256X192", (256, 192)),
                                            (" 64x48 ", (64, 48))])
def test_parse_input_size(text, expected):
    assert parse_input_size(text) == expected


@pytest.mark.parametrize("text, message", [("1000x770", "multiples of 8"), ("1020x768", "multiples of 8"),
                                           ("0x768", "multiples of 8"), ("1024", "malformed"),
                                           ("axb", "malformed"), ("1024x768x3", "malformed"),
                                           ("-8x8", "malformed")])
def test_bad_input_size(text, message):
    with pytest.raises(InputError, match=message):
        parse_input_size(text)


def test_bad_input_size_cli(tiny_checkpoint_body: Path, tmp_path: Path, capsys):
    with pytest.raises(SystemExit) as info:
        convert_main(["export", "--checkpoint", str(tiny_checkpoint_body), "--out", str(tmp_path / "o"),
                      "--input-size", "1000x770"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--input-size" in err and "multiples of 8" in err
    assert not (tmp_path / "o").exists()


def test_bad_arguments_api(tiny_checkpoint_body: Path, tmp_path: Path):
    with pytest.raises(InputError, match="multiples of 8"):
        export_models(tiny_checkpoint_body, tmp_path / "o", input_size=(100, 96))
    with pytest.raises(InputError, match="precision"):
        export_models(tiny_checkpoint_body, tmp_path / "o", precision="int8")
    with pytest.raises(InputError, match="two integers"):
        check_input_size((1024,))
    with pytest.raises(InputError, match="two integers"):
        check_input_size((1024.5, 768))
    assert not (tmp_path / "o").exists()
