"""Temporal smoothing (``--smooth one-euro|none``): the One Euro filter per track and keypoint, its lag bound,
box-size and frame-rate scaling, per-track state, and its place in both coordinators. No timing thresholds."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from edge_runtime import config as cfgmod
from edge_runtime.errors import InputError
from edge_runtime.model.estimator import PoseEstimator
from edge_runtime.running.live import LiveConfig, LiveRunner, SourceRun
from edge_runtime.running.pipeline import Pipeline, PipelineConfig
from edge_runtime.running.results import FrameResult
from edge_runtime.running.smoothing import OneEuroSmoother, SmoothConfig, smoothing_alpha, step_lag_bound
from edge_runtime.media.sources import Frame
from tests.runtime.test_pipeline import OPTIONS, ListSink, ListSource, dets_for, person_image, scripted_factory

K = 5
FPS = 12.0
ONE_EURO = SmoothConfig(method="one-euro", min_cutoff_hz=1.0, beta=1.0, d_cutoff_hz=1.0)


def result(frame: int, keypoints: np.ndarray, boxes: np.ndarray, track_ids, fps: float = FPS) -> FrameResult:
    """A FrameResult at media time frame / fps: keypoints [N,K,2] image px, boxes [N,4]."""
    n = len(track_ids)
    return FrameResult(frame, f"v.mp4#{frame}", frame * 1000.0 / fps, (640, 480), np.asarray(boxes, np.float32).reshape(n, 4),
                       np.ones(n, np.float32), np.asarray(keypoints, np.float32).reshape(n, K, 2),
                       np.full((n, K), 0.9, np.float32), np.asarray(track_ids, np.int64))


BOX = np.array([100.0, 100.0, 200.0, 300.0])  # longer side 200 px
BASE = np.stack([np.linspace(110, 190, K), np.linspace(120, 280, K)], axis=1)  # [K,2] image px


def run_track(smoother: OneEuroSmoother, positions: "list[np.ndarray]", fps: float = FPS, box=BOX,
              track_id: int = 1) -> "list[np.ndarray]":
    return [smoother(result(t, kp[None], box[None], [track_id], fps)).keypoints[0] for t, kp in enumerate(positions)]


def test_a_constant_track_is_unchanged() -> None:
    out = run_track(OneEuroSmoother(ONE_EURO), [BASE] * 30)
    for kp in out:
        np.testing.assert_allclose(kp, BASE, atol=1e-4)


@pytest.mark.parametrize("beta", [0.0, 1.0, 10.0])
def test_a_step_lags_by_a_bounded_number_of_frames(beta: float) -> None:
    cfg = dataclasses.replace(ONE_EURO, beta=beta)
    step = np.array([40.0, -20.0])
    positions = [BASE] * 10 + [BASE + step] * 40
    out = np.array(run_track(OneEuroSmoother(cfg), positions))
    gap = np.abs(out[10:] - (BASE + step)).max(axis=(1, 2)) / np.abs(step).max()   # share of the step left
    assert gap[0] > 0.05                          # it does smooth: the first frame after the step lags
    assert np.all(np.diff(gap) <= 1e-6)           # closes the gap monotonically, no overshoot
    bound = step_lag_bound(cfg, 1.0 / FPS, 0.05)  # (1 - alpha(min_cutoff)) ** n <= 5 %
    assert gap[bound - 1] <= 0.05 + 1e-6
    if beta == 0.0:                               # a plain low-pass: exactly the bound's geometric decay
        alpha = float(smoothing_alpha(cfg.min_cutoff_hz, 1.0 / FPS))
        np.testing.assert_allclose(gap[:5], (1 - alpha) ** np.arange(1, 6), rtol=1e-4)
    else:                                         # the speed term shortens the lag
        plain = np.array(run_track(OneEuroSmoother(dataclasses.replace(cfg, beta=0.0)), positions))
        assert np.abs(out[11] - positions[11]).max() < np.abs(plain[11] - positions[11]).max()


def test_scaled_by_box_size_and_frame_timestamps() -> None:
    rng = np.random.default_rng(0)
    walk = [BASE + np.cumsum(rng.normal(0, 3, (t + 1, 2)), axis=0)[-1] for t in range(25)]
    small = np.array(run_track(OneEuroSmoother(ONE_EURO), walk))
    # a person twice the size (box and motion x2 around the origin) is smoothed alike, in proportion
    big = np.array(run_track(OneEuroSmoother(ONE_EURO), [2 * kp for kp in walk], box=2 * BOX))
    np.testing.assert_allclose(big, 2 * small, rtol=1e-4, atol=1e-3)
    # the same motion at twice the frame rate: at the common instants the output is close to the 12 fps one,
    # while a filter counting frames (the 24 fps output over the first 25 frames) would lag twice as long
    fine = [BASE + (walk[t // 2] + walk[min(t // 2 + 1, 24)] - 2 * BASE) / 2 if t % 2 else walk[t // 2]
            for t in range(49)]
    fast = np.array(run_track(OneEuroSmoother(ONE_EURO), fine, fps=2 * FPS))
    common = np.abs(fast[::2] - small).mean()
    assert common < 0.5 * np.abs(np.array(walk) - small).mean()


def test_tracks_do_not_mix_and_ended_tracks_are_dropped() -> None:
    smoother = OneEuroSmoother(ONE_EURO)
    a, b = BASE, BASE + [300.0, 0.0]
    boxes = np.stack([BOX, BOX + [300, 0, 300, 0]])
    for t in range(5):
        out = smoother(result(t, np.stack([a, b]), boxes, [1, 2]))
    # b steps, a stays: a's output is unmoved, b's lags
    out = smoother(result(5, np.stack([a, b + 30.0]), boxes, [1, 2]))
    np.testing.assert_allclose(out.keypoints[0], a, atol=1e-4)
    assert 0 < np.abs(out.keypoints[1] - b).max() < 30.0
    assert smoother.tracked() == 2
    # track 2 ends (absent from a frame): its state is dropped; when the id comes back it starts afresh
    smoother(result(6, a[None], BOX[None], [1]))
    assert smoother.tracked() == 1
    out = smoother(result(7, np.stack([a, b - 50.0]), boxes, [1, 2]))
    np.testing.assert_allclose(out.keypoints[1], b - 50.0, atol=1e-4)
    # another source has its own tracks (and its own clock)
    out = smoother(result(0, (b + 7.0)[None], BOX[None], [1]), "other")
    np.testing.assert_allclose(out.keypoints[0], b + 7.0, atol=1e-4)
    assert smoother.tracked("other") == 1 and smoother.tracked() == 2


def test_what_passes_through_unchanged() -> None:
    smoother = OneEuroSmoother(ONE_EURO)
    untracked = [smoother(result(t, (BASE + 10 * t)[None], BOX[None], [-1])) for t in range(3)]
    np.testing.assert_array_equal(untracked[-1].keypoints[0], BASE + 20)
    still = result(0, BASE[None], BOX[None], [1])
    still.timestamp_ms = None        # still images: no time base
    assert smoother(still) is still
    first = result(0, BASE[None], BOX[None], [3])
    out = smoother(first)
    assert out is not first and out.keypoints is not first.keypoints   # the input arrays are never changed
    moved = result(1, (BASE + 40.0)[None], BOX[None], [3])
    kept = moved.keypoints.copy()
    smoother(moved)
    np.testing.assert_array_equal(moved.keypoints, kept)


def test_bad_settings_give_clear_errors() -> None:
    with pytest.raises(InputError, match="smooth: expected one of none | one-euro, got 'kalman'"):
        SmoothConfig(method="kalman")
    with pytest.raises(InputError, match="min_cutoff_hz"):
        SmoothConfig(method="one-euro", min_cutoff_hz=0.0)
    with pytest.raises(InputError, match="smooth_beta"):
        SmoothConfig(method="one-euro", beta=-1.0)
    with pytest.raises(InputError, match="'smooth' = 'kalman' is invalid; expected one-euro | none"):
        cfgmod.validate({"smooth": "kalman"}, source="edge.yaml")
    with pytest.raises(InputError, match="'smooth_beta' = -0.5 is invalid"):
        cfgmod.validate({"smooth_beta": -0.5}, source="edge.yaml")


def test_smooth_option_comes_from_the_schema(capsys) -> None:
    import argparse

    parser = argparse.ArgumentParser()
    groups = {name: parser.add_argument_group(name) for name in ("scheduling", "OpenVINO", "pose and outputs")}
    cfgmod.add_cli_options(groups)
    assert parser.parse_args(["--smooth", "one-euro"]).smooth == "one-euro"
    assert parser.parse_args([]).smooth is None  # not given: YAML, then the schema default
    with pytest.raises(SystemExit):
        parser.parse_args(["--smooth", "kalman"])
    assert "invalid choice: 'kalman'" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------- coordinators
@pytest.fixture(scope="module")
def estimator(fake_models_dir: Path) -> PoseEstimator:
    return PoseEstimator(fake_models_dir, options=OPTIONS)


def moving_frames(n: int) -> list[Frame]:
    """A blob moving 3 px per frame at 12 fps (media timestamps)."""
    return [Frame(i, f"f{i}.png", person_image((30 + 3 * i, 60)), i * 1000.0 / FPS) for i in range(n)]


def keypoints_of(records: list[dict]) -> np.ndarray:
    return np.array([[p["keypoints"] for p in r["persons"]] for r in records], np.float64)  # [T,N,K,3]


def file_run(estimator: PoseEstimator, smooth: "SmoothConfig | None") -> list[dict]:
    frames = moving_frames(10)
    extra = {} if smooth is None else {"smooth": smooth}
    sink = ListSink()
    Pipeline(estimator, [sink], PipelineConfig(**extra), detections=dets_for(frames),
             backend_factory=scripted_factory({})).run(ListSource(frames))
    return sink.records


def scheduled_run(estimator: PoseEstimator, smooth: "SmoothConfig | None") -> list[dict]:
    frames = moving_frames(10)
    extra = {} if smooth is None else {"smooth": smooth}
    sink = ListSink()
    runner = LiveRunner(estimator, LiveConfig(mode="file", pose_budget=0.5, **extra), detections=dets_for(frames),
                        backend_factory=scripted_factory({}))
    runner.run([SourceRun("s", ListSource(frames), [sink])])
    return sink.records


def replayed(records: list[dict], config: SmoothConfig) -> np.ndarray:
    """The One Euro filter applied afterwards to the records of an unsmoothed run: keypoints [T,N,K,2]."""
    smoother, out = OneEuroSmoother(config), []
    for r in records:
        kp = keypoints_of([r])[0]
        res = FrameResult(r["frame"], r["source"], r["timestamp_ms"], None,
                          np.array([p["bbox_xyxy"] for p in r["persons"]], np.float32), np.ones(len(kp), np.float32),
                          kp[..., :2].astype(np.float32), kp[..., 2].astype(np.float32),
                          np.array([p["track_id"] for p in r["persons"]], np.int64))
        out.append(smoother(res).keypoints)
    return np.array(out)


@pytest.mark.parametrize("run", [file_run, scheduled_run], ids=["file", "schedule-poses"])
def test_both_coordinators_smooth_their_records_in_one_place(estimator: PoseEstimator, run) -> None:
    plain = run(estimator, None)
    none = run(estimator, SmoothConfig(method="none"))
    assert none == plain  # --smooth none: exactly the unsmoothed output
    smoothed = run(estimator, ONE_EURO)
    assert [r["frame"] for r in smoothed] == [r["frame"] for r in plain]
    got, raw = keypoints_of(smoothed), keypoints_of(plain)
    np.testing.assert_array_equal(got[..., 2], raw[..., 2])          # scores untouched
    assert np.abs(got[1:, ..., :2] - raw[1:, ..., :2]).max() > 0.5     # the moving blob is smoothed
    np.testing.assert_allclose(got[..., :2], replayed(plain, ONE_EURO), atol=0.01)
