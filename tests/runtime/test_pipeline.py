"""Pipeline scheduling with the tiny fake models: ordering under out-of-order completion, live-mode dropping,
detector cadence with carried boxes, batching, flip test, failures. Injected backends; no timing assertions."""
from __future__ import annotations

import queue
import threading
import time
import weakref
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_runtime.media import sinks
from edge_runtime.model.estimator import PoseEstimator
from edge_runtime.model.models import CompileOptions
from edge_runtime.running.backends import Completion
from edge_runtime.media.detections import load_detections
from edge_runtime.media.feeds import FrameFeed
from edge_runtime.running.metrics import busy_share, percentile_summary
from edge_runtime.running.pipeline import Pipeline, PipelineConfig
from edge_runtime.media.sources import Frame, FrameError, FrameSource, ImageFilesSource
from edge_runtime.errors import InputError

OPTIONS = CompileOptions(cache_dir=None, inference_precision="f32", num_requests=2)


class ListSink(sinks.ListSink):
    def __init__(self) -> None:
        super().__init__(keep_images=True)


#: every ScriptedBackend alive: the coordinator's wait releases them (tests/runtime/conftest.py)
SCRIPTED: "weakref.WeakSet[ScriptedBackend]" = weakref.WeakSet()


class ScriptedBackend:
    """Runs each request on a worker thread, driven by events, not by timing: the requests submitted in one
    scheduling round are answered together, in REVERSE submission order (so completions are out of order
    whenever two requests overlap), when the coordinator starts waiting for events (``flush``, called by the
    conftest's hook on :meth:`Coordinator._wait_and_handle`). ``delay_s`` > 0 simulates a slow device."""

    def __init__(self, stage: str, compute, on_complete, capacity: int = 4, delay_s: float = 0.0,
                 reverse: bool = True) -> None:
        self.stage = stage
        self.capacity = capacity
        self.compute = compute
        self.on_complete = on_complete
        self.delay_s = delay_s
        self.reverse = reverse
        self.jobs: queue.Queue = queue.Queue()
        self.submitted: list[int] = []
        self.completed: list[int] = []
        self.batch_sizes: list[int] = []
        self._pending = 0
        self._cond = threading.Condition()
        self._counter = 0
        self._unreleased = 0  # submitted since the last flush
        self._release = threading.Event()
        SCRIPTED.add(self)
        threading.Thread(target=self._worker, daemon=True).start()

    def submit(self, inputs: np.ndarray, userdata: Any) -> None:
        with self._cond:
            self._pending += 1
            self._unreleased += 1
            job_id = self._counter
            self._counter += 1
        self.submitted.append(job_id)
        self.batch_sizes.append(len(inputs))
        self.jobs.put((job_id, np.array(inputs), userdata, time.perf_counter()))

    def flush(self) -> None:
        """The coordinator is about to wait: answer what it has submitted so far (nothing new: nothing to do)."""
        with self._cond:
            if self._unreleased == 0:
                return
            self._unreleased = 0
        self._release.set()

    def _worker(self) -> None:
        while True:
            group = [self.jobs.get()]
            self._release.wait()  # the round's submissions are all in
            self._release.clear()
            if self.delay_s:
                time.sleep(self.delay_s)  # a slow device
            while True:
                try:
                    group.append(self.jobs.get_nowait())
                except queue.Empty:
                    break
            for job_id, inputs, userdata, t0 in (reversed(group) if self.reverse else group):
                out = self.compute(inputs)
                self.completed.append(job_id)
                self.on_complete(Completion(self.stage, userdata, out, None, t0, time.perf_counter()))
                with self._cond:
                    self._pending -= 1
                    self._cond.notify_all()

    def wait_all(self, timeout_s=None) -> bool:
        self.flush()  # the run is ending: answer what is left
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        with self._cond:
            while self._pending:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return False
                self._cond.wait(remaining)
        return True


def scripted_factory(created: dict, capacity: int = 4, delay_s: float = 0.0, reverse: bool = True,
                     detector_output=None):
    def factory(stage, compiled, n, on_complete):
        if stage == "detector":
            def compute(x):
                return detector_output(x)
        else:
            def compute(x):
                return compiled(x)[compiled.output(0)].copy()
        backend = ScriptedBackend(stage, compute, on_complete, capacity=capacity, delay_s=delay_s, reverse=reverse)
        created[stage] = backend
        return backend
    return factory


def person_image(blob_xy: tuple[int, int], size=(160, 120)) -> np.ndarray:
    """Dark BGR image [h,w,3] with one bright blob at blob_xy (image px): the fake models put every keypoint
    on the brightest blob of the crop."""
    w, h = size
    img = np.full((h, w, 3), 20, np.uint8)
    cv2.circle(img, blob_xy, 6, (255, 255, 255), -1)
    return img


class ListSource(FrameSource):
    def __init__(self, frames: list[Frame]) -> None:
        super().__init__()
        self.frames = frames
        self.total = len(frames)
        self.description = "list"

    def __iter__(self):
        for f in self.frames:
            if self.closed:
                return
            yield f


def make_frames(n: int) -> list[Frame]:
    return [Frame(i, f"f{i}.png", person_image((30 + 3 * i, 60)), None) for i in range(n)]


@pytest.fixture(scope="module")
def estimator(fake_models_dir: Path) -> PoseEstimator:
    return PoseEstimator(fake_models_dir, options=OPTIONS)


def dets_for(frames: list[Frame], boxes_per_frame: int = 2) -> dict[str, np.ndarray]:
    out = {}
    for f in frames:
        rows = [[10.0 + 70 * j, 10.0, 80.0 + 70 * j, 110.0, 0.9 - 0.1 * j] for j in range(boxes_per_frame)]
        out[f.name] = np.asarray(rows, np.float32)
    return out


def test_file_mode_strict_order_with_out_of_order_completion(estimator: PoseEstimator) -> None:
    frames = make_frames(12)
    frames[5] = Frame(5, "f5.png", FrameError("f5.png: corrupt"), None)
    dets = dets_for(frames)
    dets["f7.png"] = np.zeros((0, 5), np.float32)  # a frame without persons
    created: dict = {}
    sink = ListSink()
    pipe = Pipeline(estimator, [sink], PipelineConfig(batch=1), detections=dets,
                    backend_factory=scripted_factory(created))
    summary = pipe.run(ListSource(frames))
    assert [r["frame"] for r in sink.records] == list(range(12))
    assert summary["frames_in"] == summary["frames_out"] == 12
    assert summary["frames_failed"] == 1 and "error" in sink.records[5] and sink.records[5]["persons"] == []
    assert sink.records[7]["persons"] == [] and "error" not in sink.records[7]
    # the backends really completed out of order
    vae = created["vae_encoder"]
    assert vae.completed != sorted(vae.completed)
    for r in sink.records:
        if r["frame"] in (5, 7):
            continue
        assert len(r["persons"]) == 2
        person = r["persons"][0]
        assert len(person["keypoints"]) == 133 and person["track_id"] >= 0
        # the fake model finds the blob of this frame inside the first box (blob at x = 30 + 3 i, y = 60)
        kx, ky, _ = np.median(np.asarray(person["keypoints"]), axis=0)
        assert abs(kx - (30 + 3 * r["frame"])) < 6 and abs(ky - 60) < 6
    # the same person keeps the same track id across frames
    ids = {r["persons"][0]["track_id"] for r in sink.records if r["persons"]}
    assert len(ids) == 1


def test_batching_groups_crops_across_persons_and_frames(estimator: PoseEstimator) -> None:
    frames = make_frames(6)
    created: dict = {}
    sink = ListSink()
    pipe = Pipeline(estimator, [sink], PipelineConfig(batch=4, max_inflight_frames=6),
                    detections=dets_for(frames, 3), backend_factory=scripted_factory(created))
    summary = pipe.run(ListSource(frames))
    assert [r["frame"] for r in sink.records] == list(range(6))
    sizes = created["vae_encoder"].batch_sizes
    assert sum(sizes) == 18 and sorted(sizes) == [2, 4, 4, 4, 4]
    assert sorted(created["pose"].batch_sizes) == sorted(sizes)
    assert summary["persons"] == 18


def test_flip_test_and_fused_chain_match_plain_estimator(fake_models_dir: Path) -> None:
    frames = make_frames(3)
    dets = dets_for(frames, 1)
    est = PoseEstimator(fake_models_dir, options=OPTIONS, chain="fused", flip_test=True)
    sink = ListSink()
    Pipeline(est, [sink], PipelineConfig(flip_test=True, batch=2), detections=dets,
             backend_factory=scripted_factory({})).run(ListSource(frames))
    for rec, frame in zip(sink.records, frames):
        kpts, scores = est(frame.image, dets[frame.name][:, :4])
        got = np.asarray(rec["persons"][0]["keypoints"])
        np.testing.assert_allclose(got[:, :2], kpts[0], atol=2e-3)
        np.testing.assert_allclose(got[:, 2], scores[0], atol=2e-5)


def test_frame_feed_newest_wins() -> None:
    feed = FrameFeed(2, drop_oldest=True)
    for i in range(5):
        feed.put((Frame(i, str(i), FrameError("x"), None), 0.0))
    assert feed.skipped == 3 and feed.last_skipped_index == 2
    assert [feed.get_nowait()[0].index for _ in range(2)] == [3, 4]
    assert feed.get_nowait() is None


class FakeDetector:
    """Stands in for PersonDetector: the 'raw output' is the box list itself."""

    def __init__(self) -> None:
        self.compiled = None

    def preprocess(self, image):
        return image[None], {"shape": image.shape}

    def postprocess(self, raw, meta):
        return raw[:, :4].astype(np.float32), raw[:, 4].astype(np.float32)


def test_detect_every_n_carries_boxes_from_poses(estimator: PoseEstimator, monkeypatch) -> None:
    # every keypoint of the fake model lands on the same blob; spread them so the carried box is not
    # degenerate (the real boxes_from_keypoints still computes the box)
    import edge_runtime.running.pipeline as pipeline_mod
    from edge_runtime.running.tracking import boxes_from_keypoints

    spread = np.stack([np.linspace(-20, 20, 133), np.linspace(-30, 30, 133)], axis=1)
    monkeypatch.setattr(pipeline_mod, "boxes_from_keypoints",
                        lambda kpts, *a, **k: boxes_from_keypoints(kpts + spread, *a, **k))
    frames = make_frames(7)
    created: dict = {}
    sink = ListSink()
    det_out = lambda x: np.array([[10.0, 10.0, 80.0, 110.0, 0.8]], np.float32)  # noqa: E731
    pipe = Pipeline(estimator, [sink], PipelineConfig(detect_every=3, score_threshold=0.0),
                    detector=FakeDetector(),
                    backend_factory=scripted_factory(created, detector_output=det_out),
                    num_requests={"detector": 1})
    pipe.run(ListSource(frames))
    assert [r["frame"] for r in sink.records] == list(range(7))
    assert len(created["detector"].submitted) == 3  # frames 0, 3, 6
    tracked = sink.records[1]["persons"][0]
    assert tracked["bbox_xyxy"] != sink.records[0]["persons"][0]["bbox_xyxy"]  # box from the keypoints
    assert all(len(r["persons"]) == 1 for r in sink.records)
    assert len({r["persons"][0]["track_id"] for r in sink.records}) == 1


def test_max_frames_and_stop(estimator: PoseEstimator) -> None:
    frames = make_frames(10)
    sink = ListSink()
    summary = Pipeline(estimator, [sink], PipelineConfig(max_frames=4), detections=dets_for(frames, 1),
                       backend_factory=scripted_factory({})).run(ListSource(frames))
    assert [r["frame"] for r in sink.records] == [0, 1, 2, 3] and summary["frames_in"] == 4

    sink = ListSink()
    pipe = Pipeline(estimator, [sink], PipelineConfig(max_inflight_frames=2), detections=dets_for(frames, 1),
                    backend_factory=scripted_factory({}), frame_hook=lambda result, img: result.frame < 2)
    summary = pipe.run(ListSource(frames))
    written = [r["frame"] for r in sink.records]
    assert summary["interrupted"] and written == list(range(len(written))) and 3 <= len(written) < 10


def test_real_openvino_backend_runs(estimator: PoseEstimator) -> None:
    frames = make_frames(4)
    sink = ListSink()
    summary = Pipeline(estimator, [sink], PipelineConfig(batch=2), detections=dets_for(frames, 2)).run(
        ListSource(frames))
    assert [r["frame"] for r in sink.records] == [0, 1, 2, 3]
    assert summary["persons"] == 8 and 0.0 < summary["pose_busy_share"] <= 1.0
    kpts, scores = estimator(frames[2].image, dets_for(frames, 2)["f2.png"][:, :4])
    got = np.asarray([p["keypoints"] for p in sink.records[2]["persons"]])
    np.testing.assert_allclose(got[..., :2], kpts, atol=2e-3)


def test_no_boxes_source_is_an_error(estimator: PoseEstimator) -> None:
    with pytest.raises(InputError, match="detector"):
        Pipeline(estimator, [ListSink()], PipelineConfig())


def test_load_detections_validation(tmp_path: Path) -> None:
    good = tmp_path / "d.json"
    good.write_text('{"a.jpg": [[1, 2, 30, 40, 0.9]], "3": [[0, 0, 5, 5]], "b.jpg": []}')
    dets = load_detections(good)
    assert dets["a.jpg"].shape == (1, 5) and dets["3"][0, 4] == 1.0 and dets["b.jpg"].shape == (0, 5)
    cases = {
        "[1, 2]": "expected an object",
        '{"a.jpg": [[1, 2, 3]]}': "entry 'a.jpg', box 0",
        '{"a.jpg": [[1, 2, 30, 40, 0.9], [5, 5, 1, 1, 0.5]]}': "entry 'a.jpg', box 1: needs x2 > x1",
        '{"x": {"boxes": 1}}': "entry 'x': expected a list",
        '{"a.jpg": [[1, 2, "3", 4, 0.5]]}': "numbers",
        "{not json": "not valid JSON",
    }
    for text, message in cases.items():
        bad = tmp_path / "bad.json"
        bad.write_text(text)
        with pytest.raises(InputError, match="bad.json") as info:
            load_detections(bad)
        assert message in str(info.value)
    with pytest.raises(InputError, match="does not exist"):
        load_detections(tmp_path / "missing.json")


def test_stats_helpers() -> None:
    assert busy_share([(0, 1), (0.5, 2), (3, 4)], 0, 4) == pytest.approx(0.75)
    assert busy_share([], 0, 1) == 0.0
    s = percentile_summary([1.0, 2.0, 3.0, 4.0])
    assert s["p50"] == 2.5 and s["count"] == 4
    assert percentile_summary([])["p50"] is None


def test_image_files_source_through_pipeline(tmp_path: Path, estimator: PoseEstimator) -> None:
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"img{i}.png"), person_image((50, 50)))
    (tmp_path / "img1.png").write_bytes(b"not an image")
    source = ImageFilesSource.from_spec(str(tmp_path))
    dets = {f"img{i}.png": np.array([[10, 10, 90, 100, 0.9]], np.float32) for i in range(3)}
    sink = ListSink()
    summary = Pipeline(estimator, [sink], PipelineConfig(), detections=dets,
                       backend_factory=scripted_factory({})).run(source)
    assert [r["source"] for r in sink.records] == ["img0.png", "img1.png", "img2.png"]
    assert "error" in sink.records[1] and summary["frames_failed"] == 1 and summary["frames_ok"] == 2


def test_tracking_helpers() -> None:
    from edge_runtime.running.tracking import IouTracker, box_iou, boxes_from_keypoints

    iou = box_iou(np.array([[0, 0, 10, 10], [20, 20, 30, 30]]), np.array([[0, 0, 10, 10], [5, 0, 15, 10]]))
    np.testing.assert_allclose(iou, [[1.0, 50 / 150], [0.0, 0.0]])
    kpts = np.array([[[10, 20], [30, 60], [20, 40], [500, 500]]], np.float32)
    scores = np.array([[0.9, 0.9, 0.9, 0.1]], np.float32)
    boxes, keep = boxes_from_keypoints(kpts, scores, (100, 100), score_threshold=0.3, expansion=1.5)
    np.testing.assert_allclose(boxes, [[5.0, 10.0, 35.0, 70.0]])  # the low-score point is ignored
    assert keep.tolist() == [0]
    boxes, keep = boxes_from_keypoints(kpts, np.zeros_like(scores), (100, 100))
    assert boxes.shape == (0, 4) and keep.shape == (0,)
    tracker = IouTracker(iou_threshold=0.3)
    a, b = [0, 0, 10, 10], [50, 50, 60, 60]
    first = tracker.update(np.array([a, b]))
    assert first.tolist() == [0, 1]
    second = tracker.update(np.array([[51, 50, 61, 60], [1, 0, 11, 10], [80, 80, 90, 90]]))
    assert second.tolist() == [1, 0, 2]
    assert tracker.update(np.zeros((0, 4))).tolist() == []


def test_chain_slots_cap_split_chain_requests(estimator: PoseEstimator) -> None:
    frames = make_frames(5)
    created: dict = {}
    inflight = {"now": 0, "max": 0}
    lock = threading.Lock()

    def factory(stage, compiled, n, on_complete):
        def done(completion):
            with lock:
                inflight["now"] -= 1
            on_complete(completion)

        backend = scripted_factory(created)(stage, compiled, n, done)
        submit = backend.submit

        def counted_submit(inputs, userdata):
            with lock:
                inflight["now"] += 1
                inflight["max"] = max(inflight["max"], inflight["now"])
            submit(inputs, userdata)

        backend.submit = counted_submit
        return backend

    sink = ListSink()
    Pipeline(estimator, [sink], PipelineConfig(chain_slots=2), detections=dets_for(frames, 3),
             backend_factory=factory).run(ListSource(frames))
    assert [r["frame"] for r in sink.records] == list(range(5))
    assert all(len(r["persons"]) == 3 for r in sink.records)
    assert inflight["max"] == 2  # capacity 4 per stage, but at most 2 vae + pose requests together
