"""Synthetic checkpoints: exact public layout, loadable with the plain diffusers/transformers calls."""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file

from convert.head import SCHEMES
from convert.synthetic import CLIP_CONFIGS, UNET_CONFIGS, VAE_CONFIGS, make_synthetic
from edge_runtime.errors import SDPoseError


@pytest.fixture(params=["wholebody", "body"])
def scheme_and_ckpt(request, tiny_checkpoint):
    return request.param, tiny_checkpoint(request.param)


def test_layout_loads_with_plain_from_pretrained(scheme_and_ckpt):
    """The folder loads with the same from_pretrained calls the public SDPose app uses."""
    from diffusers import AutoencoderKL, DDPMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    scheme, path = scheme_and_ckpt
    for rel in ("unet/config.json", "unet/diffusion_pytorch_model.safetensors", "vae/config.json",
                "vae/diffusion_pytorch_model.safetensors", "text_encoder/config.json",
                "text_encoder/model.safetensors", "tokenizer/vocab.json", "tokenizer/merges.txt",
                "tokenizer/tokenizer_config.json", "scheduler/scheduler_config.json",
                "decoder/decoder.safetensors", "synthetic.json"):
        assert (path / rel).is_file(), rel
    unet = UNet2DConditionModel.from_pretrained(path / "unet", class_embed_type="projection",
                                                projection_class_embeddings_input_dim=4, local_files_only=True)
    vae = AutoencoderKL.from_pretrained(path / "vae", local_files_only=True)
    text_encoder = CLIPTextModel.from_pretrained(path / "text_encoder", local_files_only=True)
    tokenizer = CLIPTokenizer.from_pretrained(path / "tokenizer", local_files_only=True)
    scheduler = DDPMScheduler.from_pretrained(path / "scheduler", local_files_only=True)

    assert scheduler.config.prediction_type == "sample"
    assert unet.config.class_embed_type == "projection"
    assert unet.class_embedding.linear_1.in_features == 4
    assert unet.config.use_linear_projection is True
    assert unet.config.cross_attention_dim == text_encoder.config.hidden_size
    assert [type(b).__name__ for b in unet.down_blocks] == UNET_CONFIGS["tiny"]["down_block_types"]
    assert [type(b).__name__ for b in unet.up_blocks] == UNET_CONFIGS["tiny"]["up_block_types"]
    assert len(vae.config.block_out_channels) == 4
    assert tokenizer.model_max_length == 77
    assert max(tokenizer.get_vocab().values()) < text_encoder.config.vocab_size

    marker = json.loads((path / "synthetic.json").read_text())
    assert marker["synthetic"] is True and marker["scheme"] == scheme and marker["size"] == "tiny"


def test_tokenizer_empty_prompt_is_bos_eos(tiny_checkpoint_wholebody):
    from transformers import CLIPTokenizer

    tok = CLIPTokenizer.from_pretrained(tiny_checkpoint_wholebody / "tokenizer", local_files_only=True)
    vocab = tok.get_vocab()
    ids = tok("", padding="do_not_pad", max_length=tok.model_max_length, truncation=True).input_ids
    assert ids == [vocab["<|startoftext|>"], vocab["<|endoftext|>"]]
    assert ids == [tok.bos_token_id, tok.eos_token_id]
    assert tok.pad_token == "!"
    # the BPE merges are applied and byte-level text round-trips
    words = tok("The person").input_ids
    assert words[1:-1] == [vocab["the</w>"], vocab["person</w>"]]
    assert tok.decode(tok("a b-c?").input_ids, skip_special_tokens=True).replace(" ", "") == "ab-c?"
    padded = tok("", padding="max_length", max_length=77).input_ids
    assert len(padded) == 77


def test_head_matches_unet_block_in_released_layout(scheme_and_ckpt):
    """By default the decoder is in the released layout: exactly the five keys, no norm entries."""
    scheme, path = scheme_and_ckpt
    unet_cfg = json.loads((path / "unet" / "config.json").read_text())
    sd = load_file(path / "decoder" / "decoder.safetensors")
    assert sorted(sd) == ["conv_layers.0.bias", "conv_layers.0.weight", "deconv_layers.0.weight",
                          "final_layer.bias", "final_layer.weight"]
    assert json.loads((path / "synthetic.json").read_text())["head_layout"] == "instance"
    up_channels = list(reversed(unet_cfg["block_out_channels"]))
    spec = SCHEMES[scheme]
    assert sd["final_layer.weight"].shape[0] == spec["num_keypoints"]
    assert sd["deconv_layers.0.weight"].shape[0] == up_channels[spec["up_block"]]


@pytest.mark.parametrize("scheme", ["wholebody", "body"])
def test_batchnorm_layout_has_nontrivial_bn_stats(tiny_checkpoint, scheme):
    path = tiny_checkpoint(scheme, head_layout="batchnorm")
    sd = load_file(path / "decoder" / "decoder.safetensors")
    assert json.loads((path / "synthetic.json").read_text())["head_layout"] == "batchnorm"
    for bn in ("deconv_layers.1", "conv_layers.1"):
        assert not torch.allclose(sd[f"{bn}.running_mean"], torch.zeros_like(sd[f"{bn}.running_mean"]))
        assert not torch.allclose(sd[f"{bn}.running_var"], torch.ones_like(sd[f"{bn}.running_var"]))
        assert (sd[f"{bn}.running_var"] > 0).all()


def test_full_size_configs_are_sd2():
    """Full size = the real SD2 architecture (built on the meta device: no memory, no time)."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel

    with torch.device("meta"):
        unet = UNet2DConditionModel(**UNET_CONFIGS["full"])
        vae = AutoencoderKL(**VAE_CONFIGS["full"])
        text = CLIPTextModel(CLIPTextConfig(**CLIP_CONFIGS["full"]))

    def count(m):
        return sum(p.numel() for p in m.parameters())

    # SD2 UNet: 865.9 M + the 1.6 M projection class embedding SDPose adds
    assert 865e6 < count(unet) < 868e6
    assert 83e6 < count(vae) < 84.5e6
    assert 339e6 < count(text) < 341e6
    assert unet.up_blocks[SCHEMES["wholebody"]["up_block"]].resnets[-1].out_channels == \
        SCHEMES["wholebody"]["in_channels"]
    assert unet.up_blocks[SCHEMES["body"]["up_block"]].resnets[-1].out_channels == SCHEMES["body"]["in_channels"]
    assert unet.config.attention_head_dim == [5, 10, 20, 20]
    assert unet.config.cross_attention_dim == 1024 == text.config.hidden_size


def test_cli_is_deterministic_and_refuses_nonempty_output(tmp_path, tiny_checkpoint_wholebody):
    from convert.checkpoint import checkpoint_sha256
    from convert.cli import main

    out = tmp_path / "ckpt"
    assert main(["make-synthetic", str(out), "--size", "tiny", "--scheme", "wholebody", "--seed", "0",
                 "--no-detector"]) == 0
    assert checkpoint_sha256(out) == checkpoint_sha256(tiny_checkpoint_wholebody)
    assert not (out / "yolo11n.pt").exists()
    with pytest.raises(SDPoseError, match="already exists"):
        make_synthetic(out, size="tiny", scheme="wholebody", detector=False)
    assert main(["make-synthetic", str(out), "--size", "tiny", "--no-detector"]) == 2
    with pytest.raises(SDPoseError, match="--scheme must be one of"):
        make_synthetic(tmp_path / "x", size="tiny", scheme="hand", detector=False)
    assert not list(tmp_path.glob(".*partial*")), "no temporary folder may be left behind"


def test_detector_written_beside_checkpoint(tiny_checkpoint):
    from convert.checkpoint import find_detector

    path = tiny_checkpoint("body", detector=True)
    assert (path / "yolo11n.pt").is_file()
    assert find_detector(path) == path / "yolo11n.pt"
    assert json.loads((path / "synthetic.json").read_text())["detector"] == "yolo11n.pt"


def test_bench_and_converter_pick_the_same_detector(tmp_path):
    """The released checkpoint keeps yolo11x.pt beside it: the largest variant wins, for every caller."""
    from convert.checkpoint import find_detector
    from convert.detector import find_detector_checkpoint

    for name in ("yolo11n.pt", "yolo11x.pt", "yolo11m.pt"):
        (tmp_path / name).write_bytes(b"")
    assert find_detector(tmp_path) == find_detector_checkpoint(tmp_path) == tmp_path / "yolo11x.pt"
