"""Graph decoding (the decoder appended to the pose IR, :func:`edge_runtime.model.codec_graph.with_keypoints`) equals
numpy decoding of the same request's heatmaps within 0.05 crop px and 1e-3 in score, on exported checkpoints:
the trained proxy (``samples/proxy`` at its own input size) on drawn figures, every keypoint; random weights
(wholebody and body, tiny synthetic checkpoints), every score and every keypoint whose DARK step is well posed.

Random weights give broad, noisy peaks: there the DARK Newton step of most channels jumps more than one heatmap
px away from the peak (it is meant to be a sub-pixel correction) and is ill-conditioned, so float rounding decides
it: the numpy decoder itself moves such points by up to ~1 crop px when the heatmaps change by 2e-7 (relative),
and the graph, whose blur sums in another order than OpenCV, lands elsewhere too (see edge_runtime.model.codec_graph).
Both decoders read the same heatmaps, so the comparison is of decoders only."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from edge_runtime.model.codec import decode_heatmaps
from edge_runtime.model.codec_graph import with_keypoints
from edge_runtime.model.estimator import PoseEstimator
from edge_runtime.model.models import CompileOptions

PROXY = Path(__file__).resolve().parents[2] / "samples" / "proxy"
F32 = CompileOptions(performance_hint="LATENCY", inference_precision="f32", cache_dir=None)


def decode_both(folder: Path, image: np.ndarray, boxes: np.ndarray,
                well_posed_only: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """(heatmaps, keypoints [N,K,3]) of one request of the fused IR with the decoder appended, checked against
    the numpy decoder (``well_posed_only``: the points only where the numpy DARK step stays within 1 heatmap px)."""
    est = PoseEstimator(folder, options=F32, chain="fused")
    crops = est.preprocess(image, boxes)
    model = with_keypoints(ov.Core().read_model(str(est.folder.ir_path("vae_pose"))), est.input_size,
                           est.blur_kernel_size)
    compiled = ov.Core().compile_model(model, "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
    result = compiled(crops)
    ref_kp, ref_sc = decode_heatmaps(result[0], input_size=est.input_size, blur_kernel_size=est.blur_kernel_size)
    keypoints = result[1]
    assert keypoints.shape == (len(boxes), est.num_keypoints, 3)
    np.testing.assert_allclose(keypoints[..., 2], ref_sc, atol=1e-3, rtol=0)
    checked = np.ones(ref_sc.shape, bool)
    if well_posed_only:
        (w, h), (hw, hh) = est.input_size, est.heatmap_size
        flat = result[0].reshape(*ref_sc.shape, -1)
        peak_y, peak_x = np.divmod(flat.argmax(-1), hw)
        step = np.maximum(np.abs(ref_kp[..., 0] * (hw - 1) / w - peak_x), np.abs(ref_kp[..., 1] * (hh - 1) / h - peak_y))
        checked = step <= 1.0
        assert checked.sum() >= 10  # enough points compared (random weights: about 1 in 4)
    np.testing.assert_allclose(keypoints[..., :2][checked], ref_kp[checked], atol=0.05, rtol=0)
    return result[0], keypoints


@pytest.mark.parametrize("scheme", ["wholebody", "body"])
def test_random_weights_decode_alike(exported_models, scheme: str) -> None:
    folder = exported_models(scheme)
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (300, 400, 3), dtype=np.uint8)
    boxes = np.array([[20, 30, 180, 290], [150, 10, 390, 280], [0, 0, 400, 300]], np.float32)
    heatmaps, keypoints = decode_both(folder, image, boxes, well_posed_only=True)
    assert heatmaps.shape[1] == (133 if scheme == "wholebody" else 17)
    assert np.unique(keypoints[..., :2].round(1), axis=1).shape[1] > 1  # real, varied points, not one default


def test_trained_proxy_decodes_alike(tmp_path: Path) -> None:
    from convert.export import export_models
    from convert.figures import walk_sequence

    h, w = json.loads((PROXY / "proxy.json").read_text())["input_size_hw"]
    export_models(PROXY, tmp_path / "proxy", precision="fp32", input_size=(h, w), fused=True)
    frames, truth, boxes = walk_sequence(3, (320, 240), 3, seed=7)
    for frame, frame_boxes, frame_truth in zip(frames, boxes, truth):
        _, keypoints = decode_both(tmp_path / "proxy", frame, frame_boxes)
        assert keypoints.shape[1] == 133 and np.isfinite(keypoints).all()
    del frame_truth  # accuracy is test_proxy's; here only the two decoders are compared
