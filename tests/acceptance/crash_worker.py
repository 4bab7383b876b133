"""The worker process of the crash test: a Runtime on a SQLite file that kills itself on cue.

Usage: ``python crash_worker.py DB_PATH LOG_PATH``

``PERDURE_CRASH`` says where to die with SIGKILL (no cleanup, no flush, like a power cut of the
process): ``activity:N`` in the middle of the Nth activity (after it logged, before it returns),
``fetch:N`` right after the Nth fetch (locked, never acked), ``ack:N`` right after the Nth ack.
Without it the worker runs until it is killed.

Every activity appends ``instance_id <TAB> activity <TAB> input-as-JSON`` to the log, so the test
can check that each activity ran at least once.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from perdure import ActivityContext, OrchestrationContext, Registry, Runtime, RuntimeOptions, SqliteProvider
from perdure.providers._base import HistoryMark, Message, OrchestrationItem, TurnCommit, WorkItem

MODE, _, _LIMIT = os.environ.get("PERDURE_CRASH", "").partition(":")
LIMIT = int(_LIMIT or 0)
_count = 0
_count_lock = threading.Lock()  # sync activities tick from the thread pool
LOG_PATH = ""

OPTIONS = RuntimeOptions(
    worker_timeout=1,
    orchestration_concurrency=8,
    activity_concurrency=8,
    idle_timeout=0.5,
    dispatch_backoff=0.05,
    max_dispatch_backoff=0.2,
    # Crashes count as deliveries; this test is about recovery, not about giving up on poison.
    max_dispatch_attempts=1000,
)


def tick(where: str) -> None:
    """Count one ``where`` and die at the configured one."""
    global _count
    if where != MODE:
        return
    with _count_lock:
        _count += 1
        if _count >= LIMIT:
            os.kill(os.getpid(), signal.SIGKILL)


def log_run(ctx: ActivityContext, value: Any) -> None:
    line = f"{ctx.instance_id}\t{ctx.name}\t{json.dumps(value)}\n".encode()
    fd = os.open(LOG_PATH, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one write of one short line: lines of concurrent activities never mix
    finally:
        os.close(fd)


registry = Registry()


@registry.activity("Prepare")
def prepare(ctx: ActivityContext, n: int) -> int:
    log_run(ctx, n)
    tick("activity")
    return n + 1


@registry.activity("Square")
async def square(ctx: ActivityContext, n: int) -> int:
    log_run(ctx, n)
    await asyncio.sleep(0.001)
    tick("activity")
    return n * n


@registry.activity("Cube")
def cube(ctx: ActivityContext, n: int) -> int:
    log_run(ctx, n)
    tick("activity")
    return n * n * n


@registry.activity("AddOne")
async def add_one(ctx: ActivityContext, n: int) -> int:
    log_run(ctx, n)
    tick("activity")
    return n + 1


@registry.orchestration("Child")
async def child(ctx: OrchestrationContext, n: int) -> int:
    return int(await ctx.call_activity("AddOne", n))


@registry.orchestration("Pipeline")
async def pipeline(ctx: OrchestrationContext, n: int) -> list[int]:
    a = await ctx.call_activity("Prepare", n)
    b, c = await ctx.when_all([ctx.call_activity("Square", a), ctx.call_activity("Cube", a)])
    await ctx.create_timer(0.05)
    d = await ctx.call_sub_orchestration("Child", b)
    return [a, b, c, d]


def expected_output(n: int) -> list[int]:
    a = n + 1
    return [a, a * a, a * a * a, a * a + 1]


class CrashingProvider(SqliteProvider):
    """Dies right after the Nth fetch or ack, as ``PERDURE_CRASH`` says."""

    async def fetch_orchestration_item(
        self, lock_seconds: float, *, worker_id: str | None = None, held: Mapping[str, HistoryMark] | None = None
    ) -> OrchestrationItem | None:
        item = await super().fetch_orchestration_item(lock_seconds, worker_id=worker_id, held=held)
        if item is not None:
            tick("fetch")
        return item

    async def fetch_work_item(
        self, queues: Sequence[str], lock_seconds: float, *, worker_id: str | None = None
    ) -> WorkItem | None:
        item = await super().fetch_work_item(queues, lock_seconds, worker_id=worker_id)
        if item is not None:
            tick("fetch")
        return item

    async def ack_orchestration_item(self, item: OrchestrationItem, commit: TurnCommit) -> None:
        await super().ack_orchestration_item(item, commit)
        tick("ack")

    async def ack_work_item(self, item: WorkItem, completion: Message) -> None:
        await super().ack_work_item(item, completion)
        tick("ack")


async def main(db_path: str) -> None:
    provider = await CrashingProvider.open(db_path)
    async with Runtime(provider, registry, OPTIONS):
        print(f"worker {os.getpid()} running, crash at {MODE or 'never'} {LIMIT or ''}", flush=True)
        await asyncio.Event().wait()  # until killed


if __name__ == "__main__":
    LOG_PATH = sys.argv[2]
    asyncio.run(main(sys.argv[1]))
