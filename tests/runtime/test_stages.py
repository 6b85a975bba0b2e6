"""The shared stages on their own (edge_runtime.running.stages): the pose stage pairs each job's plain and mirrored
heatmaps once, whatever requests they went in; pumps the split chain (latents to the second stage first, the
chain_slots rule, no pile-up of latents); a failure fails each job once; the work of a dead stage fails. The box
stage returns its errors instead of raising. And PoseTracks' budget rule. Fake estimator and backends, no timing."""
from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from edge_runtime.errors import InputError
from edge_runtime.media.sources import Frame
from edge_runtime.running.backends import Completion, RequestBook
from edge_runtime.running.metrics import Reservoirs
from edge_runtime.running.stages import DEAD_STAGE, BoxStage, PoseJob, PoseStage
from edge_runtime.running.tracks import PoseTracks


class FakeEstimator:
    """Crop of box x1 = b: [[b, 0], [b, 0]] (u8 [2,2,1]); "heatmap" = the crop as float [1,2,2]; flip back =
    mirror; decode: keypoint x = the heatmap's sum, y = the box's x1 (so each outcome names its job's box)."""

    num_keypoints = 1

    def __init__(self, kinds: tuple[str, ...] = ("vae_encoder", "pose")) -> None:
        self.kinds = kinds
        self.flip_pairs = 0

    def preprocess(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        if boxes[0, 0] < 0:
            raise InputError("boxes: outside the image")
        crop = np.zeros((1, 2, 2, 1), np.uint8)
        crop[0, :, 0, 0] = int(boxes[0, 0])
        return crop

    def flip_average(self, plain: np.ndarray, mirrored: np.ndarray) -> np.ndarray:
        assert plain.shape == mirrored.shape
        self.flip_pairs += len(plain)
        return 0.5 * (plain + mirrored[..., ::-1])

    def postprocess(self, heatmaps: np.ndarray, boxes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        if np.any(boxes[:, 0] == 99):
            raise InputError("heatmaps: cannot decode")
        n = len(heatmaps)
        kpts = np.stack([heatmaps.reshape(n, -1).sum(1), boxes[:, 0]], axis=1).reshape(n, 1, 2)
        return kpts.astype(np.float32), np.ones((n, 1), np.float32)


class FakeBackend:
    """Keeps what it was sent; the test answers."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self.sent: list[tuple[np.ndarray, Any]] = []

    def submit(self, inputs: np.ndarray, userdata: Any) -> None:
        self.sent.append((inputs, userdata))

    def wait_all(self, timeout_s: Any = None) -> bool:
        return True


def heat_of(crops: np.ndarray) -> np.ndarray:
    """The fake pose model: crops u8 [N,2,2,1] -> [N,1,2,2]."""
    return crops[..., 0].astype(np.float32)[:, None]


class Rig:
    def __init__(self, kinds=("vae_encoder", "pose"), capacity=None, **stage_args: Any) -> None:
        capacity = capacity or {}
        self.estimator = FakeEstimator(kinds)
        self.backends = {k: FakeBackend(capacity.get(k, 4)) for k in kinds + ("detector",)}
        self.book = RequestBook(self.backends, None, chain=kinds)
        self.lat = Reservoirs()
        self.poses = PoseStage(self.estimator, self.book, self.book.submit, self.lat, **stage_args)

    def answer(self, stage: str, index: int, output: "np.ndarray | None" = None, error: "str | None" = None):
        inputs, token = self.backends[stage].sent[index]
        if output is None and error is None:
            output = heat_of(inputs) if stage == self.estimator.kinds[-1] else inputs.copy()
        event = self.book.accept(Completion(stage, token, output, error, 0.0, 0.0))
        return self.poses.complete(event)


def job(x: float, key: Any = None) -> PoseJob:
    return PoseJob(key if key is not None else x, np.zeros((8, 8, 3), np.uint8), np.array([x, 0, x + 4, 8], np.float32))


def test_flip_pairs_are_matched_per_job_across_requests_and_decoded_once() -> None:
    rig = Rig(kinds=("vae_pose",), batch=1, flip_test=True)
    rig.poses.add([job(10), job(50)])
    assert rig.poses.queued == 4 and rig.poses.pump() == []
    sent = rig.backends["vae_pose"].sent
    assert len(sent) == 4 and all(len(inputs) == 1 for inputs, _ in sent)  # batch 1: each crop its own request
    # the second crop is the first mirrored
    np.testing.assert_array_equal(sent[1][0][0], sent[0][0][0][:, ::-1])
    outcomes = []
    for index in (3, 0, 1, 2):  # B mirrored, A plain, A mirrored, B plain
        outcomes += rig.answer("vae_pose", index)
    assert [o.job.key for o in outcomes] == [10, 50]  # each job once, when both of its heatmaps are back
    for o in outcomes:
        assert o.error is None and o.keypoints[0, 1] == o.job.key
        assert o.keypoints[0, 0] == pytest.approx(2 * o.job.key)  # its own plain and mirrored crops averaged
    assert rig.estimator.flip_pairs == 2 and len(rig.lat["decode"]) == 2


def test_split_chain_pump_sends_latents_first_and_keeps_chain_slots() -> None:
    rig = Rig(capacity={"pose": 1}, batch=2, chain_slots=2)
    rig.poses.add([job(x) for x in (1, 2, 3, 4, 5, 6)])
    rig.poses.pump()
    vae, pose = rig.backends["vae_encoder"], rig.backends["pose"]
    assert [len(inputs) for inputs, _ in vae.sent] == [2, 2]  # two chain slots
    assert not rig.poses.room()
    assert rig.answer("vae_encoder", 0) == [] and rig.answer("vae_encoder", 1) == []  # latents, not outcomes
    rig.poses.pump()
    assert len(pose.sent) == 1 and len(vae.sent) == 2  # one latent batch in pose; the other waits (no new crops)
    np.testing.assert_array_equal(pose.sent[0][0], vae.sent[0][0])
    assert rig.poses.in_chain() == 2 and not rig.poses.room()
    outcomes = rig.answer("pose", 0)
    assert [o.job.key for o in outcomes] == [1, 2]
    assert [o.keypoints[0, 0] for o in outcomes] == [2.0, 4.0]
    rig.poses.pump()  # the waiting latents go first; then one slot is free for new crops
    assert len(pose.sent) == 2 and len(vae.sent) == 3


def test_a_failed_request_fails_each_job_once_and_the_other_variant_is_dropped() -> None:
    rig = Rig(kinds=("vae_pose",), batch=3, flip_test=True)
    rig.poses.add([job(10), job(50)])
    rig.poses.pump()  # [A, A mirrored, B] and [B mirrored]
    failed = rig.answer("vae_pose", 0, error="vae_pose inference failed: device lost")
    assert [(o.job.key, o.stage) for o in failed] == [(10, "vae_pose"), (50, "vae_pose")]
    assert all("device lost" in o.error for o in failed)
    assert rig.answer("vae_pose", 1) == []  # B's mirrored crop: its job already failed


def test_crop_and_decode_failures_come_back_as_outcomes() -> None:
    rig = Rig(kinds=("vae_pose",), batch=4)
    rig.poses.add([job(-5), job(99), job(7)])
    failed = rig.poses.pump()
    assert [(o.job.key, o.stage) for o in failed] == [(-5, "crop")] and "crop failed" in failed[0].error
    outcomes = rig.answer("vae_pose", 0)  # 99 and 7 decoded together: the decode fails for both
    assert [(o.job.key, o.stage) for o in outcomes] == [(99, "decode"), (7, "decode")]
    assert outcomes[0].error.startswith("decoding failed:")


def test_the_work_of_a_dead_stage_fails() -> None:
    rig = Rig(capacity={"pose": 1, "vae_encoder": 1}, batch=1)
    rig.poses.add([job(1), job(2)])
    rig.poses.pump()
    assert rig.answer("vae_encoder", 0) == []
    rig.poses.pump()  # job 1 in pose, job 2 in vae_encoder
    rig.book.requests.timeout_s = -1.0  # every request in flight is now overdue
    expired = rig.book.expired()
    assert {e.stage for e in expired} == {"pose", "vae_encoder"} and rig.poses.dead()
    outcomes = [o for e in expired for o in rig.poses.complete(e)]
    assert sorted(o.job.key for o in outcomes) == [1, 2] and all("no answer" in o.error for o in outcomes)
    rig.poses.add([job(3)])
    dead = rig.poses.fail_dead()
    assert [o.job.key for o in dead] == [3] and dead[0].error == DEAD_STAGE.format("vae_encoder")


class FakeDetector:
    def preprocess(self, image: np.ndarray) -> tuple[np.ndarray, Any]:
        if image.shape[0] < 4:
            raise InputError("image: too small")
        return image[None], "meta"

    def postprocess(self, output: np.ndarray, meta: Any) -> tuple[np.ndarray, np.ndarray]:
        if output is not None and output.size == 0:
            raise InputError("boxes: empty output")
        return np.array([[1, 2, 3, 4]], np.float32), np.array([0.9], np.float32)


def test_box_stage_returns_errors_instead_of_raising(caplog) -> None:
    rig = Rig(kinds=("vae_pose",))
    boxes = BoxStage(FakeDetector(), rig.book, rig.book.submit, rig.lat)
    boxes.request(np.zeros((2, 2, 3), np.uint8), "small")
    boxes.request(np.zeros((8, 8, 3), np.uint8), "ok")
    failed = boxes.pump()
    assert [(u, f.error) for u, f in failed] == [("small", "detector preprocessing failed: image: too small")]
    assert boxes.busy() and len(rig.backends["detector"].sent) == 1
    _, token = rig.backends["detector"].sent[0]
    userdata, found = boxes.complete(rig.book.accept(Completion("detector", token, np.ones(3), None, 0.0, 0.0)))
    assert userdata == "ok" and found.error is None and found.origin == "detector" and len(found.boxes_xyxy) == 1
    boxes.request(np.zeros((8, 8, 3), np.uint8), "bad output")
    boxes.request(np.zeros((8, 8, 3), np.uint8), "lost")
    boxes.pump()
    sent = rig.backends["detector"].sent
    _, found = boxes.complete(rig.book.accept(Completion("detector", sent[1][1], np.zeros(0), None, 0.0, 0.0)))
    assert found.error == "detector postprocessing failed: boxes: empty output" and len(found.boxes_xyxy) == 0
    _, found = boxes.complete(rig.book.accept(Completion("detector", sent[2][1], None, "device lost", 0.0, 0.0)))
    assert found.error == "device lost"
    # a table: by name, else by index; a miss is counted per source and gives no boxes
    table = {"a.png": np.array([[0, 0, 5, 5, 0.8]], np.float32), "3": np.zeros((0, 5), np.float32)}
    image = np.zeros((8, 8, 3), np.uint8)
    assert len(boxes.lookup(table, Frame(0, "a.png", image, None)).boxes_xyxy) == 1
    assert len(boxes.lookup(table, Frame(3, "x.png", image, None), "cam").boxes_xyxy) == 0
    assert boxes.missing["cam"] == 0
    found = boxes.lookup(table, Frame(4, "y.png", image, None), "cam")
    assert found.origin == "detections" and found.boxes_xyxy.shape == (0, 4) and boxes.missing["cam"] == 1


def test_pose_budget_rule_lives_in_the_tracks() -> None:
    tracks = PoseTracks(pose_budget=0.5)
    image = np.zeros((100, 100, 3), np.uint8)
    tracks.advance(0, 0.0, image)
    tracks.match(0, np.array([[10, 10, 40, 90], [50, 10, 80, 90]], float), np.array([0.9, 0.9]))
    tracks.accrue()
    assert tracks.credit == pytest.approx(1.0)
    # first poses may always be taken (the credit goes into debt); the second ranks behind the first
    ranked = sorted(tracks.candidates(), reverse=True)
    assert [tid for _, tid in ranked] == [0, 1] or [tid for _, tid in ranked] == [1, 0]
    for _, tid in ranked:
        box = tracks.begin_pose(tid)
        assert box is not None
        tracks.apply_pose(tid, 0, 0.0, box, np.tile([[25.0, 50.0]], (17, 1)), np.full(17, 0.9))
    assert tracks.credit == pytest.approx(-1.0)
    tracks.advance(1, 10.0, image)  # old poses: due for a refresh, but no credit
    tracks.accrue()
    assert tracks.credit == pytest.approx(0.0) and tracks.candidates() == [] and tracks.begin_pose(0) is None
    tracks.advance(2, 20.0, image)
    tracks.accrue()
    assert [tid for _, tid in tracks.candidates()] == [0, 1]
    assert tracks.begin_pose(0) is not None and tracks.credit == pytest.approx(0.0)
    assert tracks.candidates() == []  # the refresh took the one credit


class SyncBackend:
    """Answers each request at once (on the coordinator's thread: the completion waits on the events queue);
    requests number ``fail`` (0-based) fail."""

    def __init__(self, stage: str, compiled: Any, on_complete: Any, fail: "tuple[int, ...]" = ()) -> None:
        self.stage, self.compiled, self.on_complete, self.fail = stage, compiled, on_complete, fail
        self.capacity, self.count = 2, 0

    def submit(self, inputs: np.ndarray, userdata: Any) -> None:
        n, self.count = self.count, self.count + 1
        if n in self.fail:
            self.on_complete(Completion(self.stage, userdata, None, f"{self.stage} inference failed: lost", 0.0, 0.0))
            return
        out = self.compiled(inputs)[self.compiled.output(0)].copy()
        self.on_complete(Completion(self.stage, userdata, out, None, 0.0, 0.0))

    def wait_all(self, timeout_s: Any = None) -> bool:
        return True


def test_file_mode_failed_frame_is_complete_and_track_ids_skip_it(fake_models_dir) -> None:
    from edge_runtime.media import sinks
    from edge_runtime.model.estimator import PoseEstimator
    from edge_runtime.model.models import CompileOptions
    from edge_runtime.running.pipeline import Pipeline, PipelineConfig
    from tests.runtime.test_pipeline import ListSource, dets_for, make_frames

    estimator = PoseEstimator(fake_models_dir, options=CompileOptions(cache_dir=None, inference_precision="f32"))
    frames = make_frames(4)
    sink = sinks.ListSink()

    def factory(stage, compiled, n, on_complete):
        return SyncBackend(stage, compiled, on_complete, fail=(2,) if stage == "pose" else ())

    config = PipelineConfig(batch=1, max_inflight_frames=1)
    summary = Pipeline(estimator, [sink], config, detections=dets_for(frames, 1),
                       backend_factory=factory).run(ListSource(frames))
    assert summary["frames_failed"] == 1 and [r["frame"] for r in sink.records] == [0, 1, 2, 3]
    failed = sink.records[2]
    assert failed["error"] == "pose inference failed: lost" and failed["persons"] == []
    assert (failed["width"], failed["height"]) == (160, 120) and failed["source"] == "f2.png"
    ids = [r["persons"][0]["track_id"] for r in sink.records if r["persons"]]
    assert len(ids) == 3 and len(set(ids)) == 1  # the failed frame took no track ID
