"""deploy/ passes its schema checks (scripts/check_deploy.py, run in its own process: it imports kserve), and the
checks really catch a misspelled field, a wrong type, a broken Compose file, files that do not fit together, a
scaleMetric the deployment mode ignores, an OVMS tag that was never released and an edge image whose copied files
do not build (the check builds a wheel from exactly the Dockerfile's COPY lines)."""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytest.importorskip("check_jsonschema")
if importlib.util.find_spec("kserve") is None:  # the check imports kserve in its own process, never here
    pytest.skip("the manifests are checked with the kserve client's types (pip install '.[serve]')",
                allow_module_level=True)


def check(deploy: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "check_deploy.py"), "--deploy", str(deploy),
                           *extra], capture_output=True, text=True, timeout=300)


def test_deploy_files_pass_and_the_edge_image_files_build_a_wheel() -> None:
    result = check(ROOT / "deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok:") and "edge.Dockerfile's files build sdpose_edge-" in result.stdout


def mutated(tmp_path: Path, file: str, old: str, new: str) -> Path:
    deploy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", deploy)
    target = deploy / file
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    return deploy


def test_an_edge_image_missing_a_package_fails(tmp_path: Path) -> None:
    """The Dockerfile before edge_bench was copied: pip cannot build what pyproject.toml declares."""
    deploy = mutated(tmp_path, "compose/edge.Dockerfile", "COPY edge_bench ./edge_bench\n", "")
    result = check(deploy)
    assert result.returncode == 1
    assert "package directory 'edge_bench' does not exist" in result.stdout, result.stdout
    deploy = mutated(tmp_path / "b", "compose/edge.Dockerfile", "COPY configs ./configs", "COPY confs ./configs")
    result = check(deploy)
    assert result.returncode == 1 and "COPY confs: not in the build context" in result.stdout, result.stdout


@pytest.mark.parametrize("file, old, new, expected", [
    ("kserve/inferenceservice.yaml", "storageUri:", "storageURI:", "storageURI: not a field of V1beta1ModelSpec"),
    ("kserve/inferenceservice.yaml", "minReplicas: 1", "minReplicas: one", "minReplicas: expected int"),
    ("kserve/inferenceservice.yaml", "runtime: sdpose-ovms", "runtime: kserve-openvino",
     "runtime 'kserve-openvino' is not defined"),
    ("kserve/inferenceservice.yaml", "scaleMetric: cpu", "scaleMetric: concurrency",
     "scaleMetric 'concurrency' is ignored (KServe's HPA reconciler builds a metric only for cpu and memory"),
    ("kserve/inferenceservice.yaml", "deploymentMode: RawDeployment", "deploymentMode: Serverless",
     "scaleMetric 'cpu' is ignored (Knative's KPA scales on concurrency or rps"),
    ("kserve/inferenceservice.yaml", "autoscalerClass: hpa", "autoscalerClass: keda",
     "scaleMetric 'cpu' is ignored (autoscalerClass keda"),
    ("kserve/inferenceservice.yaml", "scaleTarget: 70", "scaleTarget: 250",
     "scaleTarget must be a CPU utilisation percentage 1-100, got 250"),
    ("kserve/servingruntime.yaml", "model_server:2026.3", "model_server:2026.4",
     "OVMS image tag '2026.4' is newer than the newest OVMS release 2026.3"),
    ("compose/compose.yaml", "OVMS_TAG:-2026.3", "OVMS_TAG:-latest", "OVMS image tag 'latest' is not a release"),
    ("kserve/servingruntime.yaml", "apiVersion: serving.kserve.io/v1alpha1", "apiVersion: v1", "apiVersion of a ServingRuntime"),
    ("kserve/servingruntime.yaml", "containerPort: 8001", "containerPort: 9001", "not the declared container port"),
    ("compose/compose.yaml", "services:", "servics:", "Compose schema"),
    ("compose/compose.yaml", "grpc://ovms:9000 --reconnect", "grpc://ovms:9999 --reconnect",
     "must use --pose-server grpc://ovms:9000"),
])
def test_checks_catch_mistakes(tmp_path: Path, file: str, old: str, new: str, expected: str) -> None:
    result = check(mutated(tmp_path, file, old, new), "--skip-image")
    assert result.returncode == 1
    assert expected in result.stdout, result.stdout
