"""Component metadata stored in each IR's ``rt_info`` (namespace ``sdpose``) and the folder index.

The converter writes it, the runtime reads it back: the IR is the contract. Values are stored as
strings in ``rt_info``; structured values (dicts, lists) are JSON-encoded. ``read_metadata`` decodes
them back using :data:`FIELD_TYPES`.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from edge_runtime.errors import ModelFolderError

logger = logging.getLogger(__name__)

RT_NAMESPACE = "sdpose"
FORMAT_VERSION = 1
INDEX_FILE = "sdpose_models.json"

#: every component kind a model folder can hold (the one list: the converter, validation and the benchmark
#: take it from here), in conversion order: the person detector, then the pose chain
COMPONENT_KINDS: tuple[str, ...] = ("detector", "vae_encoder", "pose", "vae_pose")
#: the pose chain's kinds (crop -> heatmaps): split = vae_encoder then pose, fused = vae_pose
POSE_KINDS: tuple[str, ...] = COMPONENT_KINDS[1:]
#: kind -> default IR file name inside a model folder
COMPONENT_FILES = {kind: f"{kind}.xml" for kind in COMPONENT_KINDS}

#: typed fields; anything else is returned as the stored string
FIELD_TYPES: dict[str, type] = {
    "format_version": int,
    "num_keypoints": int,
    "input_width": int,
    "input_height": int,
    "heatmap_width": int,
    "heatmap_height": int,
    "latent_channels": int,
    "latent_scale": float,
    "bbox_padding": float,
    "quantized": bool,
    "codec": dict,
    "preprocessing": dict,
    "versions": dict,
    "quantization": dict,
    "class_names": list,
    "person_class": int,
    "letterbox": dict,
    "num_classes": int,
    "num_anchors": int,
    "token_downsample": int,
    "token_downsample_levels": list,
    "vae_token_downsample": int,
}


def _encode(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _decode(key: str, text: str) -> Any:
    kind = FIELD_TYPES.get(key)
    if kind is None:
        return text
    if kind is bool:
        return text.strip().lower() in ("1", "true", "yes")
    if kind in (dict, list):
        return json.loads(text)
    return kind(text)


def write_metadata(model: Any, meta: dict[str, Any]) -> None:
    """Store ``meta`` in ``model.rt_info['sdpose']`` (``model`` is an ``openvino.Model``)."""
    for key, value in meta.items():
        if value is None:
            continue
        model.set_rt_info(_encode(value), [RT_NAMESPACE, key])


def read_metadata(model: Any, source: str | Path = "<model>") -> dict[str, Any]:
    """Return the ``sdpose`` metadata of an ``openvino.Model`` as typed values.

    Raises ModelFolderError naming ``source`` when the IR carries no sdpose metadata.
    """
    try:
        rt_info = model.get_rt_info()
    except (RuntimeError, AttributeError) as exc:  # e.g. a CompiledModel has no rt_info
        raise ModelFolderError(f"{source}: cannot read rt_info ({exc})") from exc
    if RT_NAMESPACE not in rt_info:
        raise ModelFolderError(
            f"{source}: IR has no '{RT_NAMESPACE}' metadata in rt_info; it was not written by "
            "sdpose-convert (re-export the checkpoint with `sdpose-convert export`)")
    section = rt_info[RT_NAMESPACE]
    meta: dict[str, Any] = {}
    for key in section.keys():
        raw = section[key]
        text = raw.astype(str) if hasattr(raw, "astype") else str(raw)
        try:
            meta[key] = _decode(key, text)
        except (ValueError, json.JSONDecodeError) as exc:
            raise ModelFolderError(f"{source}: rt_info field sdpose/{key}={text!r} is malformed: {exc}") from exc
    return meta


def read_index(folder: str | Path) -> dict[str, Any]:
    """Read ``MODELS/sdpose_models.json``; a clear error when the folder or index is missing/bad."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ModelFolderError(f"model folder {folder} does not exist (expected the output of sdpose-convert)")
    path = folder / INDEX_FILE
    if not path.is_file():
        raise ModelFolderError(f"{path} is missing: {folder} is not an sdpose-convert model folder")
    try:
        index = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise ModelFolderError(f"{path}: not valid JSON ({exc})") from exc
    if not isinstance(index, dict) or not isinstance(index.get("components"), dict):
        raise ModelFolderError(f"{path}: expected an object with a 'components' mapping of kind -> IR file")
    return index


def write_index(folder: str | Path, index: dict[str, Any]) -> Path:
    """Write/merge ``MODELS/sdpose_models.json`` (components are merged, other keys overwritten)."""
    folder = Path(folder)
    path = folder / INDEX_FILE
    current: dict[str, Any] = {"format_version": FORMAT_VERSION, "components": {}}
    if path.is_file():
        current = read_index(folder)  # a corrupt index is a ModelFolderError naming the file, never overwritten
    components = dict(current.get("components", {}))
    components.update(index.get("components", {}))
    current.update({k: v for k, v in index.items() if k != "components"})
    current["components"] = components
    current["format_version"] = FORMAT_VERSION
    path.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    return path
