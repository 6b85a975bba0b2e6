"""Token downsampling of the VAE encoder's mid-block self-attention (``--vae-token-downsample F``), tiny checkpoints.

Factor 1 must be the plain export (same weights, same graph, same output); factor 2 pools the attention's keys and
values (their sequence length shrinks 4x) and is exact apart from the pooling: the IR is compared with the float64
PyTorch reference that has the same processor installed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import openvino as ov
import pytest

from convert.cli import main as convert_main
from convert.convert_config import load_config
from convert.export import export_models
from convert.token_downsample import apply_vae_token_downsampling
from edge_runtime.errors import InputError
from edge_runtime.model.metadata import read_index, read_metadata
from tests.convert.test_parity import EXACT_RTOL, _rel_err, astronaut_crops
from tests.fixtures_export import TINY_INPUT_SIZE

F32 = {"INFERENCE_PRECISION_HINT": "f32"}
#: the tiny VAE's mid-block runs at the latent grid: (H/8) x (W/8) tokens
TOKENS = (TINY_INPUT_SIZE[0] // 8) * (TINY_INPUT_SIZE[1] // 8)


@pytest.fixture(scope="module")
def core() -> ov.Core:
    return ov.Core()


@pytest.fixture(scope="module")
def vae_folder(exported_models):
    """Factory: factor -> the tiny wholebody folder exported with ``--vae-token-downsample factor`` (split)."""
    return lambda factor: exported_models("wholebody", fused=False, vae_token_downsample=factor)


def _latent(core: ov.Core, folder: Path, crops: np.ndarray) -> np.ndarray:
    return core.compile_model(str(folder / "vae_encoder.xml"), "CPU", F32)(crops)["latent"]


def _graph(model: ov.Model) -> list[tuple[str, list[str]]]:
    """The graph without its generated names: each op's type and output shapes, in topological order."""
    return [(op.get_type_name(), [str(o.get_partial_shape()) for o in op.outputs()]) for op in model.get_ordered_ops()]


def _attention_kv_tokens(model: ov.Model) -> list[int]:
    """The key sequence length of every ScaledDotProductAttention ([N,heads,T,d] keys)."""
    return [op.input(1).get_partial_shape()[2].get_length() for op in model.get_ops()
            if op.get_type_name() == "ScaledDotProductAttention"]


def test_vae_factor_one_is_the_plain_export(exported_models, vae_folder, core):
    plain, same = exported_models("wholebody"), vae_folder(1)
    assert (plain / "vae_encoder.bin").read_bytes() == (same / "vae_encoder.bin").read_bytes()
    plain_model = core.read_model(str(plain / "vae_encoder.xml"))
    same_model = core.read_model(str(same / "vae_encoder.xml"))
    assert _graph(plain_model) == _graph(same_model)
    assert _attention_kv_tokens(same_model) == [TOKENS]
    crops = astronaut_crops(TINY_INPUT_SIZE)
    assert np.array_equal(_latent(core, plain, crops), _latent(core, same, crops))
    assert read_metadata(same_model)["vae_token_downsample"] == 1
    assert read_metadata(plain_model)["vae_token_downsample"] == 1
    assert read_index(same)["vae_token_downsample"] == 1


def test_vae_token_downsampling_pools_keys_and_values_exactly(tiny_checkpoint_wholebody, vae_folder, core):
    import torch

    from convert.checkpoint import load_checkpoint
    from convert.reference import ReferencePipeline

    folder = vae_folder(2)
    model = core.read_model(str(folder / "vae_encoder.xml"))
    assert _attention_kv_tokens(model) == [TOKENS // 4]
    assert sum(op.get_type_name() == "AvgPool" for op in model.get_ops()) == 1
    for kind in ("vae_encoder", "pose"):
        meta = read_metadata(core.read_model(str(folder / f"{kind}.xml")))
        assert meta["vae_token_downsample"] == 2 and meta["token_downsample"] == 1
    assert read_index(folder)["vae_token_downsample"] == 2
    # the pose IR is untouched
    assert (folder / "pose.bin").read_bytes() == (vae_folder(1) / "pose.bin").read_bytes()

    crops = astronaut_crops(TINY_INPUT_SIZE)
    ckpt = load_checkpoint(tiny_checkpoint_wholebody, torch_dtype=torch.float64)
    assert apply_vae_token_downsampling(ckpt.vae, 2) == ["encoder.mid_block.attentions.0"]
    pipe = ReferencePipeline(ckpt)
    with torch.no_grad():
        ref = pipe.encode(pipe.preprocess(crops)).numpy()
    got = _latent(core, folder, crops)
    assert _rel_err(got, ref) < EXACT_RTOL
    # the pooling changes the latent, but only a little: it stays close to the plain model's
    plain = _latent(core, vae_folder(1), crops)
    assert _rel_err(got, plain) > 100 * EXACT_RTOL
    cosine = float((got * plain).sum() / (np.linalg.norm(got) * np.linalg.norm(plain)))
    assert cosine > 0.99


def test_bad_vae_factor_is_refused(tiny_checkpoint_wholebody, tmp_path, capsys):
    for bad in (0, -2, 1.5, True, "2"):
        with pytest.raises(InputError, match="--vae-token-downsample: expected an integer >= 1"):
            export_models(tiny_checkpoint_wholebody, tmp_path / "never", vae_token_downsample=bad)
        with pytest.raises(InputError, match="--vae-token-downsample: expected an integer >= 1"):
            load_config(None, vae_token_downsample=bad)
    assert not (tmp_path / "never").exists()
    assert load_config(None, vae_token_downsample=4).vae_token_downsample == 4
    assert load_config(None).describe()["vae_token_downsample"] == 1
    with pytest.raises(SystemExit):
        convert_main(["export", "--checkpoint", str(tiny_checkpoint_wholebody), "--out", str(tmp_path / "x"),
                      "--vae-token-downsample", "two"])
    assert "--vae-token-downsample" in capsys.readouterr().err


def test_vae_without_mid_block_attention_is_refused():
    from diffusers import AutoencoderKL

    vae = AutoencoderKL(block_out_channels=(8,), norm_num_groups=4, mid_block_add_attention=False)
    assert apply_vae_token_downsampling(vae, 1) == []
    with pytest.raises(InputError, match="--vae-token-downsample: this VAE's encoder has no mid-block"):
        apply_vae_token_downsampling(vae, 2)


def test_fp32_from_with_another_vae_factor_is_refused(tiny_checkpoint_wholebody, vae_folder):
    from convert.checkpoint import checkpoint_sha256
    from convert.convert_cmd import _check_fp32_from

    folder = vae_folder(2)
    sha = checkpoint_sha256(tiny_checkpoint_wholebody)
    _check_fp32_from(folder, sha, TINY_INPUT_SIZE, False, vae_token_downsample=2)
    with pytest.raises(InputError, match="vae_token_downsample 2 differs from --vae-token-downsample 1"):
        _check_fp32_from(folder, sha, TINY_INPUT_SIZE, False)


def test_runtime_names_the_vae_factor(vae_folder, caplog):
    import logging

    from edge_runtime.model.estimator import PoseEstimator
    from edge_runtime.model.model_info import PoseModelInfo
    from edge_runtime.model.models import CompileOptions

    folder = vae_folder(2)
    meta = read_metadata(ov.Core().read_model(str(folder / "vae_encoder.xml")))
    assert PoseModelInfo.from_rt_info(meta).vae_token_downsample == 2
    with caplog.at_level(logging.INFO, logger="edge_runtime.model.estimator"):
        est = PoseEstimator(folder, options=CompileOptions(cache_dir=None, inference_precision="f32"))
    assert est.runtime_info["variant"]["vae_token_downsample"] == 2
    assert "token downsampling x1, VAE encoder x2" in caplog.text


def test_validate_refuses_a_vae_downsampled_reference(vae_folder, caplog):
    assert convert_main(["validate", str(vae_folder(1)), "--against", str(vae_folder(2)), "--no-write"]) != 0
    assert "VAE encoder token downsampling x2 (vae_token_downsample)" in caplog.text
    assert "--vae-token-downsample" in caplog.text
