"""The ``perdure`` command line."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["main"]


def _demo(args: argparse.Namespace) -> int:
    from perdure.tools.demo import run_demo

    return asyncio.run(run_demo(Path(args.db)))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every ``perdure`` command."""
    parser = argparse.ArgumentParser(prog="perdure", description="Durable orchestrations for Python.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="provision a demo cloud environment durably, surviving a killed worker")
    demo.add_argument(
        "--db",
        default=os.environ.get("PERDURE_DEMO_DB", "perdure-demo.db"),
        help="SQLite file for the demo (recreated; env PERDURE_DEMO_DB; default perdure-demo.db)",
    )
    demo.set_defaults(handler=_demo)

    from perdure.tools._worker import add_worker_command

    add_worker_command(commands)

    from perdure.tools._parser import add_operator_commands

    add_operator_commands(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``perdure`` command line; returns the exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
