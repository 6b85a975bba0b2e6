"""Person detector: YOLO11 .pt -> detector.xml (convert.detector) and its torch-free runtime (edge_runtime.model.detector)."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import InputError, ModelFolderError, SDPoseError
from edge_runtime.model.metadata import read_index

IMGSZ = 320  # small export size keeps the tests fast; the contract is the same at 640
ANCHORS = (IMGSZ // 8) ** 2 + (IMGSZ // 16) ** 2 + (IMGSZ // 32) ** 2


def _f32_options():
    from edge_runtime.model.models import CompileOptions

    return CompileOptions(performance_hint="LATENCY", inference_precision="f32", cache_dir=None)


@pytest.fixture(scope="module")
def yolo_pt(tmp_path_factory) -> Path:
    from convert.detector import make_synthetic_yolo

    return make_synthetic_yolo(tmp_path_factory.mktemp("yolo") / "yolo11n.pt", seed=0)


@pytest.fixture(scope="module")
def det_folder(yolo_pt, tmp_path_factory) -> Path:
    from convert.detector import export_detector

    out = tmp_path_factory.mktemp("models")
    xml = export_detector(yolo_pt, out, imgsz=IMGSZ)
    assert xml == out / "detector.xml"
    return out


@pytest.fixture(scope="module")
def detector(det_folder):
    from edge_runtime.model.detector import PersonDetector

    return PersonDetector(det_folder, options=_f32_options())


def _photo() -> np.ndarray:
    import skimage.data

    img = cv2.cvtColor(skimage.data.astronaut(), cv2.COLOR_RGB2BGR)
    return np.ascontiguousarray(img[:, 40:440])  # 512x400: not square, so padding is exercised


def test_synthetic_yolo_loads_with_ultralytics(yolo_pt):
    from ultralytics import YOLO

    model = YOLO(str(yolo_pt))
    assert model.task == "detect"
    assert model.model.names[0] == "person" and len(model.model.names) == 80


def test_export_contract(det_folder, yolo_pt):
    import openvino as ov

    from convert.detector import sha256_file
    from edge_runtime.model.metadata import read_metadata

    assert read_index(det_folder)["components"] == {"detector": "detector.xml"}
    model = ov.Core().read_model(str(det_folder / "detector.xml"))
    assert model.inputs[0].get_any_name() == "image"
    assert model.inputs[0].get_element_type() == ov.Type.u8
    assert list(model.inputs[0].get_shape()) == [1, IMGSZ, IMGSZ, 3]
    assert model.outputs[0].get_any_name() == "boxes"
    assert list(model.outputs[0].get_shape()) == [1, 84, ANCHORS]
    meta = read_metadata(model)
    assert meta["kind"] == "detector"
    assert (meta["input_width"], meta["input_height"]) == (IMGSZ, IMGSZ)
    assert meta["letterbox"]["pad_value"] == 114
    assert meta["class_names"][0] == "person" and meta["person_class"] == 0
    assert meta["precision"] == "fp32" and meta["quantized"] is False
    assert meta["checkpoint_sha256"] == sha256_file(yolo_pt)
    assert {"openvino", "torch", "ultralytics"} <= set(meta["versions"])


def test_ir_matches_torch(detector, yolo_pt):
    """IR (with BGR->RGB, /255 inside) == the torch model fed RGB/255 NCHW, on a letterboxed photo."""
    import torch

    from convert.detector import _prepare_for_export, load_yolo
    from edge_runtime.model.detector import letterbox

    tensor, _, _ = letterbox(_photo(), IMGSZ)
    raw = detector.infer(tensor)
    model = _prepare_for_export(load_yolo(yolo_pt))
    x = torch.from_numpy(np.ascontiguousarray(tensor[0, :, :, ::-1])).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        ref = model(x).numpy()
    assert raw.shape == ref.shape == (1, 84, ANCHORS)
    scale = np.abs(ref).max(axis=2, keepdims=True) + 1e-6
    assert float((np.abs(raw - ref) / scale).max()) < 1e-3


def test_detector_call_contract(det_folder):
    from edge_runtime.model.detector import PersonDetector

    det = PersonDetector(det_folder / "detector.xml", options=_f32_options(), conf_threshold=0.0, max_detections=7)
    image = _photo()
    boxes, scores = det(image)
    assert boxes.dtype == np.float32 and scores.dtype == np.float32
    assert boxes.shape == (len(scores), 4) and 1 <= len(scores) <= 7
    assert (np.diff(scores) <= 0).all()
    assert (boxes[:, 0] >= 0).all() and (boxes[:, 2] <= image.shape[1]).all()
    assert (boxes[:, 1] >= 0).all() and (boxes[:, 3] <= image.shape[0]).all()
    assert (boxes[:, 2] >= boxes[:, 0]).all() and (boxes[:, 3] >= boxes[:, 1]).all()


def _raw_from_boxes(entries, ratio, pad, num_classes=80, anchors=50):
    """Hand-made IR output [1, 4 + C, A]: each entry (box_xyxy image px, class id, score)."""
    raw = np.zeros((1, 4 + num_classes, anchors), np.float32)
    raw[0, 2:4] = 1.0  # padding anchors: tiny boxes with zero scores
    for a, (box, cls, score) in enumerate(entries):
        x1, y1, x2, y2 = (np.asarray(box, np.float64) * ratio + np.array([pad[0], pad[1]] * 2))
        raw[0, :4, a] = [(x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1]
        raw[0, 4 + cls, a] = score
        raw[0, 4 + (cls + 1) % num_classes, a] = score / 2  # a runner-up class
    return raw


def test_postprocess_maps_back_and_suppresses(detector):
    image = np.zeros((480, 640, 3), np.uint8)  # ratio 0.5, pad (0, 40) into 320x320
    _, meta = detector.preprocess(image)
    assert meta["ratio"] == pytest.approx(0.5) and meta["pad"] == (0, 40)
    entries = [
        ((100.0, 50.0, 300.0, 250.0), 0, 0.9),    # person
        ((104.0, 54.0, 300.0, 252.0), 0, 0.8),    # same person, lower score: suppressed by NMS
        ((400.0, 100.0, 500.0, 400.0), 0, 0.6),   # second person
        ((420.0, 300.0, 700.0, 520.0), 0, 0.55),  # person leaving the frame: clipped to the image
        ((10.0, 10.0, 60.0, 60.0), 2, 0.95),      # a car: not a person
        ((10.0, 300.0, 90.0, 470.0), 0, 0.45),    # below the default conf_threshold 0.5 (the original app's)
        ((200.0, 300.0, 280.0, 470.0), 0, 0.5),   # exactly 0.5: the original keeps only conf > 0.5
    ]
    assert (detector.conf_threshold, detector.iou_threshold) == (0.5, 0.7)
    boxes, scores = detector.postprocess(_raw_from_boxes(entries, meta["ratio"], meta["pad"]), meta)
    np.testing.assert_allclose(scores, [0.9, 0.6, 0.55], rtol=1e-6)
    np.testing.assert_allclose(boxes, [[100, 50, 300, 250], [400, 100, 500, 400], [420, 300, 640, 480]],
                               atol=1e-3)


def test_postprocess_person_must_be_best_class_and_limits(detector):
    image = np.zeros((320, 320, 3), np.uint8)
    _, meta = detector.preprocess(image)
    raw = _raw_from_boxes([((0, 0, 50, 50), 0, 0.6)], meta["ratio"], meta["pad"])
    raw[0, 4 + 5, 0] = 0.7  # another class wins this anchor
    boxes, scores = detector.postprocess(raw, meta)
    assert boxes.shape == (0, 4) and scores.shape == (0,)
    many = [((i * 30.0, 0.0, i * 30.0 + 20.0, 20.0), 0, 0.9 - i * 0.01) for i in range(10)]
    from edge_runtime.model.detector import PersonDetector

    capped = PersonDetector.__new__(PersonDetector)
    capped.__dict__.update(detector.__dict__, max_detections=4)
    boxes, scores = capped.postprocess(_raw_from_boxes(many, meta["ratio"], meta["pad"]), meta)
    assert len(boxes) == 4
    np.testing.assert_allclose(scores, [0.9, 0.89, 0.88, 0.87], rtol=1e-6)
    with pytest.raises(InputError, match=r"\[1, 4 \+ C, A\]"):
        detector.postprocess(np.zeros((84, 10), np.float32), meta)


@pytest.mark.parametrize("shape", [(480, 640), (640, 480), (333, 517), (100, 100), (1080, 1920)])
def test_letterbox_matches_ultralytics_and_round_trips(shape):
    from ultralytics.data.augment import LetterBox

    from edge_runtime.model.detector import letterbox, unletterbox_boxes

    rng = np.random.default_rng(shape[0])
    image = rng.integers(0, 256, (*shape, 3), dtype=np.uint8)
    tensor, ratio, (left, top) = letterbox(image, 320)
    assert tensor.shape == (1, 320, 320, 3) and tensor.dtype == np.uint8
    expected = LetterBox(new_shape=(320, 320), auto=False, scaleup=True, center=True)(image=image)
    np.testing.assert_array_equal(tensor[0], expected)
    # the image occupies [top, top + round(h*r)) x [left, left + round(w*r)); the rest is 114
    nh, nw = round(shape[0] * ratio), round(shape[1] * ratio)
    mask = np.ones((320, 320), bool)
    mask[top:top + nh, left:left + nw] = False
    assert (tensor[0][mask] == 114).all()
    boxes = np.array([[0, 0, shape[1], shape[0]], [10.5, 20.25, 40, 60]], np.float64)
    lb = boxes * ratio + np.array([left, top, left, top])
    np.testing.assert_allclose(unletterbox_boxes(lb, ratio, (left, top), image.shape), boxes, atol=1e-3)


def test_letterbox_rejects_bad_input():
    from edge_runtime.model.detector import letterbox

    with pytest.raises(InputError, match="BGR image"):
        letterbox(np.zeros((10, 10), np.uint8), 320)
    with pytest.raises(InputError, match="u8"):
        letterbox(np.zeros((10, 10, 3), np.float32), 320)


def test_calibration_inputs_and_ignored_scope(detector):
    from convert.detector import detector_calibration_inputs, detector_ignored_scope

    frames = [_photo(), np.zeros((90, 160, 3), np.uint8)]
    tensors = list(detector_calibration_inputs(iter(frames), imgsz=IMGSZ))
    assert [t.shape for t in tensors] == [(1, IMGSZ, IMGSZ, 3)] * 2 and all(t.dtype == np.uint8 for t in tensors)
    with pytest.raises(InputError, match="calibration frame 0"):
        list(detector_calibration_inputs([np.zeros((4, 4), np.float32)]))
    scope = detector_ignored_scope(detector.model)
    ops = {op.get_friendly_name(): op.get_type_name() for op in detector.model.get_ordered_ops()}
    assert scope.names and set(scope.names) <= set(ops)
    kinds = {ops[n] for n in scope.names}
    assert "Sigmoid" in kinds and "Softmax" in kinds  # class scores and the DFL box decoding
    convs = [n for n, t in ops.items() if t == "Convolution"]
    assert len([n for n in convs if n not in scope.names]) > 0.9 * len(convs)  # the backbone stays quantizable


def test_errors(tmp_path, det_folder):
    from convert.detector import export_detector, load_yolo
    from edge_runtime.model.detector import PersonDetector

    with pytest.raises(InputError, match="does not exist"):
        load_yolo(tmp_path / "missing.pt")
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="bad.pt"):
        load_yolo(bad)
    with pytest.raises(SDPoseError, match="precision"):
        export_detector(bad, tmp_path / "m", precision="int8")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "sdpose_models.json").write_text('{"format_version": 1, "components": {}}')
    with pytest.raises(ModelFolderError, match="no 'detector' component"):
        PersonDetector(tmp_path / "folder")
    with pytest.raises(ModelFolderError, match="does not exist"):
        PersonDetector(tmp_path / "nothing.xml")
    with pytest.raises(InputError, match="conf_threshold"):
        PersonDetector(det_folder, conf_threshold=2.0)


def test_runtime_module_is_torch_free():
    code = ("import sys, edge_runtime.model.detector; "
            "bad = [m for m in ('torch', 'ultralytics', 'convert') if m in sys.modules]; "
            "sys.exit(1 if bad else 0)")
    root = Path(__file__).resolve().parents[2]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == 0


def test_calib_cli_with_detector(det_folder, tmp_path):
    """`sdpose-convert calib --detector MODELS`: persons found by the converted (random-weight) detector."""
    from calib_data.builder import load_calibration_set
    from convert.cli import main

    images = tmp_path / "imgs"
    images.mkdir()
    cv2.imwrite(str(images / "a.png"), _photo())
    out = tmp_path / "calib"
    code = main(["calib", "--images", str(images), "--detector", str(det_folder), "--out", str(out),
                 "--conf", "0.0", "--input-size", "128x96", "--max-crops", "3"])
    assert code == 0
    calib = load_calibration_set(out)
    assert 1 <= len(calib) <= 3
    assert {r["box_source"] for r in calib.crop_records} == {"detector"}
    assert calib.manifest["person_boxes"]["detector"]["checkpoint_sha256"]
