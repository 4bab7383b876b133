"""One activity attempt under its limits (``runtime/_attempt.py``), without a store."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Any

import pytest

from perdure import ActivityContext
from perdure.providers import ActivityRequest
from perdure.runtime._attempt import Attempt, AttemptStopped
from perdure.runtime._registry import ActivityRegistry

REQUEST = ActivityRequest(
    instance_id="i",
    execution_id=1,
    source_event_id=2,
    name="act",
    input=None,
    queue="default",
    attempt=1,
    orchestration_name="o",
    orchestration_version="1",
)


@pytest.fixture
def threads() -> Iterator[ThreadPoolExecutor]:
    pool = ThreadPoolExecutor(2)
    yield pool
    pool.shutdown(wait=True)


def prepared(function: Callable[..., Any], **limits: Any) -> tuple[Attempt, ActivityContext, Any]:
    registry = ActivityRegistry()
    registry.add("act", function)
    ctx = ActivityContext(
        instance_id="i", execution_id=1, name="act", attempt=1, orchestration_name="o", orchestration_version="1"
    )
    return Attempt(replace(REQUEST, **limits), ctx._signals), ctx, registry.get("act")


async def test_the_result_or_the_exception_of_the_activity_comes_back(threads: ThreadPoolExecutor) -> None:
    async def fine(ctx: ActivityContext) -> int:
        return 7

    def broken(ctx: ActivityContext) -> int:
        raise KeyError("k")

    attempt, ctx, activity = prepared(fine, start_to_close=5.0)
    assert await attempt.run(activity, (ctx,), threads) == 7
    attempt, ctx, activity = prepared(broken)
    with pytest.raises(KeyError):
        await attempt.run(activity, (ctx,), threads)
    assert not ctx.is_cancelled()


async def test_a_cancelled_async_attempt_gets_cancelled_error_and_stops(threads: ThreadPoolExecutor) -> None:
    seen: list[str] = []

    async def hangs(ctx: ActivityContext) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append(f"cancelled, is_cancelled={ctx.is_cancelled()}")
            raise

    attempt, ctx, activity = prepared(hangs)
    running = asyncio.ensure_future(attempt.run(activity, (ctx,), threads))
    await asyncio.sleep(0.05)
    attempt.cancel()
    with pytest.raises(AttemptStopped) as stopped:
        await running
    assert stopped.value.timeout is None
    assert seen == ["cancelled, is_cancelled=True"]


async def test_an_activity_that_cancels_itself_has_failed(threads: ThreadPoolExecutor) -> None:
    async def gives_up(ctx: ActivityContext) -> None:
        raise asyncio.CancelledError

    attempt, ctx, activity = prepared(gives_up)
    with pytest.raises(RuntimeError, match=r"activity 'act' was cancelled from within \(asyncio.CancelledError\)"):
        await attempt.run(activity, (ctx,), threads)


async def test_cancelling_the_dispatcher_cancels_the_activity_and_is_not_swallowed(threads: ThreadPoolExecutor) -> None:
    seen: list[str] = []

    async def hangs(ctx: ActivityContext) -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    attempt, ctx, activity = prepared(hangs)
    running = asyncio.ensure_future(attempt.run(activity, (ctx,), threads))
    await asyncio.sleep(0.05)
    running.cancel()
    with pytest.raises(asyncio.CancelledError):
        await running
    assert seen == ["cancelled"]


async def test_a_sync_attempt_out_of_time_is_told_and_its_slot_waits_for_it(threads: ThreadPoolExecutor) -> None:
    returned = threading.Event()

    def spins(ctx: ActivityContext) -> str:
        while not ctx.is_cancelled():
            time.sleep(0.01)
        time.sleep(0.2)  # it takes a moment to wind down
        returned.set()
        return "too late"

    attempt, ctx, activity = prepared(spins, start_to_close=0.3)
    began = time.monotonic()
    with pytest.raises(AttemptStopped) as stopped:
        await attempt.run(activity, (ctx,), threads)
    assert 0.25 < time.monotonic() - began < 1.0
    assert stopped.value.timeout is not None
    assert stopped.value.timeout.type == "ActivityTimeoutError"
    assert stopped.value.timeout.message == "activity 'act' exceeded its start_to_close of 0.3 s"
    assert ctx.is_cancelled() and not returned.is_set()
    await attempt.wind_down()
    assert returned.is_set()


async def test_heartbeats_keep_an_attempt_alive_until_they_stop(threads: ThreadPoolExecutor) -> None:
    async def beats(ctx: ActivityContext) -> str:
        for _ in range(8):  # 0.4 s of heartbeats, each well within the timeout
            ctx.heartbeat()
            await asyncio.sleep(0.05)
        await asyncio.sleep(60)
        return "never"

    attempt, ctx, activity = prepared(beats, heartbeat_timeout=0.2)
    began = time.monotonic()
    with pytest.raises(AttemptStopped, match=r"activity 'act' sent no heartbeat for 0\.2 s"):
        await attempt.run(activity, (ctx,), threads)
    assert 0.55 < time.monotonic() - began < 1.5
