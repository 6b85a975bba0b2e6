"""Live mode with a bounded delay (``--delay-ms``): frames wait up to D ms of the source's clock for poses still on
their way, so a frame whose next pose comes back within D is blended two-sided and later frames stay forward-only.

Deterministic: the buffer is driven with late poses on a known translation, and the live runs use a camera whose
capture clock is 0.1 s per frame (``feeds.time`` patched), a pose device that answers a fixed number of frames
after the request (on the coordinator's thread) and a camera that shows the next frame only once the coordinator
has settled the current one."""
from __future__ import annotations

import itertools
import threading
import time
import types
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.errors import InputError
from edge_runtime.media.sources import Frame
from edge_runtime.model.estimator import PoseEstimator
from edge_runtime.running.backends import Completion
from edge_runtime.running.coordinator import WAKE, Coordinator
from edge_runtime.running.live import LiveConfig, LiveRunner, SourceRun
from edge_runtime.running.smoothing import SmoothConfig
from edge_runtime.running.tracks import PoseTracks, TrackConfig
from edge_runtime.running.twosided import TwoSidedBuffer
from tests.runtime.test_live import KPTS, shifted, texture
from tests.runtime.test_pipeline import ListSink, ListSource

BOX = np.array([90, 70, 160, 170], np.float64)
SCORES = np.full(len(KPTS), 0.9, np.float32)
STEP = np.array([2.0, -1.0])


def late_run(keyframes: "set[int]", lag: int, n: int, delay_ms: float) -> list:
    """Live order on a texture moving by STEP px per frame (clock 0.1 s per frame): the true pose of frame F comes
    back ``lag`` frames later, after frame F + lag was pushed."""
    base = texture(seed=3)
    cfg = TrackConfig()
    tracks, buffer, out = PoseTracks(cfg), TwoSidedBuffer(cfg, hold_frames=256, delay_ms=delay_ms), []
    for t in range(n):
        image = shifted(base, STEP[0] * t, STEP[1] * t)
        tracks.advance(t, t / 10.0, image)
        tracks.match(t, (BOX + np.tile(STEP * t, 2))[None], np.array([0.9]))
        out += buffer.push(Frame(t, f"f{t}", image, t * 100.0), t / 10.0, t / 10.0, tracks.persons())
        for f in sorted(k for k in keyframes if k + lag == t):
            truth = KPTS + STEP * f
            tracks.apply_pose(0, f, f / 10.0, BOX + np.tile(STEP * f, 2), truth, SCORES)
            buffer.keyframe(0, f, truth, SCORES)
    return out + buffer.flush()


def test_poses_back_within_the_delay_are_blended_two_sided_and_exact_on_a_translation() -> None:
    held = late_run({0, 10, 20}, lag=3, n=24, delay_ms=2000)
    assert [h.frame.index for h in held] == list(range(24))
    for h in held:
        (person,) = h.persons
        t = h.frame.index
        truth = (KPTS + STEP * t).astype(np.float32)
        np.testing.assert_allclose(person.keypoints, truth, atol=0.5)
        if t in (0, 10, 20):  # keyframes: the model's pose on the frame it saw, although it came back later
            np.testing.assert_array_equal(person.keypoints, truth)
            assert not person.propagated and not person.interpolated and person.pose_frames == (t, t)
        elif t > 20:  # after the last keyframe: forward only
            assert not person.interpolated and person.pose_frames == (20, None) and person.propagated
        else:
            assert person.interpolated and person.pose_frames == (t // 10 * 10, t // 10 * 10 + 10)
            assert person.pose_age_ms == pytest.approx(100.0 * min(t % 10, 10 - t % 10))


def test_a_small_delay_stays_forward_only() -> None:
    held = late_run({0, 10, 20}, lag=3, n=21, delay_ms=250)  # each pose comes back 300 ms after its frame
    assert [h.frame.index for h in held] == list(range(21))
    persons = [h.persons[0] for h in held]
    assert not any(p.interpolated for p in persons)
    assert all(p.pose_frames[1] is None for p in persons)
    assert all(p.pose_frame is None or p.pose_frame <= h.frame.index for p, h in zip(persons, held))


def test_only_frames_whose_next_pose_arrives_within_the_delay_are_blended() -> None:
    # keyframe 10 comes back after frame 12 (lag 2); with 550 ms frames 7-9 are still held then, 1-6 went out
    held = late_run({0, 10}, lag=2, n=16, delay_ms=550)
    assert [h.frame.index for h in held] == list(range(16))
    blended = [h.frame.index for h in held if h.persons[0].interpolated]
    assert blended == [7, 8, 9]
    for h in held[11:]:  # after keyframe 10: its pose carried forward (those held when it came back too)
        assert h.persons[0].pose_frame == 10 and h.persons[0].pose_frames == (10, None)
        np.testing.assert_allclose(h.persons[0].keypoints, KPTS + STEP * h.frame.index, atol=0.5)


# ------------------------------------------------------------------ live runs, deterministic


class Gate:
    """Frame-by-frame lockstep between the camera and the coordinator: the camera shows frame j + 1 only after the
    coordinator took frame j and waited twice for events (its completions handled, new requests sent)."""

    def __init__(self) -> None:
        self.go = threading.Event()
        self.go.set()
        self.frame = -1
        self.waits: "int | None" = None
        self.backends: list[LagBackend] = []

    def taken(self, frame_index: int) -> None:
        self.frame, self.waits = frame_index, 0
        for backend in self.backends:
            backend.tick(frame_index)

    def waited(self, coordinator: Any) -> None:
        if self.waits is not None:
            self.waits += 1
            if self.waits >= 2:
                self.waits = None
                self.go.set()
            else:  # the second wait returns at once
                coordinator.events.put(WAKE)


class GatedDetections(dict):
    """The detections table; looking a frame up tells the gate the coordinator took that frame."""

    def __init__(self, table: dict, gate: Gate) -> None:
        super().__init__(table)
        self.gate = gate

    def get(self, key: Any, default: Any = None) -> Any:
        if isinstance(key, str) and key.startswith("f") and key[1:].isdigit():
            self.gate.taken(int(key[1:]))
        return super().get(key, default)


class GatedCamera(ListSource):
    default_mode = "live"

    def __init__(self, frames: list[Frame], gate: Gate) -> None:
        super().__init__(frames)
        self.gate = gate

    def __iter__(self):
        for frame in self.frames:
            deadline = time.monotonic() + 30.0
            while not self.gate.go.wait(0.02):
                if self.closed or time.monotonic() > deadline:
                    return
            self.gate.go.clear()
            yield frame


class LagBackend:
    """A pose device whose answer comes back ``lag`` frames after the request, on the coordinator's thread."""

    def __init__(self, stage: str, compiled: Any, on_complete: Any, gate: Gate, lag: int) -> None:
        self.stage, self.compiled, self.on_complete, self.gate, self.lag = stage, compiled, on_complete, gate, lag
        self.capacity = 1
        self.pending: list[tuple[int, np.ndarray, Any, float]] = []

    def submit(self, inputs: np.ndarray, userdata: Any) -> None:
        self.pending.append((self.gate.frame + self.lag, np.array(inputs), userdata, time.perf_counter()))

    def tick(self, frame_index: int) -> None:
        due = [p for p in self.pending if p[0] <= frame_index]
        self.pending = [p for p in self.pending if p[0] > frame_index]
        for _, inputs, userdata, t0 in due:
            out = self.compiled(inputs)[self.compiled.output(0)].copy()
            self.on_complete(Completion(self.stage, userdata, out, None, t0, time.perf_counter()))

    def wait_all(self, timeout_s: Any = None) -> bool:
        return True  # requests still on their way at the end are dropped


@pytest.fixture(scope="module")
def fused(fake_models_dir: Path) -> PoseEstimator:
    from edge_runtime.model.models import CompileOptions

    return PoseEstimator(fake_models_dir, chain="fused", options=CompileOptions(cache_dir=None,
                                                                               inference_precision="f32"))


@pytest.fixture()
def lockstep(monkeypatch: pytest.MonkeyPatch) -> Gate:
    """A fresh gate; the capture clock says 0.1 s per frame; each coordinator wait is counted."""
    import edge_runtime.media.feeds as feeds

    gate = Gate()
    ticks = itertools.count()
    monkeypatch.setattr(feeds, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks) / 10.0))
    original = Coordinator._wait_and_handle

    def wait_and_handle(self: Any, timeout_s: float) -> None:
        original(self, timeout_s)
        gate.waited(self)

    monkeypatch.setattr(Coordinator, "_wait_and_handle", wait_and_handle)
    return gate


def moving_frames(n: int) -> list[Frame]:
    base = texture(seed=7)
    return [Frame(t, f"f{t}", shifted(base, 2.0 * t, 0.0), t * 100.0) for t in range(n)]


def live_run(estimator: PoseEstimator, gate: Gate, n: int, lag: int, hook: Any = None,
             **config: Any) -> "tuple[list[dict], dict]":
    frames = moving_frames(n)
    table = {f.name: np.array([[80 + 2 * f.index, 60, 160 + 2 * f.index, 180, 0.9],
                               [200 + 2 * f.index, 40, 280 + 2 * f.index, 200, 0.9]], np.float32) for f in frames}

    def factory(stage: str, compiled: Any, num: int, on_complete: Any) -> LagBackend:
        backend = LagBackend(stage, compiled, on_complete, gate, lag)
        gate.backends.append(backend)
        return backend
    cfg = LiveConfig(mode="live", pose_budget=0.1, batch=2, live_queue_size=4, pace_live_files=False,
                     smooth=SmoothConfig(method="none"), **config)
    sink = ListSink()
    summary = LiveRunner(estimator, cfg, detections=GatedDetections(table, gate), backend_factory=factory,
                         frame_hook=hook).run([SourceRun("cam", GatedCamera(frames, gate), [sink])])
    return sink.records, summary


def test_delay_zero_equals_no_delay(fused: PoseEstimator, lockstep: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    plain, summary = live_run(fused, lockstep, 30, lag=3)
    assert [r["frame"] for r in plain] == list(range(30)) and summary["total"]["delay_ms"] == 0
    assert any(p["propagated"] for r in plain for p in r["persons"])
    import edge_runtime.media.feeds as feeds  # the same clock again from 0

    ticks = itertools.count()
    monkeypatch.setattr(feeds, "time", types.SimpleNamespace(perf_counter=lambda: next(ticks) / 10.0))
    gate = Gate()
    lockstep.__dict__.update(gate.__dict__)
    zero, _ = live_run(fused, lockstep, 30, lag=3, delay_ms=0)
    assert zero == plain  # exact records
    assert LiveConfig(mode="live", delay_ms=0) == LiveConfig(mode="live")


def test_a_delay_longer_than_the_pose_latency_blends_two_sided(fused: PoseEstimator, lockstep: Gate) -> None:
    records, summary = live_run(fused, lockstep, 40, lag=3, delay_ms=2000)  # poses back after 0.3 s
    assert [r["frame"] for r in records] == list(range(40))  # every frame, in order
    persons = [(r["frame"], p) for r in records for p in r["persons"]]
    assert len(persons) == 80 and all(p["keypoints"] for _, p in persons)
    blended = [(f, p) for f, p in persons if p["interpolated"]]
    assert len(blended) > 20
    assert all(a < f < b for f, p in blended for a, b in [p["pose_frames"]])
    keyframes = [p for f, p in persons if p["pose_frames"] == [f, f]]
    assert keyframes and not any(p["propagated"] for p in keyframes)
    source = summary["sources"]["cam"]
    assert source["propagation"] == "two-sided" and source["delay_ms"] == 2000 == summary["total"]["delay_ms"]
    assert source["two_sided"]["interpolated_persons"] == len(blended)
    assert source["two_sided"]["held_frames_max"] <= 22  # 2 s at 10 fps, and the frame that pushed them out
    assert "frame_latency" in source["latency_ms"]


def test_a_delay_shorter_than_the_pose_latency_stays_forward_only(fused: PoseEstimator, lockstep: Gate) -> None:
    records, summary = live_run(fused, lockstep, 30, lag=3, delay_ms=150)
    assert [r["frame"] for r in records] == list(range(30))
    persons = [p for r in records for p in r["persons"]]
    assert persons and not any(p["interpolated"] for p in persons)
    assert all(p["pose_frames"][1] is None for p in persons)
    assert summary["sources"]["cam"]["two_sided"]["held_frames_max"] <= 3


def test_stopping_writes_the_held_frames(fused: PoseEstimator, lockstep: Gate) -> None:
    seen: list[int] = []

    def hook(result: Any, image: Any) -> bool:  # the hook gets the FrameResult the sinks get
        seen.append(result.frame)
        return result.frame < 5  # stop after frame 5 went out; frames held behind it still go out
    records, summary = live_run(fused, lockstep, 60, lag=3, hook=hook, delay_ms=1000)
    total = summary["total"]
    assert total["interrupted"] and total["frames_out"] == total["frames_in"] < 60
    assert [r["frame"] for r in records] == seen == list(range(total["frames_in"]))
    assert total["frames_in"] > 6


def test_a_long_stream_keeps_going_with_bounded_holding(fused: PoseEstimator, lockstep: Gate) -> None:
    records, summary = live_run(fused, lockstep, 60, lag=2, delay_ms=500)
    assert [r["frame"] for r in records] == list(range(60))
    stats = summary["sources"]["cam"]["two_sided"]
    assert stats["held_frames_max"] <= 7 and stats["interpolated_persons"] > 0


def test_delay_must_not_be_negative() -> None:
    with pytest.raises(InputError, match="delay_ms.*--delay-ms"):
        LiveConfig(mode="live", delay_ms=-1)
    assert LiveConfig(mode="live", delay_ms=500).propagation == "two-sided"
    assert LiveConfig(mode="live", delay_ms=500).track.flow_model == "points"  # the camera's coordinator affords it
    assert LiveConfig(mode="live", delay_ms=500, propagation="forward").propagation == "forward"
    with pytest.raises(InputError, match="delay_ms"):
        LiveConfig(mode="live", propagation="two-sided")


def test_the_command_line_option(tmp_path: Path) -> None:
    from edge_runtime import config
    from edge_runtime.cli import build_parser
    from edge_runtime.commands.run_cli import _live_config, resolve_settings

    def settings(*extra: str) -> dict:
        args = build_parser().parse_args(["run", "--models", "m", "--source", "s", "--output", "o", *extra])
        return resolve_settings(args)
    assert config.SCHEMA["delay_ms"][0] == 0
    assert _live_config(settings("--delay-ms", "0"), "live") == _live_config(settings(), "live")
    delayed = _live_config(settings("--delay-ms", "500"), "live")
    assert delayed.delay_ms == 500 and delayed.propagation == "two-sided"
    with pytest.raises(InputError, match="delay_ms.*non-negative.*--delay-ms"):
        settings("--delay-ms", "-5")
