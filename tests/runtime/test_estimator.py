"""PoseEstimator on tiny fake model folders: shapes, chains, known keypoint location, flip test, errors.

The fake pose graph's heatmaps are a smoothed brightness map of the crop (tests/fake_models.py), so on a
black image with one white disk every keypoint must land on that disk, in image px.
"""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_runtime.errors import InputError
from edge_runtime.model.estimator import PoseEstimator
from edge_runtime.model.geometry import udp_warp_matrix, warp_crop
from edge_runtime.model.keypoints import WHOLEBODY_FLIP_PAIRS, flip_indices
from edge_runtime.model.models import CompileOptions

OPTS = CompileOptions(cache_dir=None, inference_precision="f32", performance_hint="LATENCY")
BOXES = np.array([[100, 50, 180, 170, 0.9], [200, 20, 300, 220, 0.8]], np.float32)
DISKS = [(120, 80), (270, 170)]  # one white disk inside each box, off-centre


def _scene() -> np.ndarray:
    image = np.zeros((240, 320, 3), np.uint8)
    for center in DISKS:
        cv2.circle(image, center, 14, (255, 255, 255), -1)
    return image


@pytest.fixture(scope="module")
def estimator(fake_models_dir) -> PoseEstimator:
    return PoseEstimator(fake_models_dir, OPTS)


def test_attributes_and_io_names(estimator):
    assert estimator.input_size == (48, 64) and estimator.heatmap_size == (12, 16)
    assert (estimator.num_keypoints, estimator.scheme, estimator.chain) == (133, "wholebody", "split")
    assert estimator.padding == 1.25 and estimator.meta["kind"] == "pose"
    assert list(estimator.compiled) == ["vae_encoder", "pose"]
    assert [estimator.input_name(k) for k in estimator.kinds] == ["image", "latent"]
    assert [estimator.output_name(k) for k in estimator.kinds] == ["latent", "heatmaps"]
    assert estimator.num_requests("pose") >= 1


def test_preprocess_is_the_udp_crop(estimator):
    image = _scene()
    crops = estimator.preprocess(image, BOXES)
    assert crops.shape == (2, 64, 48, 3) and crops.dtype == np.uint8
    expected = warp_crop(image, udp_warp_matrix(BOXES[1, :4], input_size=(48, 64), padding=1.25), (48, 64))
    np.testing.assert_array_equal(crops[1], expected)


def test_infer_shapes_and_chains_agree(estimator, fake_models_dir):
    crops = estimator.preprocess(_scene(), BOXES)
    heatmaps = estimator.infer(crops)
    assert heatmaps.shape == (2, 133, 16, 12) and heatmaps.dtype == np.float32
    fused = PoseEstimator(fake_models_dir, OPTS, chain="fused")
    assert fused.kinds == ("vae_pose",)
    np.testing.assert_allclose(fused.infer(crops), heatmaps, atol=1e-5)
    batched = PoseEstimator(fake_models_dir, OPTS, max_batch=8)
    np.testing.assert_allclose(batched.infer(crops), heatmaps, atol=1e-5)


def test_keypoints_land_on_the_bright_disk(estimator):
    keypoints, scores = estimator(_scene(), BOXES)
    assert keypoints.shape == (2, 133, 2) and scores.shape == (2, 133)
    assert keypoints.dtype == np.float32 and scores.dtype == np.float32
    for person, (cx, cy) in enumerate(DISKS):
        err = np.linalg.norm(keypoints[person] - np.array([cx, cy], np.float32), axis=-1)
        assert err.max() < 4.0, (person, keypoints[person, 0])  # < 1/3 of a latent cell in image px
        assert np.all(scores[person] > 0.2)  # heatmap maximum on the disk (background is 0)


def test_moving_the_box_does_not_move_the_keypoint(estimator):
    """Keypoints are reported in image px: the same disk seen through a shifted box stays put."""
    image = _scene()
    a, _ = estimator(image, BOXES[:1, :4])
    b, _ = estimator(image, BOXES[:1, :4] + np.array([-10, 6, -10, 6], np.float32))
    np.testing.assert_allclose(a[0, 0], DISKS[0], atol=4.0)
    np.testing.assert_allclose(b[0, 0], DISKS[0], atol=4.0)


def test_zero_boxes(estimator):
    for boxes in (np.zeros((0, 4)), np.zeros((0, 5)), []):
        keypoints, scores = estimator(_scene(), boxes)
        assert keypoints.shape == (0, 133, 2) and scores.shape == (0, 133)
    keypoints, scores = estimator.postprocess(np.zeros((0, 133, 16, 12), np.float32), np.zeros((0, 4)))
    assert keypoints.shape == (0, 133, 2) and scores.shape == (0, 133)
    assert estimator.preprocess(_scene(), np.zeros((0, 4))).shape == (0, 64, 48, 3)


def test_zero_width_box_is_accepted(estimator):
    """mmpose fixes the aspect ratio from the other side, so a box of zero width still gives a crop."""
    keypoints, _ = estimator(_scene(), np.array([[120, 50, 120, 170]]))
    assert keypoints.shape == (1, 133, 2) and np.all(np.isfinite(keypoints))


def test_score_column_is_ignored(estimator):
    image = _scene()
    with_score, _ = estimator(image, BOXES)
    without, _ = estimator(image, BOXES[:, :4])
    np.testing.assert_array_equal(with_score, without)


def test_body_scheme(fake_body_models_dir):
    est = PoseEstimator(fake_body_models_dir, OPTS)
    keypoints, scores = est(_scene(), BOXES[:1])
    assert est.scheme == "body" and keypoints.shape == (1, 17, 2) and scores.shape == (1, 17)
    np.testing.assert_allclose(keypoints[0], np.tile(DISKS[0], (17, 1)), atol=4.0)


@pytest.mark.parametrize("image, boxes, message", [
    (np.zeros((10, 10), np.uint8), BOXES, "image_bgr: expected a uint8 BGR image"),
    (np.zeros((10, 10, 3), np.float32), BOXES, "image_bgr: expected a uint8 BGR image"),
    (_scene(), np.zeros((2, 3)), r"boxes_xyxy: expected \[N,4\] or \[N,5\]"),
    (_scene(), np.array([[10, 10, 5, 20]]), r"box 0 \[10.0, 10.0, 5.0, 20.0\] needs x2 >= x1"),
    (_scene(), np.array([[0, 0, 50, 50], [10, 10, 10, 10]]), "box 1 .* non-zero size"),
    (_scene(), np.array([[10, np.nan, 50, 20]]), "NaN/inf"),
])
def test_bad_inputs(estimator, image, boxes, message):
    with pytest.raises(InputError, match=message):
        estimator(image, boxes)


def test_bad_crops_and_heatmaps(estimator):
    with pytest.raises(InputError, match=r"crops: expected uint8 \[N,64,48,3\]"):
        estimator.infer(np.zeros((1, 32, 48, 3), np.uint8))
    with pytest.raises(InputError, match=r"heatmaps: expected \[2,133,H,W\]"):
        estimator.postprocess(np.zeros((1, 133, 16, 12), np.float32), BOXES)


def test_flip_back_swaps_channels_and_mirrors(estimator):
    rng = np.random.default_rng(0)
    heatmaps = rng.random((2, 133, 16, 12)).astype(np.float32)
    back = estimator.flip_back(heatmaps)
    left, right = WHOLEBODY_FLIP_PAIRS[0]  # left_eye, right_eye
    np.testing.assert_array_equal(back[:, right], heatmaps[:, left, :, ::-1])
    np.testing.assert_array_equal(back[:, 0], heatmaps[:, 0, :, ::-1])  # nose keeps its channel
    np.testing.assert_array_equal(estimator.flip_back(back), heatmaps)  # an involution


def test_flip_indices_tables():
    perm = flip_indices(133)
    assert sorted(perm.tolist()) == list(range(133))
    np.testing.assert_array_equal(perm[perm], np.arange(133))
    assert perm[91] == 112 and perm[17] == 20 and perm[23] == 39 and perm[31] == 31  # hand root, toe, jaw, chin
    assert flip_indices(17)[5] == 6
    with pytest.raises(InputError, match="flip pairs exist for 133"):
        flip_indices(21)


def test_flip_test_averages_heatmaps(fake_models_dir, estimator):
    flip = PoseEstimator(fake_models_dir, OPTS, flip_test=True)
    crops = estimator.preprocess(_scene(), BOXES)
    plain = estimator.infer(crops)
    mirrored = estimator.infer(np.ascontiguousarray(crops[:, :, ::-1]))
    expected = 0.5 * (plain + estimator.flip_back(mirrored))
    np.testing.assert_allclose(flip.infer(crops), expected, atol=1e-6)
    # the fake network is mirror-equivariant, so the flip-averaged keypoints stay on the disk
    keypoints, _ = flip(_scene(), BOXES)
    np.testing.assert_allclose(keypoints[0], np.tile(DISKS[0], (133, 1)), atol=4.0)
    # and the mirrored pass really saw the mirrored crop (disk off-centre -> different heatmaps)
    assert not np.allclose(mirrored, plain)


def test_default_options_are_latency(fake_models_dir, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))  # the default cache dir lands in the temporary home
    est = PoseEstimator(fake_models_dir)
    assert est.options.performance_hint == "LATENCY" and est.options.device == "CPU"
    assert str(est.compiled["pose"].get_property("PERFORMANCE_HINT")) == "LATENCY"
    assert (tmp_path / ".cache" / "sdpose-edge").is_dir()


def test_bad_max_batch(fake_models_dir):
    with pytest.raises(InputError, match="max_batch"):
        PoseEstimator(fake_models_dir, OPTS, max_batch=0)


@pytest.mark.parametrize("flip_test", [False, True])
def test_graph_decoding_gives_the_numpy_keypoints(fake_models_dir, estimator, flip_test):
    """--decode graph: the decoder appended to the pose IR (the chain returns keypoints [N,K,3]), or with the
    flip test a compiled decoder on the averaged heatmaps; both give numpy's keypoints."""
    numpy_est = estimator if not flip_test else PoseEstimator(fake_models_dir, OPTS, flip_test=True)
    graph = PoseEstimator(fake_models_dir, OPTS, decode="graph", flip_test=flip_test)
    assert graph.chain_keypoints is (not flip_test) and (graph._decoder is not None) is flip_test
    image = _scene()
    crops = graph.preprocess(image, BOXES)
    payload = graph.infer(crops)
    assert payload.shape == ((2, 133, 3) if not flip_test else (2, 133, 16, 12))
    if not flip_test:
        assert graph.output_name("pose") == "keypoints"
    kp_g, sc_g = graph(image, BOXES)
    kp_n, sc_n = numpy_est(image, BOXES)
    np.testing.assert_allclose(kp_g, kp_n, atol=0.05 * 320 / 48)  # 0.05 crop px, in image px of these boxes
    np.testing.assert_allclose(sc_g, sc_n, atol=1e-3)
    assert np.abs(kp_g[0] - DISKS[0]).max() < 8  # a real pose: on the disk


def test_graph_decoding_runs_alone_when_the_pose_model_is_not_f32(fake_models_dir):
    """A bf16/f16 hint would move the points of a decoder inside the pose IR: it then runs alone, in f32."""
    graph = PoseEstimator(fake_models_dir, CompileOptions(cache_dir=None, inference_precision="bf16",
                                                          performance_hint="LATENCY"), decode="graph")
    assert not graph.chain_keypoints and graph._decoder is not None
    assert graph.infer(graph.preprocess(_scene(), BOXES)).shape == (2, 133, 16, 12)


def test_bad_decode_is_refused(fake_models_dir):
    with pytest.raises(InputError, match="decode: expected one of graph | numpy"):
        PoseEstimator(fake_models_dir, OPTS, decode="torch")
    from edge_runtime.config import SCHEMA

    assert PoseEstimator(fake_models_dir, OPTS).decode == SCHEMA["decode"][0]
