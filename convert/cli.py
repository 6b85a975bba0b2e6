"""``sdpose-convert``: one entry point, one module per sub-command.

Each module listed in :data:`SUBCOMMANDS` provides ``register(subparsers)``, which adds its parser and
sets ``func`` (called with the parsed ``argparse.Namespace``, returning an exit code).
Modules are imported only when their sub-command runs, so ``--help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

from edge_runtime.errors import SDPoseError

#: sub-command -> module that implements it
SUBCOMMANDS = {
    "make-synthetic": "convert.synthetic",
    "export": "convert.export",
    "bench": "convert.bench",
    "calib": "convert.calib_cmd",
    "convert": "convert.convert_cmd",
    "validate": "convert.validate",
}

logger = logging.getLogger("sdpose-convert")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="sdpose-convert", description=__doc__.splitlines()[0])
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
