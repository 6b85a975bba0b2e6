"""The house rule on imports, held by the suite: no import cycle among the project's modules (function-level imports
count), and the serving extra (kserve, tritonclient) is imported only by edge_runtime/serving."""
from __future__ import annotations

import ast
from pathlib import Path

from tests.scripts_loader import load_script

ROOT = Path(__file__).resolve().parents[2]


def _script():
    return load_script("import_graph")


def test_the_project_has_no_import_cycle():
    graph_tool = _script()
    known = graph_tool.module_names(ROOT)
    graph = {name: graph_tool.imports_of(name, path, known) for name, path in known.items()}
    assert "edge_runtime.running.live" in graph
    assert graph_tool.cycles(graph) == []


def test_a_cycle_hidden_in_a_function_is_found(tmp_path):
    graph_tool = _script()
    package = tmp_path / "edge_runtime"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "a.py").write_text("from edge_runtime.b import g\n")
    (package / "b.py").write_text("def g():\n    from edge_runtime import a\n    return a\n")
    assert graph_tool.main(["--root", str(tmp_path)]) == 1
    known = graph_tool.module_names(tmp_path)
    graph = {name: graph_tool.imports_of(name, path, known) for name, path in known.items()}
    assert graph_tool.cycles(graph) == [["edge_runtime.a", "edge_runtime.b"]]


def test_the_serving_extra_is_imported_only_by_the_serving_room():
    extra = {"kserve", "tritonclient", "grpc"}
    for path in sorted((ROOT / "edge_runtime").rglob("*.py")):
        if "serving" in path.relative_to(ROOT).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
                [node.module or ""] if isinstance(node, ast.ImportFrom) else []
            assert not {n.split(".")[0] for n in names} & extra, f"{path} imports the serving extra"
