"""Export graphs: the torch modules that ``convert.export`` traces into OpenVINO IR.

``PoseGraph``       latent [N,4,h,w] (h = H/8, w = W/8 of the crop)  ->  heatmaps [N,K,2h,2w] (= H/4, W/4)
``VaeEncoderGraph`` image [N,3,H,W] RGB in [-1, 1]                   ->  latent [N,4,H/8,W/8] (mean x 0.18215)

``PoseGraph`` is ``UNet2DConditionModel.forward`` of diffusers 0.42.1 with everything that does not depend on
the latent folded into constants computed once at construction: the empty-prompt text embedding, the
timestep embedding of t=999, the class embedding of the SDPose class labels (and any addition embedding /
encoder projection, which depend only on those constants), then the UNet truncated after the up-block the
pose head reads (later up-blocks, ``conv_norm_out`` and ``conv_out`` are dropped), fused with the head.
The call order, residual bookkeeping, ``upsample_size`` handling and attention keyword arguments mirror
diffusers' forward exactly, so the traced graph computes the same numbers as the reference pipeline's
full UNet pass with a hook on ``up_blocks[up_block]``.
"""
from __future__ import annotations

import logging

import torch
from torch import nn

from .checkpoint import LATENT_SCALE, TIMESTEP

logger = logging.getLogger(__name__)

#: SDPose runs the UNet once at the last diffusion timestep (999)
SDPOSE_TIMESTEP = TIMESTEP


@torch.no_grad()
def fold_unet_constants(unet: nn.Module, encoder_hidden_states: torch.Tensor, class_labels: torch.Tensor | None,
                        timestep: int = SDPOSE_TIMESTEP) -> tuple[torch.Tensor, torch.Tensor]:
    """Compute the constant ``emb`` [1,E] and processed ``encoder_hidden_states`` [1,S,D] of one UNet pass.

    Follows ``UNet2DConditionModel.forward`` step 1 ("time") exactly, for batch 1: time projection of
    ``timestep``, ``time_embedding``, class embedding (added, or concatenated when
    ``class_embeddings_concat``), addition embedding, ``time_embed_act``; then
    ``process_encoder_hidden_states``. None of these depend on the latent, so they are graph constants.

    encoder_hidden_states: [1,S,D] text-encoder output of the empty prompt.
    class_labels: [1,C] SDPose class labels (or None when the UNet has no class embedding).
    """
    if encoder_hidden_states.dim() != 3 or encoder_hidden_states.shape[0] != 1:
        raise ValueError(f"encoder_hidden_states must be [1,S,D], got {tuple(encoder_hidden_states.shape)}")
    dtype = next(unet.parameters()).dtype
    # only the batch size (1) and dtype of the sample matter to the embedding helpers
    probe = torch.zeros((1, unet.config.in_channels, 1, 1), dtype=dtype)
    t_emb = unet.get_time_embed(sample=probe, timestep=timestep)
    emb = unet.time_embedding(t_emb, None)
    class_emb = unet.get_class_embed(sample=probe, class_labels=class_labels)
    if class_emb is not None:
        if unet.config.class_embeddings_concat:
            emb = torch.cat([emb, class_emb], dim=-1)
        else:
            emb = emb + class_emb
    aug_emb = unet.get_aug_embed(emb=emb, encoder_hidden_states=encoder_hidden_states, added_cond_kwargs={})
    if unet.config.addition_embed_type == "image_hint":
        raise ValueError("UNet addition_embed_type 'image_hint' changes the sample; it is not an SDPose UNet")
    if aug_emb is not None:
        emb = emb + aug_emb
    if unet.time_embed_act is not None:
        emb = unet.time_embed_act(emb)
    ehs = unet.process_encoder_hidden_states(encoder_hidden_states=encoder_hidden_states, added_cond_kwargs={})
    if isinstance(ehs, tuple):
        raise ValueError("UNet encoder_hid_dim_type 'ip_image_proj' needs image embeddings; not an SDPose UNet")
    return emb.detach().clone(), ehs.detach().clone()


class PoseGraph(nn.Module):
    """Latent [N,4,h,w] f32 -> heatmaps [N,K,Hh,Wh] f32: truncated UNet with folded constants + pose head.

    ``up_block`` is the index of the up-block whose output the head reads (2 for wholebody, 3 for body).
    For the SD2 UNet and a crop H x W: h = H/8, and heatmaps are H/4 x W/4 (the head upsamples x2).
    The constant embeddings are stored as batch-1 buffers and expanded to the latent's batch size inside
    the graph, so a traced IR keeps a dynamic batch dimension.
    """

    def __init__(self, unet: nn.Module, head: nn.Module, encoder_hidden_states: torch.Tensor,
                 class_labels: torch.Tensor | None, up_block: int, timestep: int = SDPOSE_TIMESTEP) -> None:
        super().__init__()
        n_up = len(unet.up_blocks)
        if not 0 <= up_block < n_up:
            raise ValueError(f"up_block={up_block} out of range: the UNet has {n_up} up-blocks")
        emb, ehs = fold_unet_constants(unet, encoder_hidden_states, class_labels, timestep)
        self.register_buffer("emb", emb, persistent=False)
        self.register_buffer("encoder_hidden_states", ehs, persistent=False)
        self.center_input_sample = bool(unet.config.center_input_sample)
        self.num_upsamplers = int(unet.num_upsamplers)
        self.num_up_blocks = n_up
        self.up_block = up_block
        self.conv_in = unet.conv_in
        self.down_blocks = unet.down_blocks
        self.mid_block = unet.mid_block
        self.up_blocks = nn.ModuleList(list(unet.up_blocks)[: up_block + 1])
        self.head = head
        self.eval()

    def forward(self, latent: torch.Tensor) -> torch.Tensor:
        """latent [N,4,h,w] (VAE mean x 0.18215) -> heatmaps [N,K,2h,2w] (crop frame, 1/4 of the input)."""
        sample = latent
        batch = sample.shape[0]
        emb = self.emb.expand(batch, -1)
        ehs = self.encoder_hidden_states.expand(batch, -1, -1)

        # mirrors UNet2DConditionModel.forward (diffusers 0.42.1); spatial size is static in the IR
        default_overall_up_factor = 2 ** self.num_upsamplers
        forward_upsample_size = any(dim % default_overall_up_factor != 0 for dim in sample.shape[-2:])
        upsample_size = None

        if self.center_input_sample:
            sample = 2 * sample - 1.0

        sample = self.conv_in(sample)

        down_block_res_samples = (sample,)
        for downsample_block in self.down_blocks:
            if getattr(downsample_block, "has_cross_attention", False):
                sample, res_samples = downsample_block(
                    hidden_states=sample, temb=emb, encoder_hidden_states=ehs, attention_mask=None,
                    cross_attention_kwargs=None, encoder_attention_mask=None)
            else:
                sample, res_samples = downsample_block(hidden_states=sample, temb=emb)
            down_block_res_samples += res_samples

        if self.mid_block is not None:
            if getattr(self.mid_block, "has_cross_attention", False):
                sample = self.mid_block(sample, emb, encoder_hidden_states=ehs, attention_mask=None,
                                        cross_attention_kwargs=None, encoder_attention_mask=None)
            else:
                sample = self.mid_block(sample, emb)

        for i, upsample_block in enumerate(self.up_blocks):
            # "final" refers to the full UNet, not the truncated one
            is_final_block = i == self.num_up_blocks - 1
            res_samples = down_block_res_samples[-len(upsample_block.resnets):]
            down_block_res_samples = down_block_res_samples[: -len(upsample_block.resnets)]
            if not is_final_block and forward_upsample_size:
                upsample_size = down_block_res_samples[-1].shape[2:]
            if getattr(upsample_block, "has_cross_attention", False):
                sample = upsample_block(
                    hidden_states=sample, temb=emb, res_hidden_states_tuple=res_samples,
                    encoder_hidden_states=ehs, cross_attention_kwargs=None, upsample_size=upsample_size,
                    attention_mask=None, encoder_attention_mask=None)
            else:
                sample = upsample_block(hidden_states=sample, temb=emb, res_hidden_states_tuple=res_samples,
                                        upsample_size=upsample_size)
        return self.head(sample)


class VaeEncoderGraph(nn.Module):
    """Image [N,3,H,W] f32 RGB in [-1, 1] -> latent [N,C,H/8,W/8] = posterior mean x ``latent_scale``.

    Only the VAE encoder and ``quant_conv`` (when the VAE uses it); the mean is the first half of the
    moments' channels, as in diffusers' ``DiagonalGaussianDistribution``. The decoder is not referenced.
    """

    def __init__(self, vae: nn.Module, latent_scale: float = LATENT_SCALE) -> None:
        super().__init__()
        self.encoder = vae.encoder
        self.quant_conv = getattr(vae, "quant_conv", None)
        self.latent_channels = int(vae.config.latent_channels)
        self.latent_scale = float(latent_scale)
        self.eval()

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """image [N,3,H,W] RGB in [-1, 1] -> latent [N,C,H/8,W/8]."""
        moments = self.encoder(image)
        if self.quant_conv is not None:
            moments = self.quant_conv(moments)
        mean = moments[:, : self.latent_channels]
        return mean * self.latent_scale
