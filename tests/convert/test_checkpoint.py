"""Checkpoint loading, the torch HeatmapHead, scheme detection and the loader's error messages."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from convert.checkpoint import (CheckpointError, checkpoint_sha256, class_labels, encode_empty_prompt,
                                load_checkpoint)
from convert.head import SCHEMES, HeadError, HeatmapHead, detect_head_layout, infer_head_config
from edge_runtime.errors import SDPoseError

#: the five keys of the released SDPose decoder.safetensors (InstanceNorm2d + SiLU: the norms have no entries)
RELEASED_KEYS = ["deconv_layers.0.weight", "conv_layers.0.weight", "conv_layers.0.bias",
                 "final_layer.weight", "final_layer.bias"]

MMPOSE_KEYS = [
    "deconv_layers.0.weight",
    "deconv_layers.1.weight", "deconv_layers.1.bias", "deconv_layers.1.running_mean",
    "deconv_layers.1.running_var", "deconv_layers.1.num_batches_tracked",
    "conv_layers.0.weight", "conv_layers.0.bias",
    "conv_layers.1.weight", "conv_layers.1.bias", "conv_layers.1.running_mean", "conv_layers.1.running_var",
    "conv_layers.1.num_batches_tracked",
    "final_layer.weight", "final_layer.bias",
]


# ------------------------------------------------------------------------------------------------ head
def test_released_head_has_five_keys_and_instance_norm_silu():
    head = HeatmapHead(640, 133, deconv_out_channels=(640,), conv_out_channels=(640,))
    assert head.layout == "instance"
    assert list(head.state_dict()) == RELEASED_KEYS
    for block in (head.deconv_layers, head.conv_layers):
        _conv, norm, act = block
        assert type(norm) is nn.InstanceNorm2d and isinstance(act, nn.SiLU)
        assert not norm.affine and not norm.track_running_stats and norm.eps == 1e-5
    deconv = head.deconv_layers[0]
    assert isinstance(deconv, nn.ConvTranspose2d) and deconv.bias is None
    assert (deconv.kernel_size, deconv.stride, deconv.padding) == ((4, 4), (2, 2), (1, 1))
    assert head.eval()(torch.randn(2, 640, 8, 6)).shape == (2, 133, 16, 12)


def _original_head_forward(sd: dict, feats: torch.Tensor) -> torch.Tensor:
    """The released head written out with functional ops from the raw decoder weights (independent of
    HeatmapHead): deconv 4x4 s2 p1 -> instance norm (per crop, per channel over H,W, eps 1e-5) -> SiLU ->
    1x1 conv -> instance norm -> SiLU -> final 1x1 conv."""
    import torch.nn.functional as F

    x = F.conv_transpose2d(feats, sd["deconv_layers.0.weight"], stride=2, padding=1)
    x = F.silu((x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), unbiased=False, keepdim=True) + 1e-5))
    x = F.conv2d(x, sd["conv_layers.0.weight"], sd["conv_layers.0.bias"])
    x = F.silu((x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), unbiased=False, keepdim=True) + 1e-5))
    return F.conv2d(x, sd["final_layer.weight"], sd["final_layer.bias"])


def test_released_head_matches_functional_original_per_crop():
    """Loaded from the five released keys, the head computes the original forward, normalising every crop of
    a batch with its own statistics (so a crop's heatmaps do not depend on its batch neighbours)."""
    torch.manual_seed(0)
    sd = {k: v.clone() for k, v in HeatmapHead(32, 17, (32,), (4,), (32,), (1,)).state_dict().items()}
    head = HeatmapHead.from_state_dict(sd, "released/decoder.safetensors")
    assert head.layout == "instance" and detect_head_layout(sd) == "instance"
    feats = torch.randn(3, 32, 8, 6) * torch.tensor([1.0, 5.0, 0.2]).view(3, 1, 1, 1)
    with torch.no_grad():
        out = head(feats)
        assert torch.allclose(out, _original_head_forward(sd, feats), atol=1e-5, rtol=1e-5)
        assert torch.allclose(out[1:2], head(feats[1:2]), atol=1e-5, rtol=1e-5)


def test_head_has_mmpose_keys_and_layers():
    head = HeatmapHead(640, 133, deconv_out_channels=(640,), conv_out_channels=(640,), layout="batchnorm")
    assert list(head.state_dict()) == MMPOSE_KEYS
    deconv, bn1, relu1 = head.deconv_layers
    assert isinstance(deconv, nn.ConvTranspose2d) and deconv.bias is None
    assert (deconv.kernel_size, deconv.stride, deconv.padding, deconv.output_padding) == \
        ((4, 4), (2, 2), (1, 1), (0, 0))
    assert isinstance(bn1, nn.BatchNorm2d) and bn1.eps == 1e-5 and isinstance(relu1, nn.ReLU)
    conv, bn2, relu2 = head.conv_layers
    assert conv.kernel_size == (1, 1) and conv.padding == (0, 0) and conv.bias is not None
    assert isinstance(bn2, nn.BatchNorm2d) and isinstance(relu2, nn.ReLU)
    assert head.final_layer.kernel_size == (1, 1) and head.final_layer.bias is not None
    assert head.scheme == "wholebody"
    out = head.eval()(torch.randn(2, 640, 8, 6))
    assert out.shape == (2, 133, 16, 12)


@pytest.mark.parametrize("layout", ["instance", "batchnorm"])
@pytest.mark.parametrize("scheme", ["wholebody", "body"])
def test_head_from_state_dict_infers_real_sizes(scheme, layout):
    spec = SCHEMES[scheme]
    c = spec["in_channels"]
    src = HeatmapHead(c, spec["num_keypoints"], deconv_out_channels=(c,), conv_out_channels=(c,), layout=layout)
    if layout == "batchnorm":
        with torch.no_grad():
            src.deconv_layers[1].running_mean.uniform_(-1, 1)
            src.conv_layers[1].running_var.uniform_(0.5, 2)
    sd = src.state_dict()
    assert detect_head_layout(sd) == layout
    assert infer_head_config(sd) == dict(in_channels=c, out_channels=spec["num_keypoints"],
                                         deconv_out_channels=(c,), deconv_kernel_sizes=(4,),
                                         conv_out_channels=(c,), conv_kernel_sizes=(1,))
    head = HeatmapHead.from_state_dict(sd)
    assert head.scheme == scheme and not head.training and head.layout == layout
    for key, value in head.state_dict().items():
        assert torch.equal(value, sd[key]), key
    x = torch.randn(1, c, 4, 3)
    assert torch.allclose(head(x), src.eval()(x))


def test_head_tolerates_missing_num_batches_tracked_but_not_other_keys():
    sd = HeatmapHead(16, 17, (16,), (4,), (16,), (1,), layout="batchnorm").state_dict()
    no_counters = {k: v for k, v in sd.items() if not k.endswith("num_batches_tracked")}
    HeatmapHead.from_state_dict(no_counters)
    missing = {k: v for k, v in sd.items() if k != "conv_layers.1.running_mean"}
    with pytest.raises(HeadError, match=r"my/decoder.safetensors: missing key 'conv_layers.1.running_mean' "
                                        r"\(expected shape \[16\]\)"):
        HeatmapHead.from_state_dict(missing, "my/decoder.safetensors")
    extra = dict(sd, **{"final_layer.extra": torch.zeros(1)})
    with pytest.raises(HeadError, match="unexpected keys.*final_layer.extra"):
        HeatmapHead.from_state_dict(extra)
    with pytest.raises(HeadError, match="missing key 'final_layer.weight'"):
        HeatmapHead.from_state_dict({k: v for k, v in sd.items() if not k.startswith("final")})


def _assert_names_both_layouts(msg: str, path: str, found: list[str]) -> None:
    assert path in msg
    assert f"found keys {sorted(found)}" in msg
    assert "'instance' = released SDPose decoder" in msg and "InstanceNorm2d + SiLU" in msg
    assert "'batchnorm' = stock mmpose HeatmapHead: BatchNorm2d + ReLU" in msg
    assert str(RELEASED_KEYS[:1])[1:-1] in msg and "'deconv_layers.1.running_var'" in msg


def test_wrong_head_key_sets_get_a_clear_error_naming_both_layouts():
    """Neither layout: affine InstanceNorm keys (weight/bias only), a foreign key at a norm position, and
    a half BatchNorm. Each is refused with the file, the keys found and both accepted layouts named."""
    released = HeatmapHead(16, 17, (16,), (4,), (16,), (1,)).state_dict()
    affine = dict(released, **{"deconv_layers.1.weight": torch.ones(16), "deconv_layers.1.bias": torch.zeros(16),
                               "conv_layers.1.weight": torch.ones(16), "conv_layers.1.bias": torch.zeros(16)})
    with pytest.raises(HeadError) as info:
        HeatmapHead.from_state_dict(affine, "x/decoder.safetensors")
    assert "missing key 'deconv_layers.1.running_mean'" in str(info.value)
    _assert_names_both_layouts(str(info.value), "x/decoder.safetensors", list(affine))
    foreign = dict(released, **{"conv_layers.1.gamma": torch.ones(16)})
    with pytest.raises(HeadError) as info:
        HeatmapHead.from_state_dict(foreign, "y/decoder.safetensors")
    assert "['conv_layers.1.gamma'] at a norm position are not BatchNorm2d entries" in str(info.value)
    _assert_names_both_layouts(str(info.value), "y/decoder.safetensors", list(foreign))
    stray = dict(released, **{"deconv_layers.2.weight": torch.ones(16)})
    with pytest.raises(HeadError) as info:
        HeatmapHead.from_state_dict(stray, "z/decoder.safetensors")
    assert "unexpected keys ['deconv_layers.2.weight']" in str(info.value)
    _assert_names_both_layouts(str(info.value), "z/decoder.safetensors", list(stray))


# ------------------------------------------------------------------------------------------------ loading
@pytest.mark.parametrize("layout", ["instance", "batchnorm"])
@pytest.mark.parametrize("scheme", ["wholebody", "body"])
def test_load_checkpoint_detects_scheme(tiny_checkpoint, scheme, layout):
    path = tiny_checkpoint(scheme, head_layout=layout)
    ckpt = load_checkpoint(path)
    assert ckpt.head.layout == layout
    if layout == "instance":
        assert sorted(load_file(path / "decoder" / "decoder.safetensors")) == sorted(RELEASED_KEYS)
    spec = SCHEMES[scheme]
    assert (ckpt.scheme, ckpt.num_keypoints, ckpt.up_block) == (scheme, spec["num_keypoints"], spec["up_block"])
    assert ckpt.path == path.resolve()
    assert ckpt.detector_path is None
    up_channels = list(reversed(ckpt.unet.config.block_out_channels))
    assert ckpt.head.in_channels == ckpt.feature_channels == up_channels[spec["up_block"]]
    decoder = load_file(path / "decoder" / "decoder.safetensors")
    for key, value in ckpt.head.state_dict().items():
        assert torch.equal(value, decoder[key]), key
    assert not ckpt.unet.training and not ckpt.vae.training and not ckpt.head.training
    assert len(ckpt.sha256) == 64 and ckpt.sha256 == checkpoint_sha256(path)


def test_empty_prompt_and_class_labels(tiny_checkpoint_wholebody):
    ckpt = load_checkpoint(tiny_checkpoint_wholebody)
    emb = encode_empty_prompt(ckpt)
    assert emb.shape == (1, 2, ckpt.text_encoder.config.hidden_size)
    ids = torch.tensor([[ckpt.tokenizer.bos_token_id, ckpt.tokenizer.eos_token_id]])
    with torch.no_grad():
        assert torch.allclose(emb, ckpt.text_encoder(ids).last_hidden_state)
    labels = class_labels()
    assert labels.shape == (1, 4) and labels.dtype == torch.float32
    expected = torch.tensor([[torch.sin(torch.tensor(1.0)), 0.0, torch.cos(torch.tensor(1.0)), 1.0]])
    assert torch.allclose(labels, expected)
    assert class_labels(3).shape == (3, 4)


def test_load_without_text_encoder(tiny_checkpoint_body, tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint_body, ckpt_dir)
    shutil.rmtree(ckpt_dir / "text_encoder")
    ckpt = load_checkpoint(ckpt_dir, load_text_encoder=False)
    assert ckpt.text_encoder is None and ckpt.tokenizer is None and ckpt.scheme == "body"
    with pytest.raises(CheckpointError, match="text encoder was not loaded"):
        encode_empty_prompt(ckpt)
    with pytest.raises(CheckpointError, match="missing folder 'text_encoder/'"):
        load_checkpoint(ckpt_dir)


def test_sha256_changes_with_decoder(tiny_checkpoint_wholebody, tmp_path):
    ckpt_dir = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint_wholebody, ckpt_dir)
    before = checkpoint_sha256(ckpt_dir)
    assert before == checkpoint_sha256(tiny_checkpoint_wholebody)
    sd = load_file(ckpt_dir / "decoder" / "decoder.safetensors")
    sd["final_layer.bias"] = sd["final_layer.bias"] + 1e-3
    save_file(sd, ckpt_dir / "decoder" / "decoder.safetensors")
    assert checkpoint_sha256(ckpt_dir) != before


# ------------------------------------------------------------------------------------------------ errors
@pytest.fixture()
def ckpt_copy(tiny_checkpoint_wholebody, tmp_path):
    dst = tmp_path / "ckpt"
    shutil.copytree(tiny_checkpoint_wholebody, dst)
    return dst


@pytest.fixture()
def bn_ckpt_copy(tiny_checkpoint, tmp_path):
    dst = tmp_path / "ckpt_bn"
    shutil.copytree(tiny_checkpoint("wholebody", head_layout="batchnorm"), dst)
    return dst


def _rewrite_decoder(path, edit):
    file = path / "decoder" / "decoder.safetensors"
    sd = load_file(file)
    sd = edit(sd)
    save_file(sd, file)
    return file


def test_error_missing_folder(tmp_path):
    with pytest.raises(CheckpointError, match=f"checkpoint folder {tmp_path / 'nope'} does not exist"):
        load_checkpoint(tmp_path / "nope")
    assert issubclass(CheckpointError, SDPoseError)


def test_error_missing_unet(ckpt_copy):
    shutil.rmtree(ckpt_copy / "unet")
    with pytest.raises(CheckpointError, match=rf"{ckpt_copy}: missing folder 'unet/'"):
        load_checkpoint(ckpt_copy)


def test_error_missing_weight_file(ckpt_copy):
    (ckpt_copy / "vae" / "diffusion_pytorch_model.safetensors").unlink()
    with pytest.raises(CheckpointError, match=rf"{ckpt_copy / 'vae'}: no weight file; expected one of "
                                              r"diffusion_pytorch_model.safetensors"):
        load_checkpoint(ckpt_copy)


def test_error_missing_decoder_file(ckpt_copy):
    (ckpt_copy / "decoder" / "decoder.safetensors").unlink()
    with pytest.raises(CheckpointError, match=rf"missing file {ckpt_copy / 'decoder' / 'decoder.safetensors'}"):
        load_checkpoint(ckpt_copy)


def test_error_missing_key(bn_ckpt_copy):
    file = _rewrite_decoder(bn_ckpt_copy, lambda sd: {k: v for k, v in sd.items()
                                                      if k != "deconv_layers.1.running_var"})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bn_ckpt_copy)
    msg = str(info.value)
    assert str(file) in msg and "missing key 'deconv_layers.1.running_var'" in msg and "[64]" in msg


def test_error_released_key_missing(ckpt_copy):
    file = _rewrite_decoder(ckpt_copy, lambda sd: {k: v for k, v in sd.items() if k != "conv_layers.0.bias"})
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ckpt_copy)
    msg = str(info.value)
    assert str(file) in msg and "missing key 'conv_layers.0.bias' (expected shape [64])" in msg
    assert "accepted layouts" in msg


def test_error_wrong_key_set_in_the_checkpoint_names_file_keys_and_layouts(ckpt_copy):
    """What a non-strict loader would silently accept: the released keys plus half a BatchNorm."""
    file = _rewrite_decoder(ckpt_copy, lambda sd: dict(sd, **{"conv_layers.1.weight": torch.ones(64)}))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ckpt_copy)
    _assert_names_both_layouts(str(info.value), str(file), RELEASED_KEYS + ["conv_layers.1.weight"])


def test_error_wrong_shape(ckpt_copy):
    file = _rewrite_decoder(ckpt_copy, lambda sd: dict(sd, **{"conv_layers.0.bias": torch.zeros(60)}))
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ckpt_copy)
    msg = str(info.value)
    assert str(file) in msg and "'conv_layers.0.bias' has shape [60], expected [64]" in msg


def test_error_unknown_keypoint_count(ckpt_copy):
    _rewrite_decoder(ckpt_copy, lambda sd: HeatmapHead(64, 20, (64,), (4,), (64,), (1,)).state_dict())
    with pytest.raises(CheckpointError, match="has 20 output channels.*expected one of 133 \\(wholebody\\), "
                                              "17 \\(body\\)"):
        load_checkpoint(ckpt_copy)


def test_error_body_head_on_wholebody_feature(ckpt_copy):
    """A 17-keypoint head whose input is the wholebody feature (up_blocks[2], 64 ch in the tiny UNet)."""
    file = _rewrite_decoder(ckpt_copy, lambda sd: HeatmapHead(64, 17, (64,), (4,), (64,), (1,)).state_dict())
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(ckpt_copy)
    msg = str(info.value)
    assert str(file) in msg
    assert "17 keypoints (scheme 'body', reads unet up_blocks[3] which outputs 32 channels" in msg
    assert "'deconv_layers.0.weight' has shape [64, 64, 4, 4]" in msg and "expected 32" in msg


def test_error_wholebody_head_on_body_feature(ckpt_copy):
    _rewrite_decoder(ckpt_copy, lambda sd: HeatmapHead(32, 133, (32,), (4,), (32,), (1,)).state_dict())
    with pytest.raises(CheckpointError, match=r"133 keypoints \(scheme 'wholebody', reads unet up_blocks\[2\] "
                                              r"which outputs 64 channels"):
        load_checkpoint(ckpt_copy)


def test_error_corrupt_decoder(ckpt_copy):
    (ckpt_copy / "decoder" / "decoder.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="cannot read .*decoder.safetensors as safetensors"):
        load_checkpoint(ckpt_copy)


def test_error_unet_config_does_not_match_weights(ckpt_copy):
    """from_pretrained failures are wrapped with the folder named."""
    cfg_file = ckpt_copy / "unet" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg["cross_attention_dim"] = 48
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match=rf"{ckpt_copy / 'unet'}: UNet2DConditionModel"):
        load_checkpoint(ckpt_copy, load_text_encoder=False)


def test_error_unet_weights_missing_class_embedding(ckpt_copy):
    file = ckpt_copy / "unet" / "diffusion_pytorch_model.safetensors"
    sd = {k: v for k, v in load_file(file).items() if not k.startswith("class_embedding.")}
    save_file(sd, file, metadata={"format": "pt"})
    with pytest.raises(CheckpointError, match=r"missing keys \(e.g. \['class_embedding.linear_1.bias'"):
        load_checkpoint(ckpt_copy, load_text_encoder=False)


def test_unet_config_without_class_embedding_fields_loads(ckpt_copy):
    """Saved configs that lack class_embed_type still load: the loader passes it like the SDPose app."""
    cfg_file = ckpt_copy / "unet" / "config.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.pop("class_embed_type")
    cfg.pop("projection_class_embeddings_input_dim")
    cfg_file.write_text(json.dumps(cfg))
    ckpt = load_checkpoint(ckpt_copy, load_text_encoder=False)
    assert ckpt.unet.class_embedding.linear_1.in_features == 4
