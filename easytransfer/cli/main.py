"""The ``easytransfer`` command line: train, lr-find, evaluate, predict, export, models, describe, demo.

Each group of subcommands lives in its own module (`training`, `deployment`, `catalog`), which adds its parsers
(``add_parsers``) and names its handlers (``HANDLERS``); this module assembles them and runs one.
Every subcommand has ``--help``; errors print one line (``easytransfer: error: ...``) and exit with 2.
"""

from __future__ import annotations

import argparse
import sys

from ..errors import EasyTransferError
from . import catalog, deployment, training
from .allocator import reexec_with_jemalloc
from .messages import cli_message

__all__ = ["COMMANDS", "GROUPS", "build_parser", "main"]

GROUPS = (training, deployment, catalog)  # the order of the subcommands in ``easytransfer --help``
COMMANDS = {name: handler for group in GROUPS for name, handler in group.HANDLERS.items()}


def build_parser() -> argparse.ArgumentParser:
    """The ``easytransfer`` parser with every group's subcommands.

    >>> build_parser().parse_args(["describe", "resnet50"]).arch
    'resnet50'
    """
    parser = argparse.ArgumentParser(prog="easytransfer", description="Transfer learning for images.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in GROUPS:
        group.add_parsers(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``easytransfer`` command; returns the exit status (0, 2 on a user error, 130 if interrupted)."""
    if argv is None:  # the console script: run under jemalloc when it is installed (docs/performance.md)
        reexec_with_jemalloc(sys.argv[1:])
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # `train --nproc` runs them again under torchrun
    try:
        COMMANDS[args.command](args)
    except (EasyTransferError, OSError, ValueError, ImportError) as exc:
        print(f"easytransfer: error: {cli_message(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("easytransfer: interrupted", file=sys.stderr)
        return 130
    return 0
