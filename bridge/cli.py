"""The ``presence-bridge`` console script.

Each subcommand lives in its own module, which has a ``register(subparsers)``
function that adds its parser and sets ``handler`` (a function of the parsed
arguments returning the exit code). The CLI only imports those modules,
parses arguments and dispatches; a handler imports its heavy dependencies
itself, so ``--help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from bridge import __version__

__all__ = ["build_parser", "main"]

PROG = "presence-bridge"
#: Modules that register subcommands, in the order ``--help`` lists them.
COMMAND_MODULES = (
    "bridge.commands",
    "bridge.sim.cli",
    "bridge.tail",
    "bridge.demo",
    "bridge.chaos.cli",
)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Streams every Genesys Cloud agent's presence and routing status into Kafka, "
            "in real time, losing no change."
        ),
    )
    parser.add_argument("--version", action="version", version=f"{PROG} {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    handler = getattr(args, "handler", None)
    if handler is None:
        parser.print_help(sys.stderr)
        return 2
    result: int = handler(args)
    return result


if __name__ == "__main__":
    sys.exit(main())
