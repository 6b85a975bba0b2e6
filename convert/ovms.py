"""``sdpose-convert export-ovms MODELS --out REPO``: an OpenVINO Model Server repository of a model folder.

Writes ``REPO/<model>/1/model.xml|bin`` for each component of the folder's pose chain (the IRs as they are: the
``sdpose`` rt_info travels inside model.xml) and ``REPO/config.json`` with

- ``model_config_list``: one entry per component, ``base_path`` relative to config.json, ``target_device``,
  ``nireq`` (requests in parallel) and ``plugin_config`` (``PERFORMANCE_HINT``, ``NUM_STREAMS`` if set,
  ``INFERENCE_PRECISION_HINT`` if set);
- ``pipeline_config_list``: the OVMS DAG ``sdpose`` (request ``image`` -> vae_encoder -> pose -> ``heatmaps``,
  or one ``vae_pose`` node for a fused chain), so one request carries crops in and heatmaps out, the contract
  of ``sdpose-edge run --pose-server``; and ``sdpose_keypoints`` (``<pipeline-name>_keypoints``): the same
  nodes and then ``keypoint_decoder``, a small model of its own written here (the heatmap decoder in OpenVINO
  ops, :mod:`edge_runtime.model.codec_graph`, f32), so the answer is ``keypoints`` [N,K,3] instead of 26 MB of
  heatmaps per crop (``--pose-server-model sdpose_keypoints``). The decoder is a separate model rather than an
  output of the pose IR: a pipeline node has one output, the 1.7 GB pose.bin stays a hard link, and its
  ``plugin_config`` forces f32 (a bf16 hint would move the points).

The detector stays on the edge box and is not exported. The repository is checked after writing with the
runtime's reader (:mod:`edge_runtime.serving.ovms_repo`: every DAG edge names a real tensor of its model), and
``sdpose-edge serve REPO`` serves it as OVMS would for a local check.
"""
from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import openvino as ov

from edge_runtime.errors import InputError
from edge_runtime.model.models import ModelFolder
from edge_runtime.media.outputs import write_json_atomic
from edge_runtime.serving.ovms_repo import CONFIG_NAME, read_repository, tensor_names
from edge_runtime.serving.serve import CHAIN_MODEL, DECODER_MODEL, folder_decoder

logger = logging.getLogger(__name__)

VERSION = 1


def register(subparsers: Any, name: str = "export-ovms") -> None:
    p = subparsers.add_parser(name, help="write an OpenVINO Model Server repository (config.json + versioned IRs)",
                              description=__doc__.splitlines()[0])
    p.add_argument("models", type=Path, help="model folder written by sdpose-convert export/convert")
    p.add_argument("--out", required=True, type=Path, help="repository folder to write (created; must be empty "
                                                           "unless --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing repository folder")
    p.add_argument("--chain", choices=("split", "fused"), default=None, help="default: the folder's default_chain")
    p.add_argument("--pipeline-name", default=CHAIN_MODEL, help=f"name of the DAG (default {CHAIN_MODEL}, what "
                                                                "--pose-server clients ask for)")
    p.add_argument("--device", default="CPU", help="OVMS target_device (default CPU)")
    p.add_argument("--hint", choices=("THROUGHPUT", "LATENCY", "CUMULATIVE_THROUGHPUT"), default="THROUGHPUT",
                   help="PERFORMANCE_HINT in plugin_config (default THROUGHPUT: a server runs many clients)")
    p.add_argument("--num-streams", type=int, default=None, help="NUM_STREAMS in plugin_config (default: the hint's)")
    p.add_argument("--nireq", type=int, default=None, help="infer requests per model (default: OVMS's choice)")
    p.add_argument("--precision-hint", choices=("f32", "bf16", "f16"), default=None,
                   help="INFERENCE_PRECISION_HINT in plugin_config (default: the server CPU's; for an INT8 folder on "
                        "a bf16 CPU without AMX, f32 is faster)")
    p.set_defaults(func=run)


def plugin_config(hint: str, num_streams: "int | None", precision: "str | None") -> dict[str, str]:
    config = {"PERFORMANCE_HINT": hint}
    if num_streams is not None:
        config["NUM_STREAMS"] = str(num_streams)
    if precision is not None:
        config["INFERENCE_PRECISION_HINT"] = precision
    return config


def _tensor_name(port: Any, where: str) -> str:
    try:
        return port.get_any_name()
    except RuntimeError as exc:
        raise InputError(f"{where}: a tensor without a name cannot be wired in an OVMS pipeline") from exc


def _pipeline(name: str, steps: "list[tuple[str, str, str]]") -> dict[str, Any]:
    """An OVMS DAG running ``steps`` (model name, input tensor, output tensor) one after the other."""
    nodes, source = [], ("request", steps[0][1])
    for model_name, in_name, out_name in steps:
        nodes.append({"name": f"{model_name}_node", "model_name": model_name, "type": "DL model",
                      "inputs": [{in_name: {"node_name": source[0], "data_item": source[1]}}],
                      "outputs": [{"data_item": out_name, "alias": out_name}]})
        source = (f"{model_name}_node", out_name)
    return {"name": name, "inputs": [steps[0][1]], "nodes": nodes,
            "outputs": [{source[1]: {"node_name": source[0], "data_item": source[1]}}]}


def build_config(folder: ModelFolder, pipeline_name: str, device: str, plugin: dict[str, str],
                 nireq: "int | None", decoder: Any) -> dict[str, Any]:
    """The OVMS config.json document for ``folder``'s chain and the ``decoder`` model (names of the IRs' own
    tensors): pipelines ``pipeline_name`` (crops -> heatmaps) and ``<pipeline_name>_keypoints``."""
    models = []
    for kind in (*folder.kinds, DECODER_MODEL):
        kind_plugin = dict(plugin, INFERENCE_PRECISION_HINT="f32") if kind == DECODER_MODEL else dict(plugin)
        cfg: dict[str, Any] = {"name": kind, "base_path": kind, "target_device": device, "plugin_config": kind_plugin}
        if nireq is not None:
            cfg["nireq"] = nireq
        models.append({"config": cfg})
    steps = []
    for kind in folder.kinds:
        model = folder.read_model(kind)
        steps.append((kind, _tensor_name(model.inputs[0], str(folder.ir_path(kind))),
                      _tensor_name(model.outputs[0], str(folder.ir_path(kind)))))
    decode = (DECODER_MODEL, _tensor_name(decoder.inputs[0], DECODER_MODEL),
              _tensor_name(decoder.outputs[0], DECODER_MODEL))
    return {"model_config_list": models,
            "pipeline_config_list": [_pipeline(pipeline_name, steps),
                                     _pipeline(keypoints_pipeline(pipeline_name), steps + [decode])]}


def keypoints_pipeline(pipeline_name: str) -> str:
    """Name of the crops -> keypoints pipeline beside ``pipeline_name`` (sdpose -> sdpose_keypoints)."""
    return f"{pipeline_name}_keypoints"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # the 1.7 GB pose.bin is not duplicated when REPO is on the same file system
    except OSError:
        shutil.copy2(src, dst)


def export_repository(models: Path, out: Path, chain: "str | None" = None, pipeline_name: str = CHAIN_MODEL,
                      device: str = "CPU", hint: str = "THROUGHPUT", num_streams: "int | None" = None,
                      nireq: "int | None" = None, precision: "str | None" = None, overwrite: bool = False) -> Path:
    """Write the repository; returns the path of its config.json."""
    for name, value in (("--num-streams", num_streams), ("--nireq", nireq)):
        if value is not None and (isinstance(value, bool) or value < 1):
            raise InputError(f"{name}: expected a positive integer, got {value}")
    if not pipeline_name or not pipeline_name.replace("_", "").replace("-", "").isalnum():
        raise InputError(f"--pipeline-name: expected letters, digits, '_' or '-', got {pipeline_name!r}")
    folder = ModelFolder(models, chain=chain, core=ov.Core())
    if {pipeline_name, keypoints_pipeline(pipeline_name)} & {*folder.kinds, DECODER_MODEL}:
        raise InputError(f"--pipeline-name: '{pipeline_name}' (or its _keypoints pipeline) is also a model name "
                         "of the repository")
    out = out.expanduser()
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"--out {out}: folder exists and is not empty (pass --overwrite to replace it)")
        if out.resolve() == Path(models).expanduser().resolve():
            raise InputError(f"--out {out}: is the model folder itself")
        shutil.rmtree(out)
    decoder = folder_decoder(folder)
    config = build_config(folder, pipeline_name, device, plugin_config(hint, num_streams, precision), nireq, decoder)
    for kind in folder.kinds:
        target = out / kind / str(VERSION)
        target.mkdir(parents=True, exist_ok=True)
        xml = folder.ir_path(kind)
        _link_or_copy(xml, target / "model.xml")
        _link_or_copy(xml.with_suffix(".bin"), target / "model.bin")
    (out / DECODER_MODEL / str(VERSION)).mkdir(parents=True, exist_ok=True)
    ov.save_model(decoder, out / DECODER_MODEL / str(VERSION) / "model.xml", compress_to_fp16=False)
    folder.release()
    write_json_atomic(out / CONFIG_NAME, config)
    core = ov.Core()  # what OVMS will be given is consistent: every DAG edge names a real tensor
    read_repository(out, tensor_names=lambda xml: tensor_names(core.read_model(str(xml))))
    logger.info("OVMS repository %s: models %s, pipelines %s", out, ", ".join((*folder.kinds, DECODER_MODEL)),
                ", ".join(f"'{p['name']}' ({p['inputs'][0]} -> {next(iter(p['outputs'][0]))})"
                          for p in config["pipeline_config_list"]))
    return out / CONFIG_NAME


def run(args: argparse.Namespace) -> int:
    config = export_repository(args.models, args.out, chain=args.chain, pipeline_name=args.pipeline_name,
                               device=args.device, hint=args.hint, num_streams=args.num_streams, nireq=args.nireq,
                               precision=args.precision_hint, overwrite=args.overwrite)
    logger.info("serve it with OVMS (--config_path %s) or locally: sdpose-edge serve %s --port 9000",
                config, config.parent)
    logger.debug("%s", json.dumps(json.loads(config.read_text()), indent=1))
    return 0
