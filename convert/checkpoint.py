"""Load a SDPose checkpoint folder (public layout) into torch modules.

Layout (what the public SDPose app loads with plain diffusers/transformers ``from_pretrained`` calls)::

    CKPT/unet/            UNet2DConditionModel (class_embed_type="projection", projection dim 4)
    CKPT/vae/             AutoencoderKL
    CKPT/text_encoder/    CLIPTextModel
    CKPT/tokenizer/       CLIPTokenizer
    CKPT/scheduler/       DDPMScheduler config (prediction_type "sample"); not needed for inference
    CKPT/decoder/decoder.safetensors   mmpose HeatmapHead state dict
    CKPT/yolo11*.pt       optional ultralytics person detector

The scheme is detected from the head: ``final_layer`` has 133 output channels (wholebody, reads
``up_blocks[2]``) or 17 (body, reads ``up_blocks[3]``), and the head's input channels must equal the output
channels of that UNet up-block. Everything that can be checked from small files (folders, configs, the head)
is checked before the large weights are read, so a bad folder fails fast with a :class:`CheckpointError`.
"""
from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from convert.head import SCHEMES, HeadError, HeatmapHead, infer_head_config, scheme_for_keypoints
from edge_runtime.errors import SDPoseError

logger = logging.getLogger(__name__)

#: the scale SD2's VAE latents are multiplied by (SDPose ``rgb_latent_scale_factor``)
LATENT_SCALE = 0.18215
#: the single diffusion timestep SDPose runs
TIMESTEP = 999

#: component folder -> accepted weight files (any one of them)
_WEIGHT_FILES = {
    "unet": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
             "diffusion_pytorch_model.safetensors.index.json", "diffusion_pytorch_model.bin.index.json"),
    "vae": ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
            "diffusion_pytorch_model.safetensors.index.json"),
    "text_encoder": ("model.safetensors", "pytorch_model.bin", "model.safetensors.index.json",
                     "pytorch_model.bin.index.json"),
}
_TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.json",))
DECODER_FILE = Path("decoder") / "decoder.safetensors"
#: folders whose files enter the checkpoint hash
_HASHED_FOLDERS = ("unet", "vae", "text_encoder", "tokenizer", "scheduler", "decoder")
_MB = 1 << 20


class CheckpointError(SDPoseError):
    """The checkpoint folder is missing a folder/file/key, or a weight has the wrong shape."""


@dataclass
class SDPoseCheckpoint:
    """A loaded checkpoint; every module is in eval mode on CPU.

    ``text_encoder``/``tokenizer`` are None when loaded with ``load_text_encoder=False``.
    ``up_block`` is the index of the UNet up-block whose output [N,C,H/8,W/8] the head reads.
    ``sha256`` is :func:`checkpoint_sha256` of the folder. ``detector_path`` is a ``yolo11*.pt`` beside the
    components, or None.
    """

    path: Path
    unet: Any
    vae: Any
    text_encoder: Any
    tokenizer: Any
    head: HeatmapHead
    scheme: str
    num_keypoints: int
    up_block: int
    sha256: str
    detector_path: Path | None

    @property
    def feature_channels(self) -> int:
        """Channels of the UNet feature the head reads (= head input channels)."""
        return self.head.in_channels


def class_labels(batch: int = 1) -> torch.Tensor:
    """SDPose's task embedding [batch,4] float32: [sin 1, sin 0, cos 1, cos 0] per row."""
    task = torch.tensor([[1.0, 0.0]], dtype=torch.float32)
    return torch.cat([torch.sin(task), torch.cos(task)], dim=-1).repeat(batch, 1)


def encode_empty_prompt(ckpt: SDPoseCheckpoint) -> torch.Tensor:
    """CLIP embedding of the empty prompt, [1,2,D]: tokenizer("", padding="do_not_pad") -> [BOS, EOS]
    -> ``text_encoder(ids)[0]`` (last hidden state), exactly as SDPose's ``encode_empty_text``."""
    if ckpt.text_encoder is None or ckpt.tokenizer is None:
        raise CheckpointError(f"{ckpt.path}: the text encoder was not loaded "
                              "(load_checkpoint(..., load_text_encoder=True) is needed to encode the prompt)")
    ids = ckpt.tokenizer("", padding="do_not_pad", max_length=ckpt.tokenizer.model_max_length,
                         truncation=True, return_tensors="pt").input_ids
    with torch.no_grad():
        return ckpt.text_encoder(ids)[0]


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except FileNotFoundError as exc:
        raise CheckpointError(f"missing file {path}") from exc
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"cannot read {path} as JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data


def check_layout(path: Path, *, load_text_encoder: bool = True) -> None:
    """Raise CheckpointError naming the first missing folder or file of the public layout."""
    if not path.is_dir():
        raise CheckpointError(f"checkpoint folder {path} does not exist or is not a directory")
    folders = ["unet", "vae"] + (["text_encoder", "tokenizer"] if load_text_encoder else [])
    for folder in folders:
        if not (path / folder).is_dir():
            raise CheckpointError(f"{path}: missing folder '{folder}/' (expected the public SDPose layout: "
                                  "unet/, vae/, text_encoder/, tokenizer/, scheduler/, decoder/)")
    for folder, names in _WEIGHT_FILES.items():
        if folder not in folders:
            continue
        if not (path / folder / "config.json").is_file():
            raise CheckpointError(f"missing file {path / folder / 'config.json'}")
        if not any((path / folder / n).is_file() for n in names):
            raise CheckpointError(f"{path / folder}: no weight file; expected one of {', '.join(names)}")
    if load_text_encoder and not any(all((path / "tokenizer" / n).is_file() for n in group)
                                     for group in _TOKENIZER_FILES):
        raise CheckpointError(f"{path / 'tokenizer'}: expected vocab.json + merges.txt (or tokenizer.json)")
    if not (path / DECODER_FILE).is_file():
        raise CheckpointError(f"missing file {path / DECODER_FILE} (the mmpose HeatmapHead weights)")


def checkpoint_sha256(path: str | Path) -> str:
    """Stable, fast fingerprint (hex sha256) of a checkpoint folder's weights and configs.

    Hashes, for every file under unet/, vae/, text_encoder/, tokenizer/, scheduler/, decoder/ (sorted by
    relative path): the relative path, the size in bytes, and either the whole content (files up to 4 MB:
    configs, tokenizer files, decoder.safetensors) or the first and last MB (large weight files). A
    safetensors file starts with its JSON header (every key, dtype, shape and offset), so this catches any
    change of architecture; a change confined to the middle of a large weight file is not detected. Takes
    well under a second on the 3.4 GB SD2 checkpoint.
    """
    root = Path(path)
    digest = hashlib.sha256()
    for folder in _HASHED_FOLDERS:
        base = root / folder
        if not base.is_dir():
            continue
        for file in sorted(p for p in base.rglob("*") if p.is_file()):
            rel = file.relative_to(root).as_posix()
            size = file.stat().st_size
            digest.update(f"{rel}\0{size}\0".encode())
            with open(file, "rb") as fh:
                if size <= 4 * _MB:
                    digest.update(hashlib.sha256(fh.read()).digest())
                else:
                    digest.update(hashlib.sha256(fh.read(_MB)).digest())
                    fh.seek(size - _MB)
                    digest.update(hashlib.sha256(fh.read(_MB)).digest())
    return digest.hexdigest()


def find_detector(path: Path) -> Path | None:
    """The ``yolo11*.pt`` the converter converts (largest variant first: the release ships yolo11x.pt), or None.
    One rule for the converter and the bench: :func:`convert.detector.find_detector_checkpoint`."""
    from convert.detector import find_detector_checkpoint

    found = find_detector_checkpoint(path)
    if found is not None and len(list(path.glob("yolo11*.pt"))) > 1:
        logger.info("several detectors in %s, using %s", path, found.name)
    return found


def unet_up_block_channels(unet_config: dict, config_path: Path | str = "unet/config.json") -> list[int]:
    """Output channels of each UNet up-block [len(block_out_channels)] (diffusers: reversed block_out)."""
    channels = unet_config.get("block_out_channels")
    if not isinstance(channels, list) or not channels:
        raise CheckpointError(f"{config_path}: 'block_out_channels' missing or empty")
    return [int(c) for c in reversed(channels)]


def load_head(path: Path, up_channels: list[int]) -> tuple[HeatmapHead, str]:
    """Load ``decoder/decoder.safetensors`` strictly and detect the scheme.

    Returns (head in eval mode, scheme). Raises CheckpointError if a key is missing, a shape is wrong, the
    keypoint count is neither 133 nor 17, or the head's input channels differ from the output channels of
    the UNet up-block the scheme reads.
    """
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    file = path / DECODER_FILE
    try:
        sd = load_file(str(file))
    except (OSError, SafetensorError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"cannot read {file} as safetensors: {exc}") from exc
    try:
        config = infer_head_config(sd, file)
        scheme = scheme_for_keypoints(config["out_channels"], file)
    except HeadError as exc:
        raise CheckpointError(str(exc)) from exc
    spec = SCHEMES[scheme]
    up_block = spec["up_block"]
    if up_block >= len(up_channels):
        raise CheckpointError(f"{file}: scheme '{scheme}' reads unet up_blocks[{up_block}] but "
                              f"{path / 'unet' / 'config.json'} has only {len(up_channels)} up-blocks")
    if config["in_channels"] != up_channels[up_block]:
        first_key = "deconv_layers.0.weight" if config["deconv_out_channels"] else (
            "conv_layers.0.weight" if config["conv_out_channels"] else "final_layer.weight")
        raise CheckpointError(
            f"{file}: head has {config['out_channels']} keypoints (scheme '{scheme}', reads unet "
            f"up_blocks[{up_block}] which outputs {up_channels[up_block]} channels per "
            f"{path / 'unet' / 'config.json'}) but '{first_key}' has shape {list(sd[first_key].shape)}, "
            f"i.e. {config['in_channels']} input channels; expected {up_channels[up_block]}. "
            "The decoder does not belong to this UNet/scheme.")
    try:
        head = HeatmapHead.from_state_dict(sd, file)
    except HeadError as exc:
        raise CheckpointError(str(exc)) from exc
    return head, scheme


def _from_pretrained(cls: Any, folder: Path, *, weights: bool = True, **kwargs: Any) -> Any:
    """``cls.from_pretrained(folder, local_files_only=True, **kwargs)`` with failures as CheckpointError.

    With ``weights`` (models, not tokenizers) missing or shape-mismatched weights are errors too (diffusers
    and transformers would otherwise initialise them randomly with a warning).
    """
    if weights:
        kwargs["output_loading_info"] = True
    from safetensors import SafetensorError

    try:
        loaded = cls.from_pretrained(str(folder), local_files_only=True, **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError, SafetensorError) as exc:
        raise CheckpointError(f"{folder}: {cls.__name__}.from_pretrained failed: {exc}") from exc
    if not weights:
        return loaded
    model, info = loaded
    unexpected = sorted(str(k) for k in (info.get("unexpected_keys") or []))
    if unexpected:  # e.g. the position_ids buffer older transformers saved; harmless
        logger.warning("%s: ignoring %d unexpected weights (e.g. %s)", folder, len(unexpected), unexpected[:5])
    for kind in ("missing_keys", "mismatched_keys"):
        keys = sorted(str(k) for k in (info.get(kind) or []))
        if keys:
            raise CheckpointError(f"{folder}: {cls.__name__} weights have {len(keys)} {kind.replace('_', ' ')} "
                                  f"(e.g. {keys[:5]}); the weight file does not match config.json")
    model.eval()
    return model


def load_vae(path: str | Path, torch_dtype: torch.dtype = torch.float32) -> Any:
    """Only the VAE (``AutoencoderKL``) of the checkpoint folder ``path``, on CPU in eval mode; CheckpointError
    naming the folder when it is missing or its weights do not match."""
    from diffusers import AutoencoderKL

    return _from_pretrained(AutoencoderKL, Path(path).expanduser().resolve() / "vae", torch_dtype=torch_dtype)


def load_checkpoint(path: str | Path, *, load_text_encoder: bool = True,
                    torch_dtype: torch.dtype = torch.float32) -> SDPoseCheckpoint:
    """Load a SDPose checkpoint folder (public layout) on CPU in eval mode.

    Args:
        path: the checkpoint folder (unet/, vae/, text_encoder/, tokenizer/, decoder/decoder.safetensors).
        load_text_encoder: also load text_encoder/ and tokenizer/ (needed for the empty-prompt embedding).
        torch_dtype: dtype of UNet, VAE and text encoder (the head stays float32).
    Raises:
        CheckpointError naming the folder/file/key and expected vs actual shapes.
    """
    from diffusers import UNet2DConditionModel

    root = Path(path).expanduser().resolve()
    check_layout(root, load_text_encoder=load_text_encoder)
    unet_config_path = root / "unet" / "config.json"
    unet_config = _read_json(unet_config_path)
    up_channels = unet_up_block_channels(unet_config, unet_config_path)
    head, scheme = load_head(root, up_channels)
    spec = SCHEMES[scheme]

    scheduler_config = root / "scheduler" / "scheduler_config.json"
    if scheduler_config.is_file():
        prediction = _read_json(scheduler_config).get("prediction_type")
        if prediction != "sample":
            logger.warning("%s: prediction_type is %r; SDPose runs x0 prediction ('sample')",
                           scheduler_config, prediction)

    for key, value in (("class_embed_type", "projection"), ("projection_class_embeddings_input_dim", 4)):
        if unet_config.get(key) not in (None, value):
            raise CheckpointError(f"{unet_config_path}: '{key}' is {unet_config.get(key)!r}; "
                                  f"SDPose needs {value!r}")
    logger.info("loading %s (scheme %s, %d keypoints, head reads unet up_blocks[%d])",
                root, scheme, spec["num_keypoints"], spec["up_block"])
    unet = _from_pretrained(UNet2DConditionModel, root / "unet", class_embed_type="projection",
                            projection_class_embeddings_input_dim=4, torch_dtype=torch_dtype)
    if getattr(unet, "class_embedding", None) is None:
        raise CheckpointError(f"{root / 'unet'}: the loaded UNet has no class embedding")
    vae = load_vae(root, torch_dtype=torch_dtype)
    text_encoder = tokenizer = None
    if load_text_encoder:
        from transformers import CLIPTextModel, CLIPTokenizer

        text_encoder = _from_pretrained(CLIPTextModel, root / "text_encoder", dtype=torch_dtype)
        tokenizer = _from_pretrained(CLIPTokenizer, root / "tokenizer", weights=False)
        ids = tokenizer("", padding="do_not_pad").input_ids
        if len(ids) != 2 or ids[0] != tokenizer.bos_token_id or ids[1] != tokenizer.eos_token_id:
            raise CheckpointError(f"{root / 'tokenizer'}: the empty prompt encodes to {ids}, expected "
                                  f"[BOS, EOS] = [{tokenizer.bos_token_id}, {tokenizer.eos_token_id}]")
        hidden = int(text_encoder.config.hidden_size)
        cross = unet.config.cross_attention_dim
        cross = cross if isinstance(cross, int) else int(cross[0])
        if hidden != cross:
            raise CheckpointError(f"{root / 'text_encoder'}: hidden_size {hidden} differs from the UNet's "
                                  f"cross_attention_dim {cross} ({unet_config_path})")
    return SDPoseCheckpoint(path=root, unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                            head=head, scheme=scheme, num_keypoints=spec["num_keypoints"],
                            up_block=spec["up_block"], sha256=checkpoint_sha256(root),
                            detector_path=find_detector(root))

