"""The ``perdure schedules`` commands: list, show, create, pause, resume, trigger and delete schedules.

Like the other operator commands (:mod:`perdure.tools._commands`), each opens the ``--db`` store,
talks to it through :class:`~perdure.Client` only, and prints a table or, with ``--json``, one
stable JSON document. Errors take the CLI's one path (:mod:`perdure.tools._run`): an unknown
schedule is exit 3, a refused command (one to an ended schedule) 4, a taken id 5, bad input 2.
"""

from __future__ import annotations

import argparse
import json
from datetime import datetime, timedelta
from typing import Any

from perdure import Client, ScheduleInfo
from perdure.tools import _format
from perdure.tools._commands import _emit, _json_arg, _with_client
from perdure.tools._run import EXIT_USAGE, CommandError

__all__ = [
    "duration_text",
    "parse_duration",
    "schedule_json",
    "schedules_create",
    "schedules_delete",
    "schedules_list",
    "schedules_pause",
    "schedules_resume",
    "schedules_show",
    "schedules_trigger",
    "when_text",
]

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d``, ``1w`` → a ``timedelta`` (for ``--every``, ``--catchup-window``)."""
    stripped = text.strip().lower()
    unit = stripped[-1:] if stripped[-1:] in _UNITS else "s"
    number = stripped[:-1] if stripped[-1:] in _UNITS else stripped
    try:
        seconds = float(number) * _UNITS[unit]
        return timedelta(seconds=seconds)
    except (ValueError, OverflowError):
        raise argparse.ArgumentTypeError(f"{text!r} is not a duration (90, 90s, 15m, 2h, 1d, 1w)") from None


def schedule_json(info: ScheduleInfo) -> dict[str, Any]:
    """The stable JSON shape of a schedule."""
    return {
        "schedule_id": info.schedule_id,
        "instance_id": info.instance_id,
        "name": info.name,
        "input": info.input,
        "cron": info.cron,
        "every_seconds": None if info.every is None else info.every.total_seconds(),
        "timezone": info.timezone,
        "overlap": info.overlap,
        "start_at": _iso(info.start_at),
        "end_at": _iso(info.end_at),
        "catchup_window_seconds": info.catchup_window.total_seconds(),
        "state": info.state,
        "note": info.note,
        "next_fire_at": _iso(info.next_fire_at),
        "running": info.running,
        "buffered": info.buffered,
        "fires": info.fires,
        "skipped": info.skipped,
        "missed": info.missed,
        "last_run_id": info.last_run_id,
        "last_fire_at": _iso(info.last_fire_at),
        "last_error": info.last_error,
        "created_at": _iso(info.created_at),
        "updated_at": _iso(info.updated_at),
    }


def when_text(info: ScheduleInfo) -> str:
    """``cron 0 2 * * * (Europe/Paris)`` or ``every 30s``."""
    return f"cron {info.cron} ({info.timezone})" if info.cron else f"every {duration_text(info.every)}"


def duration_text(span: timedelta | None) -> str:
    """``90s`` → ``1m30s``, a day → ``1d``: the largest units first, zero parts left out."""
    if span is None:
        return "-"
    seconds = span.total_seconds()
    parts = []
    for unit in ("d", "h", "m"):
        count, seconds = divmod(seconds, _UNITS[unit])
        parts += [f"{int(count)}{unit}"] if count else []
    if seconds or not parts:
        parts.append(f"{seconds:g}s")
    return "".join(parts)


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")


def _table(schedules: list[ScheduleInfo]) -> str:
    rows = [
        [s.schedule_id, s.name, when_text(s), s.overlap, s.state, _time(s.next_fire_at), str(s.fires)]
        for s in schedules
    ]
    return _format.table(["SCHEDULE", "ORCHESTRATION", "WHEN", "OVERLAP", "STATE", "NEXT (UTC)", "FIRES"], rows)


def _show_text(info: ScheduleInfo, runs: list[Any]) -> str:
    lines = [
        f"Schedule {info.schedule_id}: {info.state}" + (f" ({info.note})" if info.note else ""),
        f"  starts      {info.name} with input {json.dumps(info.input, ensure_ascii=False)}",
        f"  when        {when_text(info)}, overlap {info.overlap}",
        f"  catch up    due times at most {duration_text(info.catchup_window)} late",
        f"  window      from {_time(info.start_at)} to {_time(info.end_at)} (UTC)",
        f"  next        {_time(info.next_fire_at)} (UTC)",
        f"  counts      {info.fires} fired, {info.skipped} skipped, {info.missed} missed",
        f"  running     {info.running or '-'}" + (f", then {info.buffered}" if info.buffered else ""),
        f"  last run    {info.last_run_id or '-'}" + (f" failed: {info.last_error}" if info.last_error else ""),
        f"  instance    {info.instance_id} (perdure instances show {info.instance_id})",
    ]
    if runs:
        lines += ["", "Latest runs:", _format.instances_table(runs)]
    return "\n".join(lines)


@_with_client
async def schedules_list(client: Client, args: argparse.Namespace) -> int:
    found = await client.list_schedules(limit=args.limit if args.limit is not None else 100, after=args.after)
    data = {"schedules": [schedule_json(s) for s in found]}
    return _emit(args, data, _table(found) if found else "No schedules.")


@_with_client
async def schedules_show(client: Client, args: argparse.Namespace) -> int:
    info = await client.get_schedule(args.schedule_id)
    runs = await client.list_instances(instance_id_prefix=f"{info.schedule_id}@", limit=1000)
    latest = sorted(runs, key=lambda s: s.created_at)[-10:]
    data = {"schedule": schedule_json(info), "runs": [_format.instance_json(r) for r in latest]}
    return _emit(args, data, _show_text(info, latest))


@_with_client
async def schedules_create(client: Client, args: argparse.Namespace) -> int:
    if (args.cron is None) == (args.every is None):
        raise CommandError("give exactly one of --cron and --every", EXIT_USAGE)
    info = await client.create_schedule(
        args.schedule_id,
        args.name,
        _json_arg(args.input, "--input"),
        cron=args.cron,
        every=args.every,
        timezone=args.timezone or "UTC",
        overlap=args.overlap or "skip",
        start_at=args.start_at,
        end_at=args.end_at,
        **({} if args.catchup_window is None else {"catchup_window": args.catchup_window}),
    )
    text = f"Created schedule {info.schedule_id}: {when_text(info)}; first run at {_time(info.next_fire_at)} UTC."
    return _emit(args, {"schedule": schedule_json(info)}, text)


@_with_client
async def schedules_pause(client: Client, args: argparse.Namespace) -> int:
    await client.pause_schedule(args.schedule_id, args.note)
    return _done(args, "pause", "Pause requested")


@_with_client
async def schedules_resume(client: Client, args: argparse.Namespace) -> int:
    await client.resume_schedule(args.schedule_id)
    return _done(args, "resume", "Resumption requested")


@_with_client
async def schedules_trigger(client: Client, args: argparse.Namespace) -> int:
    await client.trigger_schedule(args.schedule_id)
    return _done(args, "trigger", "Run requested")


@_with_client
async def schedules_delete(client: Client, args: argparse.Namespace) -> int:
    await client.delete_schedule(args.schedule_id)
    return _done(args, "delete", "Deletion requested")


def _done(args: argparse.Namespace, action: str, what: str) -> int:
    text = f"{what} for schedule {args.schedule_id}; it takes effect at the schedule's next turn."
    return _emit(args, {"schedule_id": args.schedule_id, "action": action}, text)
