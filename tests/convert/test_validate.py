"""``convert.validate``: metrics, the held-out split, and the report of a tiny INT8 folder."""
from __future__ import annotations

import json

import numpy as np
import pytest

from convert.validate import (box_iou, cosine, displacement_stats, match_boxes, render_markdown, split_calibration,
                              split_frames, validate_folder)
from edge_runtime.errors import InputError
from tests.fixtures_quantize import DEFAULT_CALIB


def test_cosine():
    a = np.array([1.0, 2.0, 3.0])
    assert cosine(a, 2 * a) == pytest.approx(1.0)
    assert cosine(a, -a) == pytest.approx(-1.0)
    assert cosine(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(0.0)
    assert cosine(np.zeros(3), np.zeros(3)) == 1.0 and cosine(np.zeros(3), a) == 0.0


def test_box_iou_and_matching():
    ref = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    test = np.array([[20, 20, 30, 35], [0, 0, 10, 10], [100, 100, 110, 110]], float)
    iou = box_iou(ref, test)
    assert iou.shape == (2, 3)
    assert iou[0, 1] == pytest.approx(1.0) and iou[1, 0] == pytest.approx(100 / 150)
    np.testing.assert_allclose(match_boxes(ref, test), [1.0, 100 / 150])
    np.testing.assert_allclose(match_boxes(ref, test[2:]), [0.0, 0.0])  # unmatched -> 0
    assert match_boxes(np.zeros((0, 4)), test).shape == (0,)


def test_displacement_stats():
    d = np.array([0.0, 1.0, 2.0, 3.0, 100.0])
    s = displacement_stats(d, heatmap_px=2.0, valid=np.array([1, 1, 1, 1, 0], bool))
    assert s["count"] == 4 and s["excluded"] == 1
    assert s["mean_px"] == pytest.approx(1.5) and s["max_px"] == 3.0 and s["median_px"] == pytest.approx(1.5)
    assert s["within_1_heatmap_px"] == pytest.approx(0.75)


def test_split_is_deterministic_disjoint_and_by_hash():
    from calib_data import load_calibration_set

    cset = load_calibration_set(DEFAULT_CALIB)
    n = len(cset.crop_records)
    calib, held = split_calibration(cset, 3)
    assert (calib, held) == split_calibration(load_calibration_set(DEFAULT_CALIB), 3)
    assert len(held) == 3 and not set(calib) & set(held) and sorted(calib + held) == list(range(n))
    hashes = sorted(r["sha256"] for r in cset.crop_records)
    assert sorted(cset.crop_records[i]["sha256"] for i in held) == hashes[:3]
    with pytest.raises(InputError, match="--held-out"):
        split_calibration(cset, -1)
    fcal, fheld = split_frames(cset, 100)
    assert len(fheld) <= len(cset.frame_records) // 2 and not set(fcal) & set(fheld)


def test_small_calibration_sets_hold_out_fewer_with_a_warning(caplog):
    """A set too small for --held-out holds out half of its crops (at least one always calibrates) and
    warns; only an empty set is an error."""
    from types import SimpleNamespace

    def cset(n):
        return SimpleNamespace(path=f"calib_{n}", crop_records=[{"sha256": f"{i:02d}"} for i in range(n)])

    with caplog.at_level("WARNING", logger="convert.validate"):
        calib, held = split_calibration(cset(3), 4)
    assert (calib, held) == ([1, 2], [0])
    assert "calib_3: 3 crop(s) cannot hold out 4 and still calibrate; holding out 1" in caplog.text
    assert split_calibration(cset(1), 4) == ([0], [])
    assert split_calibration(cset(5), 4) == ([4], [0, 1, 2, 3])  # enough crops: as asked
    with pytest.raises(InputError, match="calib_0: no crops"):
        split_calibration(cset(0), 4)


def test_validate_folder_against_reference(converted_int8, tmp_path):
    out, fp32, _ = converted_int8
    report = validate_folder(out, reference=fp32, calib=DEFAULT_CALIB, held_out=2, latency_runs=0, write=False,
                             int8_paths=False)
    e2e = report["fidelity"]["end_to_end"]
    assert 0.5 < e2e["heatmap_cosine"]["mean"] <= 1.0 + 1e-9
    assert report["held_out"]["held_out_crops"] == 2
    assert "latency_ms" not in report["components"]["pose"]
    assert "int8_paths" not in report and report["accumulation_check"]["ratio"] > 0
    base = report["fidelity"]["reference_bf16_baseline"]
    if report["cpu"]["bf16"]:  # a bf16 baseline only where the CPU runs bf16
        assert 0.5 < base["heatmap_cosine"]["mean"] <= 1.0 + 1e-9 and base["keypoint_displacement"]["count"] > 0
        assert report["compile"]["unsupported_hints"] == {}
    else:
        assert "bf16 is not supported on this CPU" in base["status"]
        assert "bf16" in report["compile"]["unsupported_hints"]
    # same inputs, same split -> the same numbers as the conversion's own report
    conv = json.loads((out / "report.json").read_text())
    assert e2e["heatmap_cosine"]["mean"] == pytest.approx(conv["fidelity"]["end_to_end"]["heatmap_cosine"]["mean"],
                                                         rel=1e-6)
    # the FP32 reference against itself is exact
    same = validate_folder(fp32, reference=fp32, calib=DEFAULT_CALIB, held_out=2, latency_runs=0, write=False)
    assert same["fidelity"]["end_to_end"]["heatmap_cosine"]["min"] == pytest.approx(1.0, abs=1e-9)
    assert same["fidelity"]["end_to_end"]["keypoint_displacement"]["max_px"] == pytest.approx(0.0, abs=1e-9)
    assert same["components"]["pose"]["quantized"] is False


def test_validate_without_reference_and_markdown(converted_int8):
    out, _, _ = converted_int8
    report = validate_folder(out, reference=None, calib=DEFAULT_CALIB, held_out=2, latency_runs=0, write=False)
    assert report["fidelity"]["status"].startswith("skipped")
    assert report["components"]["pose"]["size_mb"] > 0
    md = render_markdown(report)
    assert "none (fidelity not measured)" in md and "| pose | int8 |" in md


def test_validate_rejects_a_reference_from_another_checkpoint(converted_int8, tmp_path):
    import shutil

    from edge_runtime.errors import ModelFolderError
    from edge_runtime.model.metadata import write_metadata
    import openvino as ov

    out, fp32, _ = converted_int8
    other = tmp_path / "other"
    shutil.copytree(fp32, other)
    core = ov.Core()
    model = core.read_model(str(other / "pose.xml"))
    write_metadata(model, {"checkpoint_sha256": "0" * 64})
    ov.save_model(model, str(other / "pose2.xml"), compress_to_fp16=False)
    (other / "pose2.xml").replace(other / "pose.xml")
    (other / "pose2.bin").replace(other / "pose.bin")
    with pytest.raises(ModelFolderError, match="checkpoint_sha256"):
        validate_folder(out, reference=other, calib=DEFAULT_CALIB, held_out=2, latency_runs=0, write=False)


def test_validate_cli_writes_the_report(converted_int8, tmp_path):
    import shutil

    from convert.cli import main

    out, fp32, _ = converted_int8
    copy = tmp_path / "models"
    shutil.copytree(out, copy)
    (copy / "report.md").unlink()
    assert main(["validate", str(copy), "--reference", str(fp32), "--calib", str(DEFAULT_CALIB), "--held-out", "2",
                 "--latency-runs", "0"]) == 0
    report = json.loads((copy / "report.json").read_text())
    assert report["fidelity"]["end_to_end"]["heatmap_cosine"]["mean"] > 0.5
    assert report["compile"]["latency_runs"] == 0 and (copy / "report.md").is_file()
    # re-validation keeps the conversion log of the earlier report
    assert report["conversion"]["stages"][0]["stage"] == "export_fp32"
