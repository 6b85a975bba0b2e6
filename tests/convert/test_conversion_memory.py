"""Conversion memory (issue 28): NNCF's statistic branches run first (``convert.nncf_memory``), which must leave the
quantized IRs exactly as they were; each stage's peak RSS stays recorded in report.json."""
from __future__ import annotations

import contextlib
import hashlib
import re

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest

from convert import quantize as quantize_mod
from convert.nncf_memory import reorder_statistic_results, statistics_outputs_first
from tests.fixtures_quantize import DEFAULT_CALIB, QUANT_INPUT_SIZE


def _chain() -> ov.Model:
    """x [1,4] -> relu -> *2 -> relu -> out: three internal tensors a, b, c in that order."""
    x = ops.parameter([1, 4], np.float32, name="x")
    a = ops.relu(x, name="a")
    b = ops.multiply(a, ops.constant(np.float32(2.0)), name="b")
    c = ops.relu(b, name="c")
    return ov.Model([ops.result(c, name="out")], [x], "chain")


def _with_statistics(model: ov.Model, tensors: list[str]) -> ov.Model:
    """``model`` with a ReduceMax statistic result per named tensor appended after its own result (as NNCF
    does)."""
    nodes = {op.get_friendly_name(): op for op in model.get_ops()}
    extra = [ops.result(ops.reduce_max(nodes[t], ops.constant(np.array([0, 1], np.int64)), keep_dims=False,
                                       name=f"{t}/max"), name=f"{t}/max_result") for t in tensors]
    return ov.Model(list(model.get_results()) + extra, list(model.get_parameters()), model.friendly_name)


def test_statistic_results_come_first_in_the_order_of_their_tensors():
    source = _chain()
    with_stats = _with_statistics(source, ["c", "a", "b"])
    with_stats.set_rt_info("kept", ["nncf", "marker"])
    out = reorder_statistic_results(source, with_stats)
    assert [r.get_friendly_name() for r in out.get_results()] == ["a/max_result", "b/max_result",
                                                                   "c/max_result", "out"]
    assert out.get_rt_info(["nncf", "marker"]).astype(str) == "kept"
    x = np.array([[-1.0, 1.0, 2.0, -3.0]], np.float32)
    res = ov.Core().compile_model(out, "CPU")({"x": x})
    by_name = {next(iter(k.get_names())): v for k, v in res.items()}
    assert float(by_name["a/max_result"]) == 2.0 and float(by_name["c/max_result"]) == 4.0


def test_a_second_insertion_keeps_earlier_statistics_in_order():
    source = _chain()
    moved: set[str] = set()
    first = reorder_statistic_results(source, _with_statistics(source, ["c"]), moved)
    second = reorder_statistic_results(first, _with_statistics(first, ["a"]), moved)
    assert [r.get_friendly_name() for r in second.get_results()] == ["a/max_result", "c/max_result", "out"]


def test_nothing_appended_returns_the_model_itself():
    source = _chain()
    assert reorder_statistic_results(source, source) is source


def test_the_nncf_hook_is_applied_and_restored():
    from nncf.openvino.graph.model_transformer import OVModelTransformer

    before = OVModelTransformer.__dict__["_insert_outputs"]
    with statistics_outputs_first() as applied:
        assert applied
        assert OVModelTransformer.__dict__["_insert_outputs"] is not before
    assert OVModelTransformer.__dict__["_insert_outputs"] is before


@contextlib.contextmanager
def _nncf_order():
    yield False


def _quantized_digest(model_xml, kind: str, mode: str, data, tmp_path, name: str) -> tuple[str, str]:
    model = ov.Core().read_model(str(model_xml))
    q = quantize_mod.quantize_component(model, kind, mode, data, subset_size=len(data))
    path = quantize_mod.save_component(q, tmp_path / f"{name}.xml", mode)
    # OpenVINO numbers unnamed nodes from a process-wide counter (Constant_1234): those numbers differ between
    # any two runs in one process, so they are masked; every other byte of the .xml and the .bin must match
    xml = re.sub(r'name="([A-Za-z]+)_\d+"', r'name="\1_#"', path.read_text(encoding="utf-8"))
    return (hashlib.sha256(path.with_suffix(".bin").read_bytes()).hexdigest(),
            hashlib.sha256(xml.encode()).hexdigest())


@pytest.mark.parametrize("kind,mode", [("vae_encoder", "int8"), ("pose", "int8"), ("pose", "hybrid")])
def test_statistics_order_leaves_the_quantized_ir_unchanged(exported_models, monkeypatch, tmp_path, kind, mode):
    """The same FP32 IR and calibration data give byte-identical quantized IRs with NNCF's own statistics
    order and with the statistic branches first."""
    from calib_data import load_calibration_set
    from convert.calibration import capture_component_inputs, iter_crops

    fp32 = exported_models("wholebody", input_size=QUANT_INPUT_SIZE, fused=False)
    h, w = QUANT_INPUT_SIZE
    cset = load_calibration_set(DEFAULT_CALIB)
    crops = list(iter_crops(cset, range(2), (w, h)))
    data = crops if kind == "vae_encoder" else capture_component_inputs(fp32, "pose", iter(crops), 2, "f32")
    xml = next(fp32.glob(f"*{kind}*.xml"))
    ours = _quantized_digest(xml, kind, mode, data, tmp_path, "ours")
    monkeypatch.setattr(quantize_mod, "statistics_outputs_first", _nncf_order)
    theirs = _quantized_digest(xml, kind, mode, data, tmp_path, "nncf_order")
    assert ours == theirs


def test_each_stage_records_its_peak_and_a_child_peak_above_its_own():
    from convert.convert_cmd import StageLog

    log = StageLog()
    with log.stage("in_process") as rec:
        rec["note"] = "kept"
    with log.stage("child") as rec:
        rec["child_peak_rss_gb"] = 1000.0  # a child process's own measurement, above this process's
    first, child = log.stages
    assert first["stage"] == "in_process" and first["note"] == "kept" and first["peak_rss_gb"] > 0
    assert child["peak_rss_gb"] == 1000.0 and "child_peak_rss_gb" not in child
    assert child["peak_rss_gib"] == pytest.approx(1000.0 * 1e9 / 2**30, abs=1e-3)
    assert log.summary()["peak_rss_gb"] == 1000.0
