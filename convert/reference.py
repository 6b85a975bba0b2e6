"""PyTorch reference: what the original SDPose pipeline computes per crop (parity tests and benchmarks only).

Per crop: VAE latent = ``vae.encode(x).latent_dist.mean * 0.18215`` (x RGB [-1,1]); the text encoder runs on
the empty prompt on every call (as SDPose does); the *full* UNet runs at t=999 with class labels
[sin 1, sin 0, cos 1, cos 0]; a forward hook captures the output of ``unet.up_blocks[ckpt.up_block]``
[N,C,H/8,W/8]; the head turns it into heatmaps [N,K,H/4,W/4]. Nothing is folded or truncated here, so the
exported IRs can be compared against it.

The head is computed by :func:`original_head` with functional ops straight from the raw
``decoder/decoder.safetensors`` tensors, independently of ``convert.head.HeatmapHead`` (which the exporter
traces): in the released layout each block is conv -> instance norm (per crop and channel over H,W, eps 1e-5,
no affine) -> SiLU, as SDPose-OOD's mmpose fork computes it; in the stock layout conv -> BatchNorm (eval) ->
ReLU. Two deliberate differences from the original app, both documented in the README: the latent is the
posterior *mean* (the original draws a sample), and the crop follows the evaluation protocol.

Benchmark: ``python -m convert.reference CKPT [--input-size 1024x768] [--runs 2] [--threads 2]`` logs the
per-crop latency of the VAE encode, the pose stage and the total (1 warm-up run first).
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from convert.checkpoint import (DECODER_FILE, LATENT_SCALE, TIMESTEP, SDPoseCheckpoint, class_labels,
                                encode_empty_prompt)

logger = logging.getLogger(__name__)


@torch.no_grad()
def unet_up_block_output(unet: torch.nn.Module, latent: torch.Tensor, text_embedding: torch.Tensor,
                         up_block: int) -> torch.Tensor:
    """Run the full UNet as SDPose does and return the output of ``unet.up_blocks[up_block]``.

    latent [N,4,h,w]; text_embedding [1,T,D] (repeated over the batch); t = 999; class labels
    [sin 1, sin 0, cos 1, cos 0]. Returns features [N,C,h',w'] captured by a forward hook.
    """
    n = latent.shape[0]
    dtype = latent.dtype
    captured: list[torch.Tensor] = []

    def hook(_module: torch.nn.Module, _inputs: tuple, output: torch.Tensor | tuple) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    handle = unet.up_blocks[up_block].register_forward_hook(hook)
    try:
        unet(latent, torch.tensor(TIMESTEP, dtype=torch.long),
             encoder_hidden_states=text_embedding.to(dtype).repeat(n, 1, 1),
             class_labels=class_labels(n).to(dtype), return_dict=False)
    finally:
        handle.remove()
    if len(captured) != 1:
        raise RuntimeError(f"expected one output of unet.up_blocks[{up_block}], got {len(captured)}")
    return captured[0]


#: deconvolution kernel -> (padding, output_padding), mmpose ``HeatmapHead._make_deconv_layers``
_DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}
#: eps of both norms (torch defaults, which mmpose and SDPose-OOD's fork keep)
_NORM_EPS = 1e-5


def original_head(decoder: dict[str, torch.Tensor], feats: torch.Tensor) -> torch.Tensor:
    """The decoder's forward pass with functional ops on the raw ``decoder.safetensors`` tensors.

    feats [N,C,h,w] float32 -> heatmaps [N,K,h*2^D,w*2^D] (D = number of deconv blocks). Each block
    ``<group>.<3i>`` is a (transposed) convolution; its norm ``<group>.<3i+1>`` is a BatchNorm when that
    prefix has ``running_mean`` (stock mmpose: BN in eval mode, then ReLU), otherwise the released layout's
    parameter-free instance norm followed by SiLU.
    """
    x = feats
    for group, transposed in (("deconv_layers", True), ("conv_layers", False)):
        i = 0
        while f"{group}.{i}.weight" in decoder:
            weight, bias = decoder[f"{group}.{i}.weight"], decoder.get(f"{group}.{i}.bias")
            kernel = int(weight.shape[-1])
            if transposed:
                padding, output_padding = _DECONV_PADDING[kernel]
                x = F.conv_transpose2d(x, weight, bias, stride=2, padding=padding, output_padding=output_padding)
            else:
                x = F.conv2d(x, weight, bias, padding=(kernel - 1) // 2)
            norm = f"{group}.{i + 1}"
            if f"{norm}.running_mean" in decoder:
                x = F.relu(F.batch_norm(x, decoder[f"{norm}.running_mean"], decoder[f"{norm}.running_var"],
                                        decoder[f"{norm}.weight"], decoder[f"{norm}.bias"], training=False,
                                        eps=_NORM_EPS))
            else:
                x = F.silu(F.instance_norm(x, eps=_NORM_EPS))
            i += 3
    return F.conv2d(x, decoder["final_layer.weight"], decoder["final_layer.bias"])


class ReferencePipeline:
    """The original SDPose forward pass on crops, in torch (no_grad, CPU).

    Args:
        ckpt: a checkpoint loaded with ``load_text_encoder=True``.
    """

    def __init__(self, ckpt: SDPoseCheckpoint):
        if ckpt.text_encoder is None or ckpt.tokenizer is None:
            raise ValueError("ReferencePipeline needs a checkpoint loaded with load_text_encoder=True")
        self.ckpt = ckpt
        self.unet = ckpt.unet.eval()
        self.vae = ckpt.vae.eval()
        from safetensors.torch import load_file

        # the head runs from the raw file (see original_head), not from the HeatmapHead the exporter traces
        self.decoder = {k: v.float() for k, v in load_file(str(ckpt.path / DECODER_FILE)).items()}
        self.up_block = ckpt.up_block
        self.dtype = next(self.unet.parameters()).dtype

    @torch.no_grad()
    def encode(self, crops_rgb: torch.Tensor) -> torch.Tensor:
        """crops_rgb [N,3,H,W] float RGB in [-1,1] -> latent [N,4,H/8,W/8] (posterior mean x 0.18215)."""
        x = crops_rgb.to(dtype=next(self.vae.parameters()).dtype)
        return self.vae.encode(x).latent_dist.mean * LATENT_SCALE

    @torch.no_grad()
    def features(self, latent: torch.Tensor) -> torch.Tensor:
        """latent [N,4,h,w] -> output of ``unet.up_blocks[up_block]`` [N,C,h,w] (full UNet run, hooked)."""
        text = encode_empty_prompt(self.ckpt).to(self.dtype)
        return unet_up_block_output(self.unet, latent.to(self.dtype), text, self.up_block)

    @torch.no_grad()
    def pose(self, latent: torch.Tensor) -> torch.Tensor:
        """latent [N,4,H/8,W/8] -> heatmaps [N,K,H/4,W/4] float32 (text encoder, full UNet, hook, head)."""
        return original_head(self.decoder, self.features(latent).float())

    @staticmethod
    def preprocess(crops_bgr_u8: np.ndarray | torch.Tensor) -> torch.Tensor:
        """crops [N,H,W,3] uint8 BGR (or one crop [H,W,3]) -> [N,3,H,W] float32 RGB in [-1,1]."""
        x = torch.as_tensor(np.ascontiguousarray(crops_bgr_u8) if isinstance(crops_bgr_u8, np.ndarray)
                            else crops_bgr_u8)
        if x.dim() == 3:
            x = x[None]
        if x.dim() != 4 or x.shape[-1] != 3:
            raise ValueError(f"crops must be [N,H,W,3] BGR uint8, got shape {list(x.shape)}")
        if x.dtype != torch.uint8:
            raise ValueError(f"crops must be uint8, got {x.dtype}")
        x = x.flip(-1).permute(0, 3, 1, 2).float()
        return x / 127.5 - 1.0

    @torch.no_grad()
    def __call__(self, crops_bgr_u8: np.ndarray | torch.Tensor) -> torch.Tensor:
        """crops [N,H,W,3] uint8 BGR -> heatmaps [N,K,H/4,W/4] float32 (torch tensor)."""
        return self.pose(self.encode(self.preprocess(crops_bgr_u8)))


def benchmark(ckpt_path: str | Path, input_size: tuple[int, int] = (1024, 768), runs: int = 2,
              threads: int = 2, seed: int = 0) -> dict[str, float]:
    """Per-crop latency in seconds (mean of ``runs`` after 1 warm-up) of encode, pose and total.

    ``input_size`` is (height, width). Returns {"encode_s", "pose_s", "total_s"}.
    """
    from convert.checkpoint import load_checkpoint

    torch.set_num_threads(threads)
    ckpt = load_checkpoint(ckpt_path)
    pipe = ReferencePipeline(ckpt)
    h, w = input_size
    crop = np.random.default_rng(seed).integers(0, 256, size=(1, h, w, 3), dtype=np.uint8)
    x = pipe.preprocess(crop)
    times: dict[str, list[float]] = {"encode_s": [], "pose_s": [], "total_s": []}
    for i in range(runs + 1):
        t0 = time.perf_counter()
        latent = pipe.encode(x)
        t1 = time.perf_counter()
        heatmaps = pipe.pose(latent)
        t2 = time.perf_counter()
        logger.info("run %d%s: encode %.2f s, pose %.2f s, total %.2f s (heatmaps %s)", i,
                    " (warm-up)" if i == 0 else "", t1 - t0, t2 - t1, t2 - t0, list(heatmaps.shape))
        if i:
            times["encode_s"].append(t1 - t0)
            times["pose_s"].append(t2 - t1)
            times["total_s"].append(t2 - t0)
    return {k: float(np.mean(v)) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m convert.reference",
                                     description="per-crop latency of the PyTorch SDPose reference")
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--input-size", default="1024x768", help="HxW (default 1024x768)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    from edge_runtime.errors import InputError
    from edge_runtime.model.geometry import parse_size_hw

    try:
        h, w = parse_size_hw(args.input_size, "--input-size")
    except InputError as exc:
        parser.error(str(exc))
    result = benchmark(args.checkpoint, (h, w), args.runs, args.threads)
    logger.info("reference per crop at %dx%d, %d threads, mean of %d runs: encode %.2f s, pose %.2f s, "
                "total %.2f s", h, w, args.threads, args.runs, result["encode_s"], result["pose_s"],
                result["total_s"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
