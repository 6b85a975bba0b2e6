"""OpenVINO Model Server repositories: the layout ``sdpose-convert export-ovms`` writes and ``sdpose-edge serve``
also reads.

Layout (OVMS "multiple models" config; https://docs.openvino.ai, model server, configuration file)::

    REPO/config.json            {"model_config_list": [...], "pipeline_config_list": [...]}
    REPO/<model>/<version>/model.xml|bin

Each ``model_config_list`` entry: ``{"config": {"name", "base_path", "target_device", "nireq"?,
"plugin_config"?}}``; ``base_path`` relative to config.json (OVMS resolves it so). A pipeline is an OVMS DAG:
``{"name", "inputs": [...], "nodes": [{"name", "model_name", "type": "DL model", "inputs": [{item: {"node_name",
"data_item"}}], "outputs": [{"data_item", "alias"}]}], "outputs": [{name: {"node_name", "data_item"}}]}``.
:func:`read_repository` checks all of it (names, paths, versions, that every DAG edge names a real tensor of
its model) and returns typed entries. Only linear pipelines (each node fed by the previous one) are run by
``serve``; OVMS runs any DAG.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from edge_runtime.errors import ModelFolderError

CONFIG_NAME = "config.json"


@dataclasses.dataclass(frozen=True)
class RepoModel:
    name: str
    xml: Path  # the newest version's model.xml
    version: int
    target_device: str
    plugin_config: dict[str, Any]
    nireq: "int | None"


@dataclasses.dataclass(frozen=True)
class PipelineNode:
    name: str
    model_name: str
    input_item: str  # the model's input tensor name
    source_node: str  # "request" or an earlier node
    source_item: str  # the request input or the earlier node's output alias
    output_item: str  # the model's output tensor name
    output_alias: str


@dataclasses.dataclass(frozen=True)
class Pipeline:
    name: str
    input_name: str
    nodes: tuple[PipelineNode, ...]
    output_name: str
    output_node: str
    output_item: str


def _need(doc: Any, key: str, kind: type, where: str) -> Any:
    if not isinstance(doc, dict) or key not in doc or not isinstance(doc[key], kind):
        raise ModelFolderError(f"{where}: expected '{key}' ({kind.__name__})")
    return doc[key]


def _one_pair(doc: Any, where: str) -> tuple[str, dict]:
    if not isinstance(doc, dict) or len(doc) != 1:
        raise ModelFolderError(f"{where}: expected {{name: {{node_name, data_item}}}}, got {doc!r}")
    (key, value), = doc.items()
    _need(value, "node_name", str, f"{where}.{key}")
    _need(value, "data_item", str, f"{where}.{key}")
    return key, value


def newest_version(base: Path, where: str) -> tuple[int, Path]:
    versions = sorted(int(p.name) for p in base.iterdir() if p.is_dir() and p.name.isdigit() and int(p.name) > 0) \
        if base.is_dir() else []
    if not versions:
        raise ModelFolderError(f"{where}: {base} has no version folder (1, 2, ...)")
    xml = base / str(versions[-1]) / "model.xml"
    if not xml.is_file() or not xml.with_suffix(".bin").is_file():
        raise ModelFolderError(f"{where}: {xml.parent} needs model.xml and model.bin")
    return versions[-1], xml


def read_repository(repo: "str | Path", tensor_names: Any = None) -> tuple[dict[str, RepoModel], list[Pipeline]]:
    """Models and pipelines of ``REPO/config.json`` (ModelFolderError naming the file and entry otherwise).

    ``tensor_names(xml) -> (input names, output names)``: when given, every DAG edge is checked against the
    models' real tensors (e.g. :func:`tensor_names` of the read IR); default: names only.
    """
    repo = Path(repo).expanduser()
    config = repo / CONFIG_NAME
    if not config.is_file():
        raise ModelFolderError(f"{config}: no OVMS config (write one with sdpose-convert export-ovms)")
    try:
        doc = json.loads(config.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ModelFolderError(f"{config}: not readable JSON ({exc})") from exc
    unknown = set(doc) - {"model_config_list", "pipeline_config_list", "custom_node_library_config_list",
                          "mediapipe_config_list", "monitoring"} if isinstance(doc, dict) else set()
    if unknown:
        raise ModelFolderError(f"{config}: unknown top-level keys {sorted(unknown)}")
    models: dict[str, RepoModel] = {}
    for i, entry in enumerate(_need(doc, "model_config_list", list, str(config))):
        where = f"{config}: model_config_list[{i}]"
        cfg = _need(entry, "config", dict, where)
        name = _need(cfg, "name", str, where)
        if name in models:
            raise ModelFolderError(f"{where}: model name '{name}' is listed twice")
        base = Path(_need(cfg, "base_path", str, where))
        base = base if base.is_absolute() else repo / base
        version, xml = newest_version(base, where)
        plugin = cfg.get("plugin_config", {})
        if not isinstance(plugin, dict) or not all(isinstance(v, (str, int, float)) for v in plugin.values()):
            raise ModelFolderError(f"{where}: plugin_config must map property names to values")
        nireq = cfg.get("nireq")
        if nireq is not None and (isinstance(nireq, bool) or not isinstance(nireq, int) or nireq < 1):
            raise ModelFolderError(f"{where}: nireq must be a positive integer")
        models[name] = RepoModel(name, xml, version, str(cfg.get("target_device", "CPU")), dict(plugin), nireq)
    pipelines = [_read_pipeline(p, models, f"{config}: pipeline_config_list[{i}]", tensor_names)
                 for i, p in enumerate(doc.get("pipeline_config_list", []))]
    names = [p.name for p in pipelines]
    clash = (set(names) & set(models)) | {n for n in names if names.count(n) > 1}
    if clash:
        raise ModelFolderError(f"{config}: names used twice by models/pipelines: {sorted(clash)}")
    return models, pipelines


def _read_pipeline(doc: Any, models: dict[str, RepoModel], where: str, tensor_names: Any) -> Pipeline:
    name = _need(doc, "name", str, where)
    inputs = _need(doc, "inputs", list, where)
    if len(inputs) != 1 or not isinstance(inputs[0], str):
        raise ModelFolderError(f"{where}: expected one request input name, got {inputs!r}")
    nodes, seen = [], {"request": {inputs[0]}}
    for j, node in enumerate(_need(doc, "nodes", list, where)):
        nwhere = f"{where}.nodes[{j}]"
        node_name = _need(node, "name", str, nwhere)
        model = _need(node, "model_name", str, nwhere)
        if model not in models:
            raise ModelFolderError(f"{nwhere}: model_name '{model}' is not in model_config_list")
        if node.get("type") != "DL model":
            raise ModelFolderError(f"{nwhere}: type must be 'DL model'")
        node_inputs = _need(node, "inputs", list, nwhere)
        outputs = _need(node, "outputs", list, nwhere)
        if len(node_inputs) != 1 or len(outputs) != 1:
            raise ModelFolderError(f"{nwhere}: expected one input and one output")
        item, src = _one_pair(node_inputs[0], f"{nwhere}.inputs")
        if src["data_item"] not in seen.get(src["node_name"], set()):
            raise ModelFolderError(f"{nwhere}: input '{item}' reads {src['node_name']}.{src['data_item']}, "
                                   "which no earlier node (or the request) provides")
        out_item = _need(outputs[0], "data_item", str, f"{nwhere}.outputs")
        alias = _need(outputs[0], "alias", str, f"{nwhere}.outputs")
        if tensor_names is not None:
            ins, outs = tensor_names(models[model].xml)
            if item not in ins or out_item not in outs:
                raise ModelFolderError(f"{nwhere}: model '{model}' has inputs {sorted(ins)} and outputs "
                                       f"{sorted(outs)}; the node uses input '{item}', output '{out_item}'")
        nodes.append(PipelineNode(node_name, model, item, src["node_name"], src["data_item"], out_item, alias))
        seen[node_name] = {alias}
    outs = _need(doc, "outputs", list, where)
    if len(outs) != 1:
        raise ModelFolderError(f"{where}: expected one pipeline output")
    out_name, out_src = _one_pair(outs[0], f"{where}.outputs")
    if out_src["data_item"] not in seen.get(out_src["node_name"], set()):
        raise ModelFolderError(f"{where}: output '{out_name}' reads {out_src['node_name']}.{out_src['data_item']}, "
                               "which no node provides")
    if not nodes:
        raise ModelFolderError(f"{where}: a pipeline needs at least one node")
    return Pipeline(name, inputs[0], tuple(nodes), out_name, out_src["node_name"], out_src["data_item"])


def tensor_names(model: Any) -> tuple[set[str], set[str]]:
    """(input names, output names) of an ``openvino.Model``: what DAG edges may name."""
    return ({n for p in model.inputs for n in p.get_names()}, {n for p in model.outputs for n in p.get_names()})


def is_linear(pipeline: Pipeline) -> bool:
    """Each node reads the previous node's output (the first reads the request) and the last is the output."""
    prev = ("request", pipeline.input_name)
    for node in pipeline.nodes:
        if (node.source_node, node.source_item) != prev:
            return False
        prev = (node.name, node.output_alias)
    return (pipeline.output_node, pipeline.output_item) == prev
