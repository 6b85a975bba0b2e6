"""edge_runtime.model.geometry: mmpose GetBBoxCenterScale + TopdownAffine(use_udp=True) and the way back."""
import numpy as np
import pytest

import edge_runtime
from edge_runtime.errors import InputError
from edge_runtime.model.geometry import (
    bbox_xyxy_to_center_scale,
    fix_aspect_ratio,
    keypoints_to_image,
    keypoints_to_image_cs,
    udp_warp_matrix,
    udp_warp_matrix_cs,
    warp_crop,
)

SIZE = (768, 1024)  # (w, h)


def test_public_api_is_exported():
    assert edge_runtime.udp_warp_matrix is udp_warp_matrix
    assert edge_runtime.keypoints_to_image is keypoints_to_image
    assert edge_runtime.warp_crop is warp_crop
    assert edge_runtime.bbox_xyxy_to_center_scale is bbox_xyxy_to_center_scale


def test_hand_computed_tall_box():
    # box 100 x 400 px -> padded 125 x 500 -> aspect 0.75 -> 375 x 500
    center, scale = bbox_xyxy_to_center_scale([10, 20, 110, 420])
    np.testing.assert_allclose(center, [60.0, 220.0])
    np.testing.assert_allclose(scale, [125.0, 500.0])
    np.testing.assert_allclose(fix_aspect_ratio(scale, 0.75), [375.0, 500.0])
    m = udp_warp_matrix([10, 20, 110, 420], SIZE)
    assert m.shape == (2, 3) and m.dtype == np.float32
    sx, sy = 767 / 375, 1023 / 500
    expected = [[sx, 0, sx * (-60 + 187.5)], [0, sy, sy * (-220 + 250)]]
    np.testing.assert_allclose(m, expected, rtol=1e-6)
    np.testing.assert_allclose(m[:, 2], [260.78, 61.38], rtol=1e-6)


def test_hand_computed_wide_box_and_batch():
    boxes = np.array([[0, 0, 400, 100], [10, 20, 110, 420]], float)
    center, scale = bbox_xyxy_to_center_scale(boxes, padding=1.25)
    np.testing.assert_allclose(center, [[200, 50], [60, 220]])
    np.testing.assert_allclose(scale, [[500, 125], [125, 500]])
    np.testing.assert_allclose(fix_aspect_ratio(scale, 0.75), [[500, 500 / 0.75], [375, 500]])
    mats = udp_warp_matrix(boxes, SIZE)
    assert mats.shape == (2, 2, 3)
    np.testing.assert_array_equal(mats[1], udp_warp_matrix(boxes[1], SIZE))
    sx, sy = 767 / 500, 1023 / (500 / 0.75)
    np.testing.assert_allclose(mats[0], [[sx, 0, sx * 50], [0, sy, sy * (-50 + 250 / 0.75)]], rtol=1e-6)
    # the padded, aspect-fixed box edges land on crop px 0 and w - 1 / h - 1
    corners = np.array([[200 - 250, 50 - 250 / 0.75, 1], [200 + 250, 50 + 250 / 0.75, 1]])
    np.testing.assert_allclose(corners @ mats[0].T.astype(np.float64), [[0, 0], [767, 1023]], atol=1e-3)


def test_fix_aspect_ratio_is_idempotent_and_never_shrinks():
    rng = np.random.default_rng(0)
    scale = rng.uniform(1, 500, (50, 2))
    fixed = fix_aspect_ratio(scale, 0.75)
    assert (fixed >= scale - 1e-9).all()
    np.testing.assert_allclose(fixed[:, 0] / fixed[:, 1], 0.75)
    np.testing.assert_allclose(fix_aspect_ratio(fixed, 0.75), fixed, rtol=1e-12)


def test_warp_then_keypoints_to_image_round_trip():
    """keypoints_to_image expects *decoded* crop px (mmpose divides by w, UDP warps with w - 1).

    For raw UDP-warp crop px u it returns c - s/2 + u * s / w instead of the exact inverse
    c - s/2 + u * s / (w - 1): off by u * s / (w (w - 1)) image px, at most one crop
    pixel (s / w) at the far edge. That offset is mmpose's; multiplying u by w / (w - 1),
    which is what the decoder's w / (W - 1) scaling does, makes the round trip exact.
    """
    rng = np.random.default_rng(1)
    boxes = np.array([[50.0, 30.0, 250.0, 500.0], [300.5, 100.25, 900.0, 300.0]])
    pts = np.stack([rng.uniform(60, 240, (2, 20)), rng.uniform(110, 290, (2, 20))], -1)
    mats = udp_warp_matrix(boxes, SIZE).astype(np.float64)
    crop = np.einsum("nij,nkj->nki", mats[:, :, :2], pts) + mats[:, None, :, 2]
    _, scale = bbox_xyxy_to_center_scale(boxes)
    fixed = fix_aspect_ratio(scale, 768 / 1024)

    raw = keypoints_to_image(crop, boxes, SIZE)
    assert raw.shape == (2, 20, 2)
    offset = np.abs(raw - pts)
    assert (offset <= fixed[:, None, :] / np.array(SIZE) + 1e-3).all()
    assert offset.max() > 0.05  # the UDP offset is there, mmpose has it too

    exact = keypoints_to_image(crop * np.array([768 / 767, 1024 / 1023]), boxes, SIZE)
    np.testing.assert_allclose(exact, pts, atol=2e-3)  # float32 matrix rounding only

    # single-box form and the center/scale form agree
    center, _ = bbox_xyxy_to_center_scale(boxes[0])
    one = keypoints_to_image(crop[0], boxes[0], SIZE)
    np.testing.assert_array_equal(one, raw[0])
    np.testing.assert_allclose(keypoints_to_image_cs(crop[0], center, fixed[0], SIZE), one, rtol=1e-12)


def test_matrix_cs_variant_matches_box_variant():
    m1 = udp_warp_matrix([10, 20, 110, 420], SIZE, padding=1.5)
    c, s = bbox_xyxy_to_center_scale([10, 20, 110, 420], padding=1.5)
    np.testing.assert_array_equal(udp_warp_matrix_cs(c, s, SIZE), m1)


@pytest.mark.parametrize("marker", [(137, 211), (60, 80), (250, 333)])
def test_warp_crop_puts_a_marked_pixel_where_the_matrix_says(marker):
    img = np.zeros((480, 400, 3), np.float32)
    px, py = marker
    img[py, px] = (1.0, 2.0, 3.0)
    box = np.array([40.0, 60.0, 290.0, 420.0])
    size = (192, 256)
    m = udp_warp_matrix(box, size)
    crop = warp_crop(img, m, size)
    assert crop.shape == (256, 192, 3) and crop.dtype == np.float32
    # analytic bilinear response: crop(u, v) = tent(X - px) * tent(Y - py), (X, Y) = M^-1 (u, v)
    m64 = m.astype(np.float64)
    v, u = np.mgrid[0:256, 0:192]
    x = (u - m64[0, 2]) / m64[0, 0]
    y = (v - m64[1, 2]) / m64[1, 1]
    tent = np.clip(1 - np.abs(x - px), 0, None) * np.clip(1 - np.abs(y - py), 0, None)
    np.testing.assert_allclose(crop[:, :, 0], tent, atol=0.07)  # OpenCV quantises weights to 1/32
    np.testing.assert_allclose(crop[:, :, 2], 3 * tent, atol=0.2)
    target = m64 @ [px, py, 1]
    vy, ux = np.unravel_index(crop[:, :, 0].argmax(), crop.shape[:2])
    assert abs(ux - target[0]) < 1 and abs(vy - target[1]) < 1


def test_warp_crop_u8_border_is_zero_and_gray_image():
    img = np.full((100, 80, 3), 200, np.uint8)
    m = udp_warp_matrix([-50, -50, 20, 20], (48, 64))  # mostly outside the image
    crop = warp_crop(img, m, (48, 64))
    assert crop.dtype == np.uint8 and crop.shape == (64, 48, 3)
    assert crop[0, 0].tolist() == [0, 0, 0] and crop[-1, -1].tolist() == [200, 200, 200]
    gray = warp_crop(img[:, :, 0], m, (48, 64))
    assert gray.shape == (64, 48)
    one = warp_crop(img[:, :, :1], m, (48, 64))
    assert one.shape == (64, 48, 1)


def test_zero_width_box_is_grown_by_the_aspect_fix():
    m = udp_warp_matrix([100, 50, 100, 450], SIZE)  # a vertical line: mmpose fixes the width
    _, s = bbox_xyxy_to_center_scale([100, 50, 100, 450])
    np.testing.assert_allclose(fix_aspect_ratio(s, 0.75), [375.0, 500.0])
    assert np.isfinite(m).all() and m[0, 0] > 0
    kp = keypoints_to_image(np.array([[384.0, 512.0]]), [100, 50, 100, 450], SIZE)
    np.testing.assert_allclose(kp, [[100.0, 250.0]])


@pytest.mark.parametrize(
    "call,name",
    [
        (lambda: udp_warp_matrix([1, 2, 3], SIZE), "bbox_xyxy"),
        (lambda: udp_warp_matrix([[1, 2, 3, 4, 0.9]], SIZE), "bbox_xyxy"),
        (lambda: udp_warp_matrix([10, 10, 5, 20], SIZE), "bbox_xyxy"),
        (lambda: udp_warp_matrix([10, 10, 10, 10], SIZE), "bbox_xyxy"),
        (lambda: udp_warp_matrix([0, 0, np.nan, 10], SIZE), "bbox_xyxy"),
        (lambda: udp_warp_matrix([0, 0, 10, 10], (768,)), "input_size"),
        (lambda: udp_warp_matrix([0, 0, 10, 10], (1, 10)), "input_size"),
        (lambda: udp_warp_matrix([0, 0, 10, 10], SIZE, padding=0), "padding"),
        (lambda: udp_warp_matrix_cs([1, 2], [0, 0], SIZE), "scale"),
        (lambda: udp_warp_matrix_cs([1, 2, 3], [1, 2, 3], SIZE), "center"),
        (lambda: fix_aspect_ratio([1, 2, 3], 0.75), "scale"),
        (lambda: fix_aspect_ratio([1, 2], -1), "aspect_ratio"),
        (lambda: warp_crop(np.zeros((4,), np.uint8), np.eye(2, 3), SIZE), "image"),
        (lambda: warp_crop(np.zeros((4, 4, 3), np.uint8), np.eye(3), SIZE), "matrix"),
        (lambda: keypoints_to_image(np.zeros((5, 3)), [0, 0, 10, 10], SIZE), "keypoints"),
        (lambda: keypoints_to_image(np.zeros((2, 5, 2)), [[0, 0, 10, 10]], SIZE), "keypoints"),
        (lambda: keypoints_to_image(np.zeros((5, 2)), [[0, 0, 10, 10]], SIZE), "keypoints"),
    ],
)
def test_bad_input_names_the_argument(call, name):
    with pytest.raises(InputError, match=name):
        call()
