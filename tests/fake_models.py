"""Pytest plugin: tiny, torch-free model folders with the real model-folder contract.

Built directly with ``openvino.opset13`` (no checkpoint, no torch), so the runtime can be tested in
seconds. The graphs have the real I/O contract (DEVELOPERS.md):

- ``vae_encoder``: ``image`` u8 [N,H,W,3] BGR -> PrePostProcessor (f32, RGB, NCHW, x/127.5 - 1)
  -> avg-pool 8x8 -> 1x1 conv -> ``latent`` f32 [N,4,H/8,W/8]. Latent channel 0 is the mean of R, G, B
  in [-1, 1] of each 8x8 block ("brightness"); channels 1..3 are R-B, G, a constant.
- ``pose``: ``latent`` -> channel 0 -> bilinear resize x2 -> + 1 -> 5x5 Gaussian blur -> 1x1 conv to K
  channels (all equal) -> ``heatmaps`` f32 [N,K,H/4,W/4].
- ``vae_pose``: both in one graph.

So every heatmap channel is a smoothed brightness map of the crop: **the keypoints land on the brightest
blob of the crop** (known place), and the network is mirror-equivariant (flip-test friendly).

``slow_ops`` > 0 adds a compute-heavy branch to the pose graph whose result is multiplied by 0 and
added, so outputs are unchanged but each inference costs more (for live-mode dropping tests).

Fixtures: ``fake_models_dir`` (wholebody K=133, split + fused, default chain split),
``fake_body_models_dir`` (body K=17), ``make_fake_models`` (factory: call with keyword options).
Plain function: :func:`build_fake_model_folder`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import numpy as np
import openvino as ov
import openvino.opset13 as ops
import pytest
from openvino.preprocess import ColorFormat, PrePostProcessor

from edge_runtime.model.metadata import FORMAT_VERSION, write_index, write_metadata

FAKE_INPUT_SIZE = (48, 64)  # (w, h) crop px
LATENT_CHANNELS = 4


def _const(array: np.ndarray) -> Any:
    return ops.constant(np.ascontiguousarray(array, dtype=np.float32))


def _vae_body(x: Any) -> Any:
    """x f32 [N,3,H,W] RGB in [-1,1] -> latent [N,4,H/8,W/8]."""
    pooled = ops.avg_pool(x, strides=[8, 8], pads_begin=[0, 0], pads_end=[0, 0], kernel_shape=[8, 8],
                          exclude_pad=True)
    w = np.zeros((LATENT_CHANNELS, 3, 1, 1), np.float32)
    w[0, :, 0, 0] = 1.0 / 3.0          # brightness
    w[1, 0, 0, 0], w[1, 2, 0, 0] = 1.0, -1.0  # R - B
    w[2, 1, 0, 0] = 1.0                # G
    conv = ops.convolution(pooled, _const(w), strides=[1, 1], pads_begin=[0, 0], pads_end=[0, 0],
                           dilations=[1, 1])
    bias = np.zeros((1, LATENT_CHANNELS, 1, 1), np.float32)
    bias[0, 3] = 0.5
    return ops.add(conv, _const(bias))


def _gaussian_kernel(size: int = 5, sigma: float = 1.0) -> np.ndarray:
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-0.5 * (r / sigma) ** 2)
    k = np.outer(g, g)
    return (k / k.sum()).astype(np.float32)


def _pose_body(latent: Any, num_keypoints: int, slow_ops: int) -> Any:
    """latent [N,4,h,w] -> heatmaps [N,K,2h,2w] (every channel = blurred upsampled brightness + 1)."""
    pick = np.zeros((1, LATENT_CHANNELS, 1, 1), np.float32)
    pick[0, 0] = 1.0
    x = ops.convolution(latent, _const(pick), [1, 1], [0, 0], [0, 0], [1, 1])
    up = ops.interpolate(x, ops.constant(np.array([2.0, 2.0], np.float32)), "linear", "scales",
                         coordinate_transformation_mode="half_pixel", axes=ops.constant(np.array([2, 3], np.int64)))
    # shift brightness [-1, 1] to [0, 2] (positive like real heatmaps; the blur's zero padding then
    # darkens the border instead of brightening it)
    up = ops.add(up, _const(np.ones((1, 1, 1, 1), np.float32)))
    blur = ops.convolution(up, _const(_gaussian_kernel()[None, None]), [1, 1], [2, 2], [2, 2], [1, 1])
    if slow_ops > 0:
        rng = np.random.default_rng(0)
        side = 256
        flat = ops.reshape(latent, ops.constant(np.array([-1, 1], np.int64)), special_zero=False)
        heavy = ops.multiply(ops.reduce_mean(flat, ops.constant(np.array([0, 1], np.int64)), keep_dims=True),
                             _const(np.ones((1, side), np.float32)))
        for _ in range(slow_ops):
            heavy = ops.tanh(ops.matmul(ops.tile(heavy, ops.constant(np.array([side, 1], np.int64))),
                                        _const(rng.standard_normal((side, side)) / side), False, False))
            heavy = ops.reduce_mean(heavy, ops.constant(np.array([0], np.int64)), keep_dims=True)
        zero = ops.multiply(ops.reduce_sum(heavy, ops.constant(np.array([0, 1], np.int64)), keep_dims=False),
                            _const(np.zeros((), np.float32)))
        blur = ops.add(blur, ops.reshape(zero, ops.constant(np.array([1, 1, 1, 1], np.int64)), False))
    spread = ops.convolution(blur, _const(np.ones((num_keypoints, 1, 1, 1), np.float32)), [1, 1], [0, 0], [0, 0],
                             [1, 1])
    return spread


def _image_model(h: int, w: int, body: Callable[[Any], Any], out_name: str, name: str) -> ov.Model:
    param = ops.parameter(ov.PartialShape([-1, 3, h, w]), ov.Type.f32, name="image")
    out = body(param)
    model = ov.Model([out], [param], name)
    model.input(0).get_tensor().set_names({"image"})
    model.output(0).get_tensor().set_names({out_name})
    ppp = PrePostProcessor(model)
    inp = ppp.input()
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    inp.model().set_layout(ov.Layout("NCHW"))
    inp.preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB) \
        .mean(127.5).scale(127.5)
    return ppp.build()


def build_fake_model_folder(out_dir: str | Path, scheme: str = "wholebody", input_size: tuple[int, int] = FAKE_INPUT_SIZE,
                            fused: bool = True, default_chain: str = "split", slow_ops: int = 0,
                            with_metadata: bool = True) -> Path:
    """Write a tiny model folder to ``out_dir`` and return it.

    Args:
        scheme: "wholebody" (K=133) or "body" (K=17).
        input_size: crop (w, h) px, multiples of 8.
        fused: also write ``vae_pose.xml``.
        default_chain: index default_chain ("split" or "fused").
        slow_ops: number of heavy matmul blocks added to the pose graph (output unchanged).
        with_metadata: False writes IRs without sdpose rt_info (for error tests).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w, h = input_size
    k = {"wholebody": 133, "body": 17}[scheme]
    common = {
        "format_version": FORMAT_VERSION, "scheme": scheme, "num_keypoints": k,
        "input_width": w, "input_height": h, "heatmap_width": w // 4, "heatmap_height": h // 4,
        "latent_channels": LATENT_CHANNELS, "latent_scale": 0.18215, "bbox_padding": 1.25,
        "codec": {"type": "UDPHeatmap", "sigma": 6, "refine": "dark_udp", "blur_kernel_size": 11},
        "preprocessing": {"input": "image", "element_type": "u8", "layout": "NHWC", "color": "BGR"},
        "precision": "fp32", "quantized": False, "checkpoint_sha256": "fake", "unet_feature": "fake",
    }
    models = {
        "vae_encoder": _image_model(h, w, _vae_body, "latent", "fake_vae_encoder"),
        "vae_pose": _image_model(h, w, lambda x: _pose_body(_vae_body(x), k, slow_ops), "heatmaps", "fake_vae_pose"),
    }
    latent = ops.parameter(ov.PartialShape([-1, LATENT_CHANNELS, h // 8, w // 8]), ov.Type.f32, name="latent")
    pose = ov.Model([_pose_body(latent, k, slow_ops)], [latent], "fake_pose")
    pose.input(0).get_tensor().set_names({"latent"})
    pose.output(0).get_tensor().set_names({"heatmaps"})
    models["pose"] = pose
    if not fused:
        del models["vae_pose"]
    components = {}
    for kind, model in models.items():
        if with_metadata:
            write_metadata(model, dict(common, kind=kind))
        ov.save_model(model, str(out / f"{kind}.xml"), compress_to_fp16=False)
        components[kind] = f"{kind}.xml"
    write_index(out, {"components": components, "default_chain": default_chain, "scheme": scheme,
                      "num_keypoints": k, "input_width": w, "input_height": h})
    return out


@pytest.fixture(scope="session")
def fake_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wholebody (K=133) fake model folder, 48x64 (w x h), split + fused, default chain split."""
    return build_fake_model_folder(tmp_path_factory.mktemp("fake_models_wholebody"))


@pytest.fixture(scope="session")
def fake_body_models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Body (K=17) fake model folder, 48x64 (w x h), split + fused."""
    return build_fake_model_folder(tmp_path_factory.mktemp("fake_models_body"), scheme="body")


@pytest.fixture
def make_fake_models(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory: ``make_fake_models(**build_fake_model_folder kwargs) -> Path`` in a fresh temp dir."""
    def make(**kwargs: Any) -> Path:
        return build_fake_model_folder(tmp_path_factory.mktemp("fake_models"), **kwargs)
    return make
