"""The heatmap decoder in OpenVINO ops (:mod:`edge_runtime.model.codec_graph`) against the numpy decoder
(:func:`edge_runtime.model.codec.decode_heatmaps`): within 0.05 crop px and 1e-3 in score on realistic and random
heatmaps, and the same answer on the degenerate channels (peak on the border, flat, negative, NaN, ties).

Model-level equality (random-weight checkpoints, the trained proxy) is in tests/convert/test_decode_graph.py."""
from __future__ import annotations

import numpy as np
import openvino as ov
import pytest

from edge_runtime.model.codec import decode_heatmaps, encode_keypoints
from edge_runtime.model.codec_graph import KEYPOINTS_OUTPUT, decoder_model, with_keypoints
from edge_runtime.errors import ModelFolderError

PX_TOL = 0.05
SCORE_TOL = 1e-3


def graph_decode(heatmaps: np.ndarray, input_size: tuple[int, int], kernel: int = 11) -> np.ndarray:
    """heatmaps [N,K,H,W] -> keypoints [N,K,3] from the decoder model compiled in f32."""
    n, k, h, w = heatmaps.shape
    compiled = ov.Core().compile_model(decoder_model(k, (w, h), input_size, kernel), "CPU",
                                       {"INFERENCE_PRECISION_HINT": "f32"})
    return compiled(np.ascontiguousarray(heatmaps, dtype=np.float32))[0]


def assert_same(heatmaps: np.ndarray, input_size: tuple[int, int], kernel: int = 11) -> np.ndarray:
    out = graph_decode(heatmaps, input_size, kernel)
    ref_kp, ref_sc = decode_heatmaps(heatmaps, input_size=input_size, blur_kernel_size=kernel)
    assert out.shape == (*heatmaps.shape[:2], 3)
    np.testing.assert_allclose(out[..., :2], ref_kp, atol=PX_TOL, rtol=0)
    np.testing.assert_allclose(out[..., 2], ref_sc, atol=SCORE_TOL, rtol=0)
    return out


@pytest.mark.parametrize("k,hw,input_size", [(133, (64, 48), (192, 256)), (17, (256, 192), (768, 1024)),
                                             (17, (32, 24), (96, 128))])
def test_gaussian_heatmaps_decode_alike(k: int, hw: tuple[int, int], input_size: tuple[int, int]) -> None:
    rng = np.random.default_rng(k)
    w_in, h_in = input_size
    kp = rng.uniform([0, 0], [w_in - 1, h_in - 1], (2, k, 2))
    heatmaps = np.stack([encode_keypoints(p, input_size, (hw[1], hw[0]), sigma=2.0) for p in kp])
    heatmaps = heatmaps * rng.uniform(0.05, 1.0, (2, k, 1, 1)).astype(np.float32)
    heatmaps += rng.normal(0, 0.01, heatmaps.shape).astype(np.float32)
    out = assert_same(heatmaps, input_size)
    assert np.abs(out[..., :2] - kp).max() < 0.1 * w_in  # the decoder finds the encoded points


@pytest.mark.parametrize("kernel", [3, 11, 17])
def test_random_heatmaps_and_other_kernels_decode_alike(kernel: int) -> None:
    rng = np.random.default_rng(kernel)
    smooth = rng.normal(0, 1, (3, 17, 40, 30)).astype(np.float32)
    import cv2

    smooth = np.stack([[cv2.GaussianBlur(c, (7, 7), 0) for c in person] for person in smooth])
    assert_same(smooth, (120, 160), kernel)
    assert_same(np.abs(smooth) * 0.01, (120, 160), kernel)  # low peaks: the clip at 1e-3 matters


def test_peaks_on_the_border_decode_alike() -> None:
    h, w = 32, 24
    peaks = [(0, 0), (0, w - 1), (h - 1, 0), (h - 1, w - 1), (0, 11), (h - 1, 7), (15, 0), (9, w - 1), (1, 1)]
    heatmaps = np.zeros((1, len(peaks), h, w), np.float32)
    yy, xx = np.mgrid[0:h, 0:w]
    for j, (y, x) in enumerate(peaks):
        heatmaps[0, j] = np.exp(-((yy - y - 0.3) ** 2 + (xx - x + 0.2) ** 2) / (2 * 1.5 ** 2))
    out = assert_same(heatmaps, (96, 128))
    x_hm = out[0, :, 0] * (w - 1) / 96  # back to heatmap px: each point stays by its border peak
    assert np.all(np.abs(x_hm - [x for _, x in peaks]) < 1.0)


def test_flat_negative_and_broken_channels_follow_the_numpy_rules() -> None:
    h, w = 16, 12
    rng = np.random.default_rng(3)
    channels = {
        "zeros": np.zeros((h, w)),
        "constant": np.full((h, w), 0.7),
        "constant negative": np.full((h, w), -2.0),
        "all negative": -rng.uniform(0.1, 1, (h, w)),
        "negative with a positive peak": -rng.uniform(0.1, 1, (h, w)),
        "tie: two equal maxima": np.zeros((h, w)),
        "NaN inside": rng.uniform(0, 1, (h, w)),
        "all NaN": np.full((h, w), np.nan),
        "NaN, the rest flat": np.full((h, w), 0.5),
        "+inf": rng.uniform(0, 1, (h, w)),
        "-inf": rng.uniform(0, 1, (h, w)),
    }
    channels["negative with a positive peak"][5, 6] = 0.8
    channels["tie: two equal maxima"][3, 4] = channels["tie: two equal maxima"][9, 2] = 1.0
    channels["NaN inside"][2, 2] = np.nan
    channels["NaN, the rest flat"][7, 7] = np.nan
    channels["+inf"][4, 9] = np.inf
    channels["-inf"][4, 9] = -np.inf
    heatmaps = np.stack(list(channels.values()))[None].astype(np.float32)
    out = graph_decode(heatmaps, (48, 64))
    ref_kp, ref_sc = decode_heatmaps(heatmaps, input_size=(48, 64))
    for j, name in enumerate(channels):
        np.testing.assert_allclose(out[0, j, :2], ref_kp[0, j], atol=PX_TOL, rtol=0, err_msg=name)
        np.testing.assert_allclose(out[0, j, 2], ref_sc[0, j], atol=SCORE_TOL, rtol=0, equal_nan=True, err_msg=name)
    names = list(channels)
    assert tuple(out[0, names.index("zeros"), :2]) == (24.0, 32.0)  # flat: the crop centre
    assert np.isnan(out[0, names.index("NaN inside"), 2])
    tie = out[0, names.index("tie: two equal maxima"), :2] * [(w - 1) / 48, (h - 1) / 64]
    np.testing.assert_allclose(tie, [4, 3], atol=0.5)  # the first maximum (row-major) wins, as np.argmax


def test_with_keypoints_appends_the_output_and_keeps_the_heatmaps(fake_models_dir) -> None:
    core = ov.Core()
    pose = core.read_model(str(fake_models_dir / "vae_pose.xml"))
    both = with_keypoints(pose, (48, 64), 11)
    assert [o.get_any_name() for o in both.outputs] == ["heatmaps", KEYPOINTS_OUTPUT]
    assert [o.get_any_name() for o in pose.outputs] == ["heatmaps"]  # the read model is not changed
    only = with_keypoints(pose, (48, 64), 11, keep_heatmaps=False)
    assert [o.get_any_name() for o in only.outputs] == [KEYPOINTS_OUTPUT]
    assert list(only.output(0).get_partial_shape()) == list(ov.PartialShape([-1, 133, 3]))
    crops = np.random.default_rng(0).integers(0, 255, (2, 64, 48, 3), dtype=np.uint8)
    compiled = core.compile_model(both, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(crops)
    ref_kp, ref_sc = decode_heatmaps(result[0], input_size=(48, 64))
    np.testing.assert_allclose(result[1][..., :2], ref_kp, atol=PX_TOL, rtol=0)
    np.testing.assert_allclose(result[1][..., 2], ref_sc, atol=SCORE_TOL, rtol=0)


def test_a_dynamic_heatmap_size_is_refused() -> None:
    import openvino.opset13 as ops

    param = ops.parameter(ov.PartialShape([-1, 17, -1, -1]), ov.Type.f32)
    with pytest.raises(ModelFolderError, match="static K, H, W"):
        with_keypoints(ov.Model([ops.relu(param)], [param]), (48, 64), 11)
