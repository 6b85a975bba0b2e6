"""Torch re-implementation of the ``HeatmapHead`` that SDPose's decoder is, in both of its layouts.

mmpose cannot be installed here (mmcv does not build), so the head is rebuilt from plain torch layers with
the *same module names*, hence the same state-dict keys, as mmpose's ``HeatmapHead``. Two layouts exist:

``instance`` -- the **released** SDPose-Wholebody / SDPose-Body decoders. SDPose-OOD bundles a fork of
mmpose (the Sapiens fork, ``mmpose/version.py`` 1.0.0) whose ``HeatmapHead`` defaults to ``use_silu=True``:
each block is conv -> ``InstanceNorm2d(C)`` (PyTorch defaults: affine=False, track_running_stats=False,
eps 1e-5, so it normalises every crop with that crop's own per-channel H,W statistics, in eval mode too)
-> ``SiLU``. The norm has no parameters, so ``decoder.safetensors`` holds only five keys:
``deconv_layers.0.weight``, ``conv_layers.0.{weight,bias}``, ``final_layer.{weight,bias}``.

``batchnorm`` -- stock mmpose 1.x (``use_silu`` absent): conv -> ``BatchNorm2d`` -> ``ReLU``, with the
BatchNorm's ``*.1.{weight,bias,running_mean,running_var[,num_batches_tracked]}`` keys.

=================  =====================================================================================
key prefix         layer (mmpose ``_make_deconv_layers`` / ``_make_conv_layers`` / ``final_layer``)
=================  =====================================================================================
deconv_layers.0    ``ConvTranspose2d(in, d, kernel 4, stride 2, padding 1, output_padding 0, bias=False)``
deconv_layers.1    ``InstanceNorm2d(d)`` (instance) or ``BatchNorm2d(d)`` (batchnorm; eps 1e-5)
deconv_layers.2    ``SiLU`` (instance) or ``ReLU`` (batchnorm)
conv_layers.0      ``Conv2d(d, c, kernel 1, stride 1, padding 0, bias=True)``
conv_layers.1      ``InstanceNorm2d(c)`` or ``BatchNorm2d(c)``
conv_layers.2      ``SiLU`` or ``ReLU``
final_layer        ``Conv2d(c, K, kernel 1, bias=True)``
=================  =====================================================================================

The layout is read from the keys (:func:`detect_head_layout`); any other key set is refused with an error
that names the file, the keys found and both accepted layouts -- never a silent partial load (a non-strict
load of the released file into a BatchNorm head gives plausible-looking but wrong heatmaps).

SDPose-Wholebody: in 640 (``up_blocks[2]`` of the SD2 UNet, 1/8 of the crop), deconv (640,), conv (640,),
K = 133. SDPose-Body: in 320 (``up_blocks[3]``, also 1/8 because the last up-block has no upsampler),
(320,), (320,), K = 17. ``forward``: features [N,C,H/8,W/8] -> heatmaps [N,K,H/4,W/4].
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

from edge_runtime.errors import SDPoseError

#: scheme -> keypoint count, head input channels in the real SD2 UNet, index of the up-block the head reads
SCHEMES = {
    "wholebody": dict(num_keypoints=133, in_channels=640, up_block=2),
    "body": dict(num_keypoints=17, in_channels=320, up_block=3),
}

#: deconvolution kernel -> (padding, output_padding), as in mmpose ``HeatmapHead._make_deconv_layers``
_DECONV_PADDING = {4: (1, 0), 3: (1, 1), 2: (0, 0)}

#: head layout -> what each conv block's norm and activation are
HEAD_LAYOUTS = {
    "instance": "released SDPose decoder (SDPose-OOD's mmpose fork, use_silu=True): InstanceNorm2d + SiLU, "
                "no norm keys",
    "batchnorm": "stock mmpose HeatmapHead: BatchNorm2d + ReLU, with '*.1.*' BatchNorm keys",
}
#: the layout of the released checkpoints, used by everything that imitates one
DEFAULT_HEAD_LAYOUT = "instance"
#: keys of a BatchNorm2d's state dict (``num_batches_tracked`` is a training counter, tolerated when absent)
_BN_KEYS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


class HeadError(SDPoseError):
    """The head state dict (``decoder/decoder.safetensors``) does not describe a SDPose HeatmapHead."""


def scheme_for_keypoints(num_keypoints: int, path: str | Path = "decoder/decoder.safetensors") -> str:
    """Scheme name for a keypoint count (133 -> "wholebody", 17 -> "body"); HeadError otherwise."""
    for name, spec in SCHEMES.items():
        if spec["num_keypoints"] == num_keypoints:
            return name
    expected = ", ".join(f"{s['num_keypoints']} ({n})" for n, s in SCHEMES.items())
    raise HeadError(f"{path}: final_layer.weight has {num_keypoints} output channels (keypoints); "
                    f"expected one of {expected}")


class HeatmapHead(nn.Module):
    """mmpose ``HeatmapHead`` (deconv -> conv -> final 1x1) with mmpose's state-dict keys.

    Args:
        in_channels: channels C of the input feature map [N,C,h,w].
        out_channels: keypoints K (heatmap channels).
        deconv_out_channels: output channels of each deconv block (each doubles h and w).
        deconv_kernel_sizes: kernel of each deconv block (4, 3 or 2 as in mmpose).
        conv_out_channels: output channels of each intermediate conv block.
        conv_kernel_sizes: kernel of each intermediate conv block (padding (k-1)//2).
        layout: "instance" (released SDPose: InstanceNorm2d + SiLU) or "batchnorm" (stock mmpose: BatchNorm2d
            + ReLU); see :data:`HEAD_LAYOUTS`.
    """

    def __init__(self, in_channels: int, out_channels: int,
                 deconv_out_channels: Sequence[int] = (640,), deconv_kernel_sizes: Sequence[int] = (4,),
                 conv_out_channels: Sequence[int] = (640,), conv_kernel_sizes: Sequence[int] = (1,),
                 layout: str = DEFAULT_HEAD_LAYOUT):
        super().__init__()
        if layout not in HEAD_LAYOUTS:
            raise ValueError(f"head layout must be one of {sorted(HEAD_LAYOUTS)}, got {layout!r}")
        self.layout = layout
        if len(deconv_out_channels) != len(deconv_kernel_sizes):
            raise ValueError(f"deconv_out_channels {tuple(deconv_out_channels)} and deconv_kernel_sizes "
                             f"{tuple(deconv_kernel_sizes)} must have the same length")
        if len(conv_out_channels) != len(conv_kernel_sizes):
            raise ValueError(f"conv_out_channels {tuple(conv_out_channels)} and conv_kernel_sizes "
                             f"{tuple(conv_kernel_sizes)} must have the same length")
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.deconv_out_channels = tuple(int(c) for c in deconv_out_channels)
        self.deconv_kernel_sizes = tuple(int(k) for k in deconv_kernel_sizes)
        self.conv_out_channels = tuple(int(c) for c in conv_out_channels)
        self.conv_kernel_sizes = tuple(int(k) for k in conv_kernel_sizes)

        channels = self.in_channels
        layers: list[nn.Module] = []
        for out_ch, kernel in zip(self.deconv_out_channels, self.deconv_kernel_sizes):
            if kernel not in _DECONV_PADDING:
                raise ValueError(f"unsupported deconv kernel size {kernel}; expected one of "
                                 f"{sorted(_DECONV_PADDING)}")
            padding, output_padding = _DECONV_PADDING[kernel]
            layers += [nn.ConvTranspose2d(channels, out_ch, kernel_size=kernel, stride=2, padding=padding,
                                          output_padding=output_padding, bias=False),
                       *self._norm_act(out_ch)]
            channels = out_ch
        self.deconv_layers = nn.Sequential(*layers) if layers else nn.Identity()

        layers = []
        for out_ch, kernel in zip(self.conv_out_channels, self.conv_kernel_sizes):
            layers += [nn.Conv2d(channels, out_ch, kernel_size=kernel, stride=1, padding=(kernel - 1) // 2),
                       *self._norm_act(out_ch)]
            channels = out_ch
        self.conv_layers = nn.Sequential(*layers) if layers else nn.Identity()

        self.final_layer = nn.Conv2d(channels, self.out_channels, kernel_size=1)

    def _norm_act(self, channels: int) -> tuple[nn.Module, nn.Module]:
        """The norm and activation after each conv block, as the layout's mmpose builds them."""
        if self.layout == "instance":
            # SDPose-OOD's fork: nn.InstanceNorm2d(C) with PyTorch defaults (affine=False, no running stats)
            return nn.InstanceNorm2d(channels), nn.SiLU(inplace=True)
        return nn.BatchNorm2d(channels), nn.ReLU(inplace=True)

    def forward(self, feats: torch.Tensor | Sequence[torch.Tensor]) -> torch.Tensor:
        """features [N,C,h,w] (or a tuple/list whose last item is that, as mmpose's 'select' input_index=-1)
        -> heatmaps [N,K,h*2^len(deconv),w*2^len(deconv)]."""
        x = feats[-1] if isinstance(feats, (tuple, list)) else feats
        x = self.deconv_layers(x)
        x = self.conv_layers(x)
        return self.final_layer(x)

    @property
    def scheme(self) -> str:
        """"wholebody" or "body", from the keypoint count (HeadError for any other count)."""
        return scheme_for_keypoints(self.out_channels)

    @staticmethod
    def expected_shapes(in_channels: int, out_channels: int, deconv_out_channels: Sequence[int],
                        deconv_kernel_sizes: Sequence[int], conv_out_channels: Sequence[int],
                        conv_kernel_sizes: Sequence[int],
                        layout: str = DEFAULT_HEAD_LAYOUT) -> dict[str, tuple[int, ...]]:
        """key -> shape of every state-dict entry of a head with this configuration (incl. BN buffers in the
        batchnorm layout; the instance layout's norms have no entries)."""
        shapes: dict[str, tuple[int, ...]] = {}
        ch = in_channels
        for i, (out_ch, k) in enumerate(zip(deconv_out_channels, deconv_kernel_sizes)):
            shapes[f"deconv_layers.{3 * i}.weight"] = (ch, out_ch, k, k)
            if layout == "batchnorm":
                shapes.update(_bn_shapes(f"deconv_layers.{3 * i + 1}", out_ch))
            ch = out_ch
        for i, (out_ch, k) in enumerate(zip(conv_out_channels, conv_kernel_sizes)):
            shapes[f"conv_layers.{3 * i}.weight"] = (out_ch, ch, k, k)
            shapes[f"conv_layers.{3 * i}.bias"] = (out_ch,)
            if layout == "batchnorm":
                shapes.update(_bn_shapes(f"conv_layers.{3 * i + 1}", out_ch))
            ch = out_ch
        shapes["final_layer.weight"] = (out_channels, ch, 1, 1)
        shapes["final_layer.bias"] = (out_channels,)
        return shapes

    @classmethod
    def from_state_dict(cls, sd: Mapping[str, torch.Tensor],
                        path: str | Path = "decoder/decoder.safetensors") -> "HeatmapHead":
        """Build a head whose configuration and layout are inferred from ``sd`` and load it strictly.

        Every key and shape is checked here first so that a bad file gives a HeadError naming ``path``,
        the key, the expected vs actual shape and the accepted layouts instead of torch's load_state_dict
        traceback. ``num_batches_tracked`` buffers (training-only counters) are filled with 0 when absent.
        """
        config = infer_head_config(sd, path)
        config["layout"] = detect_head_layout(sd, path)
        expected = cls.expected_shapes(**config)
        for key, shape in expected.items():
            if key.endswith("num_batches_tracked"):
                continue
            if key not in sd:
                raise HeadError(f"{path}: missing key '{key}' (expected shape {list(shape)}); "
                                f"{_layouts_help(sd, config)}")
            actual = tuple(sd[key].shape)
            if actual != shape:
                raise HeadError(f"{path}: key '{key}' has shape {list(actual)}, expected {list(shape)}")
        unexpected = sorted(set(sd) - set(expected))
        if unexpected:
            raise HeadError(f"{path}: unexpected keys {unexpected[:8]}{' ...' if len(unexpected) > 8 else ''}; "
                            f"{_layouts_help(sd, config)}")
        state = {k: v for k, v in sd.items()}
        for key in expected:
            if key.endswith("num_batches_tracked") and key not in state:
                state[key] = torch.tensor(0, dtype=torch.long)
        head = cls(**config)
        head.load_state_dict(state, strict=True)
        head.eval()
        return head


def _bn_shapes(prefix: str, channels: int) -> dict[str, tuple[int, ...]]:
    return {f"{prefix}.{name}": (() if name == "num_batches_tracked" else (channels,)) for name in _BN_KEYS}


def _norm_prefixes(config: Mapping) -> list[str]:
    """State-dict prefixes of the norm layer after each conv block ('deconv_layers.1', 'conv_layers.1', ...)."""
    return ([f"deconv_layers.{3 * i + 1}" for i in range(len(config["deconv_out_channels"]))]
            + [f"conv_layers.{3 * i + 1}" for i in range(len(config["conv_out_channels"]))])


def _layouts_help(sd: Mapping[str, torch.Tensor], config: Mapping) -> str:
    """'found keys [...]; accepted layouts: instance (...): [keys]; batchnorm (...): [keys]' for errors."""
    shape_args = {k: v for k, v in config.items() if k != "layout"}
    accepted = "; ".join(
        f"'{name}' = {text}: {sorted(HeatmapHead.expected_shapes(**shape_args, layout=name))}"
        for name, text in HEAD_LAYOUTS.items())
    return f"found keys {sorted(sd)}; the accepted layouts are {accepted}"


def detect_head_layout(sd: Mapping[str, torch.Tensor], path: str | Path = "decoder/decoder.safetensors") -> str:
    """"instance" when the state dict has no norm keys (the released SDPose decoder), "batchnorm" when the
    norm positions hold BatchNorm keys (stock mmpose). Keys at a norm position that are not BatchNorm keys
    raise a HeadError naming ``path``, the keys found and both accepted layouts; missing BatchNorm keys are
    reported by :meth:`HeatmapHead.from_state_dict`'s strict check (with the same explanation)."""
    config = infer_head_config(sd, path)
    prefixes = _norm_prefixes(config)
    norm_keys = sorted(k for k in sd if any(k.startswith(p + ".") for p in prefixes))
    if not norm_keys:
        return "instance"
    odd = [k for k in norm_keys if k.rsplit(".", 1)[1] not in _BN_KEYS]
    if odd:
        raise HeadError(f"{path}: keys {odd} at a norm position are not BatchNorm2d entries; "
                        f"{_layouts_help(sd, config)}")
    return "batchnorm"


def _layer_indices(sd: Mapping[str, torch.Tensor], group: str) -> list[int]:
    """Indices i of '<group>.<i>.weight' entries with a 4-D weight (the conv layers of an nn.Sequential)."""
    found = set()
    for key, value in sd.items():
        parts = key.split(".")
        if len(parts) == 3 and parts[0] == group and parts[2] == "weight" and parts[1].isdigit() \
                and value.dim() == 4:
            found.add(int(parts[1]))
    return sorted(found)


def infer_head_config(sd: Mapping[str, torch.Tensor],
                      path: str | Path = "decoder/decoder.safetensors") -> dict:
    """HeatmapHead constructor arguments read from the weight shapes of a state dict.

    Returns dict(in_channels, out_channels, deconv_out_channels, deconv_kernel_sizes, conv_out_channels,
    conv_kernel_sizes). Raises HeadError (naming ``path`` and the key) when the layout is not a HeatmapHead.
    """
    for key in ("final_layer.weight", "final_layer.bias"):
        if key not in sd:
            raise HeadError(f"{path}: missing key '{key}'; found keys {sorted(sd)[:8]} "
                            "(expected a mmpose HeatmapHead state dict)")
    final = sd["final_layer.weight"]
    if final.dim() != 4 or tuple(final.shape[2:]) != (1, 1):
        raise HeadError(f"{path}: key 'final_layer.weight' has shape {list(final.shape)}, "
                        "expected [K, C, 1, 1]")
    deconv_idx = _layer_indices(sd, "deconv_layers")
    conv_idx = _layer_indices(sd, "conv_layers")
    for group, idx in (("deconv_layers", deconv_idx), ("conv_layers", conv_idx)):
        if idx != [3 * i for i in range(len(idx))]:
            raise HeadError(f"{path}: {group} weights at indices {idx}; expected 0, 3, 6, ... (conv, norm, "
                            f"activation per block; found keys {sorted(sd)}; the accepted layouts are "
                            f"{'; '.join(f'{n}: {t}' for n, t in HEAD_LAYOUTS.items())})")
    if not deconv_idx and not conv_idx:
        in_channels = int(final.shape[1])
    elif deconv_idx:
        in_channels = int(sd["deconv_layers.0.weight"].shape[0])  # ConvTranspose2d: [in, out, k, k]
    else:
        in_channels = int(sd["conv_layers.0.weight"].shape[1])
    deconv_w = [sd[f"deconv_layers.{i}.weight"] for i in deconv_idx]
    conv_w = [sd[f"conv_layers.{i}.weight"] for i in conv_idx]
    for key, w in zip([f"deconv_layers.{i}.weight" for i in deconv_idx]
                      + [f"conv_layers.{i}.weight" for i in conv_idx], deconv_w + conv_w):
        if w.shape[2] != w.shape[3]:
            raise HeadError(f"{path}: key '{key}' has non-square kernel {list(w.shape)}")
    return dict(in_channels=in_channels,
                out_channels=int(final.shape[0]),
                deconv_out_channels=tuple(int(w.shape[1]) for w in deconv_w),
                deconv_kernel_sizes=tuple(int(w.shape[2]) for w in deconv_w),
                conv_out_channels=tuple(int(w.shape[0]) for w in conv_w),
                conv_kernel_sizes=tuple(int(w.shape[2]) for w in conv_w))
