"""``sdpose-convert``: one entry point, one module per sub-command.

Each module listed in :data:`SUBCOMMANDS` provides ``register(subparsers, name)``, which adds its parser
and sets ``func`` (called with the parsed ``argparse.Namespace``, returning an exit code). The dispatch
itself is the runtime's (``edge_runtime.cli.run_cli``).
"""
from __future__ import annotations

import argparse
import sys

from edge_runtime.cli import make_parser, run_cli

#: sub-command -> module that implements it
SUBCOMMANDS = {
    "make-synthetic": "convert.synthetic",
    "export": "convert.export",
    "bench": "convert.bench",
    "calib": "convert.calib_cmd",
    "convert": "convert.convert_cmd",
    "validate": "convert.validate",
    "export-ovms": "convert.ovms",
}


def build_parser() -> argparse.ArgumentParser:
    """The ``sdpose-convert`` parser."""
    return make_parser("sdpose-convert", __doc__.splitlines()[0], SUBCOMMANDS)


def main(argv: list[str] | None = None) -> int:
    return run_cli("sdpose-convert", __doc__.splitlines()[0], SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
