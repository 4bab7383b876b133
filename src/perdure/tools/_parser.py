"""The argument parsers of the operator commands (``instances``, ``start``, ``purge``, ``dashboard``…).

Every option ``--some-option`` may also come from the environment variable
``PERDURE_SOME_OPTION`` (``--db`` from ``PERDURE_DB``, ``--json`` from ``PERDURE_JSON=1``); the
command line wins. The commands themselves live in :mod:`perdure.tools._commands`.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from perdure import OrchestrationStatus
from perdure.tools._commands import parse_moment, parse_status, run

__all__ = ["add_operator_commands", "env_name"]

_TRUE = {"1", "true", "yes", "on"}


def env_name(flag: str) -> str:
    """``--created-before`` → ``PERDURE_CREATED_BEFORE``."""
    return "PERDURE_" + flag.lstrip("-").replace("-", "_").upper()


def _statuses(text: str) -> list[OrchestrationStatus]:
    return [parse_status(part) for part in text.split(",") if part.strip()]


class _ExtendFresh(argparse.Action):
    """Collects repeated (or comma-separated) values; values on the command line replace the env default."""

    def __call__(
        self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option: str | None = None
    ) -> None:
        current = getattr(namespace, self.dest)
        current = [] if current is None or current is self.default else list(current)
        setattr(namespace, self.dest, current + list(values))


def _option(parser: argparse.ArgumentParser, flag: str, *, help: str, **kwargs: Any) -> None:
    """Add ``flag`` with its environment variable as the default (converted by argparse like a typed value)."""
    env = env_name(flag)
    raw = os.environ.get(env)
    if kwargs.get("action") == "store_true":
        kwargs["default"] = raw is not None and raw.strip().lower() in _TRUE
    elif raw is not None:
        kwargs["default"] = raw
    parser.add_argument(flag, help=f"{help} (env {env})", **kwargs)


def _common(parser: argparse.ArgumentParser, *, json: bool = True) -> None:
    _option(parser, "--db", metavar="URL", help="the store: sqlite:///path.db or postgresql://…")
    if json:
        _option(parser, "--json", action="store_true", help="print one JSON document instead of text")


def _reason(parser: argparse.ArgumentParser) -> None:
    _option(parser, "--reason", help="why; recorded in the history")


def _handler(name: str) -> Any:
    def handle(args: argparse.Namespace) -> int:
        return run(name, args)

    return handle


def add_operator_commands(commands: Any) -> None:
    """Add the operator commands to the ``perdure`` sub-command group ``commands``."""
    instances = commands.add_parser("instances", help="list instances or show one")
    group = instances.add_subparsers(dest="instances_command", required=True, metavar="COMMAND")

    listing = group.add_parser("list", help="list instances (filters, cursor paging)")
    _common(listing)
    _option(
        listing,
        "--status",
        type=_statuses,
        action=_ExtendFresh,
        metavar="STATUS",
        help="only this status; repeat or separate with commas",
    )
    _option(listing, "--name", help="only this orchestration name")
    _option(listing, "--prefix", metavar="TEXT", help="only instance ids starting with TEXT")
    _option(
        listing, "--created-after", type=parse_moment, metavar="WHEN", help="ISO 8601 time or an age (30m, 12h, 7d)"
    )
    _option(
        listing, "--created-before", type=parse_moment, metavar="WHEN", help="ISO 8601 time or an age (30m, 12h, 7d)"
    )
    _option(listing, "--limit", type=int, metavar="N", help="at most N instances (default 50)")
    _option(listing, "--after", metavar="CURSOR", help="the next-page cursor a previous listing printed")
    listing.set_defaults(handler=_handler("instances_list"))

    show = group.add_parser("show", help="state, error, children and history of one instance")
    show.add_argument("instance_id", metavar="ID")
    _common(show)
    _option(show, "--execution", type=int, metavar="N", help="show execution N (default: the current one)")
    show.set_defaults(handler=_handler("instances_show"))

    start = commands.add_parser("start", help="start an orchestration instance")
    start.add_argument("name", metavar="NAME", help="the registered orchestration name")
    _option(start, "--id", dest="instance_id", required="PERDURE_ID" not in os.environ, help="the instance id")
    _option(start, "--input", metavar="JSON", help="the input, a JSON value")
    _option(start, "--version", metavar="V", help="pin this version (default: the name's version policy)")
    _common(start)
    start.set_defaults(handler=_handler("start"))

    event = commands.add_parser("raise-event", help="deliver an external event to an instance")
    event.add_argument("instance_id", metavar="ID")
    event.add_argument("event_name", metavar="NAME")
    _option(event, "--data", metavar="JSON", help="the event data, a JSON value")
    _common(event)
    event.set_defaults(handler=_handler("raise_event"))

    terminate = commands.add_parser("terminate", help="terminate an unfinished instance (and its children)")
    terminate.add_argument("instance_id", metavar="ID")
    _reason(terminate)
    _option(terminate, "--no-recursive", action="store_true", help="leave its children running")
    _common(terminate)
    terminate.set_defaults(handler=_handler("terminate"))

    for name, text in (
        ("suspend", "pause a running instance"),
        ("resume", "resume a suspended instance"),
        ("rewind", "retry a failed instance from where it failed"),
    ):
        sub = commands.add_parser(name, help=text)
        sub.add_argument("instance_id", metavar="ID")
        _reason(sub)
        _common(sub)
        sub.set_defaults(handler=_handler(name))

    purge = commands.add_parser(
        "purge", help="delete a finished instance, or every finished instance matching --status/--created-before"
    )
    purge.add_argument("instance_id", metavar="ID", nargs="?", help="one instance (with its children)")
    _option(purge, "--no-recursive", action="store_true", help="keep the instance's children")
    _option(
        purge,
        "--status",
        type=_statuses,
        action=_ExtendFresh,
        metavar="STATUS",
        help="bulk: only this terminal status; repeat or separate with commas (default: all three)",
    )
    _option(purge, "--created-before", type=parse_moment, metavar="WHEN", help="bulk: created before WHEN")
    _option(purge, "--batch-size", type=int, metavar="N", help="bulk: instances per transaction (default 500)")
    _common(purge)
    purge.set_defaults(handler=_handler("purge"))

    dashboard = commands.add_parser("dashboard", help="serve the web dashboard")
    _option(dashboard, "--host", help="address to listen on (default 127.0.0.1; others need --token)")
    _option(dashboard, "--port", type=int, help="port (default 8080; 0 picks a free one)")
    _option(dashboard, "--token", help="access token required on every request")
    _option(dashboard, "--refresh", type=float, metavar="SECONDS", help="page refresh interval (default 1.5)")
    _common(dashboard, json=False)
    dashboard.set_defaults(handler=_handler("dashboard"), json=False)
