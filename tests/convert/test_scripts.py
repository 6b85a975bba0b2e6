"""Scripts are part of the house: every script in scripts/ starts (``--help``, in its own process with this
interpreter), and every command the README and docs/benchmarks.md give parses with today's options.

Commands are taken from fenced code blocks (``\\`` continuations joined, ``# comments`` dropped) and from inline
code spans that carry arguments (a bare ``sdpose-edge serve`` in prose names a command, it is not one). Synopsis
notation is read as a user would: ``[--opt X]`` -> ``--opt X``, ``a|b`` -> ``a``, ``...`` dropped, and the
typed placeholders ``HxW`` and ``N`` take a sample value (:data:`_SAMPLE_VALUES`). The
``sdpose-edge`` / ``sdpose-convert`` lines go through the CLIs' own parsers (``build_parser``); a script's line
through the script's ``build_parser`` in a child process (scripts import kserve or tritonclient, which must not
meet in one process).
"""
from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted(p.name for p in (ROOT / "scripts").glob("*.py"))
DOCS = ("README.md", "docs/benchmarks.md")
CLIS = {"sdpose-edge": "edge_runtime.cli", "sdpose-convert": "convert.cli"}
#: placeholders of typed values in the docs' synopses -> a value of that type
_SAMPLE_VALUES = {"HxW": "1024x768", "N": "2"}
_MODULE_CLIS = {"convert.cli": "sdpose-convert", "edge_runtime.cli": "sdpose-edge"}
#: parse one script command line in a fresh interpreter: the script loaded as a module (its main() not run)
_PARSE_SCRIPT = (
    "import importlib.util, sys\n"
    "spec = importlib.util.spec_from_file_location('script_under_test', sys.argv[1])\n"
    "module = importlib.util.module_from_spec(spec)\n"
    "spec.loader.exec_module(module)\n"
    "module.build_parser().parse_args(sys.argv[2:])\n")


def _env() -> dict[str, str]:
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))


def _code_lines(text: str) -> list[str]:
    """Fenced-block lines (continuations joined) and inline code spans of a Markdown text."""
    out: list[str] = []
    in_block, buf = False, ""
    for line in text.splitlines():
        if line.strip().startswith("```"):
            in_block, buf = not in_block, ""
        elif in_block:
            buf += line.rstrip()
            if buf.endswith("\\"):
                buf = buf[:-1] + " "
                continue
            out.append(buf)
            buf = ""
        else:
            out += re.findall(r"`([^`]+)`", line)
    return out


def _desynopsis(line: str) -> str:
    line = re.sub(r"\[([^\[\]]*)\]", r"\1", line)  # [--opt X] -> --opt X
    line = re.sub(r"(\S+?)\|\S+", r"\1", line)  # a|b|c -> a
    line = line.replace("...", " ")
    return " ".join(_SAMPLE_VALUES.get(w, w) for w in line.split(" "))


def documented_commands(doc: str) -> list[tuple[str, list[str]]]:
    """(program, argv) of every sdpose-edge / sdpose-convert / scripts/*.py command given in ``doc``."""
    found: list[tuple[str, list[str]]] = []
    for line in _code_lines((ROOT / doc).read_text(encoding="utf-8")):
        try:
            words = shlex.split(_desynopsis(line), comments=True)
        except ValueError:
            continue
        while words and (re.fullmatch(r"[A-Z_][A-Z0-9_]*=\S*", words[0]) or words[0] == "flock"):
            words = words[2:] if words[0] == "flock" else words[1:]  # env assignments, flock LOCKFILE
        if not words:
            continue
        prog = Path(words[0]).name
        if prog.startswith("python") and len(words) > 2 and words[1] == "-m" and words[2] in _MODULE_CLIS:
            prog, words = _MODULE_CLIS[words[2]], words[2:]
        if prog in CLIS and len(words) > 2:
            found.append((prog, words[1:]))
        elif prog.startswith("python") and len(words) > 1 and words[1].startswith("scripts/"):
            found.append((words[1], words[2:]))
    return found


def _all_commands() -> list[tuple[str, str, list[str]]]:
    return [(doc, prog, argv) for doc in DOCS for prog, argv in documented_commands(doc)]


def test_the_docs_give_commands():
    """The extraction finds what it should (guards the parametrized test below against finding nothing)."""
    progs = {prog for _, prog, _ in _all_commands()}
    assert {"sdpose-edge", "sdpose-convert", "scripts/measure_latency.py", "scripts/remote_bench.py"} <= progs


@pytest.mark.parametrize("script", SCRIPTS)
def test_script_help(script):
    proc = subprocess.run([sys.executable, str(ROOT / "scripts" / script), "--help"], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "usage:" in proc.stdout


@pytest.mark.parametrize("doc,prog,argv", [pytest.param(*c, id=f"{c[0]}:{c[1]} {' '.join(c[2])[:60]}")
                                           for c in _all_commands()])
def test_documented_command_parses(doc, prog, argv):
    if prog in CLIS:
        import importlib

        parser = importlib.import_module(CLIS[prog]).build_parser()
        try:
            args = parser.parse_args(argv)
        except SystemExit as exc:
            pytest.fail(f"{doc}: `{prog} {' '.join(argv)}` does not parse (exit {exc.code})")
        assert callable(args.func)
        return
    script = ROOT / prog
    assert script.is_file(), f"{doc}: names {prog}, which does not exist"
    proc = subprocess.run([sys.executable, "-c", _PARSE_SCRIPT, str(script), *argv], cwd=ROOT, env=_env(),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, f"{doc}: `python {prog} {' '.join(argv)}` does not parse: {proc.stderr[-2000:]}"


def test_docs_name_no_folders_of_one_machine():
    for doc in (*DOCS, "DEVELOPERS.md"):
        text = (ROOT / doc).read_text(encoding="utf-8")
        assert not re.search(r"(?<![\w.])/(work|home|root|Users)/", text), doc


def test_score_figures_real_run(tmp_path):
    """A tiny real run: predictions equal to the ground truth of two frames score PCK 100 %, one moved
    person less."""
    gt = np.load(ROOT / "samples" / "figures_gt.npz")
    records = []
    for t in range(2):
        persons = [{"bbox_xyxy": gt["boxes"][t, p].tolist(), "score": 1.0,
                    "keypoints": [[float(x), float(y), 1.0] for x, y in gt["keypoints"][t, p]]}
                   for p in range(gt["keypoints"].shape[1])]
        records.append({"frame": t, "persons": persons})
    exact = tmp_path / "exact.jsonl"
    exact.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    for person in records[1]["persons"][:1]:
        person["keypoints"] = [[x + 1000.0, y, s] for x, y, s in person["keypoints"]]
    moved = tmp_path / "moved.jsonl"
    moved.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    outs = [subprocess.run([sys.executable, str(ROOT / "scripts" / "score_figures.py"), str(path)], cwd=ROOT,
                           env=_env(), capture_output=True, text=True, timeout=300) for path in (exact, moved)]
    assert [p.returncode for p in outs] == [0, 0], outs[0].stderr[-2000:] + outs[1].stderr[-2000:]
    assert "all 100.0 %" in outs[0].stderr and "all 100.0 %" not in outs[1].stderr
