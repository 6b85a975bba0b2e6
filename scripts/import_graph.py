"""The project's import graph: which room imports which, and any import cycle (function-level imports count).

``python scripts/import_graph.py [--root DIR] [--depth 2] [--json OUT.json]`` reads every module of the project's
packages (convert, edge_runtime, edge_bench, calib_data) with :mod:`ast`, without importing them, and prints

- one line per room (a package or sub-package at ``--depth`` dots: ``edge_runtime.running``) with the rooms it
  imports from;
- every cycle among the *modules* (strongly connected components of more than one module, or a module that
  imports itself), counting imports inside functions, which hide cycles from the interpreter but not from readers.

Written by hand with the standard library: the graph of a few hundred modules is a few dozen lines of ast, and the
libraries that draw import graphs (pydeps, import-linter) would be a workstation dependency for one report.
Exit code 1 when a cycle exists, so CI and the tests can hold the rule.
"""
from __future__ import annotations

import argparse
import ast
import json
import logging
import sys
from pathlib import Path

PACKAGES = ("convert", "edge_runtime", "edge_bench", "calib_data")
ROOT = Path(__file__).resolve().parent.parent


def module_names(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every module of the project's packages."""
    names: dict[str, Path] = {}
    for package in PACKAGES:
        for path in sorted((root / package).rglob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            names[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return names


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_package else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules that ``module`` imports anywhere in its file (top level or inside functions)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(node, module, path.name == "__init__.py")
            targets = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:
                target = target.rpartition(".")[0]
            if target and target != module:
                found.add(target)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        component.append(top)
                        if top == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = len(index)
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(graph.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def room(module: str, depth: int) -> str:
    parts = module.split(".")
    return ".".join(parts[:depth]) if len(parts) > depth else ".".join(parts[:-1]) or module


def room_graph(graph: dict[str, set[str]], depth: int) -> dict[str, list[str]]:
    """Room -> the other rooms it imports from."""
    rooms: dict[str, set[str]] = {}
    for module, targets in graph.items():
        here = room(module, depth)
        rooms.setdefault(here, set()).update(room(t, depth) for t in targets if room(t, depth) != here)
    return {name: sorted(targets) for name, targets in sorted(rooms.items())}


def build_parser() -> argparse.ArgumentParser:
    """This script's options (tests parse the documented commands with it)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the project's root (default: this checkout)")
    parser.add_argument("--depth", type=int, default=2, help="dots in a room's name (2: edge_runtime.running)")
    parser.add_argument("--json", type=Path, default=None, help="also write {rooms, cycles, modules} here")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    known = module_names(args.root)
    graph = {name: imports_of(name, path, known) for name, path in known.items()}
    rooms = room_graph(graph, args.depth)
    found = cycles(graph)
    for name, targets in rooms.items():
        logging.info("%-28s -> %s", name, ", ".join(targets) or "-")
    logging.info("%d modules, %d import edges, %d cycle(s)", len(graph), sum(map(len, graph.values())), len(found))
    for component in found:
        logging.info("cycle: %s", " <-> ".join(component))
    if args.json:
        args.json.write_text(json.dumps({"rooms": rooms, "cycles": found, "modules": len(graph)}, indent=1))
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
