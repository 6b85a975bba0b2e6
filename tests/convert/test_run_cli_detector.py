"""``sdpose-edge run`` on tiny converted models with the converted detector (no --detections)."""
from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np

from tests.runtime.test_run_cli import REPO, read_jsonl, run_cli


def test_converted_tiny_models_with_detector(tmp_path: Path, exported_models) -> None:
    """The whole chain on models exported from a tiny synthetic checkpoint, plus a converted random-weight
    YOLO detector: detector path with --detect-every, and the --detections path."""
    from convert.detector import export_detector, make_synthetic_yolo

    models = tmp_path / "models"
    shutil.copytree(exported_models("wholebody"), models)
    export_detector(make_synthetic_yolo(tmp_path / "yolo11n.pt", seed=0), models, imgsz=320)
    video = REPO / "samples" / "people.mp4"
    out = tmp_path / "det"
    code = run_cli("--models", str(models), "--source", str(video), "--output", str(out), "--max-frames", "3",
                   "--detect-every", "2", "--det-score-threshold", "0.0", "--max-persons", "1", "--batch", "2")
    records = read_jsonl(out / "predictions.jsonl")
    assert [r["frame"] for r in records] == [0, 1, 2] and all("error" not in r for r in records)
    assert code == 0
    out = tmp_path / "dets"
    code = run_cli("--models", str(models), "--source", str(video), "--output", str(out), "--max-frames", "2",
                   "--detections", str(REPO / "samples" / "people_detections.json"), "--batch", "3",
                   "--precision-hint", "f32")
    assert code == 0
    records = read_jsonl(out / "predictions.jsonl")
    assert [len(r["persons"]) for r in records] == [3, 3]
    # the pipelined run gives what the synchronous PoseEstimator gives on the same frame and boxes
    from edge_runtime.model.estimator import PoseEstimator
    from edge_runtime.model.models import CompileOptions

    est = PoseEstimator(models, options=CompileOptions(cache_dir=None, inference_precision="f32"))
    cap = cv2.VideoCapture(str(video))
    ok, frame = cap.read()
    cap.release()
    assert ok
    boxes = np.asarray([p["bbox_xyxy"] for p in records[0]["persons"]])
    kpts, scores = est(frame, boxes)
    got = np.asarray([p["keypoints"] for p in records[0]["persons"]])
    assert got.shape == (3, 133, 3)
    np.testing.assert_allclose(got[..., :2], kpts, atol=0.02)
    np.testing.assert_allclose(got[..., 2], scores, atol=1e-4)
