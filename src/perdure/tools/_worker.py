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

from perdure import RegistrationError
from perdure.runtime import Registry, Runtime, RuntimeOptions
from perdure.tools._run import EXIT_OK, EXIT_USAGE, CommandError, open_store, require_db

__all__ = ["GRACE_SECONDS", "OPTION_FIELDS", "load_registry", "registry_of", "run_worker", "worker"]

_log = logging.getLogger("perdure.worker")

GRACE_SECONDS = 10.0
"""How long a stopping worker lets work in progress finish, unless ``--grace`` says otherwise."""

OPTION_FIELDS = (
    "payload_codec",
    "run_orchestrations",
    "run_activities",
    "activity_queues",
    "activity_concurrency",
    "orchestration_concurrency",
    "lock_seconds",
    "activity_lock_seconds",
    "determinism_guards",
    "worker_timeout",
    "cache_size",
)
"""The :class:`~perdure.RuntimeOptions` fields the worker's options set (each option's ``dest``)."""


async def worker(args: argparse.Namespace) -> int:
    """``perdure worker``: run a registry's orchestrations and activities until SIGTERM or SIGINT."""
    db = require_db(args)
    try:
        logging.basicConfig(
            level=args.log_level.upper(), format="%(asctime)s %(process)d %(levelname)s %(name)s: %(message)s"
        )
    except ValueError as exc:
        raise CommandError(f"--log-level: {exc}", EXIT_USAGE) from None
    await run_worker(db, registry_of(args.target), runtime_options(args), grace=args.grace)
    return EXIT_OK


def runtime_options(args: argparse.Namespace) -> RuntimeOptions:
    """The runtime options the command line (or environment) gives; ``RuntimeOptions()`` fills in the rest."""
    given = {name: getattr(args, name) for name in OPTION_FIELDS if getattr(args, name, None) not in (None, [])}
    if "activity_queues" in given:
        given["activity_queues"] = tuple(given["activity_queues"])
    try:
        return RuntimeOptions(**given)
    except ValueError as exc:
        raise CommandError(f"invalid worker option: {exc}", EXIT_USAGE) from None


def registry_of(target: str) -> Registry:
    """:func:`load_registry`, its failures a usage error (exit 2)."""
    try:
        return load_registry(target)
    except (ImportError, AttributeError, TypeError, ValueError, RegistrationError) as exc:
        raise CommandError(f"cannot load the registry {target}: {exc}", EXIT_USAGE) from None


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


async def run_worker(db: str, registry: Registry, options: RuntimeOptions, *, grace: float = GRACE_SECONDS) -> None:
    """Run a runtime on ``db`` until SIGTERM or SIGINT, then shut it down gracefully."""
    async with open_store(db, create=True) as provider:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        try:
            runtime = Runtime(provider, registry, options)
            await runtime.start()
            _log.info("worker %d ready", os.getpid())
            await stop.wait()
            _log.info("worker %d stopping", os.getpid())
            await runtime.shutdown(grace)
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT):
                loop.remove_signal_handler(signum)
    _log.info("worker %d stopped", os.getpid())
