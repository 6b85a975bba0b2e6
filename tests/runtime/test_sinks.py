"""Sinks: JSONL survives a crash, COCO-WholeBody results layout, OpenPose files, playable video, images."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.media.draw import DrawOptions, draw_poses
from edge_runtime.errors import InputError
from edge_runtime.media.sinks import (CocoResultsSink, ImageSink, JsonlSink, OpenPoseSink, VideoSink,
                                      coco_instance_score)
from edge_runtime.running.results import FrameResult

R = FrameResult.from_record  # the sinks take FrameResults; these tests write them from records

ROOT = Path(__file__).resolve().parents[2]


def _record(frame: int, n: int = 1, k: int = 133, source: str = "a.jpg", error: str | None = None) -> dict:
    rng = np.random.default_rng(frame)
    persons = []
    for i in range(n):
        xy = rng.uniform(20, 100, (k, 2))
        s = np.linspace(0.1, 0.95, k)
        persons.append({"bbox_xyxy": [10.0, 10.0, 110.0, 110.0], "score": 0.8, "track_id": i,
                        "keypoints": np.concatenate([xy, s[:, None]], axis=1).tolist()})
    record = {"frame": frame, "source": source, "timestamp_ms": 40.0 * frame, "width": 128, "height": 96,
              "persons": persons}
    if error is not None:
        record["error"] = error
        record["persons"] = []
    return record


def test_jsonl_lines_and_nan(tmp_path):
    path = tmp_path / "predictions.jsonl"
    with JsonlSink(path) as sink:
        sink.write(R(_record(0)))
        bad = _record(1)
        bad["persons"][0]["keypoints"][0][2] = float("nan")
        bad["persons"][0]["score"] = np.float32(0.5)
        sink.write(R(bad))
        sink.write(R(_record(2, n=0)))
        sink.write(R(_record(3, error="cannot decode image")))
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    assert [r["frame"] for r in records] == [0, 1, 2, 3]
    assert records[1]["persons"][0]["keypoints"][0][2] is None
    assert records[1]["persons"][0]["score"] == 0.5
    assert records[2]["persons"] == [] and records[3]["error"] == "cannot decode image"
    assert len(records[0]["persons"][0]["keypoints"]) == 133


def test_jsonl_valid_after_crash(tmp_path):
    """A process that dies without closing the sink leaves every written line on disk, valid."""
    path = tmp_path / "predictions.jsonl"
    code = textwrap.dedent(f"""
        import os, sys
        sys.path.insert(0, {str(ROOT)!r})
        from edge_runtime.media.sinks import JsonlSink
        from edge_runtime.running.results import FrameResult
        sink = JsonlSink({str(path)!r})
        for i in range(3):
            sink.write(FrameResult.from_record({{"frame": i, "source": "v.mp4", "persons": []}}))
        os._exit(1)  # no close, no interpreter cleanup
    """)
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 1, result.stderr
    lines = path.read_text().splitlines()
    assert [json.loads(line)["frame"] for line in lines] == [0, 1, 2]


def test_coco_results_layout(tmp_path):
    path = tmp_path / "coco_results.json"
    sink = CocoResultsSink(path)
    sink.write(R(_record(0, n=2, source="images/000000000785.jpg")))
    sink.write(R(_record(1, source="frame.jpg")))
    sink.write(R(_record(2, error="broken")))
    assert not path.exists()  # written at close only
    sink.close()
    sink.close()  # idempotent
    results = json.loads(path.read_text())
    assert len(results) == 3
    # "frame.jpg" has no number, so the file-name numbers cannot be the ids: the frame index for every file
    assert [r["image_id"] for r in results] == [0, 0, 1]
    ids = json.loads((tmp_path / "coco_image_ids.json").read_text())
    assert ids == {"how": "frame index", "image_ids": {"images/000000000785.jpg": 0, "frame.jpg": 1}}
    first = results[0]
    assert first["category_id"] == 1
    lengths = {key: len(first[key]) for key in ("keypoints", "foot_kpts", "face_kpts", "lefthand_kpts", "righthand_kpts")}
    assert lengths == {"keypoints": 51, "foot_kpts": 18, "face_kpts": 204, "lefthand_kpts": 63, "righthand_kpts": 63}
    rec = _record(0, n=2)["persons"][0]["keypoints"]
    assert first["lefthand_kpts"][:3] == pytest.approx(rec[91])
    assert first["foot_kpts"][:3] == pytest.approx(rec[17])
    scores = np.array(rec)[:, 2]
    assert first["score"] == pytest.approx(0.8 * scores[scores > 0.2].mean())
    assert not list(tmp_path.glob(".*"))
    only_coco = CocoResultsSink(tmp_path / "c2.json")
    only_coco.write(R(_record(0, source="images/000000000785.jpg")))
    only_coco.close()
    assert json.loads((tmp_path / "c2.json").read_text())[0]["image_id"] == 785


def test_coco_body17_and_helpers(tmp_path):
    path = tmp_path / "coco.json"
    with CocoResultsSink(path) as sink:
        sink.write(R(_record(4, k=17, source="x.png")))
    result = json.loads(path.read_text())[0]
    assert len(result["keypoints"]) == 51 and "face_kpts" not in result and result["image_id"] == 4
    assert coco_instance_score(0.5, np.array([0.1, 0.3, 0.5])) == pytest.approx(0.5 * 0.4)
    assert coco_instance_score(0.5, np.array([0.1, 0.2])) == 0.0


def test_from_record_errors():
    with pytest.raises(InputError, match="malformed persons entry"):
        R({"frame": 1, "persons": [{"keypoints": [[1, 2, 3]]}]})
    with pytest.raises(InputError, match=r"must be \[K,3\]"):
        R({"frame": 1, "persons": [{"keypoints": [[1, 2]], "bbox_xyxy": [0, 0, 1, 1]}]})


def test_openpose_sink(tmp_path):
    sink = OpenPoseSink(tmp_path / "openpose")
    sink.write(R(_record(0, n=2)))
    sink.write(R(_record(1, n=0)), image=np.zeros((50, 60, 3), np.uint8))
    sink.write(R(_record(2, error="bad")))
    sink.close()
    files = sorted(p.name for p in (tmp_path / "openpose").iterdir())
    assert files == ["000000.json", "000001.json", "000002.json"]  # every input frame, the failed one too
    first = json.loads((tmp_path / "openpose" / "000000.json").read_text())
    assert (first["canvas_width"], first["canvas_height"], first["version"]) == (128, 96, 1.3)
    assert len(first["people"]) == 2 and len(first["people"][0]["pose_keypoints_2d"]) == 54
    second = json.loads((tmp_path / "openpose" / "000001.json").read_text())
    assert (second["canvas_width"], second["canvas_height"], second["people"]) == (60, 50, [])
    failed = json.loads((tmp_path / "openpose" / "000002.json").read_text())
    assert (failed["canvas_width"], failed["canvas_height"], failed["people"]) == (60, 50, [])


def test_openpose_sink_failed_first_frames_and_openpose_naming(tmp_path):
    sink = OpenPoseSink(tmp_path / "op", naming="openpose")
    sink.write(R({"frame": 0, "source": "shots/a.jpg", "error": "unreadable"}))  # size not known yet
    sink.write(R(dict(_record(1, n=1), source="shots/b.jpg")))
    sink.write(R({"frame": 2, "source": "cam.mp4", "persons": []}), image=np.zeros((40, 30, 3), np.uint8))
    sink.write(R({"frame": 3, "source": "rtsp://cam/stream", "error": "timeout"}))
    sink.close()
    names = sorted(p.name for p in (tmp_path / "op").iterdir())
    assert names == ["a_keypoints.json", "b_keypoints.json", "cam_000000000002_keypoints.json",
                     "stream_000000000003_keypoints.json"]
    first = json.loads((tmp_path / "op" / "a_keypoints.json").read_text())
    assert (first["people"], first["canvas_width"]) == ([], 128)  # written once b.jpg gave a size
    only_failed = OpenPoseSink(tmp_path / "op2")
    only_failed.write(R({"frame": 0, "source": "x.jpg", "error": "bad"}))
    only_failed.close()
    data = json.loads((tmp_path / "op2" / "000000.json").read_text())
    assert (data["people"], data["canvas_width"], data["canvas_height"]) == ([], 0, 0)


def test_video_sink_is_playable(tmp_path):
    path = tmp_path / "overlay.mp4"
    sink = VideoSink(path, fps=10)
    for i in range(5):
        image = np.full((96, 128, 3), 40 * i, np.uint8)
        sink.write(R(_record(i)), image=image if i != 3 else None)  # frame 3 unreadable -> black canvas
    sink.write(R(_record(5)), image=np.zeros((48, 64, 3), np.uint8))  # other size -> resized
    sink.close()
    cap = cv2.VideoCapture(str(path))
    assert cap.isOpened()
    frames = 0
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        assert frame.shape == (96, 128, 3)
        frames += 1
    cap.release()
    assert frames == 6


def test_video_sink_bad_fps(tmp_path):
    with pytest.raises(InputError, match="fps"):
        VideoSink(tmp_path / "v.mp4", fps=0)


def test_image_sink_and_drawing(tmp_path):
    sink = ImageSink(tmp_path / "images", parts=("body", "hands"), score_threshold=0.2)
    image = np.zeros((96, 128, 3), np.uint8)
    sink.write(R(_record(0)), image=image)
    sink.write(R(_record(1)), image=None)  # nothing to draw on -> skipped
    sink.close()
    files = sorted((tmp_path / "images").iterdir())
    assert [p.name for p in files] == ["000000.jpg"]
    drawn = cv2.imread(str(files[0]))
    assert drawn.shape == (96, 128, 3) and drawn.sum() > 0
    assert image.sum() == 0  # the caller's frame is not drawn on


def test_draw_toggles_and_threshold():
    image = np.zeros((200, 200, 3), np.uint8)
    keypoints = np.zeros((1, 133, 2))
    keypoints[0, :, 0] = np.linspace(20, 180, 133)
    keypoints[0, :, 1] = np.linspace(30, 170, 133)
    scores = np.full((1, 133), 0.9)
    everything = draw_poses(image, keypoints, scores)
    face_only = draw_poses(image, keypoints, scores, DrawOptions(parts={"face"}))
    body_only = draw_poses(image, keypoints, scores, DrawOptions(parts={"body"}))
    nothing = draw_poses(image, keypoints, scores, DrawOptions(threshold=0.95))
    assert everything.sum() > body_only.sum() > 0 and face_only.sum() > 0
    assert not np.array_equal(face_only, body_only)
    assert nothing.sum() == 0
    assert draw_poses(image, np.zeros((0, 133, 2)), np.zeros((0, 133))).sum() == 0
    with pytest.raises(InputError, match="unknown"):
        DrawOptions(parts={"tail"})
    with pytest.raises(InputError, match="expected"):
        draw_poses(image, np.zeros((1, 5, 2)), np.zeros((1, 5)))


def _with_pose_pending(frame: int) -> dict:
    """A live record: person 0 has its pose, person 1 (track 7) is tracked and still waiting for its first."""
    record = _record(frame, n=1)
    record["persons"][0].update(pose_frame=frame, pose_age_ms=0.0, propagated=False)
    record["persons"].append({"bbox_xyxy": [60.0, 20.0, 120.0, 90.0], "score": 0.9, "track_id": 7,
                              "keypoints": None, "pose_frame": None, "pose_age_ms": None, "propagated": False})
    return record


def _posed_only(record: dict) -> dict:
    return dict(record, persons=[p for p in record["persons"] if p["keypoints"] is not None])


def test_with_pose_skips_persons_without_a_pose():
    posed = R(_with_pose_pending(0)).with_pose()
    assert posed.keypoints.shape == (1, 133, 2) and posed.scores.shape == (1, 133) and posed.boxes_xyxy.shape == (1, 4)
    assert posed.track_ids.tolist() == [0] and posed.box_scores.tolist() == [0.8]
    empty = R({"frame": 1, "persons": [_with_pose_pending(1)["persons"][1]]}).with_pose()
    assert empty.keypoints.shape[0] == 0 and empty.track_ids.tolist() == []


def test_openpose_coco_and_overlays_skip_pose_pending_persons(tmp_path):
    record = _with_pose_pending(0)
    with OpenPoseSink(tmp_path / "openpose") as openpose:
        openpose.write(R(record))
    people = json.loads((tmp_path / "openpose" / "000000.json").read_text())["people"]
    assert [p["person_id"] for p in people] == [[0]]
    coco = CocoResultsSink(tmp_path / "coco_results.json")
    coco.write(R(record))
    coco.close()
    assert len(json.loads((tmp_path / "coco_results.json").read_text())) == 1
    image = np.full((96, 128, 3), 30, np.uint8)
    with ImageSink(tmp_path / "images", score_threshold=0.0, draw_boxes=True) as images:
        images.write(R(record), image=image)
    with ImageSink(tmp_path / "reference", score_threshold=0.0, draw_boxes=True) as reference:
        reference.write(R(_posed_only(record)), image=image)
    drawn = cv2.imread(str(tmp_path / "images" / "000000.jpg"))
    expected = cv2.imread(str(tmp_path / "reference" / "000000.jpg"))
    np.testing.assert_array_equal(drawn, expected)  # no box, id or skeleton for the pose-pending person
    video = VideoSink(tmp_path / "overlay.mp4", fps=10, draw_boxes=True)
    np.testing.assert_array_equal(video.render(R(record), image), video.render(R(_posed_only(record)), image))
    video.close()


def test_show_window_skips_pose_pending_persons(monkeypatch):
    from edge_runtime.media import draw
    from edge_runtime.commands import run_cli

    monkeypatch.setenv("DISPLAY", ":0")
    drawn: list = []
    monkeypatch.setattr(draw, "draw_poses", lambda image, kp, sc, options, boxes, ids: drawn.append(ids) or image)
    monkeypatch.setattr(cv2, "imshow", lambda name, canvas: None)
    monkeypatch.setattr(cv2, "waitKey", lambda delay: -1)
    hook = run_cli._ShowHook({"parts": ["body"], "score_threshold": 0.3})
    assert hook(R(_with_pose_pending(0)), np.zeros((96, 128, 3), np.uint8))
    assert drawn == [[0]]
