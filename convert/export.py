"""``sdpose-convert export``: SDPose checkpoint folder -> self-describing OpenVINO model folder.

Writes (see the model-folder contract in DEVELOPERS.md)::

    MODELS/vae_encoder.xml   image u8 [N,H,W,3] BGR  -> latent f32 [N,4,H/8,W/8]   (kind vae_encoder)
    MODELS/pose.xml          latent f32 [N,4,H/8,W/8] -> heatmaps f32 [N,K,H/4,W/4] (kind pose)
    MODELS/vae_pose.xml      image -> heatmaps, both in one IR (optional, kind vae_pose)
    MODELS/sdpose_models.json  index: components, default_chain "split" | "fused"

Batch N is dynamic, the crop size H x W is static (default 1024 x 768). The VAE IR embeds the crop
preprocessing (u8 -> f32, BGR -> RGB, NHWC -> NCHW, x / 127.5 - 1) with OpenVINO's PrePostProcessor; the
pose IR is the UNet with its constant conditioning folded and truncated after the up-block the head reads
(``convert.pose_graph.PoseGraph``). No text encoder exists at run time. Each IR carries its metadata in
``rt_info`` (``edge_runtime.model.metadata``).

Memory: the components are converted one at a time and every torch module is released (``del`` + ``gc``)
as soon as its IR is saved; the text encoder runs once for the empty prompt and is dropped before any
tracing. Only the truncated UNet is traced.
"""
from __future__ import annotations

import argparse
import gc
import logging
import os
import time
import warnings
from importlib import metadata as importlib_metadata
from pathlib import Path
from typing import Any


from edge_runtime.errors import InputError, SDPoseError
from edge_runtime.model.codec import DEFAULT_CODEC
from edge_runtime.model.geometry import DEFAULT_PADDING, parse_size_hw
from edge_runtime.running.metrics import peak_rss_mb
from edge_runtime.model.model_info import PoseModelInfo
from edge_runtime.model.metadata import (COMPONENT_FILES, FORMAT_VERSION, INDEX_FILE, POSE_KINDS, read_index, write_index,
                                   write_metadata)

logger = logging.getLogger(__name__)

DEFAULT_INPUT_SIZE = (1024, 768)  # (H, W) crop, as SDPose
#: resolution presets (crop H, W): the model's own size, ~0.56x and ~0.25x of its per-crop work
PRESETS = {"full": (1024, 768), "balanced": (768, 576), "fast": (512, 384)}
#: the ``preset`` recorded for a size that is not one of :data:`PRESETS`
CUSTOM_PRESET = "custom"
BBOX_PADDING = DEFAULT_PADDING  # mmpose GetBBoxCenterScale, as SDPose
CODEC = dict(DEFAULT_CODEC)  # what the runtime decoder implements (edge_runtime.model.codec)
#: crop preprocessing embedded in the VAE IR (and recorded in every IR of the folder)
PREPROCESSING = {
    "input": "image", "element_type": "u8", "layout": "NHWC", "color": "BGR",
    "model_color": "RGB", "model_layout": "NCHW", "mean": 127.5, "scale": 127.5, "range": [-1.0, 1.0],
    "embedded": True, "warp": "udp_affine",
}
PRECISIONS = ("fp32", "fp16")
#: Default chain recorded in the index: "split" (vae_encoder.xml -> pose.xml) or "fused" (vae_pose.xml).
#: Measured (2026-11-25) on the 2-core Xeon dev box, full-size synthetic wholebody checkpoint, FP32 IR,
#: one 1024x768 astronaut crop, mean of 3 runs after 1 warm-up, per crop:
#:   INFERENCE_PRECISION_HINT f32:  split 14.08 s (VAE) + 15.19 s (pose) = 29.26 s, fused 31.91 s
#:   INFERENCE_PRECISION_HINT bf16: split  2.90 s (VAE) +  2.08 s (pose) =  4.98 s, fused  4.80 s
#: Fusing saves no measurable time (slower with f32; ~4 % faster with bf16, within run-to-run spread) and
#: costs a second copy of the weights on disk and in memory, so split stays the default and vae_pose.xml
#: is written only on request (``--fused``).
DEFAULT_CHAIN = "split"

_KINDS = POSE_KINDS


def parse_input_size(text: str) -> tuple[int, int]:
    """'HxW' (e.g. '1024x768') -> (H, W); InputError unless both are positive multiples of 8."""
    return parse_size_hw(text, "--input-size")


def preset_name(input_size: tuple[int, int]) -> str:
    """The preset whose crop size is ``input_size`` (H, W), else :data:`CUSTOM_PRESET`."""
    return next((name for name, size in PRESETS.items() if tuple(size) == tuple(input_size)), CUSTOM_PRESET)


def resolve_input_size(preset: str | None, input_size: tuple[int, int] | None,
                       default: tuple[int, int] = DEFAULT_INPUT_SIZE) -> tuple[int, int]:
    """Crop (H, W) from ``--preset`` and/or ``--input-size``; InputError when both are given and differ."""
    if preset is not None and preset not in PRESETS:
        raise InputError(f"--preset {preset!r} is unknown: expected one of {', '.join(PRESETS)}")
    if preset is None:
        return check_input_size(input_size if input_size is not None else default)
    size = PRESETS[preset]
    if input_size is not None and tuple(input_size) != size:
        raise InputError(f"--preset {preset} means --input-size {size[0]}x{size[1]}, but --input-size "
                         f"{input_size[0]}x{input_size[1]} was given; pass one of them")
    return size


def check_input_size(input_size: Any) -> tuple[int, int]:
    """Validate ``input_size`` (H, W) in crop px: two positive multiples of 8 (the VAE downsamples x8)."""
    try:
        h, w = (int(v) for v in input_size)
        exact = all(not isinstance(v, bool) and int(v) == v for v in input_size)
    except (TypeError, ValueError) as exc:
        raise InputError(f"input_size {input_size!r} must be two integers (H, W)") from exc
    if not exact:
        raise InputError(f"input_size {input_size!r} must be two integers (H, W)")
    if h <= 0 or w <= 0 or h % 8 or w % 8:
        raise InputError(f"input size {h}x{w} (HxW) is invalid: height and width must be positive multiples "
                         "of 8 (the VAE latent is 1/8 of the crop)")
    return h, w


def package_versions() -> dict[str, str]:
    """Versions of the packages that shaped the IR (``unknown`` when a package is not installed)."""
    versions = {}
    for name in ("torch", "diffusers", "openvino", "nncf", "sdpose-edge"):
        try:
            versions[name] = importlib_metadata.version(name)
        except importlib_metadata.PackageNotFoundError:
            versions[name] = _source_tree_version() if name == "sdpose-edge" else "unknown"
    return versions


def _source_tree_version() -> str:
    """sdpose-edge's version from pyproject.toml when running from a source tree that is not installed."""
    import tomllib

    pyproject = Path(__file__).resolve().parents[1] / "pyproject.toml"
    try:
        return str(tomllib.loads(pyproject.read_text())["project"]["version"])
    except (OSError, KeyError, tomllib.TOMLDecodeError):
        return "unknown"


def _peak_rss_gb() -> float:
    return (peak_rss_mb() or 0.0) / 1024.0


def _free() -> None:
    gc.collect()


def _save(model: Any, out_dir: Path, kind: str, compress_to_fp16: bool) -> Path:
    """Save an ``openvino.Model`` as ``out_dir/<COMPONENT_FILES[kind]>`` (+ .bin) via a temporary name, so an
    earlier IR of the same name is replaced only once the new one is completely written."""
    import openvino as ov

    final_xml = out_dir / COMPONENT_FILES[kind]
    tmp_xml = out_dir / f".{final_xml.stem}.partial.xml"
    ov.save_model(model, str(tmp_xml), compress_to_fp16=compress_to_fp16)
    os.replace(tmp_xml.with_suffix(".bin"), final_xml.with_suffix(".bin"))
    os.replace(tmp_xml, final_xml)
    return final_xml


def _name_io(model: Any, input_name: str, output_name: str) -> None:
    model.input(0).get_tensor().set_names({input_name})
    model.output(0).get_tensor().set_names({output_name})


def _convert(module: Any, example: Any, shape: list[int], input_name: str, output_name: str) -> Any:
    """Trace ``module`` with ``example`` into an ``openvino.Model``; batch made dynamic: ``shape`` = [-1, ...]."""
    import openvino as ov
    import torch

    from openvino.frontend.pytorch.ts_decoder import TorchScriptPythonDecoder

    with torch.no_grad(), warnings.catch_warnings():
        # diffusers' shape asserts/branches are constants for the static spatial size; batch stays dynamic
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        # trace once: torch's default check_trace re-runs the model twice more (time and memory at full size);
        # the result is checked against the PyTorch reference by the parity tests instead
        decoder = TorchScriptPythonDecoder(module, example_input=example, trace_kwargs={"check_trace": False})
        model = ov.convert_model(decoder, example_input=example)
        del decoder
    model.reshape({model.input(0): ov.PartialShape(shape)})
    _name_io(model, input_name, output_name)
    return model


def _add_preprocessing(model: Any) -> Any:
    """Embed the crop preprocessing: 'image' u8 [N,H,W,3] BGR -> f32 RGB NCHW in [-1, 1]."""
    import openvino as ov
    from openvino.preprocess import ColorFormat, PrePostProcessor

    ppp = PrePostProcessor(model)
    inp = ppp.input()
    inp.tensor().set_element_type(ov.Type.u8).set_layout(ov.Layout("NHWC")).set_color_format(ColorFormat.BGR)
    inp.model().set_layout(ov.Layout("NCHW"))
    inp.preprocess().convert_element_type(ov.Type.f32).convert_color(ColorFormat.RGB) \
        .mean(PREPROCESSING["mean"]).scale(PREPROCESSING["scale"])
    model = ppp.build()
    _name_io(model, "image", "latent")
    return model


def fuse_vae_pose(vae_model: Any, pose_model: Any) -> Any:
    """One ``openvino.Model`` image u8 [N,H,W,3] BGR -> heatmaps [N,K,H/4,W/4]: the VAE IR's latent feeds the
    pose IR. Both input models are consumed (their graphs are re-wired); pass freshly read copies."""
    import openvino as ov

    latent = vae_model.get_results()[0].input_value(0)
    pose_param = pose_model.get_parameters()[0]
    for target in list(pose_param.output(0).get_target_inputs()):
        target.replace_source_output(latent)
    fused = ov.Model(pose_model.get_results(), vae_model.get_parameters(), "sdpose_vae_pose")
    _name_io(fused, "image", "heatmaps")
    return fused


def _component_meta(kind: str, common: dict[str, Any]) -> dict[str, Any]:
    return dict(common, kind=kind)


def export_models(checkpoint_dir: str | Path, out_dir: str | Path, precision: str = "fp32",
                  input_size: tuple[int, int] = DEFAULT_INPUT_SIZE, fused: bool | None = None,
                  token_downsample: int = 1, token_levels: tuple[int, ...] | None = None,
                  vae_token_downsample: int = 1) -> dict[str, Path]:
    """Export an SDPose checkpoint folder into an OpenVINO model folder; returns kind -> IR path.

    checkpoint_dir: public SDPose layout (unet/, vae/, text_encoder/, tokenizer/, decoder/decoder.safetensors).
    out_dir: model folder (created); IRs of the same names are replaced, other files are kept.
    precision: "fp32" or "fp16" (weights compressed to fp16; inputs/outputs stay f32 / u8).
    input_size: crop (H, W) in px, positive multiples of 8; heatmaps are (H/4, W/4).
    fused: also write vae_pose.xml (image -> heatmaps in one IR). None = only when the measured default
        chain (:data:`DEFAULT_CHAIN`) is "fused". The index's default_chain is "fused" only when it was written
        and DEFAULT_CHAIN says so.
    token_downsample: attention token downsampling factor (1 = off) at the UNet levels ``token_levels``
        (default (0,), the top resolution); see :mod:`convert.token_downsample`.
    vae_token_downsample: the same for the VAE encoder's mid-block self-attention (1 = off).
    The folder records its ``preset`` (:func:`preset_name` of the input size), ``token_downsample`` and
    ``vae_token_downsample``.
    """
    import torch

    from .checkpoint import encode_empty_prompt, load_checkpoint
    from .token_downsample import VAE_OPTION, check_factor, check_settings

    token_downsample, token_levels = check_settings(token_downsample, token_levels)
    vae_token_downsample = check_factor(vae_token_downsample, VAE_OPTION)
    if precision not in PRECISIONS:
        raise InputError(f"precision {precision!r} is invalid: expected one of {', '.join(PRECISIONS)}")
    height, width = check_input_size(input_size)
    if fused is None:
        fused = DEFAULT_CHAIN == "fused"
    checkpoint_dir = Path(checkpoint_dir)
    if not checkpoint_dir.is_dir():
        raise InputError(f"checkpoint folder {checkpoint_dir} does not exist (expected the SDPose layout: "
                         "unet/, vae/, text_encoder/, tokenizer/, decoder/decoder.safetensors)")
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir} exists and is not a folder")
    compress = precision == "fp16"
    t_all = time.perf_counter()

    t0 = time.perf_counter()
    ckpt = load_checkpoint(checkpoint_dir)
    logger.info("loaded checkpoint %s (scheme %s, %d keypoints, head reads up_blocks.%d) in %.1f s, "
                "peak RSS %.2f GB", checkpoint_dir, ckpt.scheme, ckpt.num_keypoints, ckpt.up_block,
                time.perf_counter() - t0, _peak_rss_gb())
    out_dir.mkdir(parents=True, exist_ok=True)

    with torch.no_grad():
        text_embedding = encode_empty_prompt(ckpt).detach().clone()  # [1,2,D]
    ckpt.text_encoder = None  # the text encoder is needed only for this constant
    _free()
    common = _pose_info(ckpt, precision, (height, width), (token_downsample, token_levels),
                        vae_token_downsample).to_rt_info()
    written: dict[str, Path] = {}
    written["vae_encoder"] = _export_vae_encoder(ckpt, out_dir, common, (height, width), compress)
    written["pose"] = _export_pose(ckpt, text_embedding, out_dir, common, (height, width), compress,
                                   (token_downsample, token_levels), checkpoint_dir)
    del ckpt
    _free()
    if fused:
        written["vae_pose"] = _export_fused(written, out_dir, common, compress)
    _write_folder_index(out_dir, written, common, fused and DEFAULT_CHAIN == "fused")
    logger.info("exported %s -> %s (%s, %dx%d) in %.1f s, peak RSS %.2f GB", checkpoint_dir, out_dir, precision,
                height, width, time.perf_counter() - t_all, _peak_rss_gb())
    return written


def _pose_info(ckpt: Any, precision: str, size_hw: tuple[int, int], token: tuple[int, tuple[int, ...]],
               vae_token_downsample: int) -> PoseModelInfo:
    """The metadata every pose-chain IR of this export carries (kind set per component); ``token`` = the
    UNet's (factor, levels)."""
    from .pose_graph import LATENT_SCALE

    height, width = size_hw
    token_downsample, token_levels = token
    return PoseModelInfo(
        kind="pose", scheme=ckpt.scheme, num_keypoints=int(ckpt.num_keypoints), input_height=height,
        input_width=width, heatmap_height=height // 4, heatmap_width=width // 4, bbox_padding=BBOX_PADDING,
        codec=dict(CODEC), precision=precision, quantized=False, preset=preset_name((height, width)),
        token_downsample=token_downsample, token_downsample_levels=tuple(token_levels) if token_downsample > 1 else (),
        vae_token_downsample=vae_token_downsample,
        checkpoint_sha256=ckpt.sha256,
        extra={"format_version": FORMAT_VERSION, "latent_channels": int(ckpt.vae.config.latent_channels),
               "latent_scale": LATENT_SCALE, "preprocessing": PREPROCESSING, "versions": package_versions(),
               "unet_feature": f"up_blocks.{ckpt.up_block}", "head_layout": ckpt.head.layout})


def _export_vae_encoder(ckpt: Any, out_dir: Path, common: dict[str, Any], size_hw: tuple[int, int],
                        compress: bool) -> Path:
    """1. VAE encoder (encoder + quant_conv only), preprocessing embedded, its mid-block attention's token
    downsampling (``common["vae_token_downsample"]``) applied first; ``ckpt.vae`` is released."""
    from .pose_graph import LATENT_SCALE, VaeEncoderGraph

    t0 = time.perf_counter()
    vae_graph = VaeEncoderGraph(ckpt.vae, LATENT_SCALE)
    ckpt.vae = None  # the decoder is not needed: only vae_graph holds VAE modules now
    vae_model = vae_encoder_model(vae_graph, size_hw, int(common["vae_token_downsample"]))
    del vae_graph
    _free()
    write_metadata(vae_model, _component_meta("vae_encoder", common))
    path = _save(vae_model, out_dir, "vae_encoder", compress)
    del vae_model
    _free()
    logger.info("wrote %s in %.1f s, peak RSS %.2f GB", path, time.perf_counter() - t0, _peak_rss_gb())
    return path


def vae_encoder_model(vae_graph: Any, size_hw: tuple[int, int], vae_token_downsample: int = 1) -> Any:
    """The VAE encoder's ``openvino.Model`` (no metadata): ``vae_graph`` (a
    :class:`convert.pose_graph.VaeEncoderGraph`) with its mid-block attention's token downsampling installed,
    traced at crop ``size_hw`` (H, W), dynamic batch, the crop preprocessing embedded: image u8 [N,H,W,3] BGR ->
    latent f32 [N,4,H/8,W/8]."""
    import torch

    from .token_downsample import apply_vae_token_downsampling

    height, width = size_hw
    apply_vae_token_downsampling(vae_graph, vae_token_downsample)
    model = _convert(vae_graph, torch.zeros(1, 3, height, width), [-1, 3, height, width], "image", "latent")
    return _add_preprocessing(model)


def _export_pose(ckpt: Any, text_embedding: Any, out_dir: Path, common: dict[str, Any], size_hw: tuple[int, int],
                 compress: bool, token: tuple[int, tuple[int, ...]], checkpoint_dir: Path) -> Path:
    """2. pose: truncated UNet with folded constants + head (token downsampling ``token`` = (factor, levels)
    applied first); ``ckpt.unet`` and ``ckpt.head`` are released."""
    import torch

    from .checkpoint import class_labels
    from .pose_graph import PoseGraph
    from .token_downsample import apply_token_downsampling

    height, width = size_hw
    latent_channels = int(common["latent_channels"])
    lh, lw = height // 8, width // 8
    t0 = time.perf_counter()
    apply_token_downsampling(ckpt.unet, token[0], token[1], (lh, lw))
    pose_graph = PoseGraph(ckpt.unet, ckpt.head, text_embedding, class_labels(), ckpt.up_block)
    ckpt.unet = None  # drops the later up-blocks and conv_out: only pose_graph holds UNet modules now
    ckpt.head = None
    _free()
    pose_model = _convert(pose_graph, torch.zeros(1, latent_channels, lh, lw), [-1, latent_channels, lh, lw],
                          "latent", "heatmaps")
    del pose_graph
    _free()
    out_shape = pose_model.output(0).get_partial_shape()
    expected = [int(ckpt.num_keypoints), height // 4, width // 4]
    if out_shape.rank.get_length() != 4 or [d.get_length() for d in list(out_shape)[1:]] != expected:
        raise SDPoseError(f"pose graph output {out_shape} does not match [N,{expected[0]},{expected[1]},"
                          f"{expected[2]}] for input {height}x{width}: checkpoint {checkpoint_dir} has an "
                          "unexpected UNet/head geometry")
    write_metadata(pose_model, _component_meta("pose", common))
    path = _save(pose_model, out_dir, "pose", compress)
    del pose_model
    _free()
    logger.info("wrote %s in %.1f s, peak RSS %.2f GB", path, time.perf_counter() - t0, _peak_rss_gb())
    return path


def _export_fused(written: dict[str, Path], out_dir: Path, common: dict[str, Any], compress: bool) -> Path:
    """3. the fused IR, stitched from the two saved IRs (no second trace)."""
    import openvino as ov

    t0 = time.perf_counter()
    core = ov.Core()
    fused_model = fuse_vae_pose(core.read_model(str(written["vae_encoder"])), core.read_model(str(written["pose"])))
    write_metadata(fused_model, _component_meta("vae_pose", common))
    path = _save(fused_model, out_dir, "vae_pose", compress)
    del fused_model
    _free()
    logger.info("wrote %s in %.1f s", path, time.perf_counter() - t0)
    return path


def _write_folder_index(out_dir: Path, written: dict[str, Path], common: dict[str, Any], use_fused: bool) -> None:
    """Write ``sdpose_models.json``: the components of this export, plus unrelated components (e.g. a
    detector) that an earlier index listed; a stale vae_pose from an earlier export is dropped."""
    components: dict[str, str] = {}
    index_path = out_dir / INDEX_FILE
    if index_path.is_file():
        try:
            previous = read_index(out_dir)
        except SDPoseError as exc:
            logger.warning("replacing unreadable index %s (%s)", index_path, exc)
            previous = {"components": {}}
        components = {k: v for k, v in previous["components"].items() if k not in _KINDS}
        index_path.unlink()
    components.update({kind: path.name for kind, path in written.items()})
    stale = out_dir / COMPONENT_FILES["vae_pose"]
    if "vae_pose" not in written and stale.is_file():
        logger.warning("%s is left from an earlier export and is not listed in the index", stale)
    write_index(out_dir, {
        "components": components,
        "default_chain": "fused" if use_fused else "split",
        "scheme": common["scheme"],
        "num_keypoints": common["num_keypoints"],
        "input_width": common["input_width"],
        "input_height": common["input_height"],
        "precision": common["precision"],
        "preset": common["preset"],
        "token_downsample": common["token_downsample"],
        "vae_token_downsample": common["vae_token_downsample"],
        "quantized": False,
        "checkpoint_sha256": common["checkpoint_sha256"],
    })


def _levels_arg(text: str) -> tuple[int, ...]:
    from .token_downsample import parse_levels

    try:
        return parse_levels(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def add_variant_arguments(parser: argparse.ArgumentParser) -> None:
    """``--preset``, ``--token-downsample``, ``--levels`` and ``--vae-token-downsample`` (shared by ``export``
    and ``convert``)."""
    sizes = ", ".join(f"{k} {h}x{w}" for k, (h, w) in PRESETS.items())
    parser.add_argument("--preset", choices=list(PRESETS), default=None,
                        help=f"crop-size preset ({sizes}); the same as the matching --input-size")
    parser.add_argument("--token-downsample", type=int, default=1, metavar="F",
                        help="pool attention keys/values FxF at the UNet levels --levels (1 = off)")
    parser.add_argument("--levels", "--token-downsample-levels", dest="levels", type=_levels_arg, default=None,
                        metavar="L[,L]", help="UNet levels for --token-downsample (0 = top resolution; default 0)")
    parser.add_argument("--vae-token-downsample", type=int, default=1, metavar="F",
                        help="pool keys/values FxF in the VAE encoder's mid-block self-attention (1 = off)")


def _input_size_arg(text: str) -> tuple[int, int]:
    try:
        return parse_input_size(text)
    except InputError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    """``sdpose-convert export`` entry point; returns the exit code."""
    written = export_models(args.checkpoint, args.out, precision=args.precision,
                            input_size=resolve_input_size(args.preset, args.input_size), fused=args.fused,
                            token_downsample=args.token_downsample, token_levels=args.levels,
                            vae_token_downsample=args.vae_token_downsample)
    for kind, path in written.items():
        logger.info("%s: %s", kind, path)
    logger.info("model folder ready: %s", Path(args.out) / INDEX_FILE)
    return 0


def register(subparsers: Any, name: str = "export") -> None:
    """Add the ``export`` sub-command to ``sdpose-convert``."""
    parser = subparsers.add_parser(name, help="export a SDPose checkpoint into an OpenVINO model folder",
                                   description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", required=True, type=Path, help="SDPose checkpoint folder (public layout)")
    parser.add_argument("--out", required=True, type=Path, help="model folder to write")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp32", help="IR weight precision")
    parser.add_argument("--input-size", type=_input_size_arg, default=None, metavar="HxW",
                        help="crop size, multiples of 8 (default 1024x768)")
    add_variant_arguments(parser)
    parser.add_argument("--fused", action=argparse.BooleanOptionalAction, default=None,
                        help="also write vae_pose.xml (image -> heatmaps in one IR); default: only when "
                             "the measured default chain is 'fused'")
    parser.set_defaults(func=run)
