"""``sdpose-convert make-synthetic``: a SDPose checkpoint folder in the exact public layout, random weights.

No weights can be downloaded, so tests and benchmarks run on synthetic checkpoints. ``full`` is the real SD2
architecture (UNet ~866 M parameters, VAE [128,256,512,512], CLIP text 1024-d, 23 layers); ``tiny`` keeps
every structural feature (4 down/up blocks, cross-attention blocks with linear projection, projection class
embedding of dim 4, 4-block VAE with a mid attention, CLIP text model) at widths that convert in seconds.

The decoder is written in the **released** head layout by default (InstanceNorm2d + SiLU, five keys: see
``convert.head``); ``--head-layout batchnorm`` writes the stock-mmpose layout (BatchNorm2d + ReLU) instead.
Weights are random (seeded) but chosen to give non-degenerate heatmaps: the final layer's bias is shifted so
heatmap peaks are positive, and in the batchnorm layout the BatchNorm running statistics are calibrated on
the UNet features of a synthetic image (so activations neither vanish nor explode) and then perturbed, so
they are non-trivial. Any accuracy figure obtained with these checkpoints measures conversion fidelity only,
never pose accuracy.
"""
from __future__ import annotations

import argparse
import contextlib
import gc
import json
import logging
import math
import shutil
import tempfile
import time
from pathlib import Path

import torch

from convert.checkpoint import LATENT_SCALE
from convert.head import DEFAULT_HEAD_LAYOUT, HEAD_LAYOUTS, SCHEMES, HeatmapHead
from convert.reference import unet_up_block_output
from edge_runtime.errors import SDPoseError

logger = logging.getLogger(__name__)

SIZES = ("tiny", "full")
#: name of the file that marks a folder as synthetic
MARKER_FILE = "synthetic.json"

_UNET_COMMON = dict(
    in_channels=4, out_channels=4, center_input_sample=False, flip_sin_to_cos=True, freq_shift=0,
    down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    mid_block_type="UNetMidBlock2DCrossAttn", downsample_padding=1, mid_block_scale_factor=1,
    act_fn="silu", norm_eps=1e-5, use_linear_projection=True, dual_cross_attention=False,
    only_cross_attention=False, class_embed_type="projection", projection_class_embeddings_input_dim=4,
)
#: UNet2DConditionModel arguments per size (full = stabilityai/stable-diffusion-2 UNet + SDPose class embedding)
UNET_CONFIGS = {
    "full": dict(_UNET_COMMON, sample_size=96, block_out_channels=[320, 640, 1280, 1280], layers_per_block=2,
                 norm_num_groups=32, cross_attention_dim=1024, attention_head_dim=[5, 10, 20, 20],
                 upcast_attention=True),
    "tiny": dict(_UNET_COMMON, sample_size=16, block_out_channels=[32, 64, 64, 64], layers_per_block=2,
                 norm_num_groups=8, cross_attention_dim=32, attention_head_dim=[2, 4, 4, 4],
                 upcast_attention=False),
}
_VAE_COMMON = dict(
    in_channels=3, out_channels=3, latent_channels=4, act_fn="silu", scaling_factor=LATENT_SCALE,
    down_block_types=["DownEncoderBlock2D"] * 4, up_block_types=["UpDecoderBlock2D"] * 4,
)
#: AutoencoderKL arguments per size (full = SD2's VAE)
VAE_CONFIGS = {
    "full": dict(_VAE_COMMON, block_out_channels=[128, 256, 512, 512], layers_per_block=2, norm_num_groups=32,
                 sample_size=768),
    "tiny": dict(_VAE_COMMON, block_out_channels=[32, 64, 64, 64], layers_per_block=1, norm_num_groups=8,
                 sample_size=64),
}
#: CLIPTextConfig arguments per size (full = SD2's OpenCLIP ViT-H text tower, 23 layers)
_CLIP_COMMON = dict(max_position_embeddings=77, hidden_act="gelu", layer_norm_eps=1e-5, attention_dropout=0.0,
                    dropout=0.0, initializer_factor=1.0, initializer_range=0.02,
                    bos_token_id=0, eos_token_id=2, pad_token_id=1)
CLIP_CONFIGS = {
    "full": dict(_CLIP_COMMON, vocab_size=49408, hidden_size=1024, intermediate_size=4096, num_hidden_layers=23,
                 num_attention_heads=16, projection_dim=512),
    "tiny": dict(_CLIP_COMMON, vocab_size=None, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                 num_attention_heads=2, projection_dim=32),
}
#: DDPMScheduler config (SD2's noise schedule; SDPose predicts x0, prediction_type "sample")
SCHEDULER_CONFIG = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                        beta_schedule="scaled_linear", clip_sample=False, variance_type="fixed_small",
                        steps_offset=1, prediction_type="sample", timestep_spacing="leading")
#: (height, width) of the synthetic image used to calibrate the head's BatchNorm statistics
_CALIBRATION_SIZE = {"full": (256, 192), "tiny": (64, 48)}


@contextlib.contextmanager
def _single_thread():
    """Run the calibration forwards on one torch thread: the reduction order (and so the last bits of the
    head's BatchNorm statistics) then no longer depends on the caller's thread count, which keeps
    make-synthetic byte-for-byte reproducible for a given seed."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


# ---------------------------------------------------------------------------------------------- tokenizer
def _byte_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte-level BPE alphabet: each byte -> a printable unicode character."""
    printable = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
                 + list(range(ord("®"), ord("ÿ") + 1)))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


#: a few merges so that merges.txt exercises the BPE path (every merged token is in the vocab)
_MERGES = [("t", "h"), ("th", "e</w>"), ("i", "n"), ("a", "n"), ("e", "r"), ("o", "n</w>"), ("p", "er"),
           ("s", "on</w>"), ("per", "son</w>")]


def write_tokenizer(folder: Path) -> dict[str, int]:
    """Write a small, working CLIP BPE tokenizer (vocab.json, merges.txt, configs) into ``folder``.

    Vocab: the 256 byte-level characters, the same with the end-of-word suffix ``</w>``, the merged tokens,
    then ``<|startoftext|>`` and ``<|endoftext|>`` (last two ids). Special tokens, pad "!" and
    model_max_length 77 as in SD2's tokenizer_config. Returns the vocab (token -> id).
    """
    folder.mkdir(parents=True, exist_ok=True)
    chars = list(_byte_to_unicode().values())
    tokens = chars + [c + "</w>" for c in chars] + [a + b for a, b in _MERGES]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    vocab = {tok: i for i, tok in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise RuntimeError("duplicate tokens in the synthetic vocabulary")
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in _MERGES),
                                       encoding="utf-8")

    def special(content: str) -> dict:
        return {"__type": "AddedToken", "content": content, "lstrip": False, "normalized": True,
                "rstrip": False, "single_word": False}

    config = {"add_prefix_space": False, "bos_token": special("<|startoftext|>"), "do_lower_case": True,
              "eos_token": special("<|endoftext|>"), "errors": "replace", "model_max_length": 77,
              "pad_token": "!", "tokenizer_class": "CLIPTokenizer", "unk_token": special("<|endoftext|>")}
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    specials = {"bos_token": special("<|startoftext|>"), "eos_token": special("<|endoftext|>"),
                "pad_token": "!", "unk_token": special("<|endoftext|>")}
    for value in specials.values():
        if isinstance(value, dict):
            value.pop("__type")
    (folder / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), encoding="utf-8")
    return vocab


# ---------------------------------------------------------------------------------------------- components
def _calibration_image(size: str, seed: int) -> torch.Tensor:
    """A smooth, structured synthetic RGB image [1,3,H,W] in [-1,1] (sinusoids + blobs; seeded)."""
    h, w = _CALIBRATION_SIZE[size]
    gen = torch.Generator().manual_seed(seed + 12345)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    channels = []
    for _ in range(3):
        f = torch.rand(4, generator=gen) * 6 + 1
        img = torch.sin(2 * math.pi * (f[0] * xx + f[1] * yy)) * 0.4 + torch.cos(2 * math.pi * f[2] * xx * yy) * 0.3
        for _ in range(4):
            cy, cx = torch.rand(2, generator=gen)
            img = img + 0.6 * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 0.01)
        channels.append(img)
    return torch.stack(channels)[None].clamp(-1, 1)


def _save_text_encoder(out: Path, size: str, vocab_size: int, seed: int) -> torch.Tensor:
    """Write text_encoder/ and return the empty-prompt embedding [1,2,D] (for calibration)."""
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    kwargs = dict(CLIP_CONFIGS[size])
    if kwargs["vocab_size"] is None:
        kwargs["vocab_size"] = vocab_size
    torch.manual_seed(seed + 1)
    model = CLIPTextModel(CLIPTextConfig(**kwargs)).eval()
    model.save_pretrained(out / "text_encoder")
    tokenizer = CLIPTokenizer.from_pretrained(str(out / "tokenizer"), local_files_only=True)
    ids = tokenizer("", padding="do_not_pad", return_tensors="pt").input_ids
    with torch.no_grad():
        embedding = model(ids)[0]
    del model
    gc.collect()
    return embedding


def _save_vae(out: Path, size: str, seed: int) -> torch.Tensor:
    """Write vae/ and return the latent [1,4,h/8,w/8] (mean x 0.18215) of the calibration image."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed + 2)
    vae = AutoencoderKL(**VAE_CONFIGS[size]).eval()
    vae.save_pretrained(out / "vae", safe_serialization=True)
    with torch.no_grad():
        latent = vae.encode(_calibration_image(size, seed)).latent_dist.mean * LATENT_SCALE
    del vae
    gc.collect()
    return latent


def _save_unet(out: Path, size: str, seed: int, latent: torch.Tensor, text: torch.Tensor,
               up_block: int) -> tuple[torch.Tensor, int]:
    """Write unet/ and return (output [1,C,h,w] of up_blocks[up_block] on the calibration latent, n params)."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed + 3)
    unet = UNet2DConditionModel(**UNET_CONFIGS[size]).eval()
    n_params = sum(p.numel() for p in unet.parameters())
    unet.save_pretrained(out / "unet", safe_serialization=True)
    features = unet_up_block_output(unet, latent, text, up_block)
    del unet
    gc.collect()
    return features, n_params


def _random_head(features: torch.Tensor, num_keypoints: int, seed: int,
                 layout: str = DEFAULT_HEAD_LAYOUT) -> HeatmapHead:
    """A HeatmapHead in ``layout`` for ``features`` [1,C,h,w] with seeded random weights.

    instance layout (released): the InstanceNorms keep activations O(1) by themselves; nothing to calibrate.
    batchnorm layout: each BatchNorm's running mean/var are the per-channel statistics of its input on
    ``features``, perturbed by +-20 % (so they are non-trivial and the normalised activations stay O(1)); BN
    affine weights are drawn in [0.5, 1.5] and biases N(0, 0.2).
    In both, the final layer's bias is shifted so heatmap peaks are positive.
    """
    c = int(features.shape[1])
    gen = torch.Generator().manual_seed(seed + 4)
    torch.manual_seed(seed + 4)
    head = HeatmapHead(c, num_keypoints, deconv_out_channels=(c,), deconv_kernel_sizes=(4,),
                       conv_out_channels=(c,), conv_kernel_sizes=(1,), layout=layout).eval()
    with torch.no_grad():
        if layout == "instance":
            heat = head(features)
            head.final_layer.bias.sub_(heat.mean(dim=(0, 2, 3)) - heat.std(dim=(0, 2, 3)))
            return head
        for bn in (head.deconv_layers[1], head.conv_layers[1]):
            bn.weight.copy_(torch.rand(c, generator=gen) + 0.5)
            bn.bias.copy_(torch.randn(c, generator=gen) * 0.2)
            bn.num_batches_tracked.fill_(1000)
        x = head.deconv_layers[0](features)
        for bn, nxt in ((head.deconv_layers[1], head.conv_layers[0]), (head.conv_layers[1], None)):
            mean = x.mean(dim=(0, 2, 3))
            var = x.var(dim=(0, 2, 3))
            bn.running_mean.copy_(mean + 0.2 * var.sqrt() * (torch.rand(c, generator=gen) * 2 - 1))
            bn.running_var.copy_(var * (1 + 0.2 * (torch.rand(c, generator=gen) * 2 - 1)) + 1e-3)
            x = torch.relu(bn(x))
            if nxt is not None:
                x = nxt(x)
        heat = head.final_layer(x)
        head.final_layer.bias.sub_(heat.mean(dim=(0, 2, 3)) - heat.std(dim=(0, 2, 3)))
    return head


def _write_detector(out: Path, seed: int) -> Path:
    """Write a random-weight ultralytics YOLO11n person detector as OUT/yolo11n.pt."""
    from convert.detector import make_synthetic_yolo

    return Path(make_synthetic_yolo(out / "yolo11n.pt", seed=seed))


def make_synthetic(out: str | Path, size: str = "tiny", scheme: str = "wholebody", seed: int = 0, *,
                   detector: bool = True, head_layout: str = DEFAULT_HEAD_LAYOUT) -> Path:
    """Write a synthetic SDPose checkpoint folder at ``out`` (must not exist or be empty).

    Layout: unet/, vae/, text_encoder/ (save_pretrained, safetensors), tokenizer/ (working CLIP BPE
    tokenizer), scheduler/scheduler_config.json, decoder/decoder.safetensors (HeatmapHead of ``scheme``
    reading the UNet's actual up-block channels, in ``head_layout``: "instance" = the released layout,
    "batchnorm" = stock mmpose), synthetic.json, and yolo11n.pt when ``detector``.
    Everything is written to a sibling temporary folder first and renamed into place at the end, so a
    failure never leaves a half-written checkpoint. Returns the folder.
    """
    from diffusers import DDPMScheduler
    from safetensors.torch import save_file

    if size not in SIZES:
        raise SDPoseError(f"--size must be one of {', '.join(SIZES)}, got {size!r}")
    if scheme not in SCHEMES:
        raise SDPoseError(f"--scheme must be one of {', '.join(SCHEMES)}, got {scheme!r}")
    if head_layout not in HEAD_LAYOUTS:
        raise SDPoseError(f"--head-layout must be one of {', '.join(HEAD_LAYOUTS)}, got {head_layout!r}")
    out = Path(out).expanduser().resolve()
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise SDPoseError(f"output {out} already exists and is not an empty folder; choose another path")
    out.parent.mkdir(parents=True, exist_ok=True)
    spec = SCHEMES[scheme]
    started = time.perf_counter()
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    tmp.chmod(0o755)
    try:
        vocab = write_tokenizer(tmp / "tokenizer")
        DDPMScheduler(**SCHEDULER_CONFIG).save_pretrained(str(tmp / "scheduler"))
        logger.info("writing %s text encoder", size)
        with _single_thread():
            text = _save_text_encoder(tmp, size, len(vocab), seed)
            logger.info("writing %s VAE", size)
            latent = _save_vae(tmp, size, seed)
            logger.info("writing %s UNet", size)
            features, n_params = _save_unet(tmp, size, seed, latent, text, spec["up_block"])
        logger.info("UNet: %.1f M parameters; head reads up_blocks[%d] with %d channels",
                    n_params / 1e6, spec["up_block"], features.shape[1])
        head = _random_head(features, spec["num_keypoints"], seed, head_layout)
        (tmp / "decoder").mkdir()
        save_file({k: v.contiguous() for k, v in head.state_dict().items()},
                  str(tmp / "decoder" / "decoder.safetensors"))
        marker = {"synthetic": True, "size": size, "scheme": scheme, "seed": seed, "head_layout": head_layout,
                  "num_keypoints": spec["num_keypoints"], "up_block": spec["up_block"],
                  "unet_parameters": n_params, "created_by": "sdpose-convert make-synthetic",
                  "note": "Random weights in the public SDPose layout, for tests and benchmarks only. "
                          "Results measure conversion fidelity, never pose accuracy.",
                  "versions": {"torch": torch.__version__, **_versions()}}
        if detector:
            marker["detector"] = _write_detector(tmp, seed).name
        (tmp / MARKER_FILE).write_text(json.dumps(marker, indent=2), encoding="utf-8")
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    logger.info("synthetic %s %s checkpoint written to %s in %.1f s", size, scheme, out,
                time.perf_counter() - started)
    return out


def _versions() -> dict[str, str]:
    import diffusers
    import transformers

    return {"diffusers": diffusers.__version__, "transformers": transformers.__version__}


def register(subparsers: argparse._SubParsersAction, name: str) -> None:
    """Add ``make-synthetic OUT --size tiny|full --scheme wholebody|body [--seed N] [--no-detector]``."""
    parser = subparsers.add_parser(name, help="write a random-weight SDPose checkpoint in the public layout",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="output folder (must not exist or be empty)")
    parser.add_argument("--size", choices=SIZES, default="tiny",
                        help="tiny (tests, seconds) or full (real SD2 architecture, ~3.4 GB)")
    parser.add_argument("--scheme", choices=sorted(SCHEMES), default="wholebody",
                        help="wholebody (133 keypoints, up_blocks[2]) or body (17 keypoints, up_blocks[3])")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--head-layout", choices=sorted(HEAD_LAYOUTS), default=DEFAULT_HEAD_LAYOUT,
                        help="decoder layout: instance (default; the released SDPose decoders: InstanceNorm2d + "
                             "SiLU, five keys) or batchnorm (stock mmpose: BatchNorm2d + ReLU)")
    parser.add_argument("--no-detector", action="store_true",
                        help="do not write the random yolo11n.pt person detector")
    parser.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    out = make_synthetic(args.out, size=args.size, scheme=args.scheme, seed=args.seed,
                         detector=not args.no_detector, head_layout=args.head_layout)
    logger.info("checkpoint: %s", out)
    return 0
