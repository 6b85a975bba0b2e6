"""deploy/ passes its schema checks (scripts/check_deploy.py, run in its own process: it imports kserve), and the
checks really catch a misspelled field, a wrong type, a broken Compose file and files that do not fit together."""
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


def check(deploy: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "scripts" / "check_deploy.py"), "--deploy", str(deploy)],
                          capture_output=True, text=True, timeout=300)


def test_deploy_files_pass() -> None:
    result = check(ROOT / "deploy")
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.startswith("ok:")


@pytest.mark.parametrize("file, old, new, expected", [
    ("kserve/inferenceservice.yaml", "storageUri:", "storageURI:", "storageURI: not a field of V1beta1ModelSpec"),
    ("kserve/inferenceservice.yaml", "minReplicas: 1", "minReplicas: one", "minReplicas: expected int"),
    ("kserve/inferenceservice.yaml", "runtime: sdpose-ovms", "runtime: kserve-ovms", "runtime 'kserve-ovms' is not defined"),
    ("kserve/servingruntime.yaml", "apiVersion: serving.kserve.io/v1alpha1", "apiVersion: v1", "apiVersion of a ServingRuntime"),
    ("kserve/servingruntime.yaml", "containerPort: 8001", "containerPort: 9001", "not the declared container port"),
    ("compose/compose.yaml", "services:", "servics:", "Compose schema"),
    ("compose/compose.yaml", "grpc://ovms:9000 --reconnect", "grpc://ovms:9999 --reconnect",
     "must use --pose-server grpc://ovms:9000"),
])
def test_checks_catch_mistakes(tmp_path: Path, file: str, old: str, new: str, expected: str) -> None:
    deploy = tmp_path / "deploy"
    shutil.copytree(ROOT / "deploy", deploy)
    target = deploy / file
    text = target.read_text()
    assert old in text
    target.write_text(text.replace(old, new, 1))
    result = check(deploy)
    assert result.returncode == 1
    assert expected in result.stdout, result.stdout
