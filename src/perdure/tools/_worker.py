"""``perdure worker MODULE:REGISTRY --db URL``: run a registry's orchestrations and activities until stopped.

Start as many workers as you like, on as many hosts as you like, against one PostgreSQL database
(or several processes on one SQLite file). SIGTERM or SIGINT stops a worker gracefully: it stops
fetching, lets work in progress finish for ``--grace`` seconds, and releases the rest.
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import logging
import os
import signal
import sys
from typing import Any

from perdure.providers._open import open_provider
from perdure.runtime import Registry, Runtime, RuntimeOptions

__all__ = ["add_worker_command", "load_registry", "run_worker"]

_log = logging.getLogger("perdure.worker")


def add_worker_command(commands: Any) -> None:
    """Add the ``worker`` subcommand to the CLI's subparsers."""
    worker: argparse.ArgumentParser = commands.add_parser(
        "worker",
        help="run the orchestrations and activities of a registry",
        description="Run the orchestrations and activities of a registry until SIGTERM or SIGINT.",
    )
    worker.add_argument("target", metavar="MODULE:REGISTRY", help="where the Registry is, e.g. myapp.flows:registry")
    worker.add_argument(
        "--db",
        default=os.environ.get("PERDURE_DB"),
        help="database URL: postgresql://… or sqlite:///path.db (env PERDURE_DB)",
    )
    worker.add_argument(
        "--orchestrations",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="run orchestration turns (default: yes)",
    )
    worker.add_argument(
        "--activities", action=argparse.BooleanOptionalAction, default=True, help="run activities (default: yes)"
    )
    worker.add_argument(
        "--queue",
        action="append",
        dest="queues",
        metavar="NAME",
        help="a worker queue to serve; repeat for several (default: default)",
    )
    worker.add_argument("--concurrency", type=int, default=16, help="activities run at once (default: 16)")
    worker.add_argument(
        "--orchestration-concurrency", type=int, default=4, help="orchestration turns at once (default: 4)"
    )
    worker.add_argument("--lock-seconds", type=float, default=30.0, help="instance lock before take-over (default 30)")
    worker.add_argument(
        "--activity-lock-seconds", type=float, default=60.0, help="activity lock, renewed while running (default 60)"
    )
    worker.add_argument("--grace", type=float, default=10.0, help="seconds to finish work on shutdown (default 10)")
    worker.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    worker.set_defaults(handler=_command)


def load_registry(target: str) -> Registry:
    """Import ``module:attribute`` (the current directory is importable, as with ``python -m``)."""
    module_name, _, attribute = target.partition(":")
    if not module_name or not attribute:
        raise ValueError(f"expected MODULE:REGISTRY, got {target!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    value: Any = importlib.import_module(module_name)
    for part in attribute.split("."):
        value = getattr(value, part)
    if not isinstance(value, Registry):
        raise TypeError(f"{target} is a {type(value).__name__}, not a perdure Registry")
    return value


async def run_worker(db: str, registry: Registry, options: RuntimeOptions, *, grace: float = 10.0) -> None:
    """Run a runtime on ``db`` until SIGTERM or SIGINT, then shut it down gracefully."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    provider = await open_provider(db)
    try:
        runtime = Runtime(provider, registry, options)
        await runtime.start()
        _log.info("worker %d ready", os.getpid())
        await stop.wait()
        _log.info("worker %d stopping", os.getpid())
        await runtime.shutdown(grace)
    finally:
        await provider.close()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
    _log.info("worker %d stopped", os.getpid())


def _command(args: argparse.Namespace) -> int:
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
    )
    if not args.db:
        print("perdure worker: give --db URL or set PERDURE_DB", file=sys.stderr)
        return 2
    try:
        registry = load_registry(args.target)
        options = RuntimeOptions(
            orchestration_concurrency=args.orchestration_concurrency,
            activity_concurrency=args.concurrency,
            activity_queues=tuple(args.queues or ("default",)),
            run_orchestrations=args.orchestrations,
            run_activities=args.activities,
            lock_seconds=args.lock_seconds,
            activity_lock_seconds=args.activity_lock_seconds,
        )
    except (ImportError, AttributeError, TypeError, ValueError) as exc:
        print(f"perdure worker: {exc}", file=sys.stderr)
        return 2
    asyncio.run(run_worker(args.db, registry, options, grace=args.grace))
    return 0
