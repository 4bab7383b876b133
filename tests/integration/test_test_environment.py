"""``perdure.testing.TestEnvironment``: a store, a runtime and a client on a clock that skips ahead."""

from __future__ import annotations

import asyncio
import itertools
import re
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from perdure import ActivityContext, OrchestrationContext, OrchestrationStatus, Registry, RetryPolicy
from perdure.testing import TestEnvironment

DAY = 86400.0


def renewal_registry() -> Registry:
    """A workflow that waits 30 days, then gives its customer 7 days to confirm."""
    registry = Registry()

    @registry.activity()
    def send_reminder(ctx: ActivityContext, customer: str) -> str:
        return f"reminded {customer}"

    @registry.orchestration()
    async def renewal(ctx: OrchestrationContext, customer: str) -> dict[str, Any]:
        began = ctx.now()
        await ctx.create_timer(timedelta(days=30))
        reminded_at = ctx.now()
        reminder = await ctx.call_activity("send_reminder", customer)
        try:
            answer = await ctx.wait_for_event("confirm", timeout=timedelta(days=7))
        except TimeoutError:
            answer = "no answer"
        return {
            "began": began.isoformat(),
            "reminded_at": reminded_at.isoformat(),
            "ended": ctx.now().isoformat(),
            "reminder": reminder,
            "answer": answer,
        }

    return registry


def _days(later: str, earlier: str) -> float:
    return (datetime.fromisoformat(later) - datetime.fromisoformat(earlier)).total_seconds() / DAY


async def test_a_30_day_timer_and_a_7_day_timeout_take_under_a_second_and_now_shows_virtual_time() -> None:
    async with TestEnvironment(renewal_registry()) as env:
        began = time.monotonic()
        instance_id = await env.client.start_orchestration(None, "renewal", "ada")
        state = await env.client.wait_for_orchestration(instance_id, timeout=10)
        took = time.monotonic() - began
        virtual_now = env.now()
    assert state.status is OrchestrationStatus.COMPLETED, state.error
    output = state.output
    assert output["reminder"] == "reminded ada"
    assert output["answer"] == "no answer"
    assert _days(output["reminded_at"], output["began"]) == pytest.approx(30, abs=0.01)
    assert _days(output["ended"], output["reminded_at"]) == pytest.approx(7, abs=0.01)
    real_now = datetime.now(UTC)
    assert (virtual_now - real_now).total_seconds() / DAY == pytest.approx(37, abs=0.01)
    assert took < 1.0, f"the environment took {took:.2f} s of wall time"


async def test_the_same_code_runs_with_real_time_without_time_skipping() -> None:
    registry = Registry()

    @registry.orchestration()
    async def short(ctx: OrchestrationContext, _: Any) -> float:
        began = ctx.now()
        await ctx.create_timer(0.3)
        return (ctx.now() - began).total_seconds()

    began = time.monotonic()
    async with TestEnvironment(registry, time_skipping=False) as env:
        instance_id = await env.client.start_orchestration(None, "short")
        state = await env.client.wait_for_orchestration(instance_id, timeout=10)
        assert abs((env.now() - datetime.now(UTC)).total_seconds()) < 1
    assert 0.3 <= state.output < 3  # ctx.now() moved with real time
    assert time.monotonic() - began >= 0.3


async def test_an_event_raised_while_skipping_is_held_reaches_the_instance_before_its_timeout() -> None:
    async with TestEnvironment(renewal_registry()) as env:
        with env.auto_time_skipping_disabled():
            instance_id = await env.client.start_orchestration(None, "renewal", "bob")
            await env.sleep(timedelta(days=30))  # the timer fired, the reminder went out
            history = await env.client.get_history(instance_id)
            assert "ActivityCompleted" in [type(e).__name__ for e in history]
            await env.sleep(timedelta(days=6))
            await env.client.raise_event(instance_id, "confirm", "yes")
        state = await env.client.wait_for_orchestration(instance_id, timeout=10)
    assert state.status is OrchestrationStatus.COMPLETED, state.error
    assert state.output["answer"] == "yes"
    assert _days(state.output["ended"], state.output["reminded_at"]) == pytest.approx(6, abs=0.01)


async def test_sleep_fires_what_falls_due_on_the_way_in_order_and_stops_where_asked() -> None:
    registry = Registry()

    @registry.orchestration()
    async def ticks(ctx: OrchestrationContext, _: Any) -> list[str]:
        seen = []
        for _ in range(3):
            await ctx.create_timer(timedelta(days=1))  # each from the time the last one fired
            seen.append(ctx.now().isoformat())
            ctx.set_custom_status(len(seen))
        return seen

    async with TestEnvironment(registry) as env:
        with env.auto_time_skipping_disabled():
            start = env.now()
            instance_id = await env.client.start_orchestration(None, "ticks")
            await env.sleep(2.5 * DAY)
            state = await env.client.get_status(instance_id)
            assert state is not None and state.custom_status == 2
            assert (env.now() - start).total_seconds() / DAY == pytest.approx(2.5, abs=0.01)
        state = await env.client.wait_for_orchestration(instance_id, timeout=10)
    fired = [datetime.fromisoformat(when) for when in state.output]
    assert [(b - a).total_seconds() / DAY for a, b in itertools.pairwise(fired)] == [
        pytest.approx(1, abs=0.01),
        pytest.approx(1, abs=0.01),
    ]


async def test_retry_delays_are_skipped_too_and_activities_run_in_real_time() -> None:
    attempts: list[float] = []
    registry = Registry()

    @registry.activity()
    async def flaky(ctx: ActivityContext, _: Any) -> int:
        attempts.append(time.monotonic())
        await asyncio.sleep(0.05)  # while it runs, the clock does not skip
        if len(attempts) < 3:
            raise RuntimeError("not yet")
        return len(attempts)

    @registry.orchestration()
    async def retried(ctx: OrchestrationContext, _: Any) -> Any:
        policy = RetryPolicy(max_attempts=5, initial_interval=3600.0, backoff_coefficient=2.0)
        return await ctx.call_activity("flaky", retry=policy)

    began = time.monotonic()
    async with TestEnvironment(registry) as env:
        instance_id = await env.client.start_orchestration(None, "retried")
        state = await env.client.wait_for_orchestration(instance_id, timeout=10)
        skipped = (env.now() - datetime.now(UTC)).total_seconds()
    assert state.output == 3
    assert skipped == pytest.approx(3 * 3600, abs=60)  # one hour, then two
    assert time.monotonic() - began < 2


def test_pytest_does_not_take_it_for_a_test_class() -> None:
    assert TestEnvironment.__test__ is False  # type: ignore[attr-defined]


async def test_the_runtime_stays_alive_across_a_skip_and_sleep_refuses_a_negative_duration() -> None:
    registry = Registry()

    @registry.orchestration()
    async def month(ctx: OrchestrationContext, _: Any) -> None:
        await ctx.create_timer(timedelta(days=30))

    async with TestEnvironment(registry) as env:
        instance_id = await env.client.start_orchestration(None, "month")
        await env.client.wait_for_orchestration(instance_id, timeout=10)
        [worker] = await env.client.list_workers()
        assert worker.alive, "a jump of the clock must not make the running worker look dead"
        assert worker.worker_id == env.runtime.worker_id
        with pytest.raises(ValueError, match="non-negative"):
            await env.sleep(-1)


DOCS = (Path(__file__).resolve().parents[2] / "docs" / "testing.md").read_text(encoding="utf-8")


async def test_the_pytest_example_of_the_docs_passes() -> None:
    text = DOCS
    section = text[text.index("## Time-skipping tests") :]
    match = re.search(r"```python\n(.*?)```", section, re.DOTALL)
    assert match is not None
    namespace: dict[str, Any] = {"__name__": "docs_testing_example"}
    exec(compile(match.group(1), "docs/testing.md", "exec"), namespace)
    tests = [value for name, value in namespace.items() if name.startswith("test_")]
    assert len(tests) == 1
    await tests[0]()


async def test_instances_wake_in_the_order_of_their_due_times_across_children_and_events() -> None:
    registry = Registry()

    @registry.orchestration()
    async def nudger(ctx: OrchestrationContext, target: str) -> str:
        await ctx.create_timer(timedelta(days=2))
        ctx.send_event(target, "nudge", ctx.now().isoformat())
        return "sent"

    @registry.orchestration()
    async def waiter(ctx: OrchestrationContext, _: Any) -> str:
        child = ctx.call_sub_orchestration("nudger", ctx.instance_id)
        try:
            sent_at = await ctx.wait_for_event("nudge", timeout=timedelta(days=3))  # the 2-day timer comes first
        except TimeoutError:
            return "timed out"
        await child
        return f"nudged at {sent_at}"

    async with TestEnvironment(registry) as env:
        start = env.now()
        instance_id = await env.client.start_orchestration(None, "waiter")
        state = await env.client.wait_for_orchestration(instance_id, timeout=10)
    assert state.status is OrchestrationStatus.COMPLETED, state.error
    assert state.output.startswith("nudged at ")
    sent_at = datetime.fromisoformat(state.output.removeprefix("nudged at "))
    assert (sent_at - start).total_seconds() / DAY == pytest.approx(2, abs=0.01)


async def test_it_says_so_when_used_without_async_with() -> None:
    env = TestEnvironment(Registry())
    with pytest.raises(RuntimeError, match="async with TestEnvironment"):
        _ = env.client
    async with env:
        assert env.runtime.running
    with pytest.raises(RuntimeError, match="not running"):
        await env.sleep(1)
