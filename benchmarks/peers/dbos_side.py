"""DBOS's side of the peer benchmark: one shape, one fresh system database, one JSON line.

Runs in the throw-away virtual environment ``run.py`` creates (DBOS is never a dependency of
perdure): ``python dbos_side.py --shape fan_out --n 300 --url postgresql+psycopg://…``. The DBOS
executor and the caller share one process. Every result is checked; a wrong or missing one exits
non-zero instead of printing a figure.

``--style sync`` uses plain ``def`` workflows and steps (run on DBOS's thread pool), ``--style
async`` uses ``async def`` ones on the event loop. The fan-out runs its steps with
``asyncio.gather`` inside one async workflow (``--fan-out steps``), or starts one child workflow
per step directly (``children``) or through a queue (``queue``).
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from contextlib import closing
from importlib import metadata
from typing import Any

from dbos import DBOS
from shapes import SEQUENCE_LENGTH, SHAPES, Stopwatch, expected, report

QUEUE_POLLING_SECONDS = 0.01
"""How often the fan-out queue is polled (DBOS's default is 1 s, which would dominate)."""


@DBOS.step()
def inc(n: int) -> int:
    return n + 1


@DBOS.workflow()
def one(n: int) -> int:
    return inc(n)


@DBOS.workflow()
def sequence(n: int) -> int:
    for _ in range(SEQUENCE_LENGTH):
        n = inc(n)
    return n


@DBOS.workflow()
def fan_out_queue(n: int) -> int:
    queue = DBOS.retrieve_queue("fan-out")
    assert queue is not None
    handles = [queue.enqueue(one, k) for k in range(n)]
    return sum(handle.get_result() for handle in handles)


@DBOS.step()
async def inc_async(n: int) -> int:
    return n + 1


@DBOS.workflow()
async def one_async(n: int) -> int:
    return await inc_async(n)


@DBOS.workflow()
async def sequence_async(n: int) -> int:
    for _ in range(SEQUENCE_LENGTH):
        n = await inc_async(n)
    return n


@DBOS.workflow()
async def fan_out_steps(n: int) -> int:
    return sum(await asyncio.gather(*(inc_async(k) for k in range(n))))


def _check(what: str, got: Any, want: int) -> None:
    if got != want:
        raise SystemExit(f"{what}: got {got!r}, expected {want!r}")


def run_sync(shape: str, n: int) -> None:
    """Run one shape with plain ``def`` workflows, checking every result."""
    workflow = sequence if shape.startswith("sequence") else one
    count = SHAPES[shape].workflows(n)
    if shape in ("one_at_a_time", "sequence_one_at_a_time"):
        for k in range(count):
            _check(f"{shape} {k}", DBOS.start_workflow(workflow, k).get_result(), expected(shape, n, k))
    elif shape in ("started_together", "sequence_together"):
        handles = [DBOS.start_workflow(workflow, k) for k in range(count)]
        for k, handle in enumerate(handles):
            _check(f"{shape} {k}", handle.get_result(), expected(shape, n, k))
    else:
        _check(shape, DBOS.start_workflow(fan_out_queue, n).get_result(), expected(shape, n))


async def run_async(shape: str, n: int) -> None:
    """Run one shape with ``async def`` workflows, checking every result."""
    workflow = sequence_async if shape.startswith("sequence") else one_async
    count = SHAPES[shape].workflows(n)
    if shape in ("one_at_a_time", "sequence_one_at_a_time"):
        for k in range(count):
            handle = await DBOS.start_workflow_async(workflow, k)
            _check(f"{shape} {k}", await handle.get_result(), expected(shape, n, k))
    elif shape in ("started_together", "sequence_together"):
        handles = await asyncio.gather(*(DBOS.start_workflow_async(workflow, k) for k in range(count)))
        results = await asyncio.gather(*(handle.get_result() for handle in handles))
        for k, result in enumerate(results):
            _check(f"{shape} {k}", result, expected(shape, n, k))
    else:
        handle = await DBOS.start_workflow_async(fan_out_steps, n)
        _check(shape, await handle.get_result(), expected(shape, n))


# Each timing first runs three 1-step workflows in the same style, so that connections, thread
# pools and first-call costs are paid before the clock starts.


def timed_sync(shape: str, n: int) -> Stopwatch:
    """:func:`run_sync`, timed after a warm-up."""
    for k in range(3):
        _check("warm-up", DBOS.start_workflow(one, k).get_result(), k + 1)
    with Stopwatch() as watch:
        run_sync(shape, n)
    return watch


async def timed_async(shape: str, n: int) -> Stopwatch:
    """:func:`run_async`, timed after a warm-up."""
    for k in range(3):
        handle = await DBOS.start_workflow_async(one_async, k)
        _check("warm-up", await handle.get_result(), k + 1)
    with Stopwatch() as watch:
        await run_async(shape, n)
    return watch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--n", type=int, required=True)
    parser.add_argument("--url", required=True, help="system database URL (a fresh database)")
    parser.add_argument("--style", choices=["sync", "async"], default="sync")
    parser.add_argument("--fan-out", choices=["steps", "queue"], default="steps")
    args = parser.parse_args()
    if args.shape == "fan_out":
        # Concurrent steps in one workflow need an async workflow; the queue variant is plain def.
        args.style = "async" if args.fan_out == "steps" else "sync"

    DBOS(config={"name": "perdure-peers", "system_database_url": args.url, "log_level": "WARNING"})
    DBOS.launch()
    try:
        if args.shape == "fan_out" and args.fan_out == "queue":
            DBOS.register_queue("fan-out", polling_interval_sec=QUEUE_POLLING_SECONDS)
        if args.style == "async":
            watch = asyncio.run(timed_async(args.shape, args.n))
        else:
            watch = timed_sync(args.shape, args.n)
    finally:
        DBOS.destroy()
    settings: dict[str, object] = {"style": args.style, "versions": _versions()}
    if args.shape == "fan_out":
        settings["fan_out"] = args.fan_out
    if args.url.startswith("sqlite:///"):
        settings.update(_sqlite_settings(args.url.removeprefix("sqlite:///")))
    report(args.shape, args.n, watch, **settings)


def _sqlite_settings(path: str) -> dict[str, object]:
    """The journal mode DBOS left in its file, and the synchronous level a connection gets by
    default (DBOS sets neither, so SQLite's defaults apply)."""
    with closing(sqlite3.connect(path)) as conn:
        journal = conn.execute("PRAGMA journal_mode").fetchone()[0]
        level = conn.execute("PRAGMA synchronous").fetchone()[0]
    return {"journal_mode": journal, "synchronous": {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}[level]}


def _versions() -> dict[str, str]:
    return {
        "dbos": metadata.version("dbos"),
        "sqlalchemy": metadata.version("sqlalchemy"),
        "psycopg": metadata.version("psycopg"),
        "sqlite": sqlite3.sqlite_version,
    }


if __name__ == "__main__":
    main()
