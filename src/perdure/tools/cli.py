"""The ``perdure`` command line: one table of every command, its arguments and its handler.

How the table becomes a parser (and options come from ``PERDURE_*`` variables):
:mod:`perdure.tools._parser`. How a handler's failures become one line on stderr and an exit
code: :mod:`perdure.tools._run`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from perdure.client._start import IF_EXISTS
from perdure.runtime import RuntimeOptions
from perdure.schedules import OVERLAP
from perdure.tools import _commands, _replay, _schedule_commands, _worker
from perdure.tools._codec_option import CODEC
from perdure.tools._commands import parse_moment, parse_name, parse_status, parse_version
from perdure.tools._parser import Arg, Command, Many, arg, build_parser, listed
from perdure.tools._run import run

__all__ = ["COMMANDS", "main"]


async def _demo(args: argparse.Namespace) -> int:
    # Imported on demand: the demo module registers its own orchestrations.
    from perdure.tools.demo import run_demo

    return await run_demo(Path(args.db))


_RUNTIME = RuntimeOptions()  # the worker's defaults
_WHEN = "ISO 8601 time or an age (30m, 12h, 7d)"
_ID = arg("instance_id", metavar="ID")
_DB = arg("--db", "the store: sqlite:///path.db or postgresql://…", metavar="URL")
_STORE = (_DB, arg("--json", "print one JSON document instead of text", action="store_true"), CODEC)
_REASON = arg("--reason", "why; recorded in the history")


def _statuses(help: str) -> Arg:
    return arg("--status", help, type=listed(parse_status), action=Many, metavar="STATUS")


def _yes(value: bool) -> str:
    return "yes" if value else "no"


_TARGET = arg("target", "where the Registry is, e.g. myapp.flows:registry", metavar="MODULE:REGISTRY")
_GUARDS = arg(
    "--determinism-guards",
    f"orchestration code may not call time.time(), random… (default: {_yes(_RUNTIME.determinism_guards)})",
    action=argparse.BooleanOptionalAction,
)

_WORKER_ARGS = (
    _TARGET,
    _DB,
    arg(
        "--orchestrations",
        f"run orchestration turns (default: {_yes(_RUNTIME.run_orchestrations)})",
        dest="run_orchestrations",
        action=argparse.BooleanOptionalAction,
    ),
    arg(
        "--activities",
        f"run activities (default: {_yes(_RUNTIME.run_activities)})",
        dest="run_activities",
        action=argparse.BooleanOptionalAction,
    ),
    arg(
        "--queue",
        f"a worker queue to serve; repeat or separate with commas (default: {','.join(_RUNTIME.activity_queues)})",
        dest="activity_queues",
        type=listed(str),
        action=Many,
        metavar="NAME",
    ),
    arg(
        "--concurrency",
        f"activities run at once (default {_RUNTIME.activity_concurrency})",
        dest="activity_concurrency",
        type=int,
        metavar="N",
    ),
    arg(
        "--orchestration-concurrency",
        f"orchestration turns at once (default {_RUNTIME.orchestration_concurrency})",
        type=int,
        metavar="N",
    ),
    arg(
        "--lock-seconds",
        f"instance lock before take-over (default {_RUNTIME.lock_seconds:g})",
        type=float,
        metavar="SECONDS",
    ),
    arg(
        "--activity-lock-seconds",
        f"activity lock, renewed while running (default {_RUNTIME.activity_lock_seconds:g})",
        type=float,
        metavar="SECONDS",
    ),
    arg(
        "--worker-timeout",
        f"seconds without renewing its record after which a worker's work is taken over "
        f"(default {_RUNTIME.worker_timeout:g})",
        type=float,
        metavar="SECONDS",
    ),
    arg(
        "--cache-size",
        f"executions kept in memory between turns; 0 turns the cache off (default {_RUNTIME.cache_size})",
        type=int,
        metavar="N",
    ),
    arg(
        "--grace",
        f"seconds to finish work on shutdown (default {_worker.GRACE_SECONDS:g})",
        type=float,
        default=_worker.GRACE_SECONDS,
        metavar="SECONDS",
    ),
    _GUARDS,
    CODEC,
    arg("--log-level", "logging level (default INFO)", default="INFO", metavar="LEVEL"),
)

_REPLAY_ARGS = (
    _TARGET,
    arg("--db", "the store whose histories to replay: sqlite:///path.db or postgresql://…", metavar="URL"),
    arg("--name", "only instances of this orchestration name"),
    _statuses("only this status; repeat or separate with commas (default: all)"),
    arg(
        "--history",
        "a history file ('instances show --json' output); repeat or separate with commas",
        type=listed(str),
        action=Many,
        metavar="FILE",
    ),
    _GUARDS,
    arg("--json", "print one JSON document instead of text", action="store_true"),
    CODEC,
)

_LIST_ARGS = (
    _statuses("only this status; repeat or separate with commas"),
    arg("--name", "only this orchestration name"),
    arg("--prefix", "only instance ids starting with TEXT", metavar="TEXT"),
    arg("--created-after", _WHEN, type=parse_moment, metavar="WHEN"),
    arg("--created-before", _WHEN, type=parse_moment, metavar="WHEN"),
    arg("--limit", "at most N instances (default 50)", type=int, metavar="N"),
    arg("--after", "the next-page cursor a previous listing printed", metavar="CURSOR"),
    *_STORE,
)

_PURGE_ARGS = (
    arg("instance_id", "one instance (with its children)", metavar="ID", nargs="?"),
    arg("--no-recursive", "keep the instance's children", action="store_true"),
    _statuses("bulk: only this terminal status; repeat or separate with commas (default: all three)"),
    arg("--created-before", "bulk: created before WHEN", type=parse_moment, metavar="WHEN"),
    arg("--batch-size", "bulk: instances per transaction (default 500)", type=int, metavar="N"),
    *_STORE,
)

_SCHEDULE_ID = arg("schedule_id", metavar="SCHEDULE_ID")
_ISO = "ISO 8601 time (naive means UTC)"
_SCHEDULE_CREATE_ARGS = (
    _SCHEDULE_ID,
    arg("name", "the orchestration each run starts", type=parse_name, metavar="NAME"),
    arg("--cron", "a five-field cron expression ('0 2 * * *') or @hourly, @daily …", metavar="EXPR"),
    arg("--every", "an interval: 90, 90s, 15m, 2h, 1d", type=_schedule_commands.parse_duration, metavar="DURATION"),
    arg("--timezone", "the IANA time zone of --cron (default UTC)", metavar="ZONE"),
    arg("--overlap", "when a run is due while the previous one runs (default skip)", choices=OVERLAP),
    arg("--input", "the input of every run, a JSON value", metavar="JSON"),
    arg("--start-at", f"no run before this {_ISO}", type=parse_moment, metavar="WHEN"),
    arg("--end-at", f"no run after this {_ISO}", type=parse_moment, metavar="WHEN"),
    arg(
        "--catchup-window",
        "after downtime, fire due times at most this late (default 365d)",
        type=_schedule_commands.parse_duration,
        metavar="DURATION",
    ),
    *_STORE,
)

_DASHBOARD_ARGS = (
    arg("--host", "address to listen on (default 127.0.0.1; others need --token)"),
    arg("--port", "port (default 8080; 0 picks a free one)", type=int),
    arg("--token", "access token required on every request"),
    arg("--refresh", "page refresh interval (default 1.5)", type=float, metavar="SECONDS"),
    _DB,
    CODEC,
)

COMMANDS: tuple[Command, ...] = (
    Command(
        "demo",
        "provision a demo cloud environment durably, surviving a killed worker",
        _demo,
        [
            arg(
                "--db",
                "SQLite file for the demo (recreated; default perdure-demo.db)",
                env="PERDURE_DEMO_DB",
                default="perdure-demo.db",
                metavar="PATH",
            )
        ],
    ),
    Command(
        "worker",
        "run the orchestrations and activities of a registry",
        _worker.worker,
        _WORKER_ARGS,
        description="Run the orchestrations and activities of a registry until SIGTERM or SIGINT.",
    ),
    Command(
        "replay",
        "check that the code of a registry replays stored histories (before a deploy)",
        _replay.replay,
        _REPLAY_ARGS,
        description="Replay stored histories against a registry's code: exit 0 if every one replays, "
        "1 with the instances that diverge and the first differing event.",
    ),
    Command("instances", "list instances or show one", None),
    Command("instances list", "list instances (filters, cursor paging)", _commands.instances_list, _LIST_ARGS),
    Command(
        "instances show",
        "state, error, children and history of one instance",
        _commands.instances_show,
        (_ID, arg("--execution", "show execution N (default: the current one)", type=int, metavar="N"), *_STORE),
    ),
    Command(
        "start",
        "start an orchestration instance",
        _commands.start,
        (
            arg("name", "the registered orchestration name", type=parse_name, metavar="NAME"),
            arg("--id", "the instance id (default: a new random one)", dest="instance_id", type=parse_name),
            arg("--input", "the input, a JSON value", metavar="JSON"),
            arg("--version", "pin this version (default: the name's version policy)", type=parse_version, metavar="V"),
            arg(
                "--if-exists",
                "when the id is taken: fail (default), return it, or restart the instance afresh",
                choices=IF_EXISTS,
            ),
            arg("--create", "create the store if there is none (default: use an existing one)", action="store_true"),
            *_STORE,
        ),
    ),
    Command(
        "raise-event",
        "deliver an external event to an instance",
        _commands.raise_event,
        (
            _ID,
            arg("event_name", metavar="NAME"),
            arg("--data", "the event data, a JSON value", metavar="JSON"),
            *_STORE,
        ),
    ),
    Command(
        "terminate",
        "terminate an unfinished instance (and its children)",
        _commands.terminate,
        (_ID, _REASON, arg("--no-recursive", "leave its children running", action="store_true"), *_STORE),
    ),
    Command("suspend", "pause a running instance", _commands.suspend, (_ID, _REASON, *_STORE)),
    Command("resume", "resume a suspended instance", _commands.resume, (_ID, _REASON, *_STORE)),
    Command("rewind", "retry a failed instance from where it failed", _commands.rewind, (_ID, _REASON, *_STORE)),
    Command(
        "purge",
        "delete a finished instance, or every finished instance matching --status/--created-before",
        _commands.purge,
        _PURGE_ARGS,
    ),
    Command("schedules", "list, show, create, pause, resume, trigger or delete schedules", None),
    Command(
        "schedules list",
        "list schedules (deleted ones left out)",
        _schedule_commands.schedules_list,
        (
            arg("--limit", "at most N schedules (default 100)", type=int, metavar="N"),
            arg("--after", "list the schedules after this id (paging)", metavar="SCHEDULE_ID"),
            *_STORE,
        ),
    ),
    Command(
        "schedules show",
        "a schedule's spec, state, counts and latest runs",
        _schedule_commands.schedules_show,
        (_SCHEDULE_ID, *_STORE),
    ),
    Command(
        "schedules create",
        "start an orchestration on a cron expression or an interval",
        _schedule_commands.schedules_create,
        _SCHEDULE_CREATE_ARGS,
    ),
    Command(
        "schedules pause",
        "stop firing until resumed",
        _schedule_commands.schedules_pause,
        (_SCHEDULE_ID, arg("--note", "why; shown with the schedule"), *_STORE),
    ),
    Command("schedules resume", "fire again", _schedule_commands.schedules_resume, (_SCHEDULE_ID, *_STORE)),
    Command("schedules trigger", "start a run now", _schedule_commands.schedules_trigger, (_SCHEDULE_ID, *_STORE)),
    Command(
        "schedules delete",
        "stop a schedule for good (its runs go on)",
        _schedule_commands.schedules_delete,
        (_SCHEDULE_ID, *_STORE),
    ),
    Command(
        "workers",
        "list the live worker processes and what each serves",
        _commands.workers,
        (arg("--all", "also list workers that died (kept for a day)", action="store_true"), *_STORE),
    ),
    Command("dashboard", "serve the web dashboard", _commands.dashboard, _DASHBOARD_ARGS),
)
"""Every ``perdure`` command, in the order ``perdure --help`` lists them."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``perdure`` command line; returns the exit code."""
    parser = build_parser(COMMANDS, description="Durable orchestrations for Python.")
    args = parser.parse_args(argv)
    return run(args.handler, args)


if __name__ == "__main__":
    sys.exit(main())
