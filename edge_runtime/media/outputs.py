"""Output folders and source lists of ``sdpose-edge run``.

- :func:`expand_sources`: ``--source`` values (repeated, or one YAML list) -> named source specs; the names
  are the per-source output sub-folders.
- :func:`prepare_output`: an existing non-empty output folder is refused unless ``overwrite``; then only
  the files this tool writes are deleted (:data:`OUR_FILES`, :data:`OUR_DIRS`, and per-source sub-folders
  holding nothing else).
- :func:`write_json_atomic`: summary files are written to a temporary file and renamed, so a reader never
  sees half a summary, whatever ends the run.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from edge_runtime.errors import InputError
from edge_runtime.media.sources import is_live_spec, mask_credentials, split_credentials

#: files sdpose-edge run writes in an output folder (and in each per-source sub-folder)
OUR_FILES = ("predictions.jsonl", "summary.json", "coco_results.json", "coco_image_ids.json", "overlay.mp4")
#: folders sdpose-edge run writes (only files it names are inside)
OUR_DIRS = ("openpose", "images")


def source_name(spec: str) -> str:
    """A folder name for a source: ``camera0``, the video/folder stem, or the stream's host and path."""
    if spec.isdigit():
        return f"camera{spec}"
    if is_live_spec(spec):
        url, _, _ = split_credentials(spec)
        rest = re.sub(r"^[a-zA-Z][a-zA-Z0-9+.-]*://", "", url)
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", rest).strip("_.")
    else:
        path = Path(spec.rstrip("/"))
        name = re.sub(r"[^A-Za-z0-9_.-]+", "_", path.stem if path.suffix else path.name).strip("_.")
    return name or "source"


def _yaml_list(path: Path) -> list[tuple[str | None, str]]:
    try:
        doc = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise InputError(f"--source {path}: cannot read the source list ({exc})") from exc
    if isinstance(doc, dict) and "sources" in doc:
        doc = doc["sources"]
    if not isinstance(doc, list) or not doc:
        raise InputError(f"--source {path}: expected a YAML list of sources (strings or {{name, source}} "
                         f"mappings), got {type(doc).__name__}")
    out: list[tuple[str | None, str]] = []
    for i, item in enumerate(doc):
        if isinstance(item, (str, int)):
            out.append((None, str(item)))
        elif isinstance(item, dict) and isinstance(item.get("source"), (str, int)):
            name = item.get("name")
            if name is not None and (not isinstance(name, str) or not re.fullmatch(r"[A-Za-z0-9_.-]+", name)):
                raise InputError(f"--source {path}: item {i}: name must be letters, digits, '_', '.' or '-', "
                                 f"got {name!r}")
            out.append((name, str(item["source"])))
        else:
            raise InputError(f"--source {path}: item {i}: expected a source string or {{name, source}}, got "
                             f"{mask_credentials(repr(item))}")
    return out


def expand_sources(values: list[str]) -> list[tuple[str, str]]:
    """``--source`` values -> [(unique name, spec)]: a ``.yaml``/``.yml`` file is a list of sources."""
    entries: list[tuple[str | None, str]] = []
    for value in values:
        path = Path(value)
        if path.suffix.lower() in (".yaml", ".yml") and path.is_file():
            entries.extend(_yaml_list(path))
        else:
            entries.append((None, value))
    names: list[tuple[str, str]] = []
    seen: dict[str, int] = {}
    for name, spec in entries:
        base = name or source_name(spec)
        seen[base] = seen.get(base, 0) + 1
        names.append((base if seen[base] == 1 else f"{base}_{seen[base]}", spec))
    return names


def _ours(path: Path) -> bool:
    """True if ``path`` holds only what sdpose-edge run writes."""
    for entry in path.iterdir():
        if entry.is_file() and entry.name in OUR_FILES:
            continue
        if entry.is_dir() and entry.name in OUR_DIRS:
            continue
        return False
    return True


def prepare_output(out: Path, overwrite: bool) -> None:
    """Create ``out``; refuse a non-empty one unless ``overwrite``, which deletes only our own files."""
    if out.exists() and not out.is_dir():
        raise InputError(f"--output {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"--output {out}: the folder is not empty; choose a new folder or pass --overwrite "
                             f"(deletes only the files sdpose-edge writes: {', '.join(OUR_FILES + OUR_DIRS)})")
        for entry in list(out.iterdir()):
            if entry.is_file() and entry.name in OUR_FILES:
                entry.unlink()
            elif entry.is_dir() and entry.name in OUR_DIRS:
                _clear_ours(entry)
            elif entry.is_dir() and (entry / "summary.json").is_file() and _ours(entry):
                for sub in list(entry.iterdir()):  # a per-source folder of an earlier run
                    sub.unlink() if sub.is_file() else _clear_ours(sub)
                entry.rmdir()
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise InputError(f"--output {out}: cannot create the folder ({exc})") from exc


def _clear_ours(folder: Path) -> None:
    """Delete the frame files (openpose/*.json, images/*.jpg) in one of our folders, then the folder if empty."""
    for entry in folder.iterdir():
        if entry.is_file() and entry.suffix.lower() in (".json", ".jpg", ".png"):
            entry.unlink()
    try:
        folder.rmdir()
    except OSError:
        pass  # something else is inside: leave it


def write_json_atomic(path: Path, doc: Any) -> None:
    """Write ``doc`` as JSON to ``path`` through a temporary file, fsync and rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(json.dumps(doc, indent=2, default=str) + "\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise




