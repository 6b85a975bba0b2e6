"""edge_runtime.model.codec against an independent, literal transcription of mmpose 1.3.2.

``_mmpose_decode`` below follows mmpose's ``UDPHeatmap.decode`` line by line in its
loop form (``get_heatmap_maximum``, the per-channel ``gaussian_blur`` loop, the
flattened edge-padded index reads of ``refine_keypoints_dark_udp`` done per keypoint,
``np.linalg.inv`` + ``einsum``, and the final ``/ [W-1, H-1] * input_size``), so the
vectorised runtime code is checked against mmpose's arithmetic, accidents included.
"""
import cv2
import numpy as np
import pytest

from edge_runtime.model.codec import decode_heatmaps, encode_keypoints
from edge_runtime.errors import InputError
from edge_runtime.model.geometry import keypoints_to_image, udp_warp_matrix

# well-behaved channels must agree with mmpose to this many crop px
EXACT_TOL = 1e-5


def _mmpose_decode(encoded, input_size, blur_kernel_size=11):
    """Literal numpy transcription of mmpose 1.3.2 UDPHeatmap.decode (gaussian)."""
    heatmaps = encoded.copy()
    K, H, W = heatmaps.shape

    # get_heatmap_maximum
    flat = heatmaps.reshape(K, -1)
    y_locs, x_locs = np.unravel_index(np.argmax(flat, axis=1), shape=(H, W))
    locs = np.stack((x_locs, y_locs), axis=-1).astype(np.float32)
    vals = np.amax(flat, axis=1)
    locs[vals <= 0.] = -1
    keypoints = locs[None]
    scores = vals[None]

    # refine_keypoints_dark_udp -> gaussian_blur (in place, one channel at a time)
    border = (blur_kernel_size - 1) // 2
    with np.errstate(divide="ignore", invalid="ignore"):
        for k in range(K):
            origin_max = np.max(heatmaps[k])
            dr = np.zeros((H + 2 * border, W + 2 * border), dtype=np.float32)
            dr[border:-border, border:-border] = heatmaps[k].copy()
            dr = cv2.GaussianBlur(dr, (blur_kernel_size, blur_kernel_size), 0)
            heatmaps[k] = dr[border:-border, border:-border].copy()
            heatmaps[k] *= origin_max / np.max(heatmaps[k])
        np.clip(heatmaps, 1e-3, 50., heatmaps)
        np.log(heatmaps, heatmaps)
    pad = np.pad(heatmaps, ((0, 0), (1, 1), (1, 1)), mode="edge").flatten()

    for k in range(K):
        index = keypoints[0, k, 0] + 1 + (keypoints[0, k, 1] + 1) * (W + 2)
        index += (W + 2) * (H + 2) * k
        i = np.array([int(index)])  # 1-element arrays, so float32 stays float32 as in mmpose
        i_ = pad[i]
        ix1 = pad[i + 1]
        iy1 = pad[i + W + 2]
        ix1y1 = pad[i + W + 3]
        ix1_y1_ = pad[i - W - 3]
        ix1_ = pad[i - 1]
        iy1_ = pad[i - 2 - W]
        dx = 0.5 * (ix1 - ix1_)
        dy = 0.5 * (iy1 - iy1_)
        derivative = np.concatenate([dx, dy]).reshape(2, 1)
        dxx = ix1 - 2 * i_ + ix1_
        dyy = iy1 - 2 * i_ + iy1_
        dxy = 0.5 * (ix1y1 - ix1 - iy1 + i_ + i_ - ix1_ - iy1_ + ix1_y1_)
        hessian = np.concatenate([dxx, dxy, dxy, dyy]).reshape(2, 2)
        hessian = np.linalg.inv(hessian + np.finfo(np.float32).eps * np.eye(2))
        keypoints[0, k] -= np.einsum("mn,nk->mk", hessian, derivative).squeeze()

    keypoints = keypoints / [W - 1, H - 1] * np.array(input_size)
    return keypoints[0], scores[0]


def _gaussian_maps(rng, k, hw, sigma, margin=0):
    h, w = hw
    xs = rng.uniform(margin, w - 1 - margin, k)
    ys = rng.uniform(margin, h - 1 - margin, k)
    gx = np.arange(w)[None, None, :]
    gy = np.arange(h)[None, :, None]
    amp = rng.uniform(0.2, 1.0, k)[:, None, None]
    maps = amp * np.exp(-((gx - xs[:, None, None]) ** 2 + (gy - ys[:, None, None]) ** 2) / (2 * sigma ** 2))
    return maps.astype(np.float32), np.stack([xs, ys], -1)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_mmpose_on_random_heatmaps(seed):
    rng = np.random.default_rng(seed)
    hm = rng.random((17, 64, 48), dtype=np.float32)
    kp, sc = decode_heatmaps(hm, input_size=(192, 256))
    ref_kp, ref_sc = _mmpose_decode(hm, (192, 256))
    assert kp.shape == (17, 2) and sc.shape == (17,)
    np.testing.assert_array_equal(sc, ref_sc)
    np.testing.assert_allclose(kp, ref_kp, rtol=0, atol=EXACT_TOL)


@pytest.mark.parametrize("seed,sigma,noise", [(3, 6.0, 0.0), (4, 6.0, 0.05), (5, 2.0, 0.02), (6, 3.5, 0.1)])
def test_matches_mmpose_on_gaussian_heatmaps(seed, sigma, noise):
    rng = np.random.default_rng(seed)
    hm, _ = _gaussian_maps(rng, 133, (64, 48), sigma)
    hm = hm + (noise * rng.standard_normal(hm.shape)).astype(np.float32)
    kp, sc = decode_heatmaps(hm, input_size=(192, 256))
    ref_kp, ref_sc = _mmpose_decode(hm, (192, 256))
    valid = ref_sc > 0
    assert valid.sum() >= 100
    np.testing.assert_array_equal(sc, ref_sc)
    np.testing.assert_allclose(kp[valid], ref_kp[valid], rtol=0, atol=EXACT_TOL)


@pytest.mark.parametrize("amplitude", [3e-3, 80.0])
def test_matches_mmpose_where_the_clip_bounds_bite(amplitude):
    """Low-confidence (peak ~1e-3) and over-confident (> 50) channels hit mmpose's clip(1e-3, 50)."""
    rng = np.random.default_rng(14)
    hm, _ = _gaussian_maps(rng, 40, (64, 48), 1.5)
    hm = hm * np.float32(amplitude) + np.float32(amplitude * 0.05) * rng.random(hm.shape, dtype=np.float32)
    kp, sc = decode_heatmaps(hm, input_size=(192, 256))
    ref_kp, ref_sc = _mmpose_decode(hm, (192, 256))
    np.testing.assert_array_equal(sc, ref_sc)
    np.testing.assert_allclose(kp, ref_kp, rtol=0, atol=EXACT_TOL)


def test_matches_mmpose_at_full_size_with_blur_kernel_17():
    rng = np.random.default_rng(7)
    hm, _ = _gaussian_maps(rng, 8, (256, 192), 6.0)
    for kernel in (11, 17):
        kp, _ = decode_heatmaps(hm, input_size=(768, 1024), blur_kernel_size=kernel)
        ref_kp, _ = _mmpose_decode(hm, (768, 1024), kernel)
        np.testing.assert_allclose(kp, ref_kp, rtol=0, atol=EXACT_TOL)


def test_peak_on_border_and_corner_match_mmpose():
    h, w = 64, 48
    centres = [(0, 20), (w - 1, 30), (10, 0), (25, h - 1), (0, 0), (w - 1, h - 1), (0, h - 1), (w - 1, 0),
               (1, 1), (w - 2, h - 2)]
    hm = np.zeros((len(centres), h, w), np.float32)
    gy, gx = np.mgrid[0:h, 0:w]
    for i, (cx, cy) in enumerate(centres):
        hm[i] = np.exp(-((gx - cx - 0.3) ** 2 + (gy - cy + 0.2) ** 2) / (2 * 2.0 ** 2))
    kp, sc = decode_heatmaps(hm, input_size=(192, 256))
    ref_kp, ref_sc = _mmpose_decode(hm, (192, 256))
    assert np.isfinite(kp).all()
    np.testing.assert_array_equal(sc, ref_sc)
    np.testing.assert_allclose(kp, ref_kp, rtol=0, atol=EXACT_TOL)
    # still near the integer peak (within 2 heatmap px = 8 crop px)
    peak = np.array(centres, np.float64) / [w - 1, h - 1] * [192, 256]
    assert np.abs(kp - peak).max() < 8


def test_batch_equals_per_person_and_single_channel():
    rng = np.random.default_rng(8)
    batch = np.stack([_gaussian_maps(rng, 5, (64, 48), 2.0)[0] for _ in range(3)])
    kp, sc = decode_heatmaps(batch, input_size=(192, 256))
    assert kp.shape == (3, 5, 2) and sc.shape == (3, 5)
    assert kp.dtype == np.float64 and sc.dtype == np.float32
    for n in range(3):
        kp1, sc1 = decode_heatmaps(batch[n], input_size=(192, 256))
        np.testing.assert_array_equal(kp[n], kp1)
        np.testing.assert_array_equal(sc[n], sc1)
        ref_kp, _ = _mmpose_decode(batch[n], (192, 256))
        np.testing.assert_allclose(kp[n], ref_kp, rtol=0, atol=EXACT_TOL)
    one_kp, one_sc = decode_heatmaps(batch[0, :1], input_size=(192, 256))
    assert one_kp.shape == (1, 2) and one_sc.shape == (1,)
    np.testing.assert_array_equal(one_kp[0], kp[0, 0])


@pytest.mark.parametrize(
    "input_size,heatmap_size,sigma",
    [((768, 1024), (192, 256), 6), ((192, 256), (48, 64), 2), ((288, 384), (72, 96), 3)],
)
def test_encode_decode_round_trip(input_size, heatmap_size, sigma):
    """decode(encode(u)) == u * w / (w - 1): mmpose encodes with (w-1)/(W-1), decodes with w/(W-1).

    Keypoints are kept 3 sigma + 1 heatmap px away from the border (the DARK fit of a
    truncated gaussian is biased at the border); the remaining error is < 0.05 crop px.
    """
    rng = np.random.default_rng(9)
    w, h = input_size
    wh, hh = heatmap_size
    margin = (3 * sigma + 1) * (w - 1) / (wh - 1)
    kps = np.stack([rng.uniform(margin, w - 1 - margin, 40), rng.uniform(margin, h - 1 - margin, 40)], -1)
    hm = encode_keypoints(kps, input_size, heatmap_size, sigma=sigma)
    assert hm.shape == (40, hh, wh) and hm.dtype == np.float32
    peak = hm.max(axis=(1, 2))  # sub-pixel centre: >= exp(-(0.5^2 + 0.5^2) / (2 sigma^2))
    assert (peak <= 1.0).all() and (peak >= np.exp(-0.25 / sigma ** 2) - 1e-6).all()
    dec, sc = decode_heatmaps(hm, input_size=input_size)
    expected = kps * np.array([w / (w - 1), h / (h - 1)])
    assert np.abs(dec - expected).max() < 0.05
    np.testing.assert_array_equal(sc, hm.max(axis=(1, 2)))
    # the mmpose scale asymmetry is real (up to ~1 crop px at the far edge), not noise
    assert np.abs(dec - kps).max() > 0.3


def test_image_to_heatmap_to_image_round_trip_is_exact():
    """Image point -> UDP crop -> encode -> decode -> keypoints_to_image == image point."""
    rng = np.random.default_rng(10)
    box = np.array([120.5, 40.0, 380.0, 610.0])
    size = (768, 1024)
    m = udp_warp_matrix(box, size).astype(np.float64)
    crop_pts = np.stack([rng.uniform(80, 680, 25), rng.uniform(80, 940, 25)], -1)
    img_pts = (crop_pts - m[:, 2]) / np.diag(m[:, :2])  # m is diagonal (rot 0)
    u = img_pts @ m[:, :2].T + m[:, 2]
    hm = encode_keypoints(u, size, (192, 256), sigma=6)
    dec, _ = decode_heatmaps(hm, input_size=size)
    back = keypoints_to_image(dec, box, size)
    crop_px_in_image_px = 1.0 / m[0, 0]
    assert np.abs(back - img_pts).max() < 0.05 * crop_px_in_image_px


def test_all_zero_and_flat_channels_give_heatmap_centre():
    hm = np.zeros((3, 64, 48), np.float32)
    hm[1] = 0.4  # constant positive
    hm[2] = -2.0  # constant negative
    kp, sc = decode_heatmaps(hm, input_size=(192, 256))
    np.testing.assert_allclose(kp, [[96.0, 128.0]] * 3, atol=1e-9)
    np.testing.assert_array_equal(sc, np.array([0.0, 0.4, -2.0], np.float32))
    ref_kp, _ = _mmpose_decode(hm, (192, 256))
    assert np.isnan(ref_kp[0]).all()  # mmpose's accident this replaces (0/0 in the blur rescale)


def test_all_negative_channel_uses_argmax_not_the_neighbour_channel():
    rng = np.random.default_rng(11)
    gy, gx = np.mgrid[0:64, 0:48]
    corner = np.exp(-((gx - 46.2) ** 2 + (gy - 61.7) ** 2) / 8.0).astype(np.float32)  # near bottom-right
    neg = -1.0 - rng.random((64, 48), dtype=np.float32)
    neg[40, 7] = -0.25
    hm = np.stack([corner, neg, corner * 0.5])
    kp, sc = decode_heatmaps(hm, input_size=(192, 256))
    np.testing.assert_allclose(kp[1], [7 * 192 / 47, 40 * 256 / 63], atol=1e-9)
    assert sc[1] == np.float32(-0.25)
    # the neighbours are unaffected and match mmpose
    ref_kp, ref_sc = _mmpose_decode(hm, (192, 256))
    np.testing.assert_allclose(kp[[0, 2]], ref_kp[[0, 2]], atol=EXACT_TOL)
    np.testing.assert_array_equal(sc, ref_sc)
    # mmpose puts it at -1 and reads its derivatives from channel 0: its answer for
    # channel 1 changes when only channel 0 changes; ours does not
    other = hm.copy()
    other[0] = np.roll(corner, -3, axis=0)
    ref_other, _ = _mmpose_decode(other, (192, 256))
    assert np.abs(ref_other[1] - ref_kp[1]).max() > 1e-3
    kp_other, _ = decode_heatmaps(other, input_size=(192, 256))
    np.testing.assert_array_equal(kp_other[1], kp[1])


def test_nan_and_inf_channels_are_finite_and_isolated():
    rng = np.random.default_rng(12)
    good, _ = _gaussian_maps(rng, 2, (64, 48), 2.0, margin=8)
    all_nan = np.full((64, 48), np.nan, np.float32)
    part_nan = np.zeros((64, 48), np.float32)
    part_nan[10, 20] = 0.7
    part_nan[30:33, 5] = np.nan
    with_inf = np.zeros((64, 48), np.float32)
    with_inf[50, 40] = np.inf
    hm = np.stack([good[0], all_nan, part_nan, with_inf, good[1]])
    kp, sc = decode_heatmaps(hm, input_size=(192, 256))
    assert np.isfinite(kp).all()
    np.testing.assert_allclose(kp[1], [96.0, 128.0], atol=1e-9)
    np.testing.assert_allclose(kp[2], [20 * 192 / 47, 10 * 256 / 63], atol=1e-9)
    np.testing.assert_allclose(kp[3], [40 * 192 / 47, 50 * 256 / 63], atol=1e-9)
    assert np.isnan(sc[1]) and np.isnan(sc[2]) and sc[3] == np.inf  # mmpose's raw maxima
    alone0, _ = decode_heatmaps(hm[[0]], input_size=(192, 256))
    alone4, _ = decode_heatmaps(hm[[4]], input_size=(192, 256))
    np.testing.assert_array_equal(kp[0], alone0[0])
    np.testing.assert_array_equal(kp[4], alone4[0])


def test_decode_accepts_float64_and_does_not_modify_input():
    rng = np.random.default_rng(13)
    hm, _ = _gaussian_maps(rng, 4, (64, 48), 2.0)
    before = hm.copy()
    kp32, _ = decode_heatmaps(hm, input_size=(192, 256))
    np.testing.assert_array_equal(hm, before)
    kp64, _ = decode_heatmaps(hm.astype(np.float64), input_size=(192, 256))
    np.testing.assert_array_equal(kp32, kp64)


@pytest.mark.parametrize(
    "kwargs,name",
    [
        (dict(heatmaps=np.zeros((64, 48), np.float32)), "heatmaps"),
        (dict(heatmaps=np.zeros((1, 2, 3, 64, 48), np.float32)), "heatmaps"),
        (dict(heatmaps=np.zeros((3, 1, 48), np.float32)), "heatmaps"),
        (dict(heatmaps=np.array([["a"]])), "heatmaps"),
        (dict(heatmaps=np.zeros((3, 64, 48), np.float32), input_size=(768,)), "input_size"),
        (dict(heatmaps=np.zeros((3, 64, 48), np.float32), input_size=(0, 10)), "input_size"),
        (dict(heatmaps=np.zeros((3, 64, 48), np.float32), blur_kernel_size=10), "blur_kernel_size"),
    ],
)
def test_decode_bad_input_names_the_argument(kwargs, name):
    with pytest.raises(InputError, match=name):
        decode_heatmaps(**kwargs)


def test_encode_matches_mmpose_window_and_skips_outside():
    # keypoint at crop px -> heatmap px (10.3, 20.6) for input 192x256 / heatmap 48x64 (factor (w-1)/(W-1))
    f = np.array([191 / 47, 255 / 63])
    kp = np.array([[10.3, 20.6], [500.0, 20.0], [-40.0, 10.0]]) * np.array([f, [1, 1], [1, 1]])
    hm = encode_keypoints(kp, (192, 256), (48, 64), sigma=2, keypoints_visible=[1, 1, 1])
    assert hm.shape == (3, 64, 48)
    assert hm[0].argmax() == 21 * 48 + 10  # peak at the rounded position
    gy, gx = np.mgrid[0:64, 0:48]
    expect = np.exp(-((gx - 10.3) ** 2 + (gy - 20.6) ** 2) / 8.0)
    window = (np.abs(gx - 10) <= 6) & (np.abs(gy - 21) <= 6)
    np.testing.assert_allclose(hm[0], np.where(window, expect, 0), atol=1e-6)
    assert not hm[1].any() and not hm[2].any()  # windows entirely outside the heatmap
    hidden = encode_keypoints(kp[:1], (192, 256), (48, 64), sigma=2, keypoints_visible=[0])
    assert not hidden.any()
    with pytest.raises(InputError, match="keypoints"):
        encode_keypoints(np.zeros((3, 3, 3, 2)), (192, 256), (48, 64))


def test_empty_batch_gives_empty_results():
    kp, sc = decode_heatmaps(np.zeros((0, 133, 64, 48), np.float32), input_size=(192, 256))
    assert kp.shape == (0, 133, 2) and sc.shape == (0, 133)
