"""Two-sided propagation in the scheduled file mode (edge_runtime.running.twosided) with fake backends: exact on a known
translation, equal weights midway between keyframes with equal errors, bounded memory whatever the video's
length, forward-only still selectable, and the dense-flow fallback following a translation."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.errors import InputError
from edge_runtime.model.estimator import PoseEstimator
from edge_runtime.running.flow import keypoint_flow, flow_gray
from edge_runtime.running.live import LiveConfig, LiveRunner, SourceRun
from edge_runtime.media.sources import Frame
from edge_runtime.running.tracks import PersonState, PoseTracks, TrackConfig
from edge_runtime.running.twosided import TwoSidedBuffer, blend, side_sigma
from tests.runtime.test_live import KPTS, dets, shifted, texture, walking_frames
from tests.runtime.test_pipeline import ListSink, ListSource, scripted_factory

BOX = np.array([90, 70, 160, 170], np.float64)
SCORES = np.full(len(KPTS), 0.9, np.float32)


@pytest.fixture(scope="module")
def estimator(fake_models_dir: Path) -> PoseEstimator:
    from edge_runtime.model.models import CompileOptions

    return PoseEstimator(fake_models_dir, options=CompileOptions(cache_dir=None, inference_precision="f32",
                                                                 num_requests=2))


def translate_run(keyframes: "set[int]", n: int, step=(2.0, -1.0), track=None) -> list:
    """Frames 0..n-1 of a texture moving by ``step`` px per frame; true poses applied on ``keyframes``."""
    base = texture(seed=3)
    cfg = track if track is not None else TrackConfig()
    tracks, buffer, out = PoseTracks(cfg), TwoSidedBuffer(cfg, hold_frames=64), []
    for t in range(n):
        image = shifted(base, step[0] * t, step[1] * t)
        tracks.advance(t, t / 10.0, image)
        shift = np.array(step) * t
        tracks.match(t, (BOX + np.tile(shift, 2))[None], np.array([0.9]))
        if t in keyframes:
            tracks.apply_pose(0, t, t / 10.0, BOX + np.tile(shift, 2), KPTS + shift, SCORES)
        out += buffer.push(Frame(t, f"f{t}", image, t * 100.0), 0.0, t / 10.0, tracks.persons())
    return out + buffer.flush()


def test_two_sided_blending_is_exact_on_a_known_translation() -> None:
    held = translate_run({0, 10}, 11)
    assert [h.frame.index for h in held] == list(range(11))
    for h in held:
        (person,) = h.persons
        t = h.frame.index
        np.testing.assert_allclose(person.keypoints, KPTS + np.array([2.0, -1.0]) * t, atol=0.5)
        if t in (0, 10):  # the keyframes themselves: the model's pose, untouched
            np.testing.assert_array_equal(person.keypoints, (KPTS + np.array([2.0, -1.0]) * t).astype(np.float32))
            assert not person.interpolated and person.pose_frames == (t, t)
        else:
            assert person.interpolated and person.propagated and person.pose_frames == (0, 10)
            assert person.pose_frame == (0 if t <= 5 else 10)  # the nearer keyframe
            assert person.pose_age_ms == pytest.approx(100.0 * min(t, 10 - t))


def test_frames_after_the_last_keyframe_use_one_side() -> None:
    held = translate_run({0}, 6)
    for h in held[1:]:
        (person,) = h.persons
        assert not person.interpolated and person.pose_frames == (0, None)


def test_frames_before_the_first_keyframe_take_the_backward_side() -> None:
    """A tracked person without a pose yet (keypoints null in the forward pass) gets the first keyframe's pose
    carried backward; the keyframe itself is the model's pose."""
    held = translate_run({3}, 6)
    for h in held[:3]:
        (person,) = h.persons
        t = h.frame.index
        assert person.has_pose and not person.interpolated and person.pose_frames == (None, 3)
        assert person.pose_frame == 3 and person.pose_age_ms == pytest.approx(100.0 * (3 - t))
        np.testing.assert_allclose(person.keypoints, KPTS + np.array([2.0, -1.0]) * t, atol=0.5)


def test_midway_between_keyframes_weighs_both_sides_equally() -> None:
    err = np.full(4, 0.3)
    s_fwd, s_back = side_sigma(5, err, np.full(4, 0.8), 1.0), side_sigma(5, err, np.full(4, 0.8), 1.0)
    out, share = blend(np.zeros((4, 2)), s_fwd, np.full((4, 2), 10.0), s_back)
    np.testing.assert_allclose(share, 0.5)
    np.testing.assert_allclose(out, 5.0)
    _, nearer = blend(np.zeros((4, 2)), side_sigma(2, err, np.full(4, 0.8), 1.0), np.ones((4, 2)),
                      side_sigma(8, err, np.full(4, 0.8), 1.0))
    assert np.all(nearer > 0.5)  # the nearer keyframe weighs more


def test_a_held_frame_midway_is_the_mean_of_two_poses_on_a_static_image() -> None:
    image = texture(seed=4)[:240, :320]
    buffer = TwoSidedBuffer(TrackConfig(drift_correction=False), hold_frames=32)
    pose_a, pose_b = KPTS.astype(np.float64), KPTS + np.array([6.0, -4.0])

    def person(t: int, kpts: np.ndarray, key: int) -> PersonState:
        return PersonState(0, BOX.astype(np.float32), 0.9, kpts.astype(np.float32), SCORES, key, 0.0, t != key,
                           np.zeros(len(KPTS)))
    out = []
    for t in range(11):  # the forward side stays at pose a (nothing moves); the keyframe at 10 says pose b
        key = 10 if t == 10 else 0
        out += buffer.push(Frame(t, f"f{t}", image, t * 100.0), 0.0, t / 10.0,
                           [person(t, pose_b if t == 10 else pose_a, key)])
    mid = out[5].persons[0]
    np.testing.assert_allclose(mid.keypoints, (pose_a + pose_b) / 2.0, atol=0.05)


def test_held_frames_do_not_grow_with_the_video_length(estimator: PoseEstimator) -> None:
    held = []
    for n in (40, 160):
        frames = walking_frames(n, persons=2)
        sink = ListSink()
        runner = LiveRunner(estimator, LiveConfig(mode="file", pose_budget=0.1), detections=dets(frames, 2),
                            backend_factory=scripted_factory({}, capacity=1))
        result = runner.run([SourceRun("v", ListSource(frames), [sink])])
        assert [r["frame"] for r in sink.records] == list(range(n))  # every frame, in order
        assert all(len(r["persons"]) == 2 and all(p["keypoints"] for p in r["persons"]) for r in sink.records)
        stats = result["sources"]["v"]["two_sided"]
        assert stats["interpolated_persons"] > 0
        held.append(stats["held_frames_max"])
    assert held[1] == held[0] <= LiveConfig(mode="file", pose_budget=0.1).held_frames()


def test_window_overflow_writes_the_oldest_frame_one_sided() -> None:
    image = texture(seed=5)[:240, :320]
    buffer = TwoSidedBuffer(TrackConfig(), hold_frames=4)
    person = PersonState(0, BOX.astype(np.float32), 0.9, KPTS, SCORES, 0, 0.0, False, np.zeros(len(KPTS)))
    written = []
    for t in range(50):  # one keyframe, then never another
        p = dataclasses.replace(person, propagated=t > 0)
        written += buffer.push(Frame(t, f"f{t}", image, t * 100.0), 0.0, t / 10.0, [p])
        assert len(buffer.held) <= 4
    assert [h.frame.index for h in written] == list(range(len(written))) and len(written) == 46


def test_forward_only_is_still_selectable(estimator: PoseEstimator) -> None:
    frames = walking_frames(30, persons=2)
    sinks = {}
    for propagation in ("forward", None):
        sinks[propagation] = ListSink()
        cfg = LiveConfig(mode="file", pose_budget=0.2, propagation=propagation)
        LiveRunner(estimator, cfg, detections=dets(frames, 2), backend_factory=scripted_factory({}, capacity=1)).run(
            [SourceRun("v", ListSource(frames), [sinks[propagation]])])
    forward = [p for r in sinks["forward"].records for p in r["persons"]]
    assert forward and not any(p["interpolated"] for p in forward)
    assert all(p["pose_frames"][1] is None and p["pose_frame"] <= r["frame"]
               for r in sinks["forward"].records for p in r["persons"])
    assert any(p["interpolated"] for r in sinks[None].records for p in r["persons"])  # file default: two-sided
    assert LiveConfig(mode="live").propagation == "forward"
    with pytest.raises(InputError, match="propagation"):
        LiveConfig(mode="live", propagation="two-sided")


def test_dense_flow_fallback_follows_a_translation() -> None:
    base = texture(seed=6)
    a, b = flow_gray(shifted(base, 0, 0), 1.0), flow_gray(shifted(base, 3.0, 2.0), 1.0)
    moved, good, fb = keypoint_flow(a, b, KPTS.astype(np.float64), SCORES, 1.0, "dense", 2.0, 0.3)
    assert good.all() and np.all(fb < 2.0)
    np.testing.assert_allclose(moved, KPTS + [3.0, 2.0], atol=0.5)
    held = translate_run({0, 8}, 9, track=TrackConfig(flow_model="dense"))
    for h in held:
        np.testing.assert_allclose(h.persons[0].keypoints, KPTS + np.array([2.0, -1.0]) * h.frame.index, atol=0.5)


def test_the_command_line_is_two_sided_for_files_and_forward_on_request(tmp_path: Path,
                                                                         fake_models_dir: Path) -> None:
    import json

    from edge_runtime.cli import main
    from tests.runtime.test_live import write_video

    write_video(tmp_path / "v.mp4", 12)
    (tmp_path / "d.json").write_text(json.dumps({str(i): [[10, 10, 80, 110, 0.9]] for i in range(12)}))
    persons = {}
    for propagation in (None, "forward"):
        out = tmp_path / f"out-{propagation}"
        extra = ["--propagation", propagation] if propagation else []
        assert main(["run", "--models", str(fake_models_dir), "--source", str(tmp_path / "v.mp4"), "--output",
                     str(out), "--detections", str(tmp_path / "d.json"), "--schedule-poses", "--pose-budget", "0.25",
                     "--no-cache", "--no-progress", *extra]) == 0
        records = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
        assert [r["frame"] for r in records] == list(range(12))
        persons[propagation] = [p for r in records for p in r["persons"]]
        assert len(persons[propagation]) == 12 and all(p["keypoints"] for p in persons[propagation])
        assert all({"track_id", "pose_frame", "pose_age_ms", "propagated", "interpolated", "pose_frames"} <= set(p)
                   for p in persons[propagation])
        summary = json.loads((out / "summary.json").read_text())
        assert summary["propagation"] == (propagation or "two-sided")
    assert any(p["interpolated"] for p in persons[None])
    assert not any(p["interpolated"] or p["pose_frames"][1] is not None for p in persons["forward"])
