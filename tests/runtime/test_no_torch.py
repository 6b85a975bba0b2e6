"""The device runtime never needs torch (or the converter): import every edge_runtime and edge_bench module with
both blocked. A module that needs an optional extra (kserve for ``serve``) may fail only where that extra is not
installed."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
#: packages of optional extras (serve, remote): a module needing one may fail to import only without it
OPTIONAL_EXTRAS = ("kserve", "grpc", "tritonclient")

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
    import edge_runtime, edge_bench
    imported, failed = ["edge_runtime", "edge_bench"], {}
    infos = list(pkgutil.walk_packages(edge_runtime.__path__, "edge_runtime."))
    infos += list(pkgutil.walk_packages(edge_bench.__path__, "edge_bench."))
    for info in infos:
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
    optional = [name for name in OPTIONAL_EXTRAS if importlib.util.find_spec(name) is None]
    failed = {mod: msg for mod, msg in report["failed"].items()
              if not any(f"No module named '{name}" in msg for name in optional)}
    assert failed == {}
    assert report["leaked"] == []
    # an attempt that something caught and survived would be reported here (kept for the failure message)
    assert not [a for a in report["attempts"] if a.split(".")[0] == "convert"], report["attempts"]
    expected = {"edge_runtime.model.models", "edge_runtime.model.estimator", "edge_runtime.media.sinks", "edge_runtime.model.codec",
                "edge_runtime.model.geometry", "edge_runtime.model.keypoints", "edge_runtime.media.openpose", "edge_runtime.media.draw"}
    assert expected <= set(report["imported"])
