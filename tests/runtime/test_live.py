"""Live feeds with fake backends: keypoint propagation on a known motion, late poses carried forward, fair
scheduling across tracks and sources, a slow pose model never holding up capture or output, batches in live
mode, failed and unanswered requests, several sources through the CLI. No timing thresholds."""
from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_runtime.backends import Completion, OpenVINOBackend
from edge_runtime.estimator import PoseEstimator
from edge_runtime.live import LiveConfig, LiveRunner, SourceRun
from edge_runtime.pipeline import Pipeline, PipelineConfig
from edge_runtime.sources import Frame
from edge_runtime.tracks import PoseTracks, TrackConfig
from tests.runtime.test_pipeline import ListSink, ListSource, person_image, scripted_factory

OPTIONS_KW = dict(cache_dir=None, inference_precision="f32", num_requests=2)


@pytest.fixture(scope="module")
def estimator(fake_models_dir: Path) -> PoseEstimator:
    from edge_runtime.models import CompileOptions

    return PoseEstimator(fake_models_dir, options=CompileOptions(**OPTIONS_KW))


def texture(size_wh=(320, 240), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    noise = rng.integers(0, 255, (size_wh[1] * 2, size_wh[0] * 2), dtype=np.uint8)
    img = cv2.GaussianBlur(noise, (0, 0), 2.0)
    return cv2.cvtColor(cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX), cv2.COLOR_GRAY2BGR)


def shifted(base: np.ndarray, dx: float, dy: float, size_wh=(320, 240)) -> np.ndarray:
    m = np.float32([[1, 0, dx - size_wh[0] / 2], [0, 1, dy - size_wh[1] / 2]])
    return cv2.warpAffine(base, m, size_wh, flags=cv2.INTER_LINEAR)


KPTS = np.array([[100, 80], [140, 90], [120, 130], [110, 160], [150, 150], [130, 110]], np.float32)


def test_propagation_follows_a_known_translation() -> None:
    base = texture()
    tracks = PoseTracks(TrackConfig())
    tracks.advance(0, 0.0, shifted(base, 0, 0))
    tracks.match(0, np.array([[90, 70, 160, 170]]), np.array([0.9]))
    assert tracks.apply_pose(0, 0, 0.0, np.array([90, 70, 160, 170]), KPTS, np.full(len(KPTS), 0.9))
    for t in range(1, 9):
        tracks.advance(t, t / 10.0, shifted(base, 3.0 * t, -2.0 * t))
    (person,) = tracks.persons()
    np.testing.assert_allclose(person.keypoints, KPTS + [24.0, -16.0], atol=0.5)
    np.testing.assert_allclose(person.box, [90 + 24, 70 - 16, 160 + 24, 170 - 16], atol=1.0)
    assert person.propagated and person.pose_frame == 0 and person.pose_age_ms == pytest.approx(800.0)


def test_a_late_pose_is_carried_to_the_current_frame() -> None:
    base = texture(seed=1)
    tracks = PoseTracks(TrackConfig())
    box = np.array([90, 70, 160, 170], np.float64)
    for t in range(7):
        tracks.advance(t, float(t), shifted(base, 2.0 * t, 1.0 * t))
        if t == 0:
            tracks.match(0, box, np.array([0.9]))
            crop_box = tracks.begin_pose(0)
    assert tracks.persons() == []  # no pose yet: nothing to output for the track
    # the pose computed on frame 0 arrives while frame 6 is current
    tracks.apply_pose(0, 0, 0.0, crop_box, KPTS, np.full(len(KPTS), 0.9))
    (person,) = tracks.persons()
    np.testing.assert_allclose(person.keypoints, KPTS + [12.0, 6.0], atol=0.5)
    assert person.propagated and person.pose_frame == 0 and person.pose_age_ms == pytest.approx(6000.0)


def test_flow_failure_falls_back_to_the_track_motion() -> None:
    base = texture(seed=2)
    tracks = PoseTracks(TrackConfig())
    tracks.advance(0, 0.0, base[:240, :320])
    tracks.match(0, np.array([[90, 70, 160, 170]]), np.array([0.9]))
    tracks.apply_pose(0, 0, 0.0, np.array([90, 70, 160, 170]), KPTS, np.full(len(KPTS), 0.9))
    tracks.advance(1, 0.1, np.zeros((240, 320, 3), np.uint8))  # nothing to follow
    (person,) = tracks.persons()
    assert np.all(np.isfinite(person.keypoints)) and tracks.flow_rejected >= len(KPTS)


def test_track_keeps_its_id_through_a_short_occlusion() -> None:
    tracks = PoseTracks(TrackConfig(lost_s=1.0))
    img = texture()[:240, :320]
    box = np.array([[50, 50, 100, 150]], np.float64)
    ids = []
    for t in range(8):
        tracks.advance(t, t * 0.1, img)
        visible = t not in (3, 4, 5)  # missed by the detector for 0.3 s
        ids.append(tracks.match(t, box if visible else np.zeros((0, 4)), np.array([0.9] if visible else [])))
    assert [i for i in ids if i] == [[0]] * 5
    for t in range(8, 30):  # gone for longer than lost_s: dropped, a new detection is a new track
        tracks.advance(t, t * 0.1, img)
        tracks.match(t, np.zeros((0, 4)), np.zeros(0))
    assert tracks.match(30, box, np.array([0.9])) == [1]


def walking_frames(n: int, persons: int, size=(320, 120)) -> list[Frame]:
    frames = []
    for i in range(n):
        img = np.zeros((size[1], size[0], 3), np.uint8)
        for p in range(persons):
            cv2.circle(img, (30 + 60 * p + i % 3, 60), 6, (255, 255, 255), -1)
        frames.append(Frame(i, f"f{i}.png", img, i * 100.0))
    return frames


def dets(frames: list[Frame], persons: int) -> dict[str, np.ndarray]:
    return {f.name: np.array([[5 + 60 * p, 20, 55 + 60 * p, 100, 0.9] for p in range(persons)], np.float32)
            for f in frames}


def test_scheduling_is_fair_across_tracks_and_sources(estimator: PoseEstimator) -> None:
    frames = walking_frames(31, persons=3)
    sinks = [ListSink(), ListSink()]
    runner = LiveRunner(estimator, LiveConfig(mode="file", pose_budget=1 / 3), detections=dets(frames, 3),
                        backend_factory=scripted_factory({}, capacity=1))
    result = runner.run([SourceRun("a", ListSource(frames), [sinks[0]]),
                         SourceRun("b", ListSource(frames), [sinks[1]])])
    counts: dict[tuple[str, int], int] = {}
    for name, sink in zip("ab", sinks):
        assert [r["frame"] for r in sink.records] == list(range(31))  # file mode: every frame, in order
        last: dict[int, int] = {}
        for r in sink.records:
            for p in r["persons"]:
                previous = p["pose_frames"][0]  # the keyframe at or before the frame (two-sided file mode)
                if previous != last.get(p["track_id"]):
                    counts[(name, p["track_id"])] = counts.get((name, p["track_id"]), 0) + 1
                    last[p["track_id"]] = previous
                assert previous <= r["frame"]
    assert len(counts) == 6
    assert max(counts.values()) - min(counts.values()) <= 1  # round-robin within and across sources
    per_source = result["sources"]
    assert per_source["a"]["pose_recomputes"] == per_source["b"]["pose_recomputes"] == pytest.approx(31, abs=2)
    assert result["total"]["pose_recomputes"] == sum(counts.values())


def test_a_slow_pose_model_never_holds_up_capture_or_output(estimator: PoseEstimator) -> None:
    frames = walking_frames(40, persons=2)
    sink = ListSink()
    created: dict = {}
    runner = LiveRunner(estimator, LiveConfig(mode="live", live_queue_size=4), detections=dets(frames, 2),
                        backend_factory=scripted_factory(created, capacity=1, delay_s=0.4, reverse=False))
    source = ListSource(frames)  # a "file" source: paced at its 10 fps timestamps, as a camera
    result = runner.run([SourceRun("cam", source, [sink])])
    total = result["total"]
    # each pose takes 0.4 s (4 frame intervals), yet every frame is output (nothing waits for a pose)
    assert total["frames_in"] == 40 and total["frames_out"] == 40 and total["frames_skipped"] == 0
    assert 0 < total["pose_recomputes"] < 40
    persons = [p for r in sink.records for p in r["persons"]]
    assert persons and any(p["propagated"] for p in persons)
    assert all(p["pose_frame"] <= r["frame"] for r in sink.records for p in r["persons"])
    first = next(i for i, r in enumerate(sink.records) if len(r["persons"]) == 2)
    assert all(len(r["persons"]) == 2 for r in sink.records[first:])  # every tracked person, every frame


def test_live_mode_with_batch_two_and_five_persons(estimator: PoseEstimator) -> None:
    frames = walking_frames(12, persons=5, size=(320, 120))
    sink = ListSink()
    created: dict = {}
    runner = LiveRunner(estimator, LiveConfig(mode="live", batch=2), detections=dets(frames, 5),
                        backend_factory=scripted_factory(created, capacity=1))
    result = runner.run([SourceRun("cam", ListSource(frames), [sink])])
    assert result["total"]["frames_out"] == 12 and result["total"]["pose_recomputes"] > 0
    assert max(created["vae_encoder"].batch_sizes) == 2
    assert any(len(r["persons"]) >= 2 for r in sink.records)


class _RaisingRequest:
    def set_input_tensor(self, tensor: Any) -> None:
        pass

    def infer(self) -> None:
        raise RuntimeError("device lost")


class _RaisingCompiled:
    def create_infer_request(self) -> _RaisingRequest:
        return _RaisingRequest()


def test_a_failed_request_completes_with_its_error() -> None:
    done: list[Completion] = []
    event = threading.Event()
    backend = OpenVINOBackend("pose", _RaisingCompiled(), 1, lambda c: (done.append(c), event.set()))
    backend.submit(np.zeros((1, 4), np.float32), "payload")
    assert event.wait(5.0) and backend.wait_all(timeout_s=5.0)
    assert done[0].error == "pose inference failed: RuntimeError: device lost" and done[0].userdata == "payload"
    backend.close()


def raising_factory(stage: str, compiled: Any, n: int, on_complete: Any) -> OpenVINOBackend:
    return OpenVINOBackend(stage, _RaisingCompiled(), n, on_complete)


def test_failed_requests_become_error_records_not_a_hang(estimator: PoseEstimator) -> None:
    frames = walking_frames(4, persons=1)
    sink = ListSink()
    summary = Pipeline(estimator, [sink], PipelineConfig(), detections=dets(frames, 1),
                       backend_factory=raising_factory).run(ListSource(frames))
    assert summary["frames_out"] == 4 and summary["frames_failed"] == 4
    assert all("device lost" in r["error"] for r in sink.records)
    live_sink = ListSink()
    result = LiveRunner(estimator, LiveConfig(mode="live"), detections=dets(frames, 1),
                        backend_factory=raising_factory).run([SourceRun("c", ListSource(frames), [live_sink])])
    assert result["total"]["frames_out"] == 4 and result["total"]["pose_recomputes"] == 0
    # scheduled (a held frame waits for its poses): a failed recompute is not retried on the same frame (that
    # looped for ever), and every frame whose poses could not be updated says so
    held_sink = ListSink()
    result = LiveRunner(estimator, LiveConfig(mode="file"), detections=dets(frames, 1),
                        backend_factory=raising_factory).run([SourceRun("c", ListSource(frames), [held_sink])])
    assert result["total"]["frames_out"] == 4 and result["total"]["frames_failed"] == 4
    assert all("pose request failed" in r["error"] and "device lost" in r["error"] for r in held_sink.records)


class _SilentBackend:
    """Takes requests and never answers (a hung device)."""

    def __init__(self, *args: Any) -> None:
        self.capacity = 1

    def submit(self, inputs: Any, userdata: Any) -> None:
        pass

    def wait_all(self, timeout_s: Any = None) -> bool:
        return False


def test_an_unanswered_request_times_out(estimator: PoseEstimator) -> None:
    frames = walking_frames(3, persons=1)
    sink = ListSink()
    summary = Pipeline(estimator, [sink], PipelineConfig(request_timeout_s=0.3), detections=dets(frames, 1),
                       backend_factory=lambda *a: _SilentBackend()).run(ListSource(frames))
    assert summary["requests_timed_out"] >= 1 and summary["frames_out"] == 3
    assert "no answer within" in sink.records[0]["error"]


def test_boxes_beyond_max_persons_are_dropped_and_crops_made_per_request(estimator: PoseEstimator) -> None:
    frames = walking_frames(2, persons=1)
    many = {f.name: np.array([[i % 300, 10, i % 300 + 20, 100, 0.5 + (i % 7) / 100] for i in range(5000)],
                             np.float32) for f in frames}
    sink = ListSink()
    created: dict = {}
    summary = Pipeline(estimator, [sink], PipelineConfig(batch=4), detections=many,
                       backend_factory=scripted_factory(created)).run(ListSource(frames))
    assert summary["frames_out"] == 2 and all(len(r["persons"]) == 20 for r in sink.records)
    assert max(created["vae_encoder"].batch_sizes) <= 4


def write_video(path: Path, n: int, fps: float = 20.0) -> None:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (160, 120))
    for i in range(n):
        writer.write(person_image((40 + 2 * i, 60)))
    writer.release()


def test_several_sources_write_per_source_outputs(tmp_path: Path, fake_models_dir: Path) -> None:
    from edge_runtime.cli import main

    write_video(tmp_path / "left.mp4", 10)
    write_video(tmp_path / "right.mp4", 8)
    (tmp_path / "d.json").write_text(json.dumps({str(i): [[10, 10, 80, 110, 0.9]] for i in range(10)}))
    out = tmp_path / "out"
    code = main(["run", "--models", str(fake_models_dir), "--source", str(tmp_path / "left.mp4"), "--source",
                 str(tmp_path / "right.mp4"), "--mode", "live", "--output", str(out), "--detections",
                 str(tmp_path / "d.json"), "--no-cache"])
    assert code == 0
    total = json.loads((out / "summary.json").read_text())
    assert set(total["sources"]) == {"left", "right"} and total["frames_in"] == 18
    for name, n in (("left", 10), ("right", 8)):
        summary = json.loads((out / name / "summary.json").read_text())
        records = [json.loads(line) for line in (out / name / "predictions.jsonl").read_text().splitlines()]
        assert summary["frames_in"] == n and len(records) == summary["frames_out"]
        assert {"p50", "p95"} <= set(summary["latency_ms"]["frame_latency"]) and "pose_recomputes" in summary
        assert all(r["source"].startswith(f"{name}.mp4#") for r in records)
    assert not (out / "predictions.jsonl").exists()


def test_live_mode_with_an_asynchronous_detector_every_third_frame(estimator: PoseEstimator) -> None:
    from tests.runtime.test_pipeline import FakeDetector

    frames = walking_frames(15, persons=2)
    sink = ListSink()
    created: dict = {}
    det_out = lambda x: np.array([[5, 20, 55, 100, 0.9], [65, 20, 115, 100, 0.8]], np.float32)  # noqa: E731
    runner = LiveRunner(estimator, LiveConfig(mode="live", detect_every=3), detector=FakeDetector(),
                        backend_factory=scripted_factory(created, detector_output=det_out),
                        num_requests={"detector": 1})
    result = runner.run([SourceRun("cam", ListSource(frames), [sink])])
    assert result["total"]["frames_out"] == 15
    assert 1 <= len(created["detector"].submitted) <= 5  # every third frame at most, never two at once
    ids = {p["track_id"] for r in sink.records for p in r["persons"]}
    assert ids == {0, 1}  # the same two tracks throughout, matched on the frames the detector saw


def test_first_poses_alternate_between_sources(estimator: PoseEstimator) -> None:
    frames = walking_frames(12, persons=3)
    sinks = [ListSink(), ListSink()]
    created: dict = {}
    runner = LiveRunner(estimator, LiveConfig(mode="live"), detections=dets(frames, 3),
                        backend_factory=scripted_factory(created, capacity=1, delay_s=0.05, reverse=False))
    runner.run([SourceRun("a", ListSource(frames), [sinks[0]]), SourceRun("b", ListSource(frames), [sinks[1]])])

    def first_pose_frames(sink: ListSink) -> list[int]:
        seen: dict[int, int] = {}
        for r in sink.records:
            for p in r["persons"]:
                seen.setdefault(p["track_id"], p["pose_frame"])
        return sorted(seen.values())

    a, b = first_pose_frames(sinks[0]), first_pose_frames(sinks[1])
    assert a and b
    # one camera never gets all its first poses before the other gets any
    assert min(b) <= max(a) and min(a) <= max(b)


def test_delayed_backend_adds_its_delay_and_keeps_outputs() -> None:
    from edge_runtime.backends import delayed_backend_factory

    class Request:
        def set_input_tensor(self, tensor: Any) -> None:
            self.inputs = np.array(tensor.data)

        def infer(self) -> None:
            self.out = self.inputs * 2

        def get_output_tensor(self, index: int) -> Any:
            return type("T", (), {"data": self.out})()

    class Model:
        def create_infer_request(self) -> Request:
            return Request()

    done: list[Completion] = []
    event = threading.Event()
    backend = delayed_backend_factory(0.05)("pose", Model(), 1, lambda c: (done.append(c), event.set()))
    backend.submit(np.ones(3, np.float32), "u")
    assert event.wait(5.0)
    np.testing.assert_array_equal(done[0].output, [2, 2, 2])
    assert done[0].done_t - done[0].submit_t >= 0.05 and done[0].error is None
