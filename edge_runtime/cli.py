"""``sdpose-edge``: the device-side command (no torch). One module per sub-command.

Each module listed in :data:`SUBCOMMANDS` provides ``register(subparsers, name)``, which adds its
parser and sets ``func`` (called with the parsed ``argparse.Namespace``, returning an exit code).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from .errors import SDPoseError

#: sub-command -> module that implements it
SUBCOMMANDS = {
    "run": "edge_runtime.run_cli",
    "bench": "edge_runtime.bench",
}

logger = logging.getLogger("sdpose-edge")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdpose-edge", description=__doc__.splitlines()[0])
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)
    for name, module in SUBCOMMANDS.items():
        importlib.import_module(module).register(sub, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.func(args) or 0)
    except SDPoseError as exc:
        logger.error("%s", exc)
        return 2


if __name__ == "__main__":
    sys.exit(main())
