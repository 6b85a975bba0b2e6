"""Attention token downsampling (ToDo) for the export: keys and values pooled, queries kept.

ToDo (Smith et al., 2024, "ToDo: Token Downsampling for Efficient Generation of High-Resolution Images")
shrinks the self-attention of the highest-resolution UNet levels: the tokens that keys and values are
computed from are average-pooled ``factor x factor`` on their spatial grid, while every query token is kept.
The attention matrix of such a level shrinks by ``factor**2`` and the output keeps its full resolution. The
pooling exports as one plain ``AvgPool`` op; everything else in the graph is unchanged, so a factor of 1
(no processor installed) is exactly the plain export.

Levels count UNet resolutions from the top: level L is ``down_blocks[L]`` and its mirror
``up_blocks[n - 1 - L]`` (``n`` up-blocks). For the SD2 UNet at a 1024x768 crop, level 0 sees a 128x96
latent grid (12,288 tokens), level 1 64x48 (3,072). Only self-attention (``attn1`` of each transformer
block) is changed; cross-attention attends to the two text tokens and stays as it is.

The VAE encoder has one more self-attention, in its mid-block, at the latent grid (128x96 = 12,288 tokens at a
1024x768 crop, one 512-wide head): :func:`apply_vae_token_downsampling` (``--vae-token-downsample F``) installs
the same processor there. That attention group-normalises its input first; keys and values are computed from
the pooled *normalised* tokens (the normalisation's statistics over the full grid, as the plain model's), so
the result is again the plain attention apart from the pooling.

Written here rather than taken from ``tomesd`` / the ToDo reference code: those patch diffusers' blocks at
call time and infer the grid from the token count, which the TorchScript trace cannot keep; here the grid of
each level is fixed by the static crop size, and diffusers' own ``AttnProcessor2_0`` does the attention.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from edge_runtime.errors import InputError

logger = logging.getLogger(__name__)

#: default levels when only a factor is given: the top resolution (the largest attention matrices)
DEFAULT_LEVELS = (0,)


class TokenDownsampleProcessor:
    """Self-attention with keys/values from ``factor x factor`` average-pooled tokens.

    ``grid_hw``: the (h, w) token grid of the level the attention sits in (tokens are row-major, as
    diffusers' ``Transformer2DModel`` flattens them); None for an attention that takes the 4-D feature map
    [N,C,h,w] itself (the VAE's), whose grid is its shape. Pooling uses ``ceil_mode`` so that odd grids keep
    their last row/column (partial windows average the tokens they cover). An attention with a ``group_norm``
    (the VAE's) normalises before pooling, as the plain attention normalises before its key/value projections.
    """

    def __init__(self, inner: Any, grid_hw: tuple[int, int] | None, factor: int) -> None:
        self.inner = inner
        self.grid_hw = None if grid_hw is None else (int(grid_hw[0]), int(grid_hw[1]))
        self.factor = int(factor)

    def __call__(self, attn: nn.Module, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None,
                 *args: Any, **kwargs: Any) -> torch.Tensor:
        if encoder_hidden_states is None and hidden_states.ndim in (3, 4):
            encoder_hidden_states = self._pooled_tokens(attn, hidden_states)
        return self.inner(attn, hidden_states, encoder_hidden_states, attention_mask, temb, *args, **kwargs)

    def _pooled_tokens(self, attn: nn.Module, hidden_states: torch.Tensor) -> torch.Tensor:
        """hidden_states [N,T,C] (grid ``grid_hw``) or [N,C,h,w] -> the tokens keys/values are computed from,
        [N,h'w',C] (h' = ceil(h / factor))."""
        if hidden_states.ndim == 4:
            h, w = int(hidden_states.shape[2]), int(hidden_states.shape[3])
            channels = hidden_states.shape[1]
            tokens_first = hidden_states.view(-1, channels, h * w)  # [N,C,T], as diffusers flattens it
        else:
            if self.grid_hw is None:
                raise RuntimeError("token downsampling: [N,T,C] tokens need the grid (grid_hw)")
            h, w = self.grid_hw
            tokens, channels = hidden_states.shape[1], hidden_states.shape[2]
            if tokens != h * w:
                raise RuntimeError(f"token downsampling: expected {h}x{w}={h * w} tokens, got {tokens}")
            tokens_first = hidden_states.transpose(1, 2)  # [N,C,T]
        if attn.group_norm is not None:
            tokens_first = attn.group_norm(tokens_first)
        grid = tokens_first.reshape(-1, channels, h, w)  # [N,C,h,w]
        pooled = F.avg_pool2d(grid, self.factor, stride=self.factor, ceil_mode=True)
        return pooled.flatten(2).transpose(1, 2)  # [N,h'w',C]


def level_grids(latent_hw: tuple[int, int], levels: int) -> list[tuple[int, int]]:
    """Token grid (h, w) of each UNet level for a latent of ``latent_hw``: each downsampler (3x3 conv,
    stride 2, padding 1) gives ceil(n / 2)."""
    h, w = int(latent_hw[0]), int(latent_hw[1])
    grids = []
    for _ in range(levels):
        grids.append((h, w))
        h, w = math.ceil(h / 2), math.ceil(w / 2)
    return grids


def check_factor(factor: Any, option: str = "--token-downsample") -> int:
    """Validate a token downsampling factor given as ``option``: an integer >= 1 (1 = off)."""
    if isinstance(factor, bool) or not isinstance(factor, int) or factor < 1:
        raise InputError(f"{option}: expected an integer >= 1 (1 = off), got {factor!r}")
    return factor


def check_settings(factor: Any, levels: Sequence[int] | None) -> tuple[int, tuple[int, ...]]:
    """Validate ``--token-downsample F`` and ``--levels``: (factor, sorted unique levels)."""
    factor = check_factor(factor)
    levels = DEFAULT_LEVELS if levels is None else tuple(levels)
    if not levels:
        raise InputError("--levels: expected at least one UNet level (0 = the top resolution)")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in levels):
        raise InputError(f"--levels: expected integers >= 0, got {list(levels)}")
    return factor, tuple(sorted(set(levels)))


def parse_levels(text: str) -> tuple[int, ...]:
    """'0' or '0,1' -> (0,) / (0, 1); InputError otherwise."""
    try:
        values = tuple(int(v) for v in str(text).split(",") if v.strip())
    except ValueError:
        raise InputError(f"--levels {text!r}: expected comma-separated UNet levels, e.g. 0 or 0,1") from None
    return check_settings(1, values)[1]


def apply_token_downsampling(unet: nn.Module, factor: int, levels: Sequence[int] | None,
                             latent_hw: tuple[int, int]) -> list[str]:
    """Install :class:`TokenDownsampleProcessor` on the self-attention of ``levels``; returns the names of
    the attention modules changed. ``factor`` 1 changes nothing. InputError for a level without attention
    or outside the UNet."""
    factor, levels = check_settings(factor, levels)
    if factor == 1:
        return []
    from diffusers.models.attention_processor import AttnProcessor2_0

    n_down, n_up = len(unet.down_blocks), len(unet.up_blocks)
    grids = level_grids(latent_hw, n_down)
    changed: list[str] = []
    for level in levels:
        if level >= n_down:
            raise InputError(f"--levels {level}: the UNet has {n_down} levels (0-{n_down - 1})")
        blocks = [(f"down_blocks.{level}", unet.down_blocks[level])]
        if 0 <= n_up - 1 - level < n_up:
            blocks.append((f"up_blocks.{n_up - 1 - level}", unet.up_blocks[n_up - 1 - level]))
        found = 0
        for prefix, block in blocks:
            for name, module in block.named_modules():
                if not name.endswith("attn1") or getattr(module, "is_cross_attention", True):
                    continue
                if module.group_norm is not None or module.spatial_norm is not None or module.norm_cross:
                    raise InputError(f"{prefix}.{name}: attention with group/spatial/cross norm is not supported "
                                     "by token downsampling")
                module.set_processor(TokenDownsampleProcessor(AttnProcessor2_0(), grids[level], factor))
                changed.append(f"{prefix}.{name}")
                found += 1
        if not found:
            raise InputError(f"--levels {level}: UNet level {level} ({', '.join(p for p, _ in blocks)}) has no "
                             "self-attention to downsample")
    logger.info("token downsampling x%d on %d self-attention modules at levels %s (grids %s)", factor,
                len(changed), list(levels), [grids[lv] for lv in levels])
    return changed


#: the command-line option of the VAE encoder's factor (named in errors)
VAE_OPTION = "--vae-token-downsample"


def apply_vae_token_downsampling(vae: nn.Module, factor: int) -> list[str]:
    """Install :class:`TokenDownsampleProcessor` on the self-attention of the VAE encoder's mid-block (the
    only attention of the encoder); ``vae``: the VAE or any module holding its ``encoder`` (e.g.
    :class:`convert.pose_graph.VaeEncoderGraph`). Returns the names of the attention modules changed (relative
    to ``vae``). ``factor`` 1 changes nothing. InputError when the encoder has no such attention or it uses a norm
    the processor does not handle."""
    factor = check_factor(factor, VAE_OPTION)
    if factor == 1:
        return []
    from diffusers.models.attention_processor import AttnProcessor2_0

    mid = getattr(getattr(vae, "encoder", None), "mid_block", None)
    attentions = [a for a in (getattr(mid, "attentions", None) or []) if a is not None]
    if not attentions:
        raise InputError(f"{VAE_OPTION}: this VAE's encoder has no mid-block self-attention to downsample")
    changed = []
    for i, module in enumerate(attentions):
        name = f"encoder.mid_block.attentions.{i}"
        if module.spatial_norm is not None or module.norm_cross or getattr(module, "is_cross_attention", False):
            raise InputError(f"{name}: attention with spatial/cross norm is not supported by {VAE_OPTION}")
        module.set_processor(TokenDownsampleProcessor(AttnProcessor2_0(), None, factor))
        changed.append(name)
    logger.info("VAE encoder token downsampling x%d on %s", factor, ", ".join(changed))
    return changed
