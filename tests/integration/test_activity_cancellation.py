"""Cancellation and time limits of running activities, end to end in one process, on every provider.

The process-level proofs (separate worker processes, a blocked event loop) are in
``tests/acceptance/test_activity_limits.py``; these tests cover each path of the runtime quickly.
"""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest
from runtime_support import FAST, assert_history_sound, events_of, running, wait_until

from perdure import (
    ActivityContext,
    ActivityFailedError,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    RetryPolicy,
)
from perdure.engine.events import ActivityCompleted, ActivityFailed, ActivityScheduled, TaskCancelled
from perdure.runtime import _attempt

STOP_WITHIN = 1.5  # the watch looks twice a second; the rest is slack for a loaded machine


class Stops:
    """When each activity started and stopped (wall clock, comparable with history timestamps)."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.stopped: dict[str, float] = {}
        self._lock = threading.Lock()

    def start(self, name: str) -> None:
        with self._lock:
            self.started[name] = time.time()

    def stop(self, name: str) -> None:
        with self._lock:
            self.stopped[name] = time.time()


def long_running(registry: Registry, stops: Stops) -> None:
    """``hang`` (async, interrupted by CancelledError) and ``spin`` (sync, watching is_cancelled)."""

    @registry.activity()
    async def hang(ctx: ActivityContext) -> str:
        stops.start("hang")
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            stops.stop("hang")
            raise
        return "never"

    @registry.activity()
    def spin(ctx: ActivityContext) -> str:
        stops.start("spin")
        deadline = time.monotonic() + 30
        while not ctx.is_cancelled() and time.monotonic() < deadline:
            time.sleep(0.01)
        stops.stop("spin")
        return "stopped"  # dropped: nobody waits for it any more

    @registry.activity()
    async def when_both_run(ctx: ActivityContext) -> str:
        await wait_until(lambda: len(stops.started) >= 2, what="both long activities starting")
        return "fast"


def assert_stopped_soon_after(stops: Stops, moment: float) -> None:
    for name in ("hang", "spin"):
        assert name in stops.stopped, f"{name} was not told"
        assert 0 <= stops.stopped[name] - moment < STOP_WITHIN, (name, stops.stopped[name] - moment)


async def test_cancelled_when_any_losers_are_told_within_a_second(provider: Provider) -> None:
    registry, stops = Registry(), Stops()
    long_running(registry, stops)

    @registry.orchestration()
    async def race(ctx: OrchestrationContext, _: Any) -> Any:
        hang, spin = ctx.call_activity("hang"), ctx.call_activity("spin")
        winner = await ctx.when_any([hang, spin, ctx.call_activity("when_both_run")])
        hang.cancel()
        spin.cancel()
        await ctx.wait_for_event("finish")  # the execution goes on: only the cancellation stops them
        return winner.result()

    async with running(provider, registry) as client:
        await client.start_orchestration("r", "race")
        history = await wait_until(
            lambda: _history_with(client, "r", TaskCancelled, 2), what="the cancellations being recorded"
        )
        await wait_until(lambda: len(stops.stopped) == 2, timeout=5, what="both activities stopping")
        cancelled_at = events_of(history, TaskCancelled)[0].timestamp.timestamp()
        assert_stopped_soon_after(stops, cancelled_at)
        assert await provider.fetch_work_item(["default"], 1) is None, "the cancelled work items are gone"
        await client.raise_event("r", "finish")
        state = await client.wait_for_orchestration("r", timeout=10)

    assert (state.status, state.output) == (OrchestrationStatus.COMPLETED, "fast")
    history = await provider.get_history("r")
    assert_history_sound(history)
    assert [e.result for e in events_of(history, ActivityCompleted)] == ["fast"], "no answer from a cancelled one"


async def _history_with(client: Any, instance_id: str, kind: type, count: int) -> Any:
    history = await client.provider.get_history(instance_id)
    return history if len(events_of(history, kind)) >= count else None


@pytest.mark.parametrize("how", ["terminate", "complete"])
async def test_an_execution_that_ends_cancels_its_running_activities(provider: Provider, how: str) -> None:
    registry, stops = Registry(), Stops()
    long_running(registry, stops)

    @registry.orchestration()
    async def leaves_them(ctx: OrchestrationContext, _: Any) -> Any:
        ctx.call_activity("hang")
        ctx.call_activity("spin")
        await ctx.call_activity("when_both_run")
        if how == "complete":
            return "done without them"
        await ctx.wait_for_event("never")

    async with running(provider, registry) as client:
        await client.start_orchestration("e", "leaves_them")
        await wait_until(lambda: len(stops.started) == 2, what="both activities starting")
        if how == "terminate":
            await client.terminate("e", "enough")
        state = await client.wait_for_orchestration("e", timeout=10)
        await wait_until(lambda: len(stops.stopped) == 2, timeout=5, what="both activities stopping")

    expected = OrchestrationStatus.TERMINATED if how == "terminate" else OrchestrationStatus.COMPLETED
    assert state.status is expected
    assert_stopped_soon_after(stops, state.updated_at.timestamp())


async def test_a_hung_attempt_fails_after_start_to_close_and_the_retry_succeeds(provider: Provider) -> None:
    registry = Registry()

    @registry.activity()
    async def flaky(ctx: ActivityContext) -> str:
        if ctx.attempt == 1:
            await asyncio.sleep(60)
        return f"attempt {ctx.attempt}"

    @registry.orchestration()
    async def calls(ctx: OrchestrationContext, _: Any) -> Any:
        retry = RetryPolicy(max_attempts=2, initial_interval=0.1)
        return await ctx.call_activity("flaky", start_to_close=1, retry=retry)

    async with running(provider, registry) as client:
        await client.start_orchestration("t", "calls")
        state = await client.wait_for_orchestration("t", timeout=15)

    assert (state.status, state.output) == (OrchestrationStatus.COMPLETED, "attempt 2")
    history = await provider.get_history("t")
    assert_history_sound(history)
    [timed_out] = events_of(history, ActivityFailed)
    assert timed_out.error.type == "ActivityTimeoutError"
    assert timed_out.error.message == "activity 'flaky' exceeded its start_to_close of 1 s"
    first = events_of(history, ActivityScheduled)[0]
    assert 0.9 < (timed_out.timestamp - first.timestamp).total_seconds() < 3


async def test_a_start_to_close_holds_without_the_worker_that_runs_the_attempt(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the worker's own limit switched off, the time-out it queued at the start still comes."""
    monkeypatch.setattr(_attempt.Attempt, "_next_limit", lambda self: None)
    registry, stops = Registry(), Stops()

    @registry.activity()
    def stubborn(ctx: ActivityContext) -> str:
        if ctx.attempt == 1:
            stops.start("spin")
            while not ctx.is_cancelled():
                time.sleep(0.01)
            stops.stop("spin")
        return f"attempt {ctx.attempt}"

    @registry.orchestration()
    async def calls(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("stubborn", start_to_close=1, retry=RetryPolicy(initial_interval=0.1))

    async with running(provider, registry) as client:
        await client.start_orchestration("d", "calls")
        state = await client.wait_for_orchestration("d", timeout=15)

    assert (state.status, state.output) == (OrchestrationStatus.COMPLETED, "attempt 2")
    [timed_out] = events_of(await provider.get_history("d"), ActivityFailed)
    assert timed_out.error.type == "ActivityTimeoutError"
    assert 0 <= stops.stopped["spin"] - timed_out.timestamp.timestamp() < STOP_WITHIN  # its item was deleted


async def test_schedule_to_close_fails_an_activity_no_worker_ever_starts(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration()
    async def calls(ctx: OrchestrationContext, _: Any) -> Any:
        retry = RetryPolicy(max_attempts=5, initial_interval=0.1)
        try:
            await ctx.call_activity("unserved", queue="nobody", schedule_to_close=1, retry=retry)
        except ActivityFailedError as exc:
            return [exc.details.type, exc.details.message]

    async with running(provider, registry) as client:
        await client.start_orchestration("s", "calls")
        state = await client.wait_for_orchestration("s", timeout=10)

    history = await provider.get_history("s")
    kind, message = state.output
    assert kind == "ActivityTimeoutError"
    assert message.startswith("activity 'unserved' ran past its schedule_to_close deadline (")
    [attempt] = events_of(history, ActivityScheduled)  # no retry: the deadline had passed
    assert 0.9 < (history[-1].timestamp - attempt.timestamp).total_seconds() < 3


async def test_heartbeat_timeout_fails_an_attempt_only_when_heartbeats_stop(provider: Provider) -> None:
    registry = Registry()

    @registry.activity()
    async def beats(ctx: ActivityContext, stop_after: float) -> str:
        began = time.monotonic()
        while time.monotonic() - began < 1.5:
            if time.monotonic() - began < stop_after:
                ctx.heartbeat({"at": time.monotonic() - began})
            await asyncio.sleep(0.05)
        return "finished"

    @registry.orchestration()
    async def calls(ctx: OrchestrationContext, stop_after: float) -> Any:
        try:
            return await ctx.call_activity("beats", stop_after, heartbeat_timeout=0.5)
        except ActivityFailedError as exc:
            return exc.details.message

    async with running(provider, registry, FAST) as client:
        await client.start_orchestration("steady", "calls", 10)
        await client.start_orchestration("stops", "calls", 0.3)
        steady = await client.wait_for_orchestration("steady", timeout=10)
        stopped = await client.wait_for_orchestration("stops", timeout=10)

    assert steady.output == "finished"
    assert stopped.output == "activity 'beats' sent no heartbeat for 0.5 s"


async def test_a_cancelled_child_is_terminated_and_its_parent_goes_on(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration()
    async def child(ctx: OrchestrationContext, _: Any) -> Any:
        await ctx.wait_for_event("never")

    @registry.orchestration()
    async def parent(ctx: OrchestrationContext, _: Any) -> Any:
        kid = ctx.call_sub_orchestration("child", instance_id="kid")
        await ctx.create_timer(0.2)
        kid.cancel()
        timer = ctx.create_timer(3600)
        timer.cancel()
        return [type(kid.exception()).__name__, type(timer.exception()).__name__]

    async with running(provider, registry) as client:
        await client.start_orchestration("parent", "parent")
        state = await client.wait_for_orchestration("parent", timeout=10)
        kid = await client.wait_for_orchestration("kid", timeout=10)

    assert state.output == ["TaskCancelledError", "TaskCancelledError"]
    assert kid.status is OrchestrationStatus.TERMINATED
    assert kid.error is not None and kid.error.message == "cancelled by its parent"
