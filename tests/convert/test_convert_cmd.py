"""``sdpose-convert convert``: the one-command conversion on a tiny synthetic checkpoint (CI sized)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from convert.convert_cmd import convert, load_config, parse_component_precision, parse_input_size
from convert.quantize import count_quantization_nodes
from edge_runtime.errors import InputError
from edge_runtime.model.metadata import read_index, read_metadata
from tests.fixtures_quantize import DEFAULT_CALIB, tiny_convert_config


def _model(folder: Path, name: str) -> ov.Model:
    return ov.Core().read_model(str(folder / name))


def test_int8_folder_has_fake_quantize_on_convs_and_matmuls(converted_int8):
    out, _, _ = converted_int8
    pose = count_quantization_nodes(_model(out, "pose.xml"))
    assert pose["fq_on_conv"] == pose["convolutions"] > 0
    assert pose["fq_on_matmul"] > 0
    # the released head's two InstanceNorms are MVNs over H,W and stay in float (never folded, never quantized)
    assert pose["head_mvn"] == 2 and pose["fq_on_head_mvn"] == 0
    vae = count_quantization_nodes(_model(out, "vae_encoder.xml"))
    assert vae["fq_on_conv"] > 0 and vae["fake_quantize"] > 0
    det = count_quantization_nodes(_model(out, "detector.xml"))
    assert det["fq_on_conv"] > 0
    # the box-decoding tail stays float: fewer quantized convolutions than convolutions
    assert det["fq_on_conv"] < det["convolutions"]


def test_int8_metadata_records_the_quantization(converted_int8):
    out, _, _ = converted_int8
    for name, kind in (("pose.xml", "pose"), ("vae_encoder.xml", "vae_encoder"), ("detector.xml", "detector")):
        meta = read_metadata(_model(out, name), name)
        assert meta["kind"] == kind
        assert meta["precision"] == "int8" and meta["quantized"] is True
        q = meta["quantization"]
        assert q["mode"] == "int8" and q["subset_size"] == 4 and 1 <= q["calibration_samples"] <= 4
        assert q["nncf_version"]
        calib = q["calibration"]
        assert calib["name"] == "default" and len(calib["fingerprint"]) == 64
        assert calib["held_out_crops"] == 2 and len(calib["held_out_files"]) == 2
        assert "fast_bias_correction" in q and "smooth_quant_alpha_matmul" in q
        assert meta["overflow_fix"] == q["overflow_fix"] == "enable"  # the default: holds without VNNI
    assert read_metadata(_model(out, "pose.xml"))["head_layout"] == "instance"
    assert read_metadata(_model(out, "pose.xml"))["quantization"]["model_type"] == "transformer"
    assert read_metadata(_model(out, "detector.xml"))["quantization"]["ignored_names_count"] > 0
    index = read_index(out)
    assert index["precision"] == "int8" and index["quantized"] is True
    assert set(index["components"]) == {"detector", "vae_encoder", "pose"}


def test_report_fields_present_and_sane(converted_int8):
    out, fp32, report = converted_int8
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk["models"] == str(out.resolve()) and on_disk["reference"] == str(fp32.resolve())
    comps = on_disk["components"]
    for kind in ("detector", "vae_encoder", "pose"):
        c = comps[kind]
        assert c["precision"] == "int8" and c["quantized"] is True
        assert 0 < c["size_mb"] < c["reference_size_mb"]
        assert c["latency_ms"]["f32"] > 0 and c["reference_latency_ms"]["f32"] > 0
    assert 0.5 < comps["vae_encoder"]["fidelity"]["latent_cosine"]["mean"] <= 1.0 + 1e-9
    pose = comps["pose"]["fidelity"]
    assert 0.5 < pose["heatmap_cosine"]["mean"] <= 1.0 + 1e-9 and pose["input"] == "FP32 latent"
    e2e = on_disk["fidelity"]["end_to_end"]
    assert 0.5 < e2e["heatmap_cosine"]["min"] <= e2e["heatmap_cosine"]["mean"] <= 1.0 + 1e-9
    kd = e2e["keypoint_displacement"]
    assert kd["heatmap_px"] == pytest.approx(4.0)  # 48 px input / 12 px heatmap
    assert kd["count"] + kd["excluded"] == 2 * 133
    assert 0.0 <= kd["within_1_heatmap_px"] <= 1.0 and 0 <= kd["median_px"] <= kd["p95_px"] <= kd["max_px"]
    det = on_disk["detector"]
    assert det["frames"] >= 1 and -1.0 <= det["raw_output_cosine"]["mean"] <= 1.0 + 1e-9
    assert det["top_k_box_iou_mean"] is not None
    held = on_disk["held_out"]
    assert held["held_out_crops"] == 2 and held["calibration_crops"] == held["crops_total"] - 2
    stages = {s["stage"]: s for s in on_disk["conversion"]["stages"]}
    assert {"export_fp32", "capture_pose_inputs", "quantize_detector", "quantize_vae_encoder", "quantize_pose",
            "validate"} <= set(stages)
    assert all(s["wall_s"] >= 0 and s["peak_rss_gb"] > 0 for s in stages.values())
    assert stages["capture_pose_inputs"]["samples"] == 4
    assert on_disk["compile"]["fidelity_hint"] == "f32" and on_disk["compile"]["latency_hints"] == ["f32"]
    md = (out / "report.md").read_text()
    assert "random weights" in md and "## End to end" in md and "## Detector" in md
    assert report["fidelity"] == on_disk["fidelity"]
    assert on_disk["cpu"]["int8_path"] in ("vnni", "no_vnni") and on_disk["cpu"]["name"]
    assert f"INT8 path {on_disk['cpu']['int8_path']}" in md


def test_report_measures_both_int8_paths(converted_int8):
    """Where this CPU has VNNI the report holds a second, emulated no-VNNI row (the child really ran the
    16-bit saturating arithmetic); where it has none, its own row is the no-VNNI path and says the VNNI row
    can't be measured. Every row names its ISA and INT8 path."""
    out, _, _ = converted_int8
    report = json.loads((out / "report.json").read_text())
    paths = report["int8_paths"]
    here = paths["this_cpu"]
    assert here["int8_path"] == report["cpu"]["int8_path"] and here["int8_isa"] and not here["emulated"]
    assert 0.5 < here["end_to_end_heatmap_cosine"]["mean"] <= 1.0 + 1e-9
    md = (out / "report.md").read_text()
    assert "## INT8 with and without VNNI" in md
    if here["int8_path"] == "vnni":
        assert here["accumulation_check"]["ratio"] == pytest.approx(1.0, abs=1e-3)
        other = paths["no_vnni"]
        assert other["int8_path"] == "no_vnni" and other["emulated"] and other["isa_cap"] == "AVX512_CORE"
        assert other["accumulation_check"]["ratio"] == pytest.approx(32767 / 64770, abs=0.01)
        assert "status" not in other
        assert 0.5 < other["end_to_end_heatmap_cosine"]["mean"] <= 1.0 + 1e-9
        assert "emulated: ONEDNN_MAX_CPU_ISA=AVX512_CORE" in md
    else:
        assert here["accumulation_check"]["ratio"] == pytest.approx(32767 / 64770, abs=0.01)
        assert "can't be measured here" in paths["vnni"]["status"]


def test_runtime_runs_the_int8_folder(converted_int8):
    from edge_runtime.model.estimator import PoseEstimator
    from edge_runtime.model.models import CompileOptions

    out, fp32, _ = converted_int8
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (120, 90, 3), dtype=np.uint8)
    boxes = np.array([[10, 5, 70, 110]], np.float32)
    opts = CompileOptions(inference_precision="f32", cache_dir=None)
    est = PoseEstimator(out, options=opts)
    keypoints, scores = est(image, boxes)
    assert keypoints.shape == (1, 133, 2) and scores.shape == (1, 133)
    assert np.isfinite(keypoints).all() and np.isfinite(scores).all()
    ref = PoseEstimator(fp32, options=opts)
    crops = est.preprocess(image, boxes)
    hm_q, hm_r = est.infer(crops), ref.infer(crops)
    # per-channel centred correlation with the FP32 IRs: the shared positive offset of random-weight
    # heatmaps would make a plain cosine high even for unrelated outputs. 0.99 is measured on AVX-512 VNNI;
    # with the overflow fix the no-VNNI path gives the same integers (test_cpu), so 0.8 is margin, not tuning.
    q = hm_q - hm_q.mean(axis=(-2, -1), keepdims=True)
    r = hm_r - hm_r.mean(axis=(-2, -1), keepdims=True)
    assert float((q * r).sum() / np.linalg.norm(q) / np.linalg.norm(r)) > 0.8


def test_calib_required_for_quantized_precisions(tiny_checkpoint_wholebody, tmp_path):
    with pytest.raises(InputError, match="--calib is required"):
        convert(tiny_checkpoint_wholebody, tmp_path / "out", tiny_convert_config("hybrid"), calib=None,
                use_detector=False)
    assert not (tmp_path / "out").exists()


def test_empty_calibration_folder_is_a_clear_error(tiny_checkpoint_wholebody, tmp_path):
    empty = tmp_path / "calib_empty"
    empty.mkdir()
    with pytest.raises(InputError, match="empty"):
        convert(tiny_checkpoint_wholebody, tmp_path / "out", tiny_convert_config("int8"), calib=empty,
                use_detector=False)
    assert not (tmp_path / "out").exists()
    assert not list(tmp_path.glob(".out.partial-*"))


def test_existing_output_is_never_overwritten(tiny_checkpoint_wholebody, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(InputError, match="not empty"):
        convert(tiny_checkpoint_wholebody, out, tiny_convert_config("fp32"), calib=DEFAULT_CALIB,
                use_detector=False)
    assert (out / "keep.txt").read_text() == "x"


def test_crop_aspect_must_match_input_size(tiny_checkpoint_wholebody, tmp_path):
    cfg = tiny_convert_config("int8", input_size=(64, 64))
    with pytest.raises(InputError, match="aspect"):
        convert(tiny_checkpoint_wholebody, tmp_path / "out", cfg, calib=DEFAULT_CALIB, use_detector=False)


def test_config_precedence_cli_over_yaml(tmp_path):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("components:\n  pose: {precision: int8, subset_size: 7}\n  detector: {precision: fp16}\n"
                        "advanced: {smooth_quant_alpha: 0.5}\n")
    cfg = load_config(cfg_file)
    assert cfg.components["pose"].precision == "int8" and cfg.components["pose"].subset_size == 7
    assert cfg.components["detector"].precision == "fp16"
    assert cfg.components["pose"].options.smooth_quant_alpha == 0.5
    cfg = load_config(cfg_file, precision="hybrid", component_precision={"vae_encoder": "int4_weights"},
                      subset_size=3)
    assert cfg.components["pose"].precision == "hybrid" and cfg.components["detector"].precision == "hybrid"
    assert cfg.components["vae_encoder"].precision == "int4_weights"
    assert {p.subset_size for p in cfg.components.values()} == {3}


def test_overflow_fix_default_yaml_and_cli(tmp_path):
    """enable by default (one folder for CPUs with and without VNNI); YAML sets it, --overflow-fix overrides
    every component, also one with its own advanced section; a bad value names the flag."""
    assert {p.options.overflow_fix for p in load_config(None).components.values()} == {"enable"}
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text("advanced: {overflow_fix: first_layer}\n"
                        "components:\n  pose: {advanced: {smooth_quant_alpha: 0.5}}\n")
    assert {p.options.overflow_fix for p in load_config(cfg_file).components.values()} == {"first_layer"}
    cfg = load_config(cfg_file, overflow_fix="disable")
    assert {p.options.overflow_fix for p in cfg.components.values()} == {"disable"}
    assert cfg.components["pose"].options.smooth_quant_alpha == 0.5
    with pytest.raises(InputError, match="--overflow-fix: expected one of"):
        load_config(None, overflow_fix="sometimes")
    cfg_file.write_text("advanced: {overflow_fix: maybe}\n")
    with pytest.raises(InputError, match="overflow_fix: expected one of"):
        load_config(cfg_file)


@pytest.mark.parametrize("text, match", [
    ("components:\n  pose: {precison: int8}\n", "precison"),
    ("bogus: 1\n", "bogus"),
    ("advanced: {smooth_quant: 0.5}\n", "smooth_quant"),
    ("components:\n  pose: {precision: int9}\n", "int9"),
    ("components:\n  pose: {subset_size: 0}\n", "subset_size"),
    ("detector_imgsz: 100\n", "detector_imgsz"),
    ("input_size: 100x75\n", "input_size"),
    ("calibration: {held_out: -1}\n", "calibration.held_out"),
    ("validation: {latency_hints: [f64]}\n", "validation.latency_hints"),
])
def test_config_errors_name_the_key(tmp_path, text, match):
    cfg_file = tmp_path / "c.yaml"
    cfg_file.write_text(text)
    with pytest.raises(InputError, match=match):
        load_config(cfg_file)


def test_shipped_config_loads_and_states_the_built_in_defaults(tmp_path):
    shipped = Path(__file__).resolve().parents[2] / "configs" / "convert.yaml"
    cfg = load_config(shipped)
    assert set(cfg.components) == {"detector", "vae_encoder", "pose"}
    assert cfg.input_size == (1024, 768)
    # one set of defaults: the shipped file resolves to exactly the built-in values (an empty file's)
    (tmp_path / "empty.yaml").write_text("{}\n")
    assert cfg.describe() == load_config(tmp_path / "empty.yaml").describe()


def test_component_precision_and_input_size_parsing():
    assert parse_component_precision("pose=hybrid, vae_encoder=int8") == {"pose": "hybrid", "vae_encoder": "int8"}
    with pytest.raises(InputError, match="unet"):
        parse_component_precision("unet=int8")
    with pytest.raises(InputError, match="int9"):
        parse_component_precision("pose=int9")
    assert parse_input_size("1024x768") == (1024, 768)
    with pytest.raises(InputError, match="multiples of 8"):
        parse_input_size("100x75")


def test_cli_registers_convert_and_validate():
    from convert.cli import build_parser

    args = build_parser().parse_args(["convert", "--checkpoint", "c", "--out", "o", "--precision", "int8",
                                      "--calib", "calib_data/default", "--subset-size", "8"])
    assert args.precision == "int8" and args.subset_size == 8 and callable(args.func)
    args = build_parser().parse_args(["validate", "m", "--reference", "r", "--held-out", "3"])
    assert args.held_out == 3 and callable(args.func)


def test_builtin_defaults_match_the_shipped_yaml(monkeypatch, tmp_path):
    """An installed package without configs/ falls back to the built-in defaults: they must agree."""
    import convert.convert_config as cc  # load_config reads DEFAULT_CONFIG there

    shipped = load_config(cc.DEFAULT_CONFIG).describe()
    monkeypatch.setattr(cc, "DEFAULT_CONFIG", tmp_path / "missing.yaml")
    assert load_config(None).describe() == shipped
