"""``sdpose-edge``: the device-side command (no torch). One module per sub-command.

Each module listed in :data:`SUBCOMMANDS` provides ``register(subparsers, name)``, which adds its
parser and sets ``func`` (called with the parsed ``argparse.Namespace``, returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edge_runtime.errors import SDPoseError

#: sub-command -> module that implements it
SUBCOMMANDS = {
    "run": "edge_runtime.commands.run_cli",
    "bench": "edge_bench.cli",
    "eval": "edge_runtime.commands.eval_cli",
    "serve": "edge_runtime.serving.serve",
    "devices": "edge_runtime.commands.devices_cli",
}

def make_parser(prog: str, description: str, subcommands: dict[str, str]) -> argparse.ArgumentParser:
    """A parser with one sub-command per entry of ``subcommands`` (name -> module with ``register``)."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in subcommands.items():
        importlib.import_module(module).register(sub, name)
    return parser


def run_cli(prog: str, description: str, subcommands: dict[str, str], argv: list[str] | None = None) -> int:
    """Parse ``argv``, configure logging and run the chosen sub-command; an SDPoseError (bad input,
    bad model folder) is logged as one clear line and gives exit code 2. Shared by ``sdpose-convert``."""
    args = make_parser(prog, description, subcommands).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except SDPoseError as exc:
        logging.getLogger(prog).error("%s", exc)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C: the outputs were closed and the summary written on the way out
        logging.getLogger(prog).error("interrupted")
        return 130


def build_parser() -> argparse.ArgumentParser:
    """The ``sdpose-edge`` parser."""
    return make_parser("sdpose-edge", __doc__.splitlines()[0], SUBCOMMANDS)


def main(argv: list[str] | None = None) -> int:
    return run_cli("sdpose-edge", __doc__.splitlines()[0], SUBCOMMANDS, argv)


if __name__ == "__main__":
    sys.exit(main())
