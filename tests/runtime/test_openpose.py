"""OpenPose JSON layout (18 body points with neck, per-part counts, thresholds) and keypoint tables."""
from __future__ import annotations

import json

import numpy as np
import pytest

from edge_runtime.errors import InputError
from edge_runtime.model.keypoints import (BODY_NAMES, WHOLEBODY_NAMES, WHOLEBODY_PARTS, filter_parts, keypoint_names,
                                    part_ranges)
from edge_runtime.media.openpose import openpose18, to_openpose, to_openpose_person, write_openpose_json


def _person(k: int = 133, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keypoints = rng.uniform(10, 300, (k, 2))
    scores = np.full(k, 0.9)
    return keypoints, scores


def _triples(flat: list[float]) -> np.ndarray:
    assert len(flat) % 3 == 0
    return np.asarray(flat).reshape(-1, 3)


def test_tables():
    assert len(WHOLEBODY_NAMES) == 133 and len(set(WHOLEBODY_NAMES)) == 133
    assert WHOLEBODY_NAMES[17] == "left_big_toe" and WHOLEBODY_NAMES[91] == "left_hand_root"
    assert WHOLEBODY_NAMES[112] == "right_hand_root" and WHOLEBODY_NAMES[132] == "right_pinky_finger4"
    assert keypoint_names(17) == BODY_NAMES
    sizes = {p: b - a for p, (a, b) in WHOLEBODY_PARTS.items()}
    assert sizes == {"body": 17, "feet": 6, "face": 68, "left_hand": 21, "right_hand": 21}
    assert part_ranges(17) == {"body": (0, 17)}
    with pytest.raises(InputError, match="expected 133 or 17"):
        part_ranges(20)


def test_filter_parts_zeroes_scores_only():
    keypoints, scores = _person()
    kp, sc = filter_parts(keypoints, scores, {"body", "hands"})
    np.testing.assert_array_equal(kp, keypoints)
    assert np.all(sc[:17] == 0.9) and np.all(sc[17:91] == 0) and np.all(sc[91:] == 0.9)
    assert np.all(scores == 0.9)  # input untouched
    kp, sc = filter_parts(keypoints[None], scores[None], ["face"])
    assert sc.shape == (1, 133) and np.all(sc[0, 23:91] == 0.9) and sc[0, :23].sum() == 0
    _, sc17 = filter_parts(keypoints[:17], scores[:17], {"face"})
    assert sc17.sum() == 0
    with pytest.raises(InputError, match="unknown part"):
        filter_parts(keypoints, scores, {"torso"})


def test_person_layout_wholebody():
    keypoints, scores = _person()
    person = to_openpose_person(keypoints, scores, confidence="score")
    assert person["person_id"] == [-1]  # OpenPose's "not tracked"
    assert to_openpose_person(keypoints, scores, person_id=4)["person_id"] == [4]
    counts = {key: len(value) // 3 for key, value in person.items() if key != "person_id"}
    assert counts == {"pose_keypoints_2d": 18, "foot_keypoints_2d": 6, "face_keypoints_2d": 70,
                      "hand_left_keypoints_2d": 21, "hand_right_keypoints_2d": 21}
    pose = _triples(person["pose_keypoints_2d"])
    np.testing.assert_allclose(pose[0, :2], keypoints[0])  # nose
    np.testing.assert_allclose(pose[1, :2], (keypoints[5] + keypoints[6]) / 2)  # neck
    np.testing.assert_allclose(pose[2, :2], keypoints[6])  # right shoulder
    np.testing.assert_allclose(pose[5, :2], keypoints[5])  # left shoulder
    np.testing.assert_allclose(pose[8, :2], keypoints[12])  # right hip
    np.testing.assert_allclose(pose[14, :2], keypoints[2])  # right eye
    np.testing.assert_allclose(pose[17, :2], keypoints[3])  # left ear
    np.testing.assert_allclose(pose[:, 2], 0.9)
    np.testing.assert_allclose(_triples(person["hand_left_keypoints_2d"])[:, :2], keypoints[91:112])
    np.testing.assert_allclose(_triples(person["hand_right_keypoints_2d"])[:, :2], keypoints[112:133])
    np.testing.assert_allclose(_triples(person["foot_keypoints_2d"])[:, :2], keypoints[17:23])
    face = _triples(person["face_keypoints_2d"])
    np.testing.assert_allclose(face[:68, :2], keypoints[23:91])
    np.testing.assert_allclose(face[68, :2], keypoints[2])  # right pupil <- right eye
    np.testing.assert_allclose(face[69, :2], keypoints[1])
    assert len(to_openpose_person(keypoints, scores, face_points=68)["face_keypoints_2d"]) == 68 * 3


def test_threshold_neck_and_binary_confidence():
    keypoints, scores = _person()
    scores[5] = 0.1  # left shoulder below threshold -> neck invalid too
    scores[100] = np.nan
    person = to_openpose_person(keypoints, scores, threshold=0.3)
    pose = _triples(person["pose_keypoints_2d"])
    np.testing.assert_array_equal(pose[5], 0)
    np.testing.assert_array_equal(pose[1], 0)
    np.testing.assert_array_equal(_triples(person["hand_left_keypoints_2d"])[9], 0)
    scores[5] = 0.5
    pose = _triples(to_openpose_person(keypoints, scores, confidence="score")["pose_keypoints_2d"])
    assert pose[1, 2] == pytest.approx(0.5)  # neck score = min of the shoulders
    binary = _triples(to_openpose_person(keypoints, scores)["pose_keypoints_2d"])  # the default
    assert set(binary[:, 2].tolist()) == {1.0}


def test_score_mode_clips_to_unit_range_and_canvas_drops_outside_points():
    keypoints, scores = _person()
    scores[0], scores[6] = 1.7, -0.2  # raw heatmap maxima can leave [0, 1]
    keypoints[9] = (-13730.0, 50.0)   # left wrist far outside a 320 x 240 canvas
    keypoints[10] = (100.0, 240.0)    # right wrist on the bottom edge: outside [0, 240)
    person = to_openpose_person(keypoints, scores, threshold=-1.0, confidence="score", canvas=(320, 240))
    pose = _triples(person["pose_keypoints_2d"])
    assert pose[0, 2] == 1.0 and pose[2, 2] == 0.0  # nose clipped to 1; right shoulder (COCO 6) to 0
    np.testing.assert_array_equal(pose[7], 0)  # OpenPose-18 left wrist
    np.testing.assert_array_equal(pose[4], 0)  # OpenPose-18 right wrist
    assert all(0.0 <= c <= 1.0 for key in person if key != "person_id" for c in _triples(person[key])[:, 2])


def _read_like_controlnet_readers(frame: dict) -> list[int]:
    """Visible body points per person as comfyui_controlnet_aux's decode_json_as_poses (keeps c >= 1.0)
    and sd-webui-openpose-editor (shows c == 1) read them: a point counts only with confidence 1."""
    return [sum(1 for c in _triples(p["pose_keypoints_2d"])[:, 2] if c == 1.0) for p in frame["people"]]


def test_default_output_is_read_with_all_visible_points_by_controlnet_readers():
    from edge_runtime.media.openpose import to_openpose

    keypoints, scores = _person()
    scores[:17] = np.linspace(0.35, 1.3, 17)  # raw scores, some above 1
    scores[3] = 0.1                            # one body point below the threshold
    frame = to_openpose(keypoints[None], scores[None], 320, 320)  # defaults: binary, threshold 0.3
    assert _read_like_controlnet_readers(frame) == [17]  # 18 OpenPose points minus the invisible ear
    scored = to_openpose(keypoints[None], scores[None], 320, 320, confidence="score")
    assert _read_like_controlnet_readers(scored) < [17]


def test_body17_person():
    keypoints, scores = _person(17)
    person = to_openpose_person(keypoints, scores)
    assert len(person["pose_keypoints_2d"]) == 18 * 3
    assert person["face_keypoints_2d"] == [] and person["hand_left_keypoints_2d"] == []
    points, conf = openpose18(keypoints, scores)
    assert points.shape == (18, 2) and conf.shape == (18,)


def test_bad_person_inputs():
    keypoints, scores = _person()
    with pytest.raises(InputError, match=r"expected \[133,2\]/\[133\] or \[17,2\]/\[17\]"):
        to_openpose_person(keypoints[:20], scores[:20])
    with pytest.raises(InputError, match="face_points"):
        to_openpose_person(keypoints, scores, face_points=69)
    with pytest.raises(InputError, match="confidence"):
        to_openpose_person(keypoints, scores, confidence="soft")


def test_write_openpose_json(tmp_path):
    keypoints, scores = _person()
    frame = to_openpose(np.stack([keypoints, keypoints + 1]), np.stack([scores, scores]), 320, 240)
    path = write_openpose_json(tmp_path / "sub" / "000001.json", frame["people"], 320, 240)
    data = json.loads(path.read_text())
    assert set(data) == {"version", "people", "canvas_width", "canvas_height"}
    assert (data["canvas_width"], data["canvas_height"], len(data["people"])) == (320, 240, 2)
    assert not list(tmp_path.glob("sub/.*"))  # no temporary file left
    empty = to_openpose(np.zeros((0, 133, 2)), np.zeros((0, 133)), 10, 10)
    assert empty["people"] == []
    with pytest.raises(InputError, match="canvas size"):
        write_openpose_json(tmp_path / "x.json", frame["people"], 0, 10)
