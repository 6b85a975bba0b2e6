"""The device runtime never needs torch (or the converter): import every edge_runtime module with both blocked."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

_SCRIPT = textwrap.dedent("""
    import importlib, importlib.abc, json, pkgutil, sys

    BLOCKED = ("torch", "torchvision", "convert", "diffusers", "transformers", "nncf", "ultralytics")

    class Block(importlib.abc.MetaPathFinder):
        attempts = []

        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                Block.attempts.append(name)
                raise ImportError(f"blocked import of {name} in the device runtime")
            return None

    sys.meta_path.insert(0, Block())
    sys.path.insert(0, ROOT)
    import edge_runtime
    imported, failed = ["edge_runtime"], {}
    for info in pkgutil.walk_packages(edge_runtime.__path__, "edge_runtime."):
        try:
            importlib.import_module(info.name)
            imported.append(info.name)
        except Exception as exc:  # report every failure, not just the first
            failed[info.name] = f"{type(exc).__name__}: {exc}"
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)
    sys.stdout.write(json.dumps({"imported": imported, "failed": failed, "leaked": leaked,
                                "attempts": Block.attempts}) + "\\n")
""")


def test_edge_runtime_imports_without_torch():
    code = f"ROOT = {str(ROOT)!r}\n" + _SCRIPT
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["failed"] == {}
    assert report["leaked"] == []
    # an attempt that something caught and survived would be reported here (kept for the failure message)
    assert not [a for a in report["attempts"] if a.split(".")[0] == "convert"], report["attempts"]
    expected = {"edge_runtime.models", "edge_runtime.estimator", "edge_runtime.sinks", "edge_runtime.codec",
                "edge_runtime.geometry", "edge_runtime.keypoints", "edge_runtime.openpose", "edge_runtime.draw"}
    assert expected <= set(report["imported"])
