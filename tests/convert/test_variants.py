"""Cheaper variants: resolution presets, attention token downsampling, ``validate --against`` (tiny checkpoints).

Token downsampling must be exact apart from the pooling: the IR is compared with the float64 PyTorch reference
that has the same pooled-key/value processors installed. Factor 1 must be the plain export, bit for bit.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from convert.cli import main as convert_main
from convert.export import PRESETS, export_models, preset_name, resolve_input_size
from convert.token_downsample import apply_token_downsampling, check_settings, level_grids, parse_levels
from edge_runtime.errors import InputError
from edge_runtime.model.metadata import read_index, read_metadata
from tests.fixtures_export import TINY_INPUT_SIZE
from tests.convert.test_parity import EXACT_RTOL, _rel_err, astronaut_crops

F32 = {"INFERENCE_PRECISION_HINT": "f32"}


@pytest.fixture(scope="module")
def core() -> ov.Core:
    return ov.Core()


@pytest.fixture(scope="module")
def variant_folder(tiny_checkpoint, tmp_path_factory) -> callable:
    """Factory: (scheme, input_size_hw, factor, levels) -> exported folder (cached per module)."""
    cache: dict[tuple, Path] = {}

    def make(scheme: str, size: tuple[int, int], factor: int, levels: tuple[int, ...] = (0,)) -> Path:
        key = (scheme, size, factor, levels)
        if key not in cache:
            out = tmp_path_factory.mktemp(f"variant_{scheme}_{size[0]}x{size[1]}_td{factor}")
            export_models(tiny_checkpoint(scheme), out, input_size=size, fused=False, token_downsample=factor,
                          token_levels=levels)
            cache[key] = out
        return cache[key]

    return make


def _pose(core: ov.Core, folder: Path, latent: np.ndarray) -> np.ndarray:
    return core.compile_model(str(folder / "pose.xml"), "CPU", F32)(latent)["heatmaps"]


def test_factor_one_is_the_plain_export(exported_models, variant_folder, core):
    plain = exported_models("wholebody")
    same = variant_folder("wholebody", TINY_INPUT_SIZE, 1)
    latent = np.random.default_rng(0).normal(size=(2, 4, TINY_INPUT_SIZE[0] // 8, TINY_INPUT_SIZE[1] // 8))
    latent = latent.astype(np.float32)
    assert np.array_equal(_pose(core, plain, latent), _pose(core, same, latent))
    assert (plain / "pose.bin").read_bytes() == (same / "pose.bin").read_bytes()
    meta = read_metadata(core.read_model(str(same / "pose.xml")))
    assert meta["token_downsample"] == 1 and meta["token_downsample_levels"] == []
    assert not any(op.get_type_name() == "AvgPool" for op in core.read_model(str(same / "pose.xml")).get_ops())


@pytest.mark.parametrize("scheme, size, levels", [
    ("wholebody", (256, 192), (0, 1)),  # wholebody: down_blocks.0 and .1, up_blocks.2
    ("body", (200, 152), (0,)),  # body also keeps up_blocks.3; odd 25x19 grid: ceil-mode pooling
])
def test_token_downsampling_is_exact_apart_from_the_pooling(tiny_checkpoint, variant_folder, core, scheme, size,
                                                            levels):
    import torch

    from convert.checkpoint import load_checkpoint
    from convert.reference import ReferencePipeline

    folder = variant_folder(scheme, size, 2, levels)
    model = core.read_model(str(folder / "pose.xml"))
    meta = read_metadata(model)
    assert meta["token_downsample"] == 2 and meta["token_downsample_levels"] == list(levels)
    assert read_index(folder)["token_downsample"] == 2
    ckpt = load_checkpoint(tiny_checkpoint(scheme), torch_dtype=torch.float64)
    changed = apply_token_downsampling(ckpt.unet, 2, levels, (size[0] // 8, size[1] // 8))
    # the up-blocks after the one the head reads are not in the pose graph
    kept = [n for n in changed if not (n.startswith("up_blocks.") and int(n.split(".")[1]) > ckpt.up_block)]
    assert sum(op.get_type_name() == "AvgPool" for op in model.get_ops()) == len(kept) > 0
    crops = astronaut_crops(size)
    pipe = ReferencePipeline(ckpt)
    latent = pipe.encode(pipe.preprocess(crops))
    ref = pipe.pose(latent).double().numpy()
    got = _pose(core, folder, latent.float().numpy())
    assert _rel_err(got, ref) < EXACT_RTOL
    # and the pooling does change the result: the plain reference differs
    plain = ReferencePipeline(load_checkpoint(tiny_checkpoint(scheme), torch_dtype=torch.float64))
    assert _rel_err(got, plain.pose(latent).double().numpy()) > 100 * EXACT_RTOL


def test_token_settings_are_checked(tiny_checkpoint):
    from convert.checkpoint import load_checkpoint

    assert check_settings(2, None) == (2, (0,))
    assert parse_levels("1,0,1") == (0, 1)
    assert level_grids((25, 19), 3) == [(25, 19), (13, 10), (7, 5)]
    for bad in (0, -1, 1.5, True):
        with pytest.raises(InputError, match="--token-downsample"):
            check_settings(bad, None)
    with pytest.raises(InputError, match="--levels"):
        parse_levels("top")
    unet = load_checkpoint(tiny_checkpoint("wholebody")).unet
    n_levels = len(unet.down_blocks)
    with pytest.raises(InputError, match=f"has {n_levels} levels"):
        apply_token_downsampling(unet, 2, (n_levels,), (32, 24))
    # the lowest level of the SD2 layout is a DownBlock2D: no attention to downsample
    with pytest.raises(InputError, match="no self-attention"):
        apply_token_downsampling(unet, 2, (n_levels - 1,), (32, 24))
    assert apply_token_downsampling(unet, 1, (0,), (32, 24)) == []


def test_presets():
    assert PRESETS == {"full": (1024, 768), "balanced": (768, 576), "fast": (512, 384)}
    assert [preset_name(s) for s in PRESETS.values()] == list(PRESETS)
    assert preset_name((256, 192)) == "custom"
    assert resolve_input_size("fast", None) == (512, 384)
    assert resolve_input_size("fast", (512, 384)) == (512, 384)
    assert resolve_input_size(None, None) == (1024, 768)
    with pytest.raises(InputError, match="--preset fast means --input-size 512x384"):
        resolve_input_size("fast", (256, 192))


@pytest.mark.slow
@pytest.mark.parametrize("preset, factor", [("fast", 2), ("balanced", 1), ("full", 2)])
def test_preset_variant_exports_records_and_runs(tiny_checkpoint_wholebody, tmp_path, core, preset, factor):
    """Every preset (with and without token downsampling) exports through the CLI, records itself in rt_info
    and the index, and the runtime honours it: crops and heatmaps at the preset's size, keypoints in the
    image."""
    from edge_runtime.model.estimator import PoseEstimator
    from edge_runtime.model.models import CompileOptions

    out = tmp_path / preset
    assert convert_main(["export", "--checkpoint", str(tiny_checkpoint_wholebody), "--out", str(out), "--preset",
                         preset, "--token-downsample", str(factor), "--levels", "0", "--no-fused"]) == 0
    h, w = PRESETS[preset]
    meta = read_metadata(core.read_model(str(out / "pose.xml")))
    assert meta["preset"] == preset and meta["token_downsample"] == factor
    assert (meta["input_height"], meta["input_width"], meta["heatmap_height"], meta["heatmap_width"]) == \
        (h, w, h // 4, w // 4)
    assert read_index(out)["preset"] == preset
    est = PoseEstimator(out, options=CompileOptions(cache_dir=None, inference_precision="f32"))
    assert est.runtime_info["variant"]["preset"] == preset
    assert est.runtime_info["variant"]["input_size_hw"] == [h, w]
    assert est.runtime_info["variant"]["token_downsample"] == factor
    image = np.full((480, 640, 3), 127, np.uint8)
    boxes = np.array([[200.0, 100.0, 360.0, 420.0]], np.float32)
    crops = est.preprocess(image, boxes)
    assert crops.shape == (1, h, w, 3)
    heat = est.infer(crops)
    assert heat.shape == (1, 133, h // 4, w // 4)
    kpts, scores = est.postprocess(heat, boxes)
    assert kpts.shape == (1, 133, 2) and np.isfinite(kpts).all()


def test_preset_conflicting_with_input_size_is_a_clear_error(tiny_checkpoint_body, tmp_path, caplog):
    code = convert_main(["export", "--checkpoint", str(tiny_checkpoint_body), "--out", str(tmp_path / "m"),
                         "--preset", "fast", "--input-size", "256x192"])
    assert code != 0
    assert "--preset fast means --input-size 512x384" in caplog.text
    assert not (tmp_path / "m").exists()


def test_custom_size_is_recorded_as_custom(exported_models):
    """A size that is no preset is recorded as "custom", and the runtime reports it."""
    from edge_runtime.model.estimator import PoseEstimator
    from edge_runtime.model.models import CompileOptions

    folder = exported_models("body")
    model = ov.Core().read_model(str(folder / "pose.xml"))
    assert read_metadata(model)["preset"] == "custom"  # 256x192 is no preset
    est = PoseEstimator(folder, options=CompileOptions(cache_dir=None))
    assert est.runtime_info["variant"]["preset"] == "custom"


# ---------------------------------------------------------------------------------------------- --against

def test_validate_against(exported_models, variant_folder, tmp_path, caplog):
    import shutil

    full = exported_models("wholebody")
    variant = tmp_path / "variant"
    shutil.copytree(variant_folder("wholebody", (192, 144), 2), variant)
    (variant / "report.json").write_text(json.dumps({"components": {}, "fidelity": {"status": "kept"}}))
    assert convert_main(["validate", str(variant), "--against", str(full), "--limit", "4"]) == 0
    report = json.loads((variant / "report.json").read_text())
    assert report["fidelity"] == {"status": "kept"}  # the earlier report is kept
    sec = report["against_full"]
    assert sec["variant"]["input_height"] == 192 and sec["full"]["input_height"] == TINY_INPUT_SIZE[0]
    assert sec["calibration_set"]["crops"] == 4
    kd = sec["keypoint_displacement"]
    assert kd["count"] > 0 and 0 < kd["mean_px"] <= kd["max_px"]
    assert 0 <= sec["agreement_pck"]["share"] < 1
    ha = sec["heatmap_agreement"]
    assert ha["resized_to_hw"] == [TINY_INPUT_SIZE[0] // 4, TINY_INPUT_SIZE[1] // 4]
    assert -1 <= ha["cosine"]["mean"] < 1
    assert "Agreement with the full-resolution FP32 model" in (variant / "report.md").read_text()

    # the full model against itself agrees exactly: the metric can tell
    out = tmp_path / "self.json"
    assert convert_main(["validate", str(full), "--against", str(full), "--limit", "2", "--no-write",
                         "--json-out", str(out)]) == 0
    same = json.loads(out.read_text())
    assert same["keypoint_displacement"]["max_px"] == 0 and same["agreement_pck"]["share"] == 1.0
    assert same["heatmap_agreement"]["cosine"]["min"] == pytest.approx(1.0)
    assert not (full / "report.json").exists()


def test_validate_against_errors(exported_models, variant_folder, tmp_path, caplog):
    full = exported_models("wholebody")
    variant = variant_folder("wholebody", (192, 144), 2)
    body = exported_models("body")
    assert convert_main(["validate", str(body), "--against", str(full), "--no-write"]) != 0
    assert "compare variants of the same checkpoint" in caplog.text
    caplog.clear()
    assert convert_main(["validate", str(full), "--against", str(variant), "--no-write"]) != 0
    assert "token downsampling" in caplog.text
    caplog.clear()
    assert convert_main(["validate", str(variant), "--against", str(full), "--reference", str(full)]) != 0
    assert "--against and --reference" in caplog.text
    caplog.clear()
    import shutil

    broken = tmp_path / "broken"
    shutil.copytree(variant, broken)
    (broken / "report.json").write_text("{not json")
    assert convert_main(["validate", str(broken), "--against", str(full), "--limit", "1"]) != 0
    assert f"{broken / 'report.json'}" in caplog.text and "not readable JSON" in caplog.text
    assert (broken / "report.json").read_text() == "{not json"  # not overwritten


def test_attention_fusion_accounts_for_every_attention(exported_models, variant_folder, core):
    from convert.variant_check import attention_fusion

    results = []
    for folder in (exported_models("wholebody"), variant_folder("wholebody", TINY_INPUT_SIZE, 2, (0, 1))):
        model = core.read_model(str(folder / "pose.xml"))
        res = attention_fusion(model, core.compile_model(model, "CPU", F32))
        assert res["attention_ops"] > 0
        # each attention runs either in a fused MHA node or as separate softmax (+ matmuls)
        assert res["fused"] + res["unfused_softmax"] >= res["attention_ops"]
        results.append(res)
    assert results[0]["attention_ops"] == results[1]["attention_ops"]  # pooling removes no attention


def test_the_codec_record_drives_the_decoder(exported_models, tmp_path):
    """The runtime decodes with the folder's codec record: its blur kernel is used, an unknown codec is refused."""
    import shutil

    from edge_runtime.model.codec import blur_kernel_from_codec
    from edge_runtime.errors import ModelFolderError
    from edge_runtime.model.estimator import PoseEstimator
    from edge_runtime.model.metadata import write_metadata
    from edge_runtime.model.models import CompileOptions

    assert blur_kernel_from_codec(None) == 11
    assert blur_kernel_from_codec({"type": "UDPHeatmap", "refine": "dark_udp", "blur_kernel_size": 7}) == 7
    for bad in ({"type": "SimCC"}, {"type": "UDPHeatmap", "refine": "none"},
                {"type": "UDPHeatmap", "blur_kernel_size": 4}):
        with pytest.raises(ModelFolderError, match="codec"):
            blur_kernel_from_codec(bad, "x.xml")
    folder = tmp_path / "m"
    shutil.copytree(exported_models("body"), folder)
    core = ov.Core()
    for name in ("pose.xml", "vae_pose.xml"):
        model = core.read_model(str(folder / name))
        write_metadata(model, {"codec": {"type": "UDPHeatmap", "sigma": 6, "refine": "dark_udp", "blur_kernel_size": 5}})
        ov.save_model(model, str(folder / f"new_{name}"))
        del model
        (folder / f"new_{name}").replace(folder / name)
        (folder / f"new_{name}".replace(".xml", ".bin")).replace(folder / name.replace(".xml", ".bin"))
    est = PoseEstimator(folder, options=CompileOptions(cache_dir=None))
    assert est.blur_kernel_size == 5


def test_convert_refuses_an_fp32_export_with_other_token_settings(tiny_checkpoint_wholebody, variant_folder,
                                                                  tmp_path, caplog):
    """--fp32-from must have been exported with the same --token-downsample and --levels."""
    fp32 = variant_folder("wholebody", TINY_INPUT_SIZE, 2, (0,))
    base = ["convert", "--checkpoint", str(tiny_checkpoint_wholebody), "--fp32-from", str(fp32), "--precision",
            "fp16", "--no-detector", "--latency-runs", "0", "--input-size", "256x192"]
    assert convert_main(base + ["--out", str(tmp_path / "a"), "--token-downsample", "1"]) != 0
    assert "token_downsample 2 differs from --token-downsample 1" in caplog.text
    caplog.clear()
    assert convert_main(base + ["--out", str(tmp_path / "b"), "--token-downsample", "2", "--levels", "0,1"]) != 0
    assert "levels [0] differ from --levels 0,1" in caplog.text
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
