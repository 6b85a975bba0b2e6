"""FLOPs of each SDPose stage, counted once from the torch modules (for the benchmark's compute limit).

Convention (the same as ``torch.utils.flop_counter`` and :func:`edge_bench.peak.count_ir_flops`): a
multiply-add is 2 FLOPs; convolutions (incl. transposed), matrix products (mm/addmm/bmm/baddbmm) and scaled
dot-product attention (QK^T and AV) are counted; element-wise ops, normalisation and softmax are not.

Counting runs the modules on the ``meta`` device: the architecture is rebuilt from the checkpoint's configs
without weights and every op computes shapes only, so counting the full-size SD2 UNet takes a second and
no memory. The numbers depend only on the architecture and the input size, never on the weights.

Stages (input size H x W of the crop, detector input S x S):

* ``vae_encoder``  image [1,3,H,W] -> latent [1,4,H/8,W/8]: VAE encoder + quant_conv (the IR's graph).
* ``pose``         latent -> heatmaps [1,K,H/4,W/4]: :class:`convert.pose_graph.PoseGraph` (UNet truncated
  after the up-block the head reads, constants folded, + head) — what the pose IR computes.
* ``reference_pose`` what the original pipeline runs per crop for the same output: the CLIP text encoder on
  the empty prompt + the *full* UNet (all up-blocks, conv_out) + head.
* ``detector``     the YOLO network on [1,3,S,S] (no NMS).
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch.utils.flop_counter import FlopCounterMode, sdpa_flop_count

logger = logging.getLogger(__name__)

_aten = torch.ops.aten


def _sdpa_cpu_flop(query_shape: Any, key_shape: Any, value_shape: Any, *args: Any, out_shape: Any = None,
                   **kwargs: Any) -> int:
    """FLOPs of ``aten._scaled_dot_product_flash_attention_for_cpu`` (the CPU kernel of
    ``F.scaled_dot_product_attention``, which torch's counter does not register): QK^T + AV."""
    return sdpa_flop_count(query_shape, key_shape, value_shape)


def _custom_mapping() -> dict[Any, Callable[..., int]]:
    mapping: dict[Any, Callable[..., int]] = {}
    for name in ("_scaled_dot_product_flash_attention_for_cpu", "_scaled_dot_product_fused_attention_overrideable"):
        op = getattr(_aten, name, None)
        if op is not None:
            mapping[op] = _sdpa_cpu_flop
    return mapping


def count_flops(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    """Run ``fn(*args, **kwargs)`` under a FLOP counter -> {"total": int, "by_op": {aten op: int}}."""
    with FlopCounterMode(display=False, custom_mapping=_custom_mapping()) as counter, torch.inference_mode():
        fn(*args, **kwargs)
    by_op = {str(op).split(".")[-1] if "." in str(op) else str(op): int(n)
             for op, n in counter.get_flop_counts().get("Global", {}).items()}
    return {"total": int(counter.get_total_flops()), "by_op": by_op}


def _meta_from_config(cls: Any, config: dict[str, Any]) -> Any:
    """A weightless diffusers model of ``config`` on the meta device."""
    with torch.device("meta"):
        model = cls.from_config(dict(config))
    return model.eval()


def checkpoint_flops(checkpoint_dir: str | Path, input_size: tuple[int, int],
                     reference: bool = True) -> dict[str, dict[str, Any]]:
    """FLOPs of the vae_encoder, pose and (``reference``) reference_pose stages of a checkpoint at batch 1.

    Only the configs (unet/, vae/, text_encoder/config.json) and the small head file are read; the
    models are rebuilt on the meta device, so this takes about a second even at full size.

    Args:
        checkpoint_dir: SDPose checkpoint folder (public layout).
        input_size: crop (H, W) in px (positive multiples of 8).
    Returns:
        {stage: {"total": int, "by_op": {aten op: int}}}.
    Raises:
        CheckpointError naming the missing/bad file.
    """
    from diffusers import AutoencoderKL, UNet2DConditionModel

    from .checkpoint import _read_json, check_layout, class_labels, load_head, unet_up_block_channels
    from .head import SCHEMES
    from .pose_graph import SDPOSE_TIMESTEP, PoseGraph, VaeEncoderGraph

    height, width = (int(v) for v in input_size)
    if height % 8 or width % 8 or height <= 0 or width <= 0:
        raise ValueError(f"input_size must be positive multiples of 8 (H, W), got {input_size}")
    root = Path(checkpoint_dir).expanduser().resolve()
    check_layout(root, load_text_encoder=False)
    unet_config = _read_json(root / "unet" / "config.json")
    head, scheme = load_head(root, unet_up_block_channels(unet_config, root / "unet" / "config.json"))
    up_block = int(SCHEMES[scheme]["up_block"])
    result: dict[str, dict[str, Any]] = {}

    vae = _meta_from_config(AutoencoderKL, _read_json(root / "vae" / "config.json"))
    image = torch.zeros((1, 3, height, width), device="meta")
    result["vae_encoder"] = count_flops(VaeEncoderGraph(vae).to("meta"), image)
    latent_channels = int(vae.config.latent_channels)
    del vae

    unet_config = {**unet_config, "class_embed_type": "projection", "projection_class_embeddings_input_dim": 4}
    unet = _meta_from_config(UNet2DConditionModel, unet_config)
    head = head.to("meta").eval()
    cross = unet.config.cross_attention_dim
    cross = cross if isinstance(cross, int) else int(cross[0])
    text = torch.zeros((1, 2, cross), device="meta")  # [BOS, EOS] of the empty prompt
    labels = class_labels(1).to("meta")
    latent = torch.zeros((1, latent_channels, height // 8, width // 8), device="meta")
    with torch.device("meta"):  # the constant folding creates its probe tensors on the default device
        pose = PoseGraph(unet, head, text, labels, up_block)
    result["pose"] = count_flops(pose, latent)
    if not reference:
        return result

    # the original pipeline: text encoder on the empty prompt per call + full UNet + head on the hooked output
    text_encoder = None
    if (root / "text_encoder" / "config.json").is_file():
        from transformers import CLIPTextConfig, CLIPTextModel

        config = CLIPTextConfig.from_dict(_read_json(root / "text_encoder" / "config.json"))
        with torch.device("meta"):
            text_encoder = CLIPTextModel(config).eval()
    captured: list[torch.Tensor] = []

    def hook(_module: torch.nn.Module, _inputs: tuple, output: Any) -> None:
        captured.append(output[0] if isinstance(output, tuple) else output)

    def run_reference() -> None:
        if text_encoder is not None:
            text_encoder(torch.zeros((1, 2), dtype=torch.long, device="meta"))
        handle = unet.up_blocks[up_block].register_forward_hook(hook)
        try:
            with torch.device("meta"):
                unet(latent, SDPOSE_TIMESTEP, encoder_hidden_states=text, class_labels=labels, return_dict=False)
        finally:
            handle.remove()
        head(captured[-1])

    result["reference_pose"] = count_flops(run_reference)
    if text_encoder is None:
        result["reference_pose"]["note"] = "text_encoder/config.json missing: text encoder not counted"
    return result


def detector_flops(pt_path: str | Path, imgsz: int = 640) -> dict[str, Any]:
    """FLOPs of the YOLO network of an ultralytics ``.pt`` on one [1,3,imgsz,imgsz] input (no NMS).

    Runs the network once on zeros (ultralytics' Detect head needs real tensors): about a second for
    yolo11n, a few for yolo11x."""
    from .detector import load_yolo

    model = load_yolo(pt_path).float().eval()  # ultralytics' head calls .item(): runs on real tensors
    return count_flops(model, torch.zeros((1, 3, int(imgsz), int(imgsz))))
