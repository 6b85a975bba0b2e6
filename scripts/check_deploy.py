"""Validate deploy/: the Docker Compose file against the Compose specification's JSON schema (check-jsonschema's
vendored copy) and the KServe manifests against the field types of the kserve and kubernetes Python clients
(every key must be a field of its object, every value of the field's type), plus the links between the files.

    python scripts/check_deploy.py [--deploy DIR]       # exit 0 and "ok" lines, or 1 and one line per problem

Run it in its own process: it imports kserve, which cannot share a process with tritonclient.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: kind -> (apiVersion, class name in the kserve package)
KINDS = {"InferenceService": ("serving.kserve.io/v1beta1", "V1beta1InferenceService"),
         "ServingRuntime": ("serving.kserve.io/v1alpha1", "V1alpha1ServingRuntime")}
_PRIMITIVES = {"str": str, "int": int, "bool": bool, "float": (int, float), "ResourceQuantity": (str, int, float),
               "datetime": str, "bytes": str}


def _model_class(name: str) -> Any:
    import kserve
    import kubernetes.client

    for module in (kserve, kubernetes.client):
        if hasattr(module, name):
            return getattr(module, name)
    raise KeyError(name)


def check_typed(value: Any, type_name: str, path: str, problems: list[str]) -> None:
    """``value`` (parsed YAML) against an OpenAPI client type name ('V1Container', 'list[str]', ...)."""
    if value is None:
        return
    if type_name == "object":
        return
    if type_name.startswith(("list[", "List[")):
        if not isinstance(value, list):
            problems.append(f"{path}: expected a list, got {type(value).__name__}")
            return
        for i, item in enumerate(value):
            check_typed(item, type_name[5:-1], f"{path}[{i}]", problems)
        return
    if type_name.startswith(("dict(", "Dict[")):
        if not isinstance(value, dict):
            problems.append(f"{path}: expected a mapping, got {type(value).__name__}")
            return
        inner = type_name[type_name.index(",") + 1:-1].strip()
        for key, item in value.items():
            check_typed(item, inner, f"{path}.{key}", problems)
        return
    if type_name in _PRIMITIVES:
        ok = isinstance(value, _PRIMITIVES[type_name]) and (type_name == "bool") == isinstance(value, bool)
        if not ok:
            problems.append(f"{path}: expected {type_name}, got {value!r}")
        return
    cls = _model_class(type_name)
    if not isinstance(value, dict):
        problems.append(f"{path}: expected a {type_name} mapping, got {type(value).__name__}")
        return
    fields = {json_key: attr for attr, json_key in cls.attribute_map.items()}
    for key, item in value.items():
        if key not in fields:
            problems.append(f"{path}.{key}: not a field of {type_name} (fields: {', '.join(sorted(fields))})")
            continue
        check_typed(item, cls.openapi_types[fields[key]], f"{path}.{key}", problems)


def check_manifest(path: Path, problems: list[str]) -> list[dict]:
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    for i, doc in enumerate(docs):
        where = f"{path.name}[{i}]"
        kind = doc.get("kind") if isinstance(doc, dict) else None
        if kind not in KINDS:
            problems.append(f"{where}: kind {kind!r} is not one of {sorted(KINDS)}")
            continue
        api, cls = KINDS[kind]
        if doc.get("apiVersion") != api:
            problems.append(f"{where}: apiVersion of a {kind} is {api}, got {doc.get('apiVersion')!r}")
        if not (doc.get("metadata") or {}).get("name"):
            problems.append(f"{where}: metadata.name is required")
        check_typed(doc, cls, where, problems)
    return docs


def check_links(runtimes: list[dict], services: list[dict], compose: dict, problems: list[str]) -> None:
    names = {r["metadata"]["name"]: r for r in runtimes}
    for isvc in services:
        model = isvc["spec"]["predictor"]["model"]
        runtime = names.get(model.get("runtime"))
        if runtime is None:
            problems.append(f"InferenceService {isvc['metadata']['name']}: runtime {model.get('runtime')!r} is not "
                            f"defined (runtimes: {sorted(names)})")
            continue
        formats = {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
        if model["modelFormat"]["name"] not in formats:
            problems.append(f"InferenceService: modelFormat {model['modelFormat']['name']!r} not in {sorted(formats)}")
        if model.get("protocolVersion") not in runtime["spec"]["protocolVersions"]:
            problems.append(f"InferenceService: protocolVersion {model.get('protocolVersion')!r} not offered")
        args = runtime["spec"]["containers"][0].get("args", [])
        if "--config_path=/mnt/models/config.json" not in args:
            problems.append("ServingRuntime: OVMS must read the repository config /mnt/models/config.json")
        port = next((a.split("=", 1)[1] for a in args if a.startswith("--port=")), None)
        declared = [str(p["containerPort"]) for p in runtime["spec"]["containers"][0].get("ports", [])]
        if port not in declared:
            problems.append(f"ServingRuntime: OVMS gRPC port {port} is not the declared container port {declared}")
    ovms = compose["services"]["ovms"]
    grpc_port = next((a.split("=", 1)[1] for a in ovms["command"] if a.startswith("--port=")), None)
    for name, svc in compose["services"].items():
        if name == "ovms":
            continue
        command = " ".join(svc["command"]) if isinstance(svc.get("command"), list) else str(svc.get("command"))
        match = re.search(r"--pose-server\s+grpc://ovms:(\d+)", command)
        if match is None or match.group(1) != grpc_port:
            problems.append(f"compose service {name}: must use --pose-server grpc://ovms:{grpc_port}")


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploy", type=Path, default=ROOT / "deploy")
    return parser


def main(argv: "list[str] | None" = None) -> int:
    args = build_parser().parse_args(argv)
    problems: list[str] = []
    compose_file = args.deploy / "compose" / "compose.yaml"
    result = subprocess.run([sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.compose-spec",
                             str(compose_file)], capture_output=True, text=True)
    if result.returncode != 0:
        problems.append(f"{compose_file}: Compose schema: {(result.stdout + result.stderr).strip()}")
    runtimes = check_manifest(args.deploy / "kserve" / "servingruntime.yaml", problems)
    services = check_manifest(args.deploy / "kserve" / "inferenceservice.yaml", problems)
    if not problems:
        check_links(runtimes, services, yaml.safe_load(compose_file.read_text()), problems)
    for line in problems:
        sys.stdout.write(f"problem: {line}\n")
    if not problems:
        sys.stdout.write("ok: compose.yaml (Compose spec), servingruntime.yaml and inferenceservice.yaml (kserve "
                         "client types), links between them\n")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
