"""Validate deploy/: the Docker Compose file against the Compose specification's JSON schema (check-jsonschema's
vendored copy) and the KServe manifests against the field types of the kserve and kubernetes Python clients
(every key must be a field of its object, every value of the field's type), plus the links between the files;
the InferenceService's scaleMetric against what its deployment mode really uses; the OVMS image tags against the
released versions recorded here (OVMS_NEWEST_RELEASE); and the edge image: a wheel is built (pip wheel
--no-deps --no-build-isolation) from exactly the files edge.Dockerfile's COPY lines put in the image, so a package
pyproject.toml lists but the Dockerfile does not copy fails here. (A real `docker build` needs the base image from
Docker Hub; the wheel build is the part that can fail on this project's files.)

    python scripts/check_deploy.py [--deploy DIR] [--context DIR]   # exit 0 and "ok" lines, or 1 and one line
                                                                    # per problem

Run it in its own process: it imports kserve, which cannot share a process with tritonclient.
"""
from __future__ import annotations

import argparse
import glob
import posixpath
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
#: the newest OVMS release (GitHub release vYYYY.N of openvinotoolkit/model_server = image
#: openvino/model_server:YYYY.N); raise it when a new release is published. A tag newer than this does not exist yet and cannot be pulled.
OVMS_NEWEST_RELEASE = (2026, 3)
_OVMS_TAG = re.compile(r"^(\d{4})\.(\d+)(\.\d+)?(-[a-z0-9-]+)?$")
DEPLOYMENT_MODE = "serving.kserve.io/deploymentMode"
AUTOSCALER_CLASS = "serving.kserve.io/autoscalerClass"
KNATIVE_CLASS = "autoscaling.knative.dev/class"
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


# ---------------------------------------------------------------------------------------------- scaling
def used_scale_metrics(annotations: dict) -> "tuple[set[str], str]":
    """(scaleMetric values the deployment mode uses, why) from an InferenceService's annotations (KServe's
    admission webhook and its HPA reconciler, pkg/controller/v1beta1/inferenceservice/reconcilers/hpa)."""
    mode = annotations.get(DEPLOYMENT_MODE)
    if mode in ("RawDeployment", "Standard"):
        scaler = annotations.get(AUTOSCALER_CLASS, "hpa")
        if scaler == "hpa":
            return {"cpu", "memory"}, ("KServe's HPA reconciler builds a metric only for cpu and memory; any other "
                                       "leaves the HPA without one and Kubernetes falls back to 80 % CPU")
        return set(), f"autoscalerClass {scaler} does not read scaleMetric (keda: spec.*.autoScaling)"
    if mode in ("Serverless", "Knative"):
        if annotations.get(KNATIVE_CLASS) == "hpa.autoscaling.knative.dev":
            return {"cpu", "memory"}, "Knative's HPA class scales on cpu or memory"
        return {"concurrency", "rps"}, "Knative's KPA scales on concurrency or rps"
    if mode is None:
        return set(), (f"no {DEPLOYMENT_MODE} annotation: the cluster's default mode would decide what it does; "
                       "name the mode")
    return set(), f"deployment mode {mode!r} does not autoscale on scaleMetric"


def check_scaling(isvc: dict, problems: list[str]) -> None:
    """Refuse a scaleMetric that the InferenceService's deployment mode ignores, and a target it cannot use."""
    annotations = (isvc.get("metadata") or {}).get("annotations") or {}
    name = (isvc.get("metadata") or {}).get("name")
    for component in ("predictor", "transformer", "explainer"):
        spec = (isvc.get("spec") or {}).get(component) or {}
        metric, target = spec.get("scaleMetric"), spec.get("scaleTarget")
        if metric is None:
            continue
        used, why = used_scale_metrics(annotations)
        where = f"InferenceService {name}: {component}.scaleMetric {metric!r}"
        if metric not in used:
            problems.append(f"{where} is ignored ({why}; mode {annotations.get(DEPLOYMENT_MODE)!r} uses "
                            f"{sorted(used) or 'none'})")
        elif metric == "cpu" and not (isinstance(target, int) and 1 <= target <= 100):
            problems.append(f"{where}: scaleTarget must be a CPU utilisation percentage 1-100, got {target!r}")
        elif metric == "memory" and target is None:
            problems.append(f"{where}: memory has no default scaleTarget (KServe then builds no metric)")


# ---------------------------------------------------------------------------------------------- OVMS tag
def ovms_tags(runtimes: list[dict], compose: dict) -> dict[str, str]:
    """{where: tag} of every openvino/model_server image (the Compose default of ${OVMS_TAG:-...})."""
    images = {f"ServingRuntime {r['metadata']['name']}": c.get("image", "") for r in runtimes
              for c in r["spec"]["containers"]}
    images.update({f"compose service {n}": str(svc.get("image", "")) for n, svc in compose["services"].items()})
    tags = {}
    for where, image in images.items():
        if image.startswith("openvino/model_server"):
            tag = image.partition(":")[2]
            default = re.fullmatch(r"\$\{OVMS_TAG:-([^}]*)\}", tag)
            tags[where] = default.group(1) if default else tag
    return tags


def check_ovms_tags(runtimes: list[dict], compose: dict, problems: list[str]) -> None:
    """Every OVMS image names a released version (deploy/README.md, "OVMS image tag"), the same one everywhere."""
    tags = ovms_tags(runtimes, compose)
    newest = "%d.%d" % OVMS_NEWEST_RELEASE
    for where, tag in tags.items():
        match = _OVMS_TAG.match(tag)
        if match is None:
            problems.append(f"{where}: OVMS image tag {tag!r} is not a release YYYY.N (e.g. {newest})")
        elif (int(match.group(1)), int(match.group(2))) > OVMS_NEWEST_RELEASE:
            problems.append(f"{where}: OVMS image tag {tag!r} is newer than the newest OVMS release {newest} "
                            "(OVMS_NEWEST_RELEASE in scripts/check_deploy.py): it cannot be pulled")
    if len(set(tags.values())) > 1:
        problems.append(f"OVMS image tags differ between the deploy files: {tags}")


# ---------------------------------------------------------------------------------------------- edge image
def dockerfile_copies(dockerfile: Path) -> "tuple[list[tuple[list[str], str]], str]":
    """([(sources, destination relative to the install folder)], install folder): the COPY lines before the
    Dockerfile's first ``pip install`` and the WORKDIR that command runs in."""
    text = re.sub(r"\\\n", " ", dockerfile.read_text())
    workdir, copies = "/", []
    for line in text.splitlines():
        words = shlex.split(line, comments=True) if line.strip() else []
        if not words:
            continue
        op, args = words[0].upper(), [w for w in words[1:] if not w.startswith("--")]
        if op == "WORKDIR":
            workdir = posixpath.join(workdir, args[0])
        elif op in ("COPY", "ADD") and not any(w.startswith("--from") for w in words[1:]):
            dest = posixpath.join(workdir, args[-1]) + ("/" if args[-1].endswith("/") else "")
            copies.append((args[:-1], dest))
        elif op == "RUN" and "pip install" in " ".join(args):
            return [(srcs, posixpath.relpath(dest, workdir) + ("/" if dest.endswith("/") else ""))
                    for srcs, dest in copies], workdir
    raise ValueError(f"{dockerfile}: no RUN pip install line")


def assemble_context(copies: list[tuple[list[str], str]], context: Path, target: Path, problems: list[str]) -> None:
    """Copy the COPY lines' sources from the build context into ``target`` as Docker would lay them out."""
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for sources, dest in copies:
        matches = [Path(m) for src in sources for m in sorted(glob.glob(str(context / src)))]
        if not matches:
            problems.append(f"edge.Dockerfile: COPY {' '.join(sources)}: not in the build context {context}")
            continue
        as_dir = dest.endswith("/") or len(matches) > 1
        for match in matches:
            out = target / dest / match.name if as_dir and match.is_file() else target / dest
            if match.is_dir():
                shutil.copytree(match, out, ignore=ignore, dirs_exist_ok=True)
            else:
                out.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(match, out)


def check_edge_image(dockerfile: Path, context: Path, problems: list[str]) -> "str | None":
    """Build a wheel from exactly what the Dockerfile copies; the wheel's name, or None with a problem."""
    try:
        copies, _ = dockerfile_copies(dockerfile)
    except (OSError, ValueError, IndexError) as exc:
        problems.append(f"{dockerfile}: cannot read its COPY lines ({exc})")
        return None
    with tempfile.TemporaryDirectory(prefix="sdpose-edge-image-") as tmp:
        src, dist = Path(tmp) / "src", Path(tmp) / "dist"
        src.mkdir()
        assemble_context(copies, context, src, problems)
        result = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                                 "--no-cache-dir", "-q", "-w", str(dist), str(src)], capture_output=True, text=True)
        wheels = sorted(dist.glob("*.whl"))
        if result.returncode != 0 or not wheels:
            errors = [ln.strip() for ln in (result.stdout + result.stderr).splitlines()
                      if "error" in ln.lower() and "subprocess" not in ln.lower()]
            problems.append(f"{dockerfile.name}: the files it copies do not build a wheel: "
                            f"{'; '.join(errors[:3]) or result.stderr.strip()[-300:]}")
            return None
        with zipfile.ZipFile(wheels[0]) as whl:
            names = set(whl.namelist())
            entry_points = next((whl.read(n).decode() for n in names if n.endswith("entry_points.txt")), "")
        if "sdpose-edge = edge_runtime.cli:main" not in entry_points:
            problems.append(f"{dockerfile.name}: the wheel has no sdpose-edge command (the image's ENTRYPOINT)")
        modules = sorted(p.relative_to(src).as_posix() for p in (src / "edge_runtime").rglob("*.py")) \
            if (src / "edge_runtime").is_dir() else []
        missing = [m for m in modules if m not in names]
        if missing:
            problems.append(f"{dockerfile.name}: the wheel lacks {len(missing)} runtime module(s), e.g. {missing[0]} "
                            "(pyproject.toml [tool.setuptools] packages must list every edge_runtime room)")
        return wheels[0].name


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deploy", type=Path, default=ROOT / "deploy")
    parser.add_argument("--context", type=Path, default=ROOT, help="the edge image's build context (the project)")
    parser.add_argument("--skip-image", action="store_true", help="check the manifests only (no wheel build)")
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
        compose = yaml.safe_load(compose_file.read_text())
        check_links(runtimes, services, compose, problems)
        for isvc in services:
            check_scaling(isvc, problems)
        check_ovms_tags(runtimes, compose, problems)
    wheel = None if args.skip_image else check_edge_image(args.deploy / "compose" / "edge.Dockerfile", args.context,
                                                          problems)
    for line in problems:
        sys.stdout.write(f"problem: {line}\n")
    if not problems:
        sys.stdout.write("ok: compose.yaml (Compose spec), servingruntime.yaml and inferenceservice.yaml (kserve "
                         "client types), links between them, scaleMetric used by the deployment mode, OVMS "
                         f"tag released (<= {'%d.%d' % OVMS_NEWEST_RELEASE})" +
                         (f"; edge.Dockerfile's files build {wheel}\n" if wheel else "; edge image skipped\n"))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
