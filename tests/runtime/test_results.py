"""FrameResult is what the sinks receive: the record round trip (``from_record`` / ``to_record``), and the OpenPose
files, COCO results and overlays of a run the same, byte for byte, as when the sinks parsed the records."""
from __future__ import annotations

import hashlib
import json
import types
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import InputError
from edge_runtime.media.coco import coco_instance_score, result_entry
from edge_runtime.media.draw import DrawOptions, draw_poses
from edge_runtime.media.openpose import DEFAULT_THRESHOLD, to_openpose_person, write_openpose_json
from edge_runtime.media.sinks import CocoResultsSink, JsonlSink, ListSink, OpenPoseSink, VideoSink
from edge_runtime.running.records import json_safe, read_predictions
from edge_runtime.running.results import PERSON_FIELDS, FrameResult


def _frame(i: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(index=i, name=f"clip/{i:012d}.jpg", timestamp_ms=33.3 * i, ok=True,
                                 image=np.zeros((120, 160, 3), np.uint8))


def _results(k: int) -> list[FrameResult]:
    """12 frames of 0-3 persons at random float32 positions (some off the canvas), scores in [0, 1.1]; frame 5
    failed, frames 0/3/6/9 with persons still waiting for their first pose, a NaN keypoint in frame 7."""
    rng = np.random.default_rng(k)
    out = []
    for i in range(12):
        n = i % 4
        if i == 5:
            out.append(FrameResult.failed(_frame(i), "s", "cannot decode", k))
            continue
        kp = rng.uniform(-5, 165, (n, k, 2)).astype(np.float32)
        sc = rng.uniform(0, 1.1, (n, k)).astype(np.float32)
        boxes = np.sort(rng.uniform(0, 160, (n, 4)).astype(np.float32).reshape(n, 2, 2), axis=1).reshape(n, 4)
        r = FrameResult(i, f"clip/{i:012d}.jpg", 33.3 * i, (160, 120), boxes, rng.uniform(0, 1, n).astype(np.float32),
                        kp, sc, np.arange(n, dtype=np.int64) + 3 * i)
        if n >= 2 and i % 3 == 0:
            r.has_pose = np.array([True] + [False] * (n - 1))
            r.keypoints[1:] = np.nan
            r.scores[1:] = 0
        if i == 7 and n:
            r.keypoints[0, 3] = np.nan
        out.append(r)
    return out


def _live(r: FrameResult, keyframes: bool) -> FrameResult:
    """``r`` with the live fields (pose_frame, pose_age_ms, propagated) and, if ``keyframes``, the scheduled ones
    (pose_frames, interpolated); pose-pending persons get -1 / NaN there, as FrameResult.from_persons gives."""
    n, posed = len(r.track_ids), r.has_pose
    r.pose_frames = np.where(posed, r.frame - np.arange(n), -1).astype(np.int64)
    r.pose_age_ms = np.where(posed, 1000.0 / 3 * np.arange(n), np.nan)
    r.propagated = np.arange(n) % 2 == 1
    if keyframes:
        r.interpolated = np.arange(n) % 2 == 0
        r.keyframes = np.stack([r.frame - np.arange(n), np.where(np.arange(n) == 1, -1, r.frame + 2)], 1)
    return r


def _same(a: FrameResult, b: FrameResult) -> None:
    """Equal fields (NaN equals NaN); a per-person field unset on one side is empty on the other."""
    assert (a.frame, a.source, a.timestamp_ms, a.image_size, a.error) == (b.frame, b.source, b.timestamp_ms,
                                                                           b.image_size, b.error)
    for name in PERSON_FIELDS:
        x, y = getattr(a, name), getattr(b, name)
        if x is None and y is None:
            continue
        if x is None or y is None:
            assert len(a.track_ids) == 0 and (x is None or len(x) == 0) and (y is None or len(y) == 0), name
            continue
        assert x.shape[0] == y.shape[0], name
        if len(x):
            np.testing.assert_array_equal(x, y, err_msg=name)


@pytest.mark.parametrize("k", [133, 17])
@pytest.mark.parametrize("parts", [None, ("body", "hands")])
def test_record_round_trip(k: int, parts: "tuple[str, ...] | None") -> None:
    """from_record(r.to_record()) is r up to the record's rounding: exactly r.as_output(), close to r, and its own
    record again; pose-pending persons ("keypoints": null), failed frames and the issue-27 fields included."""
    parts_arg = {} if parts is None else {"parts": parts}
    for i, r in enumerate(_results(k)):
        if len(r.track_ids) and i % 2 == 0:
            r = _live(r, keyframes=i % 4 == 0)
        record = r.to_record(**parts_arg)
        back = FrameResult.from_record(record, num_keypoints=k)
        _same(back, r.as_output(**parts_arg))
        assert json_safe(back.to_record()) == json_safe(record)  # (NaN != NaN: compared as written, NaN -> null)
        if r.error is None and parts is None:
            posed = r.has_pose
            np.testing.assert_allclose(back.keypoints[posed], r.keypoints[posed], atol=5e-4)
            np.testing.assert_allclose(back.scores, r.scores, atol=5e-6)
            np.testing.assert_allclose(back.boxes_xyxy, r.boxes_xyxy, atol=5e-3)
            assert back.track_ids.tolist() == r.track_ids.tolist() and back.has_pose.tolist() == posed.tolist()
        if r.error is not None:
            assert back.error == "cannot decode" and len(back.track_ids) == 0


def test_pose_pending_and_issue27_fields_survive_the_file(tmp_path: Path) -> None:
    """Through predictions.jsonl (JSON: NaN -> null) and read_predictions: null keypoints, pose_frame, pose_age_ms,
    propagated, interpolated, pose_frames and track ids come back as written."""
    r = _results(133)[3]  # 3 persons, persons 1 and 2 waiting for their first pose: give person 1 its pose
    r.has_pose = np.array([True, True, False])
    r.keypoints[1], r.scores[1] = 50.0, 0.5
    r = _live(r, keyframes=True)
    with JsonlSink(tmp_path / "predictions.jsonl") as sink:
        sink.write(r.as_output())
        sink.write(_results(133)[5])  # failed
    back, failed = read_predictions(tmp_path / "predictions.jsonl")
    person = json.loads((tmp_path / "predictions.jsonl").read_text().splitlines()[0])["persons"][2]
    assert person["keypoints"] is None and person["pose_frame"] is None and person["pose_frames"] == [None, None]
    assert back.has_pose.tolist() == [True, True, False] and back.track_ids.tolist() == [9, 10, 11]
    assert back.pose_frames.tolist() == [3, 2, -1] and back.propagated.tolist() == [False, True, False]
    assert back.pose_age_ms[:2].tolist() == [0.0, 333.333] and np.isnan(back.pose_age_ms[2])
    assert back.interpolated.tolist() == [True, False, False]
    assert back.keyframes.tolist() == [[3, 5], [2, -1], [-1, -1]]
    assert np.isnan(back.keypoints[2]).all() and not back.scores[2].any()
    assert failed.error == "cannot decode" and failed.image_size == (160, 120) and len(failed.track_ids) == 0
    _same(back, r.as_output())


def test_read_predictions_names_the_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "predictions.jsonl"
    path.write_text('{"frame": 0, "persons": []}\n\n{"frame": 1, "persons": [{"bbox_xyxy": [0, 0, 1, 1]}]}\n')
    with pytest.raises(InputError, match=r"predictions.jsonl:3: .*frame 1: malformed persons entry"):
        read_predictions(path)
    path.write_text('{"frame": 0, "persons": [}\n')
    with pytest.raises(InputError, match=r"predictions.jsonl:1: not a frame record"):
        read_predictions(path)
    with pytest.raises(InputError, match="'persons' must be a list"):
        FrameResult.from_record({"frame": 2, "persons": {"a": 1}})


def test_list_sink_keeps_results_and_serialises_records_on_demand() -> None:
    sink = ListSink()
    results = [r.as_output() for r in _results(17)[:4]]
    for r in results[:2]:
        sink.write(r)
    assert sink.records == [r.to_record() for r in results[:2]]
    for r in results[2:]:
        sink.write(r)
    assert sink.results == results and sink.records == [r.to_record() for r in results]


# ----------------------------------------------------------------- the outputs, as when the sinks parsed records
def _record_arrays(record: dict) -> tuple:
    """What the sinks read from a record before they took FrameResults: the persons with keypoints, as float64
    keypoints [N,K,2], scores [N,K], boxes [N,4], box scores [N] and track ids."""
    persons = [p for p in record.get("persons") or [] if p["keypoints"] is not None]
    if not persons:
        return np.zeros((0, 0, 2)), np.zeros((0, 0)), np.zeros((0, 4)), np.zeros(0), []
    kps = np.array([p["keypoints"] for p in persons], np.float64)
    return (kps[..., :2], kps[..., 2], np.array([p["bbox_xyxy"] for p in persons], np.float64),
            np.array([p["score"] for p in persons], np.float64), [p["track_id"] for p in persons])


def _images() -> list["np.ndarray | None"]:
    rng = np.random.default_rng(99)
    return [rng.integers(0, 255, (120, 160, 3), dtype=np.uint8) if i != 9 else None for i in range(12)]


@pytest.mark.parametrize("k", [133, 17])
def test_openpose_coco_and_overlays_as_from_the_records(tmp_path: Path, k: int) -> None:
    """Each output equals what the same writer makes of the arrays in the frame's predictions.jsonl record."""
    parts = ("body", "hands")
    options = DrawOptions(parts=frozenset(parts), threshold=0.2, draw_boxes=True)
    openpose, coco = OpenPoseSink(tmp_path / "openpose", confidence="score"), CocoResultsSink(tmp_path / "coco.json")
    video = VideoSink(tmp_path / "overlay.mp4", fps=10, parts=parts, score_threshold=0.2, draw_boxes=True)
    reference = cv2.VideoWriter(str(tmp_path / "reference.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 10.0, (160, 120))
    entries = []
    for r, image in zip(_results(k), _images()):
        result, record = r.as_output(parts), r.to_record(parts)
        for sink in (openpose, coco, video):
            sink.write(result, image=image)
        kp, sc, boxes, box_scores, ids = _record_arrays(record)
        canvas = image if image is not None else np.zeros((120, 160, 3), np.uint8)
        drawn = draw_poses(canvas, kp, sc, options, boxes, ids)
        np.testing.assert_array_equal(video.render(result, image, (160, 120)), drawn)
        reference.write(drawn)
        if "error" in record:
            continue
        people = [to_openpose_person(a, b, DEFAULT_THRESHOLD, 70, "score", (160, 120), t) for a, b, t in zip(kp, sc, ids)]
        write_openpose_json(tmp_path / "expected.json", people, 160, 120)
        written = (tmp_path / "openpose" / f"{r.frame:06d}.json").read_bytes()
        assert written == (tmp_path / "expected.json").read_bytes()
        entries += [result_entry(a, b, r.frame, coco_instance_score(s, b)) for a, b, s in zip(kp, sc, box_scores)]
    for sink in (openpose, coco, video):
        sink.close()
    reference.release()
    assert (tmp_path / "overlay.mp4").read_bytes() == (tmp_path / "reference.mp4").read_bytes()
    assert json.loads((tmp_path / "coco.json").read_text()) == json.loads(json.dumps(entries).replace("NaN", "null"))


#: sha256 of predictions.jsonl, coco_results.json, coco_image_ids.json and the OpenPose files (names and bytes, in
#: name order) of _results() written through _write_json_outputs, computed with the sinks that parsed records
#: (commit fbaf0ab, the records path: ``r.to_record(parts)`` to every sink)
EXPECTED_JSON_DIGESTS = {
    (133, None): "040f8ad0843af215305144959237f6e489c1f71588c22a65526be77ee613b124",
    (133, ("body", "hands")): "d381e2e3c8ca4ca138b018ba6f41afc5707123dbdd2488ae1558981ca7ece67c",
    (17, None): "6557f4867639ecf9fb9371d73f3c2f00065bf62a5861ac2e3c059367cf1c5080",
}


def _write_json_outputs(out: Path, k: int, parts: "tuple[str, ...] | None") -> str:
    sinks = [JsonlSink(out / "predictions.jsonl"), CocoResultsSink(out / "coco_results.json"),
             OpenPoseSink(out / "openpose", confidence="score"),
             OpenPoseSink(out / "op2", naming="openpose", score_threshold=0.1)]
    for r, image in zip(_results(k), _images()):
        for sink in sinks:
            sink.write(r.as_output() if parts is None else r.as_output(parts), image=image)
    for sink in sinks:
        sink.close()
    digest = hashlib.sha256()
    for path in sorted(p for p in out.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(out)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()


@pytest.mark.parametrize("key", list(EXPECTED_JSON_DIGESTS))
def test_json_outputs_unchanged_byte_for_byte(tmp_path: Path, key: tuple) -> None:
    assert _write_json_outputs(tmp_path, *key) == EXPECTED_JSON_DIGESTS[key]
