"""PyTorch reference pipeline on tiny synthetic checkpoints."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from convert.checkpoint import LATENT_SCALE, load_checkpoint
from convert.reference import ReferencePipeline

H, W = 128, 64  # crop (height, width): latent 16x8, heatmaps 32x16


def _crops(n: int, seed: int = 0) -> np.ndarray:
    """[n,H,W,3] uint8 BGR: smooth gradients plus a bright square at a per-crop position."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:H, 0:W]
    crops = []
    for _ in range(n):
        img = np.stack([(xx * 4) % 256, (yy * 2) % 256, rng.integers(0, 256, (H, W))], -1).astype(np.uint8)
        y, x = rng.integers(0, H - 24), rng.integers(0, W - 24)
        img[y:y + 24, x:x + 24] = 255
        crops.append(img)
    return np.stack(crops)


@pytest.fixture(scope="module", params=["wholebody", "body"])
def pipe(request, tiny_checkpoint):
    return ReferencePipeline(load_checkpoint(tiny_checkpoint(request.param)))


def test_heatmaps_shape_finite_nonconstant(pipe):
    crops = _crops(2)
    heatmaps = pipe(crops)
    k = pipe.ckpt.num_keypoints
    assert heatmaps.shape == (2, k, H // 4, W // 4) and heatmaps.dtype == torch.float32
    assert torch.isfinite(heatmaps).all()
    flat = heatmaps.flatten(2)
    assert (flat.std(-1) > 1e-3).all(), "every keypoint channel must vary spatially"
    assert (flat.max(-1).values > 0).float().mean() > 0.9, "peaks should be positive"
    assert len(set(flat[0].argmax(-1).tolist())) > 3, "peaks must not all sit at one pixel"
    assert (heatmaps[0] - heatmaps[1]).abs().mean() > 1e-3, "different crops give different heatmaps"
    # batch items are independent: the batched result equals one-by-one runs
    single = pipe(crops[1])
    assert torch.allclose(single[0], heatmaps[1], atol=1e-4, rtol=1e-4)


def test_hook_reads_the_feature_the_next_stage_consumes(pipe):
    """The captured up-block output is exactly what flows into the next up-block (or conv_norm_out)."""
    latent = pipe.encode(pipe.preprocess(_crops(1)))
    unet, k = pipe.unet, pipe.up_block
    nxt = unet.up_blocks[k + 1] if k + 1 < len(unet.up_blocks) else unet.conv_norm_out
    seen: list[torch.Tensor] = []
    handle = nxt.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(
        kwargs.get("hidden_states", args[0] if args else None)), with_kwargs=True)
    try:
        features = pipe.features(latent)
    finally:
        handle.remove()
    assert len(seen) == 1
    assert torch.equal(features, seen[0])
    up_channels = list(reversed(unet.config.block_out_channels))
    assert features.shape == (1, up_channels[k], H // 8, W // 8) == (1, pipe.ckpt.head.in_channels, H // 8, W // 8)
    # the reference's functional head (raw decoder tensors) == the HeatmapHead module the exporter traces
    assert torch.allclose(pipe.pose(latent), pipe.ckpt.head(features), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layout", ["instance", "batchnorm"])
def test_original_head_follows_both_layouts(tiny_checkpoint, layout):
    """original_head on the raw decoder file == HeatmapHead loaded strictly from it, for both layouts."""
    from safetensors.torch import load_file

    from convert.head import HeatmapHead
    from convert.reference import original_head

    path = tiny_checkpoint("body", head_layout=layout)
    sd = load_file(path / "decoder" / "decoder.safetensors")
    head = HeatmapHead.from_state_dict(sd)
    assert head.layout == layout
    feats = torch.randn(2, head.in_channels, 6, 5, generator=torch.Generator().manual_seed(1)) * 3
    with torch.no_grad():
        assert torch.allclose(original_head(sd, feats), head(feats), atol=1e-5, rtol=1e-5)


def test_text_encoder_runs_on_every_call(pipe):
    calls = []
    handle = pipe.ckpt.text_encoder.register_forward_hook(lambda _m, i, _o: calls.append(i[0].tolist()))
    try:
        latent = torch.zeros(1, 4, H // 8, W // 8)
        pipe.pose(latent)
        pipe.pose(latent)
    finally:
        handle.remove()
    bos, eos = pipe.ckpt.tokenizer.bos_token_id, pipe.ckpt.tokenizer.eos_token_id
    assert calls == [[[bos, eos]], [[bos, eos]]]


def test_encode_is_posterior_mean_scaled(pipe):
    x = pipe.preprocess(_crops(2, seed=3))
    latent = pipe.encode(x)
    assert latent.shape == (2, 4, H // 8, W // 8)
    with torch.no_grad():
        dist = pipe.vae.encode(x).latent_dist
    assert torch.allclose(latent, dist.mean * LATENT_SCALE)
    assert not torch.allclose(latent, dist.sample() * LATENT_SCALE)


def test_preprocess_bgr_to_rgb_and_range():
    crop = np.zeros((1, 8, 8, 3), np.uint8)
    crop[..., 0] = 0      # B
    crop[..., 1] = 51     # G
    crop[..., 2] = 255    # R
    x = ReferencePipeline.preprocess(crop)
    assert x.shape == (1, 3, 8, 8)
    assert torch.allclose(x[0, :, 0, 0], torch.tensor([1.0, 51 / 127.5 - 1, -1.0]))
    assert ReferencePipeline.preprocess(crop[0]).shape == (1, 3, 8, 8)
    with pytest.raises(ValueError, match=r"\[N,H,W,3\]"):
        ReferencePipeline.preprocess(np.zeros((1, 3, 8, 8), np.uint8))
    with pytest.raises(ValueError, match="uint8"):
        ReferencePipeline.preprocess(np.zeros((1, 8, 8, 3), np.float32))
