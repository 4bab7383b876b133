"""The registry the activity-limits acceptance test runs in ``perdure worker`` processes.

Activities note when they start and when they learn they must stop, each in a file of its own
under ``PERDURE_LIMITS_DIR`` named ``<instance>.<activity>.<what>`` and holding ``time.time()``,
so the test, in another process, can measure how soon they were told.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

from perdure import ActivityContext, OrchestrationContext, Registry, RetryPolicy

registry = Registry()


def note(ctx: ActivityContext, what: str) -> None:
    path = Path(os.environ["PERDURE_LIMITS_DIR"]) / f"{ctx.instance_id}.{ctx.name}.{what}"
    path.write_text(repr(time.time()))


def noted(instance_id: str, activity: str, what: str) -> bool:
    return (Path(os.environ["PERDURE_LIMITS_DIR"]) / f"{instance_id}.{activity}.{what}").exists()


@registry.activity("Hang")
async def hang(ctx: ActivityContext) -> str:
    note(ctx, "started")
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        note(ctx, "stopped")
        raise
    return "never"


@registry.activity("Spin")
def spin(ctx: ActivityContext) -> str:
    note(ctx, "started")
    deadline = time.monotonic() + 60
    while not ctx.is_cancelled() and time.monotonic() < deadline:
        time.sleep(0.01)
    note(ctx, "stopped")
    return "stopped"


@registry.activity("WhenBothRun")
async def when_both_run(ctx: ActivityContext) -> str:
    while not (noted(ctx.instance_id, "Hang", "started") and noted(ctx.instance_id, "Spin", "started")):  # noqa: ASYNC110
        await asyncio.sleep(0.02)  # the other processes' files: polling is all there is
    return "fast"


@registry.activity("HangOnce")
async def hang_once(ctx: ActivityContext) -> str:
    if ctx.attempt == 1:
        note(ctx, "started")
        await asyncio.sleep(3600)
    return f"attempt {ctx.attempt}"


@registry.activity("BlockLoopOnce")
async def block_loop_once(ctx: ActivityContext) -> str:
    if ctx.attempt == 1:
        note(ctx, "started")
        time.sleep(6)  # noqa: ASYNC251 - blocks this worker's event loop on purpose: it can enforce nothing
        note(ctx, "unblocked")
    return f"attempt {ctx.attempt}"


@registry.orchestration("Race")
async def race(ctx: OrchestrationContext, _: Any) -> str:
    hang, spin = ctx.call_activity("Hang"), ctx.call_activity("Spin")
    winner = await ctx.when_any([hang, spin, ctx.call_activity("WhenBothRun")])
    hang.cancel()
    spin.cancel()
    await ctx.wait_for_event("finish")  # still running: only the cancellation can stop them
    return str(winner.result())


@registry.orchestration("LeaveRunning")
async def leave_running(ctx: OrchestrationContext, _: Any) -> None:
    ctx.call_activity("Hang")
    ctx.call_activity("Spin")
    await ctx.call_activity("WhenBothRun")
    await ctx.wait_for_event("never")


@registry.orchestration("Limited")
async def limited(ctx: OrchestrationContext, activity: str) -> str:
    retry = RetryPolicy(max_attempts=2, initial_interval=0.1)
    return str(await ctx.call_activity(activity, start_to_close=1, retry=retry))
