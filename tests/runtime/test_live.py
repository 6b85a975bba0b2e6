"""Live feeds with fake backends: keypoint propagation on a known motion, late poses carried forward, fair
scheduling across tracks and sources, a slow pose model never holding up capture or output, batches in live
mode, failed and unanswered requests, several sources through the CLI. No timing thresholds."""
from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_runtime.running.backends import Completion, OpenVINOBackend
from edge_runtime.model.estimator import PoseEstimator
from edge_runtime.running.live import LiveConfig, LiveRunner, SourceRun
from edge_runtime.running.pipeline import Pipeline, PipelineConfig
from edge_runtime.media.sources import Frame
from edge_runtime.running.tracks import PoseTracks, TrackConfig
from tests.runtime.test_pipeline import ListSink, ListSource, person_image, scripted_factory

OPTIONS_KW = dict(cache_dir=None, inference_precision="f32", num_requests=2)


@pytest.fixture(scope="module")
def estimator(fake_models_dir: Path) -> PoseEstimator:
    from edge_runtime.model.models import CompileOptions

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
    (waiting,) = tracks.persons()  # no pose yet: output with its box only
    assert not waiting.has_pose and waiting.keypoints is None and waiting.pose_frame is None
    assert waiting.pose_age_ms is None and not waiting.propagated
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


class LockstepSource(ListSource):
    """A camera that shows frame i + 1 only once frame i was output (:class:`LockstepSink` says so): no frame
    can be dropped for being late, whatever the load on the machine. If the coordinator stops putting frames
    out, the camera ends after ``patience_s`` and the run has fewer frames out than in. ``pace``: also wait for
    each frame's timestamp (a 10 fps camera), so that slow requests answer while frames go out."""

    default_mode = "live"

    def __init__(self, frames: list[Frame], patience_s: float = 60.0, pace: bool = False) -> None:
        super().__init__(frames)
        self.patience_s, self.pace = patience_s, pace
        self.shown = threading.Event()

    def __iter__(self):
        t0 = time.perf_counter()
        for frame in self.frames:
            if self.closed:
                return
            if self.pace:
                time.sleep(max(0.0, t0 + frame.timestamp_ms / 1000.0 - time.perf_counter()))
            self.shown.clear()
            yield frame
            if not self.shown.wait(self.patience_s):
                return


class LockstepSink(ListSink):
    def __init__(self, source: LockstepSource, on_write: Any = None) -> None:
        super().__init__()
        self.source, self.on_write = source, on_write

    def write(self, record: dict, image: Any = None) -> None:
        super().write(record, image)
        if self.on_write is not None:
            self.on_write(record)
        self.source.shown.set()


class BurningBackend:
    """A CPU-hungry device: each request burns ``threads`` threads (hashing, which releases the GIL as OpenVINO
    does) and never answers before the run ends."""

    def __init__(self, threads: int) -> None:
        self.capacity, self.threads = 1, threads
        self.stop = threading.Event()
        self.burning = 0  # requests in flight
        self.tids: list[int] = []

    def submit(self, inputs: Any, userdata: Any) -> None:
        self.burning += 1
        for _ in range(self.threads):
            thread = threading.Thread(target=self._burn, daemon=True)
            thread.start()
            self.tids.append(thread.native_id)

    def _burn(self) -> None:
        data = b"x" * (1 << 20)
        while not self.stop.is_set():
            hashlib.sha256(data).digest()

    def wait_all(self, timeout_s: Any = None) -> bool:
        self.stop.set()
        return False


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
    source = LockstepSource(frames, pace=True)  # a 10 fps camera that drops nothing, however loaded the machine
    sink = LockstepSink(source)
    created: dict = {}
    runner = LiveRunner(estimator, LiveConfig(mode="live", live_queue_size=4), detections=dets(frames, 2),
                        backend_factory=scripted_factory(created, capacity=1, delay_s=0.4, reverse=False))
    result = runner.run([SourceRun("cam", source, [sink])])
    total = result["total"]
    # each pose takes 0.4 s (4 frame intervals), yet every frame is output (nothing waits for a pose)
    assert total["frames_in"] == 40 and total["frames_out"] == 40 and total["frames_skipped"] == 0
    assert 0 < total["pose_recomputes"] < 40
    persons = [p for r in sink.records for p in r["persons"]]
    assert persons and any(p["propagated"] for p in persons)
    assert all(p["pose_frame"] is None or p["pose_frame"] <= r["frame"] for r in sink.records for p in r["persons"])
    # every tracked person in every frame, from the first (detections on every frame), with or without a pose
    assert all(len(r["persons"]) == 2 for r in sink.records)


def test_live_mode_with_batch_two_and_five_persons(estimator: PoseEstimator) -> None:
    frames = walking_frames(12, persons=5, size=(320, 120))
    source = LockstepSource(frames, pace=True)
    sink = LockstepSink(source)
    created: dict = {}
    runner = LiveRunner(estimator, LiveConfig(mode="live", batch=2), detections=dets(frames, 5),
                        backend_factory=scripted_factory(created, capacity=1))
    result = runner.run([SourceRun("cam", source, [sink])])
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
    source = LockstepSource(frames, pace=True)
    sink = LockstepSink(source)
    created: dict = {}
    det_out = lambda x: np.array([[5, 20, 55, 100, 0.9], [65, 20, 115, 100, 0.8]], np.float32)  # noqa: E731
    runner = LiveRunner(estimator, LiveConfig(mode="live", detect_every=3), detector=FakeDetector(),
                        backend_factory=scripted_factory(created, detector_output=det_out),
                        num_requests={"detector": 1})
    result = runner.run([SourceRun("cam", source, [sink])])
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
                if p["pose_frame"] is not None:
                    seen.setdefault(p["track_id"], p["pose_frame"])
        return sorted(seen.values())

    a, b = first_pose_frames(sinks[0]), first_pose_frames(sinks[1])
    assert a and b
    # one camera never gets all its first poses before the other gets any
    assert min(b) <= max(a) and min(a) <= max(b)


def test_delayed_backend_adds_its_delay_and_keeps_outputs() -> None:
    from edge_runtime.running.backends import delayed_backend_factory

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


def test_live_compile_choice_leaves_a_core_on_a_small_cpu() -> None:
    from edge_runtime.model.compile_choice import choose_compile_options

    unset = {"hint": None, "num_threads": None, "num_requests": None, "device": "CPU", "pose_server": None}
    two = choose_compile_options(unset, "live", cores=2)
    assert (two.num_threads, two.hint, two.num_requests, two.inference_nice) == (1, "LATENCY", 1, 10)
    assert "2 core" in two.reason
    assert choose_compile_options(unset, "live", cores=4).num_threads == 3
    assert choose_compile_options(unset, "live", cores=1).num_threads == 1
    for mode, cores, extra in (("file", 2, {}), ("live", 16, {}), ("live", 2, {"device": "GPU"}),
                               ("live", 2, {"pose_server": "grpc://h:9000"})):
        other = choose_compile_options(dict(unset, **extra), mode, cores=cores)
        assert (other.num_threads, other.hint, other.num_requests, other.inference_nice) == (
            None, "THROUGHPUT", None, 0), other.reason
    # the user's values win, one by one; the rule still sets the others
    user = choose_compile_options(dict(unset, num_threads=2, hint="THROUGHPUT"), "live", cores=2)
    assert (user.num_threads, user.hint, user.num_requests) == (2, "THROUGHPUT", 1)
    assert "--num-threads 2" in user.reason and "--hint THROUGHPUT" in user.reason
    assert choose_compile_options(dict(unset, inference_nice=0), "live", cores=2).inference_nice == 0


def test_a_cpu_hungry_pose_backend_does_not_stop_frames_going_out(estimator: PoseEstimator, monkeypatch) -> None:
    from edge_runtime.model import compile_choice

    choice = compile_choice.choose_compile_options({"device": "CPU"}, "live", cores=2)
    frames = walking_frames(25, persons=2)
    source = LockstepSource(frames)
    backends: dict = {}
    keeps: list[set] = []
    # only the burning threads are the runner's to lower here (the rest of the test process is left alone)
    monkeypatch.setattr(compile_choice, "other_threads",
                        lambda keep: keeps.append(set(keep)) or list(backends["vae_encoder"].tids))
    at_output: list[tuple[int, list[int]]] = []
    capture_tids: set[int] = set()

    def on_write(record: dict) -> None:
        burning = backends["vae_encoder"]
        at_output.append((burning.burning, [os.getpriority(os.PRIO_PROCESS, t) for t in burning.tids]))
        capture_tids.update(t.native_id for t in threading.enumerate() if t.name == "sdpose-capture-cam")

    sink = LockstepSink(source, on_write=on_write)

    def factory(stage: str, compiled: Any, n: int, on_complete: Any) -> BurningBackend:
        backends[stage] = BurningBackend(choice.num_threads)  # as many threads as the 2-core rule gives
        return backends[stage]

    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    result = LiveRunner(estimator, LiveConfig(mode="live", inference_nice=choice.inference_nice),
                        detections=dets(frames, 2), backend_factory=factory).run([SourceRun("cam", source, [sink])])
    total = result["total"]
    assert total["frames_in"] == total["frames_out"] == 25 and total["frames_skipped"] == 0
    # the burning request went in after frame 0 and never came back: frames 1..24 went out beside it, with its
    # threads behind the coordinator (nice +10) from the start
    target = min(19, base + 10)
    assert at_output == [(0, [])] + [(1, [target] * choice.num_threads)] * 24
    assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # the coordinator keeps its own
    assert keeps and len(capture_tids) == 1  # never the coordinator's or the capture thread's priority
    assert all({threading.get_native_id(), *capture_tids} <= keep for keep in keeps)
    assert total["inference_nice"] == 10 and total["threads_reniced"] == choice.num_threads
    # both persons in every frame, from the first, without a pose: keypoints null
    for r in sink.records:
        assert [p["track_id"] for p in r["persons"]] == [0, 1]
        assert all(p["keypoints"] is None and p["pose_frame"] is None and p["pose_age_ms"] is None
                   and p["propagated"] is False for p in r["persons"])
    assert total["person_presence"] == 1.0 and total["pose_presence"] == 0.0


def test_a_new_track_is_output_from_its_first_frame_with_keypoints_null(estimator: PoseEstimator) -> None:
    frames = walking_frames(8, persons=2)
    table = dets(frames, 2)
    for f in frames[:3]:
        table[f.name] = table[f.name][:1]  # the second person is detected from frame 3 on
    source = LockstepSource(frames)
    sink = LockstepSink(source)
    result = LiveRunner(estimator, LiveConfig(mode="live"), detections=table,
                        backend_factory=scripted_factory({}, capacity=1)).run([SourceRun("cam", source, [sink])])
    assert result["total"]["frames_out"] == 8
    assert [len(r["persons"]) for r in sink.records] == [1, 1, 1] + [2] * 5
    new = sink.records[3]["persons"][1]
    assert new["track_id"] == 1 and new["bbox_xyxy"] == pytest.approx([65, 20, 115, 100], abs=0.01)
    assert (new["keypoints"], new["pose_frame"], new["pose_age_ms"], new["propagated"]) == (None, None, None, False)
    assert new["score"] == pytest.approx(0.9)
    assert all(p["keypoints"] is None or len(p["keypoints"]) == 133 for r in sink.records for p in r["persons"])
    summary = result["sources"]["cam"]
    assert summary["person_presence"] == 1.0 and summary["pose_presence"] < 1.0


def test_lower_priority_of_other_threads() -> None:
    from edge_runtime.model.compile_choice import lower_priority, other_threads

    release = threading.Event()
    worker = threading.Thread(target=release.wait, daemon=True)
    worker.start()
    me = threading.get_native_id()
    base = os.getpriority(os.PRIO_PROCESS, me)
    try:
        others = other_threads({me})
        assert worker.native_id in others and me not in others
        target = min(19, base + 3)
        assert lower_priority([worker.native_id], target) == (1 if target > base else 0)
        assert os.getpriority(os.PRIO_PROCESS, worker.native_id) == target
        assert lower_priority([worker.native_id], base) == 0  # never raised back
        assert os.getpriority(os.PRIO_PROCESS, me) == base
    finally:
        release.set()


def test_frame_result_has_pose_mask() -> None:
    from edge_runtime.running.results import FrameResult
    from edge_runtime.running.tracks import PersonState

    frame = Frame(4, "f4.png", np.zeros((10, 20, 3), np.uint8), 400.0)
    persons = [PersonState(0, np.array([1, 2, 3, 4], np.float32), 0.8, np.ones((133, 2)), np.full(133, 0.5), 2,
                           200.0, True),
               PersonState(3, np.array([5, 6, 7, 8], np.float32), 0.7, None, None, None, None, False)]
    result = FrameResult.from_persons(frame, "cam", persons, (20, 10), num_keypoints=133)
    assert result.has_pose.tolist() == [True, False] and result.keypoints.shape == (2, 133, 2)
    assert np.all(np.isnan(result.keypoints[1])) and np.all(result.scores[1] == 0)
    a, b = result.to_record()["persons"]
    assert len(a["keypoints"]) == 133 and (a["pose_frame"], a["pose_age_ms"], a["propagated"]) == (2, 200.0, True)
    assert b == {"bbox_xyxy": [5.0, 6.0, 7.0, 8.0], "score": 0.7, "track_id": 3, "keypoints": None,
                 "pose_frame": None, "pose_age_ms": None, "propagated": False, "interpolated": False,
                 "pose_frames": [None, None]}
    assert FrameResult.failed(frame, "cam", "bad", 133).has_pose.shape == (0,)
