"""``convert.quantize``: precision modes, node patterns, refusal to quantize twice (tiny FP32 IRs)."""
from __future__ import annotations

import numpy as np
import openvino as ov
import pytest

from convert.quantize import (QuantizationError, QuantizeOptions, Reiterable, check_not_quantized,
                              count_quantization_nodes, quantize_component, save_component, weighted_matmuls)
from edge_runtime.model.metadata import read_metadata, write_metadata
from tests.fixtures_quantize import DEFAULT_CALIB, QUANT_INPUT_SIZE


@pytest.fixture(scope="module")
def fp32_dir(converted_int8):
    return converted_int8[1]


@pytest.fixture(scope="module")
def pose_latents(fp32_dir):
    """Four FP32 latents [1,4,8,6] captured by running the FP32 chain on default-set crops."""
    from calib_data import load_calibration_set
    from convert.convert_cmd import capture_component_inputs
    from convert.validate import iter_crops

    cset = load_calibration_set(DEFAULT_CALIB)
    h, w = QUANT_INPUT_SIZE
    latents = capture_component_inputs(fp32_dir, "pose", iter_crops(cset, range(4), (w, h)), 4, "f32")
    assert len(latents) == 4 and latents[0].shape == (1, 4, h // 8, w // 8)
    return latents


def _read(path) -> ov.Model:
    return ov.Core().read_model(str(path))


def test_hybrid_pose_compresses_matmul_weights_and_quantizes_convs_only(fp32_dir, pose_latents, tmp_path):
    fp32 = _read(fp32_dir / "pose.xml")
    weighted = weighted_matmuls(fp32)
    assert weighted
    q = quantize_component(fp32, "pose", "hybrid", pose_latents, subset_size=4, source=fp32_dir / "pose.xml")
    save_component(q, tmp_path / "pose.xml", "hybrid")
    counts = count_quantization_nodes(_read(tmp_path / "pose.xml"))
    assert counts["fq_on_conv"] > 0
    assert counts["fq_on_matmul"] == 0  # no activation quantization on any MatMul
    assert counts["compressed_matmul_weights"] == len(weighted)  # every weighted MatMul: int8 weights
    meta = read_metadata(_read(tmp_path / "pose.xml"))
    assert meta["precision"] == "hybrid" and meta["quantized"] is True
    rec = meta["quantization"]
    assert rec["mode"] == "hybrid" and rec["weight_compression"] == "int8_asym"
    assert rec["weight_compressed_ops"] == len(weighted) and rec["subset_size"] == 4
    assert meta["kind"] == "pose" and meta["num_keypoints"] == 133  # export metadata kept
    # smaller than FP32, and still close to it
    assert (tmp_path / "pose.bin").stat().st_size < 0.5 * (fp32_dir / "pose.bin").stat().st_size
    core = ov.Core()
    cfg = {"INFERENCE_PRECISION_HINT": "f32"}
    ref = core.compile_model(fp32, "CPU", cfg)(pose_latents[0])[0]
    got = core.compile_model(str(tmp_path / "pose.xml"), "CPU", cfg)(pose_latents[0])[0]
    assert float((ref * got).sum() / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.95


@pytest.mark.parametrize("mode, wc", [("int8_weights", "int8_asym"), ("int4_weights", "int4_asym")])
def test_weight_only_modes(fp32_dir, tmp_path, mode, wc):
    q = quantize_component(_read(fp32_dir / "vae_encoder.xml"), "vae_encoder", mode, None)
    save_component(q, tmp_path / "vae_encoder.xml", mode)
    saved = _read(tmp_path / "vae_encoder.xml")
    counts = count_quantization_nodes(saved)
    assert counts["fake_quantize"] == 0 and counts["compressed_weights"] > 0
    meta = read_metadata(saved)
    assert meta["precision"] == mode and meta["quantized"] is True
    assert meta["quantization"]["weight_compression"] == wc
    assert "subset_size" not in meta["quantization"]  # data-free


def test_fp32_and_fp16_change_no_graph(fp32_dir, tmp_path):
    model = _read(fp32_dir / "vae_encoder.xml")
    same = quantize_component(model, "vae_encoder", "fp32", None)
    assert same is model and read_metadata(same)["quantized"] is False
    half = quantize_component(_read(fp32_dir / "vae_encoder.xml"), "vae_encoder", "fp16", None)
    save_component(half, tmp_path / "vae_encoder.xml", "fp16")
    ratio = (tmp_path / "vae_encoder.bin").stat().st_size / (fp32_dir / "vae_encoder.bin").stat().st_size
    assert 0.4 < ratio < 0.6
    assert read_metadata(_read(tmp_path / "vae_encoder.xml"))["precision"] == "fp16"
    # an FP16 IR is not "quantized": it may still be quantized
    check_not_quantized(_read(tmp_path / "vae_encoder.xml"), "fp16 IR")


def test_refuses_to_quantize_twice(converted_int8, fp32_dir, tmp_path):
    int8_xml = converted_int8[0] / "pose.xml"
    with pytest.raises(QuantizationError, match=r"pose\.xml.*already quantized"):
        quantize_component(_read(int8_xml), "pose", "hybrid", [np.zeros((1, 4, 8, 6), np.float32)],
                           source=int8_xml)
    # without the rt_info flag the FakeQuantize nodes still give it away
    model = _read(int8_xml)
    write_metadata(model, {"quantized": False})
    with pytest.raises(QuantizationError, match="FakeQuantize"):
        quantize_component(model, "pose", "int8_weights", None, source="stripped.xml")
    # weight-only compressed IR (no FakeQuantize): the low-bit weight constants give it away
    q = quantize_component(_read(fp32_dir / "vae_encoder.xml"), "vae_encoder", "int8_weights", None)
    write_metadata(q, {"quantized": False})
    with pytest.raises(QuantizationError, match="low-bit weight"):
        quantize_component(q, "vae_encoder", "int8", [np.zeros((1, 64, 48, 3), np.uint8)], source="wc.xml")


def test_calibration_errors(fp32_dir):
    with pytest.raises(QuantizationError, match="needs calibration data"):
        quantize_component(_read(fp32_dir / "pose.xml"), "pose", "int8", None, source="pose.xml")
    with pytest.raises(QuantizationError, match="empty"):
        quantize_component(_read(fp32_dir / "pose.xml"), "pose", "hybrid", [], source="pose.xml")
    with pytest.raises(QuantizationError, match="int9"):
        quantize_component(_read(fp32_dir / "pose.xml"), "pose", "int9", None)
    with pytest.raises(QuantizationError, match="lacks input"):
        quantize_component(_read(fp32_dir / "pose.xml"), "pose", "int8", [{"x": np.zeros((1, 4, 8, 6))}])


def test_quantize_options_validation():
    opts = QuantizeOptions.from_dict({"smooth-quant-alpha": -1, "ignored_types": ["Softmax"]})
    assert opts.smooth_quant_alpha == -1 and opts.ignored_types == ("Softmax",)
    for bad, match in (({"bogus": 1}, "bogus"), ({"smooth_quant_alpha": 2}, "smooth_quant_alpha"),
                       ({"preset": "fast"}, "preset"), ({"int4_ratio": 0}, "int4_ratio"),
                       ({"ignored_names": "x"}, "ignored_names")):
        with pytest.raises(QuantizationError, match=match):
            QuantizeOptions.from_dict(bad)


def test_vae_encoder_model_type_transformer(fp32_dir):
    """``advanced.model_type: transformer`` quantizes the VAE encoder as NNCF's TRANSFORMER type (recorded), and
    that changes where the quantizers go; null keeps the per-kind default (``default`` for the VAE encoder)."""
    from calib_data import load_calibration_set
    from convert.validate import iter_crops

    h, w = QUANT_INPUT_SIZE
    crops = list(iter_crops(load_calibration_set(DEFAULT_CALIB), range(2), (w, h)))
    records, fq_nodes = {}, {}
    for model_type in (None, "transformer"):
        q = quantize_component(_read(fp32_dir / "vae_encoder.xml"), "vae_encoder", "int8", crops, subset_size=2,
                               options=QuantizeOptions(model_type=model_type))
        records[model_type] = read_metadata(q)["quantization"]
        fq_nodes[model_type] = sorted(o.get_friendly_name() for o in q.get_ops()
                                      if o.get_type_name() == "FakeQuantize")
    assert records[None]["model_type"] == "default"
    assert records["transformer"]["model_type"] == "transformer"
    assert fq_nodes[None] != fq_nodes["transformer"]
    with pytest.raises(QuantizationError, match="model_type"):
        QuantizeOptions.from_dict({"model_type": "vision"})


def test_reiterable_restarts_its_generator():
    calls = []

    def gen():
        calls.append(1)
        yield from range(3)

    data = Reiterable(gen, 3)
    assert list(data) == [0, 1, 2] and list(data) == [0, 1, 2] and len(data) == 3 and len(calls) == 2
