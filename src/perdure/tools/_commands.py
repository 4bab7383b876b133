"""The operator commands of the ``perdure`` CLI: list, show, start, signal and manage instances.

Each command opens the store named by ``--db``, talks to it only through :class:`~perdure.Client`,
and prints a table (or, with ``--json``, one stable JSON document, see
:mod:`perdure.tools._format`). They are declared in :mod:`perdure.tools.cli`; what they raise
becomes an exit code in :mod:`perdure.tools._run`.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from functools import wraps
from typing import Any

from perdure import Client, InstanceNotFoundError, OrchestrationStatus, RegistrationError
from perdure._validate import check_name
from perdure._validate import parse_version as _semantic_version
from perdure.client._payloads import show_unreadable
from perdure.providers import Provider
from perdure.tools import _format
from perdure.tools._run import (
    EXIT_FAILURE,
    EXIT_OK,
    EXIT_REFUSED,
    EXIT_USAGE,
    CommandError,
    Handler,
    open_store,
    require_db,
)

__all__ = [
    "dashboard",
    "instances_list",
    "instances_show",
    "parse_moment",
    "parse_name",
    "parse_status",
    "parse_version",
    "purge",
    "raise_event",
    "resume",
    "rewind",
    "start",
    "suspend",
    "terminate",
    "workers",
]


# --- argument types (used by the table in cli.py) ----------------------------------------------


def parse_status(text: str) -> OrchestrationStatus:
    """``completed`` or ``COMPLETED`` → ``OrchestrationStatus.COMPLETED``."""
    try:
        return OrchestrationStatus(text.strip().upper())
    except ValueError:
        choices = ", ".join(s.value for s in OrchestrationStatus)
        raise argparse.ArgumentTypeError(f"unknown status {text!r} (choose from {choices})") from None


def parse_name(text: str) -> str:
    """A name or an instance id, checked as the client checks it (so a bad one fails before the store is opened)."""
    try:
        return check_name(text, "name")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc).removeprefix("the name ")) from None


def parse_version(text: str) -> str:
    """A semantic version tag, ``1.2.0``."""
    try:
        _semantic_version(text)
    except RegistrationError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


_DURATION = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_moment(text: str) -> datetime:
    """An ISO 8601 time (naive means UTC), or an age such as ``30m``, ``12h``, ``7d`` (that long ago)."""
    match = _DURATION.match(text.strip())
    try:
        if match:
            return datetime.now(UTC) - timedelta(seconds=float(match.group(1)) * _UNITS[match.group(2)])
        moment = datetime.fromisoformat(text.strip())
        # In UTC now: a time at the edge of the calendar fails here rather than in the store.
        return (moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)).astimezone(UTC)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO 8601 time (2024-05-01T12:00:00Z) nor an age (30m, 12h, 7d)"
        ) from None
    except OverflowError:
        raise argparse.ArgumentTypeError(f"{text!r} is too far in the past or the future") from None


def _json_arg(text: str | None, option: str) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise CommandError(f"{option} is not valid JSON: {exc}", EXIT_USAGE) from None


# --- running a command -------------------------------------------------------------------------


def _with_client(command: Callable[[Client, argparse.Namespace], Awaitable[int]]) -> Handler:
    """A command over a :class:`~perdure.Client` of the ``--db`` store, open while it runs."""

    @wraps(command)
    async def handle(args: argparse.Namespace) -> int:
        # Only a start that asks for it (--create) may create a store: a typo must not make an empty one.
        async with open_store(require_db(args), create=getattr(args, "create", False)) as provider:
            return await command(tool_client(provider, args), args)

    return handle


def tool_client(provider: Provider, args: argparse.Namespace) -> Client:
    """A client with the ``--codec`` given, that shows payloads it cannot decode as ``<encoded N bytes>``."""
    client = Client(provider, payload_codec=getattr(args, "payload_codec", None))
    show_unreadable(client)
    return client


def _emit(args: argparse.Namespace, data: Any, text: str) -> int:
    # The formatters escape what they show; escaping the whole text again makes sure nothing a
    # terminal would obey reaches it (escaping twice changes nothing).
    print(_format.dumps(data) if args.json else _format.inert_lines(text))
    return EXIT_OK


# --- the commands ------------------------------------------------------------------------------


@_with_client
async def instances_list(client: Client, args: argparse.Namespace) -> int:
    limit = args.limit if args.limit is not None else 50
    if not 1 <= limit <= 9_999:
        raise CommandError("--limit must be from 1 to 9999", EXIT_USAGE)
    # One more than asked tells whether another page follows, so the cursor is never a dead end.
    page = await client.list_instances(
        status=args.status or None,
        name=args.name,
        instance_id_prefix=args.prefix,
        created_after=args.created_after,
        created_before=args.created_before,
        limit=limit + 1,
        after=args.after,
    )
    more = len(page) > limit
    page = page[:limit]
    cursor = page[-1].instance_id if more else None
    text = _format.instances_table(page) if page else "No instances match."
    if cursor is not None:
        text += f"\n\nNext page: --after {cursor}"
    data = {"instances": [_format.instance_json(s) for s in page], "next_cursor": cursor}
    return _emit(args, data, text)


@_with_client
async def instances_show(client: Client, args: argparse.Namespace) -> int:
    state = await client.get_status(args.instance_id)
    if state is None:
        raise InstanceNotFoundError(f"no instance with id {args.instance_id!r}")
    execution = args.execution
    if execution is not None and not 1 <= execution <= state.execution_id:
        raise CommandError(
            f"--execution must be from 1 to {state.execution_id}, the executions of {args.instance_id!r}", EXIT_USAGE
        )
    history = _format.history_json(await client.get_history(args.instance_id, execution))
    children = await client.list_instances(parent_instance_id=args.instance_id, limit=1000)
    data = {
        "instance": _format.instance_json(state),
        "execution_id": execution or state.execution_id,  # the execution the history belongs to
        "history": history,
        "children": [_format.instance_json(c) for c in children],
    }
    return _emit(args, data, _format.show_text(state, history, children, execution))


@_with_client
async def start(client: Client, args: argparse.Namespace) -> int:
    value = _json_arg(args.input, "--input")
    instance_id = await client.start_orchestration(
        args.instance_id, args.name, value, version=args.version, if_exists=args.if_exists or "fail"
    )
    code = _emit(args, {"instance_id": instance_id, "name": args.name}, f"Started {args.name} as {instance_id}.")
    await _warn_if_unserved(client, args.name, args.version)
    return code


async def _warn_if_unserved(client: Client, name: str, version: str | None) -> None:
    """Say on stderr when no live worker runs ``name`` (at ``version``): the instance would wait unseen.

    Only a warning: a worker may be about to start, and the exit code stays 0.
    """
    if any(worker.serves(name, version) for worker in await client.list_workers()):
        return
    wanted = f"{name}@{version}" if version else f"{name} (any version)"
    print(
        _format.inert(
            f"perdure: warning: no live worker serves orchestration {wanted}: "
            "the instance will not run until one does (perdure workers lists the live workers)"
        ),
        file=sys.stderr,
    )


@_with_client
async def raise_event(client: Client, args: argparse.Namespace) -> int:
    data = _json_arg(args.data, "--data")
    await client.raise_event(args.instance_id, args.event_name, data)
    return _emit(
        args,
        {"instance_id": args.instance_id, "event": args.event_name},
        f"Raised event {args.event_name} on {args.instance_id}.",
    )


@_with_client
async def terminate(client: Client, args: argparse.Namespace) -> int:
    if not await client.terminate(args.instance_id, args.reason, recursive=not args.no_recursive):
        state = await client.get_status(args.instance_id)
        status = state.status.value if state else "gone"
        raise CommandError(f"instance {args.instance_id!r} is already {status}; nothing to terminate", EXIT_REFUSED)
    return _action(args, "terminate", "Termination requested")


@_with_client
async def suspend(client: Client, args: argparse.Namespace) -> int:
    await client.suspend(args.instance_id, args.reason)
    return _action(args, "suspend", "Suspension requested")


@_with_client
async def resume(client: Client, args: argparse.Namespace) -> int:
    await client.resume(args.instance_id, args.reason)
    return _action(args, "resume", "Resumption requested")


@_with_client
async def rewind(client: Client, args: argparse.Namespace) -> int:
    execution_id = await client.rewind(args.instance_id, args.reason)
    data = {"instance_id": args.instance_id, "action": "rewind", "execution_id": execution_id}
    return _emit(args, data, f"Rewind requested for {args.instance_id}: it runs again as execution {execution_id}.")


def _action(args: argparse.Namespace, action: str, done: str) -> int:
    return _emit(args, {"instance_id": args.instance_id, "action": action}, f"{done} for {args.instance_id}.")


@_with_client
async def purge(client: Client, args: argparse.Namespace) -> int:
    if args.instance_id is not None:
        if args.status or args.created_before is not None:
            raise CommandError("give either an instance id or --status/--created-before, not both", EXIT_USAGE)
        count = await client.purge(args.instance_id, recursive=not args.no_recursive)
        return _emit(
            args, {"purged": count}, f"Purged {count} instance{'s' if count != 1 else ''} ({args.instance_id})."
        )
    if args.created_before is None:
        raise CommandError("give an instance id, or --created-before for a bulk purge", EXIT_USAGE)
    batch = args.batch_size if args.batch_size is not None else 500
    if batch < 1:
        raise CommandError("--batch-size must be at least 1", EXIT_USAGE)
    progress = _Progress(enabled=not args.json)
    count = await client.purge_instances(
        status=args.status or None, created_before=args.created_before, batch_size=batch, progress=progress
    )
    progress.finish()
    return _emit(args, {"purged": count}, f"Purged {count} instance{'s' if count != 1 else ''}.")


class _Progress:
    """The running total of a bulk purge on stderr: one updated line on a terminal, else a line per batch."""

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.tty = sys.stderr.isatty()
        self.shown = False

    def __call__(self, total: int) -> None:
        if not self.enabled:
            return
        self.shown = True
        if self.tty:
            print(f"\rpurging… {total} purged", end="", file=sys.stderr, flush=True)
        else:
            print(f"purging… {total} purged", file=sys.stderr, flush=True)

    def finish(self) -> None:
        if self.enabled and self.tty and self.shown:
            print(file=sys.stderr)


@_with_client
async def workers(client: Client, args: argparse.Namespace) -> int:
    found = await client.list_workers(include_stale=args.all)
    text = _format.workers_table(found) if found else ("No workers." if args.all else "No live workers.")
    return _emit(args, {"workers": [_format.worker_json(w) for w in found]}, text)


async def dashboard(args: argparse.Namespace) -> int:
    try:
        from perdure.tools.dashboard import require_token_for, serve
    except ImportError as exc:
        raise CommandError(
            f"the dashboard needs the 'dashboard' extra: pip install 'perdure[dashboard]' ({exc})", EXIT_FAILURE
        ) from None
    db = require_db(args)
    host, token = args.host or "127.0.0.1", args.token or None
    require_token_for(host, token)  # before the store is opened: a bad argument touches nothing
    async with open_store(db) as provider:
        await serve(
            tool_client(provider, args),
            host=host,
            port=args.port if args.port is not None else 8080,
            token=token,
            refresh=args.refresh if args.refresh is not None else 1.5,
        )
    return EXIT_OK
