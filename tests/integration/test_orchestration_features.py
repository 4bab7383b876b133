"""Every orchestration primitive end to end: Runtime + Client on a real store."""

from __future__ import annotations

import asyncio
import threading
from datetime import datetime, timedelta
from typing import Any

import pytest
from runtime_support import assert_history_sound, events_of, history_has, running, wait_until

from perdure import (
    ActivityContext,
    ActivityFailedError,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    RetryPolicy,
    SubOrchestrationFailedError,
)
from perdure.engine.events import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CustomStatusUpdated,
    EventRaised,
    EventSent,
    OrchestrationChained,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationStarted,
    SubOrchestrationCompleted,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
)

COMPLETED = OrchestrationStatus.COMPLETED


async def test_async_and_sync_activities(provider: Provider) -> None:
    seen: dict[str, Any] = {}
    registry = Registry()

    @registry.activity()
    async def double(ctx: ActivityContext, x: int) -> int:
        seen["async thread"] = threading.current_thread()
        return x * 2

    @registry.activity("Square")
    def square(ctx: ActivityContext, x: int) -> int:
        seen["sync thread"] = threading.current_thread()
        seen["ctx"] = ctx
        return x * x

    @registry.activity()
    def no_input(ctx: ActivityContext) -> str:
        return "none"

    @registry.orchestration("Math", version="2.1.0")
    async def math(ctx: OrchestrationContext, x: int) -> list[Any]:
        a = await ctx.call_activity("double", x)
        b = await ctx.call_activity("Square", a)
        return [a, b, await ctx.call_activity("no_input")]

    async with running(provider, registry) as client:
        assert await client.start_orchestration("math-1", "Math", 3) == "math-1"
        state = await client.wait_for_orchestration("math-1", timeout=10)

    assert state.status is COMPLETED
    assert state.output == [6, 36, "none"]
    assert (state.name, state.version, state.input, state.execution_id) == ("Math", "2.1.0", 3, 1)
    assert seen["async thread"] is threading.main_thread()
    assert seen["sync thread"] is not threading.main_thread()
    ctx = seen["ctx"]
    assert (ctx.instance_id, ctx.execution_id, ctx.name, ctx.attempt) == ("math-1", 1, "Square", 1)
    assert (ctx.orchestration_name, ctx.orchestration_version) == ("Math", "2.1.0")
    history = await client.get_history("math-1")
    assert_history_sound(history)
    assert [type(e) for e in history] == [
        OrchestrationStarted,
        ActivityScheduled,
        ActivityCompleted,
        ActivityScheduled,
        ActivityCompleted,
        ActivityScheduled,
        ActivityCompleted,
        OrchestrationCompleted,
    ]
    assert [(e.name, e.input) for e in events_of(history, ActivityScheduled)] == [
        ("double", 3),
        ("Square", 6),
        ("no_input", None),
    ]


async def test_a_failing_activity_raises_activity_failed_error_in_the_orchestration(provider: Provider) -> None:
    registry = Registry()

    @registry.activity()
    def explode(ctx: ActivityContext, why: str) -> None:
        raise ValueError(why)

    @registry.orchestration()
    async def catches(ctx: OrchestrationContext) -> list[str]:
        try:
            await ctx.call_activity("explode", "boom")
        except ActivityFailedError as exc:
            return [exc.details.type, exc.details.message]
        return ["not raised"]

    @registry.orchestration()
    async def does_not_catch(ctx: OrchestrationContext) -> None:
        await ctx.call_activity("explode", "bang")

    async with running(provider, registry) as client:
        await client.start_orchestration("catches", "catches")
        await client.start_orchestration("uncaught", "does_not_catch")
        caught = await client.wait_for_orchestration("catches", timeout=10)
        uncaught = await client.wait_for_orchestration("uncaught", timeout=10)

    assert caught.status is COMPLETED
    assert caught.output == ["ValueError", "boom"]
    assert uncaught.status is OrchestrationStatus.FAILED
    assert uncaught.error is not None
    assert uncaught.error.is_type(ActivityFailedError)
    assert "bang" in uncaught.error.message
    failed = events_of(await client.get_history("uncaught"), ActivityFailed)
    assert len(failed) == 1
    assert failed[0].error.type == "ValueError"
    assert "raise ValueError(why)" in (failed[0].error.traceback or "")


async def test_timers_fire_after_their_time(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration()
    async def sleeper(ctx: OrchestrationContext) -> list[str]:
        start = ctx.now()
        await ctx.create_timer(0.2)
        await ctx.create_timer(timedelta(milliseconds=50))
        await ctx.create_timer(ctx.now() + timedelta(milliseconds=50))
        return [start.isoformat(), ctx.now().isoformat()]

    async with running(provider, registry) as client:
        await client.start_orchestration("sleeper", "sleeper")
        state = await client.wait_for_orchestration("sleeper", timeout=10)

    assert state.status is COMPLETED
    start, end = (datetime.fromisoformat(t) for t in state.output)
    assert end - start >= timedelta(milliseconds=300)
    history = await client.get_history("sleeper")
    assert_history_sound(history)
    created = events_of(history, TimerCreated)
    fired = events_of(history, TimerFired)
    assert len(created) == len(fired) == 3
    for timer, firing in zip(created, fired, strict=True):
        assert firing.source_event_id == timer.event_id
        assert firing.fire_at == timer.fire_at
        assert firing.timestamp >= timer.fire_at, "a timer fired early"


def _event_registry(gate: asyncio.Event) -> Registry:
    registry = Registry()

    @registry.activity()
    async def blocked(ctx: ActivityContext) -> str:
        await gate.wait()
        return "unblocked"

    @registry.orchestration()
    async def waiter(ctx: OrchestrationContext, first_block: bool) -> list[Any]:
        out = [await ctx.call_activity("blocked")] if first_block else []
        out.append(await ctx.wait_for_event("approval"))
        out.append(await ctx.wait_for_event("approval"))
        return out

    return registry


async def test_events_raised_before_the_wait_are_kept_in_order(provider: Provider) -> None:
    gate = asyncio.Event()
    async with running(provider, _event_registry(gate)) as client:
        await client.start_orchestration("ev", "waiter", True)
        await wait_until(lambda: history_has(client, "ev", ActivityScheduled), what="the activity was scheduled")
        # The orchestration is busy with its activity: neither event is awaited yet.
        await client.raise_event("ev", "approval", {"by": "alice"})
        await client.raise_event("ev", "approval", {"by": "bob"})
        await wait_until(lambda: history_has(client, "ev", EventRaised, 2), what="both events were recorded")
        gate.set()
        state = await client.wait_for_orchestration("ev", timeout=10)

    assert state.status is COMPLETED
    assert state.output == ["unblocked", {"by": "alice"}, {"by": "bob"}]
    assert_history_sound(await client.get_history("ev"))


async def test_an_event_raised_to_a_pending_instance_is_delivered(provider: Provider) -> None:
    registry = _event_registry(asyncio.Event())
    client = Client(provider)  # no runtime yet: the instance stays PENDING while the event arrives
    await client.start_orchestration("pending", "waiter", False)
    assert (await client.get_status("pending")).status is OrchestrationStatus.PENDING  # type: ignore[union-attr]
    await client.raise_event("pending", "approval", 1)
    async with running(provider, registry) as client:
        await wait_until(lambda: history_has(client, "pending", EventRaised), what="the first event was recorded")
        await client.raise_event("pending", "approval", 2)  # to a running instance that waits for it
        state = await client.wait_for_orchestration("pending", timeout=10)

    assert state.status is COMPLETED
    assert state.output == [1, 2]


async def test_when_all_and_when_any(provider: Provider) -> None:
    registry = Registry()

    @registry.activity()
    async def echo(ctx: ActivityContext, value: int) -> int:
        return value

    @registry.orchestration()
    async def fan_out(ctx: OrchestrationContext, n: int) -> list[int]:
        return await ctx.when_all([ctx.call_activity("echo", i) for i in range(n)])

    @registry.orchestration()
    async def race(ctx: OrchestrationContext, timeout: float) -> Any:
        event = ctx.wait_for_event("answer")
        timer = ctx.create_timer(timeout)
        winner = await ctx.when_any([event, timer])
        return ["event", event.result()] if winner is event else ["timeout", timer.done()]

    async with running(provider, registry) as client:
        await client.start_orchestration("fan", "fan_out", 10)
        await client.start_orchestration("event-wins", "race", 60)
        await client.start_orchestration("timer-wins", "race", 0.1)
        await wait_until(lambda: history_has(client, "event-wins", TimerCreated), what="the race started")
        await client.raise_event("event-wins", "answer", 42)
        fan = await client.wait_for_orchestration("fan", timeout=10)
        event_wins = await client.wait_for_orchestration("event-wins", timeout=10)
        timer_wins = await client.wait_for_orchestration("timer-wins", timeout=10)

    assert fan.output == list(range(10))
    fan_history = await client.get_history("fan")
    assert_history_sound(fan_history)
    assert len(events_of(fan_history, ActivityScheduled)) == 10
    assert event_wins.output == ["event", 42]
    assert timer_wins.output == ["timeout", True]


def _family_registry() -> Registry:
    registry = Registry()

    @registry.activity()
    async def add_one(ctx: ActivityContext, x: int) -> int:
        return x + 1

    @registry.orchestration("Child")
    async def child(ctx: OrchestrationContext, x: int) -> int:
        if x < 0:
            raise ValueError(f"negative input {x}")
        return int(await ctx.call_activity("add_one", x))

    @registry.orchestration("Parent")
    async def parent(ctx: OrchestrationContext, xs: list[int]) -> list[Any]:
        out: list[Any] = []
        for i, x in enumerate(xs):
            try:
                out.append(await ctx.call_sub_orchestration("Child", x, instance_id=f"{ctx.instance_id}-c{i}"))
            except SubOrchestrationFailedError as exc:
                out.append([exc.details.type, exc.details.message])
        out.append(await ctx.call_sub_orchestration("Child", 100))  # with a generated instance id
        return out

    @registry.orchestration("Launcher")
    async def launcher(ctx: OrchestrationContext, x: int) -> str:
        return ctx.start_orchestration("Child", x, instance_id=f"detached-{x}")

    return registry


async def test_child_orchestrations_succeed_and_fail(provider: Provider) -> None:
    async with running(provider, _family_registry()) as client:
        await client.start_orchestration("parent", "Parent", [1, -5])
        state = await client.wait_for_orchestration("parent", timeout=10)

    assert state.status is COMPLETED
    assert state.output == [2, ["ValueError", "negative input -5"], 101]
    history = await client.get_history("parent")
    assert_history_sound(history)
    scheduled = events_of(history, SubOrchestrationScheduled)
    assert [s.instance_id for s in scheduled[:2]] == ["parent-c0", "parent-c1"]
    good = await client.get_status("parent-c0")
    bad = await client.get_status("parent-c1")
    generated = await client.get_status(scheduled[2].instance_id)
    assert good is not None
    assert bad is not None
    assert generated is not None
    assert (good.status, good.output, good.parent_instance_id) == (COMPLETED, 2, "parent")
    assert bad.status is OrchestrationStatus.FAILED
    assert bad.error is not None
    assert bad.error.type == "ValueError"
    assert generated.output == 101
    descriptor = await client.get_orchestration_descriptor("parent-c1")
    assert descriptor is not None
    assert (descriptor.name, descriptor.parent_instance, descriptor.parent_id) == (
        "Child",
        "parent",
        scheduled[1].event_id,
    )
    root = await client.get_orchestration_descriptor("parent")
    assert root is not None
    assert root.parent_instance is None
    assert len(events_of(history, SubOrchestrationCompleted)) == 2


async def test_a_detached_orchestration_runs_on_its_own(provider: Provider) -> None:
    async with running(provider, _family_registry()) as client:
        await client.start_orchestration("launcher", "Launcher", 7)
        launcher = await client.wait_for_orchestration("launcher", timeout=10)
        detached = await client.wait_for_orchestration("detached-7", timeout=10)

    assert (launcher.status, launcher.output) == (COMPLETED, "detached-7")
    assert (detached.status, detached.output) == (COMPLETED, 8)
    assert detached.parent_instance_id is None
    chained = events_of(await client.get_history("launcher"), OrchestrationChained)
    assert [(c.name, c.instance_id, c.input) for c in chained] == [("Child", "detached-7", 7)]


async def test_send_event_between_orchestrations(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration()
    async def receiver(ctx: OrchestrationContext) -> Any:
        return await ctx.wait_for_event("ping")

    @registry.orchestration()
    async def sender(ctx: OrchestrationContext, target: str) -> None:
        ctx.send_event(target, "ping", {"from": ctx.instance_id})

    async with running(provider, registry) as client:
        await client.start_orchestration("receiver", "receiver")
        await client.start_orchestration("sender", "sender", "receiver")
        state = await client.wait_for_orchestration("receiver", timeout=10)
        assert (await client.wait_for_orchestration("sender", timeout=10)).status is COMPLETED

    assert (state.status, state.output) == (COMPLETED, {"from": "sender"})
    sent = events_of(await client.get_history("sender"), EventSent)
    assert [(s.instance_id, s.name) for s in sent] == [("receiver", "ping")]


async def test_continue_as_new_starts_new_executions(provider: Provider) -> None:
    registry = Registry()

    @registry.activity()
    async def record(ctx: ActivityContext, n: int) -> list[int]:
        return [ctx.execution_id, n]

    @registry.orchestration()
    async def counter(ctx: OrchestrationContext, n: int) -> Any:
        seen = await ctx.call_activity("record", n)
        if n < 3:
            ctx.continue_as_new(n + 1)
        return [ctx.execution_id, seen]

    async with running(provider, registry) as client:
        await client.start_orchestration("counter", "counter", 1)
        state = await client.wait_for_orchestration("counter", timeout=10)

    assert state.status is COMPLETED
    assert (state.execution_id, state.input, state.output) == (3, 3, [3, [3, 3]])
    for execution in (1, 2, 3):
        history = await client.get_history("counter", execution)
        assert_history_sound(history)
        assert history[0].input == execution  # type: ignore[attr-defined]
        terminal = history[-1]
        if execution < 3:
            assert isinstance(terminal, OrchestrationContinuedAsNew)
            assert terminal.input == execution + 1
        else:
            assert isinstance(terminal, OrchestrationCompleted)
    assert await client.get_history("counter") == await client.get_history("counter", 3)


async def test_continue_as_new_carries_unawaited_events_over(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration()
    async def relay(ctx: OrchestrationContext, received: list[Any]) -> list[Any]:
        received = [*received, await ctx.wait_for_event("item")]
        if len(received) < 3:
            ctx.continue_as_new(received)
        return received

    # All three events reach the first turn: two are not awaited there and must carry over.
    client = Client(provider)
    await client.start_orchestration("relay", "relay", [])
    for item in ("a", "b", "c"):
        await client.raise_event("relay", "item", item)
    async with running(provider, registry) as client:
        state = await client.wait_for_orchestration("relay", timeout=10)

    assert (state.status, state.execution_id, state.output) == (COMPLETED, 3, ["a", "b", "c"])
    first = await client.get_history("relay", 1)
    assert_history_sound(first)
    assert [e.data for e in events_of(first, EventRaised)] == ["a"]


async def test_retry_policy_retries_a_failing_activity(provider: Provider) -> None:
    attempts: list[int] = []
    registry = Registry()

    @registry.activity()
    def flaky(ctx: ActivityContext, succeed_on: int) -> str:
        attempts.append(ctx.attempt)
        if ctx.attempt < succeed_on:
            raise ConnectionError(f"attempt {ctx.attempt} failed")
        return f"ok on attempt {ctx.attempt}"

    @registry.orchestration()
    async def retrying(ctx: OrchestrationContext, succeed_on: int) -> Any:
        policy = RetryPolicy(max_attempts=3, initial_interval=0.05, backoff_coefficient=1.5)
        try:
            return await ctx.call_activity("flaky", succeed_on, retry=policy)
        except ActivityFailedError as exc:
            return ["gave up", exc.details.message]

    async with running(provider, registry) as client:
        await client.start_orchestration("retry-ok", "retrying", 3)
        ok = await client.wait_for_orchestration("retry-ok", timeout=10)
        await client.start_orchestration("retry-exhausted", "retrying", 10)
        exhausted = await client.wait_for_orchestration("retry-exhausted", timeout=10)

    assert ok.output == "ok on attempt 3"
    assert exhausted.output == ["gave up", "attempt 3 failed"]
    assert attempts == [1, 2, 3, 1, 2, 3]
    history = await client.get_history("retry-ok")
    assert_history_sound(history)
    assert [e.attempt for e in events_of(history, ActivityScheduled)] == [1, 2, 3]
    assert len(events_of(history, TimerCreated)) == 2
    assert len(events_of(history, ActivityFailed)) == 2


class Declined(Exception):
    """A failure that no retry can fix."""


@pytest.mark.parametrize("non_retryable", ["Declined", Declined], ids=["by name", "by class"])
async def test_non_retryable_errors_fail_activities_and_children_at_once(
    provider: Provider, non_retryable: Any
) -> None:
    registry = Registry()

    @registry.activity()
    def charge(ctx: ActivityContext, outcome: str) -> str:
        if outcome == "declined":
            raise Declined("card declined")
        if ctx.attempt < 3:
            raise ConnectionError("bank unreachable")
        return f"charged on attempt {ctx.attempt}"

    @registry.orchestration()
    async def payment(ctx: OrchestrationContext, outcome: str) -> str:
        raise Declined("card declined") if outcome == "declined" else ConnectionError("bank unreachable")

    @registry.orchestration()
    async def checkout(ctx: OrchestrationContext) -> list[str]:
        policy = RetryPolicy(max_attempts=3, initial_interval=0.01, non_retryable_errors=[non_retryable])
        results = []
        for outcome in ("declined", "flaky"):
            try:
                results.append(await ctx.call_activity("charge", outcome, retry=policy))
            except ActivityFailedError as exc:
                results.append(exc.details.type.rsplit(".", 1)[-1])
        for outcome in ("declined", "flaky"):
            try:
                results.append(await ctx.call_sub_orchestration("payment", outcome, retry=policy))
            except SubOrchestrationFailedError as exc:
                results.append(exc.details.type.rsplit(".", 1)[-1])
        return results

    async with running(provider, registry) as client:
        await client.start_orchestration("checkout", "checkout")
        state = await client.wait_for_orchestration("checkout", timeout=20)

    assert state.output == ["Declined", "charged on attempt 3", "Declined", "ConnectionError"]
    history = await client.get_history("checkout")
    assert_history_sound(history)
    # A non-retryable failure is one attempt; a retryable one runs the policy's three.
    assert [e.input for e in events_of(history, ActivityScheduled)] == ["declined", "flaky", "flaky", "flaky"]
    assert [e.input for e in events_of(history, SubOrchestrationScheduled)] == ["declined", "flaky", "flaky", "flaky"]


async def test_custom_status_is_visible_to_clients(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration()
    async def reporter(ctx: OrchestrationContext) -> str:
        ctx.set_custom_status({"step": "waiting"})
        answer = await ctx.wait_for_event("go")
        ctx.set_custom_status({"step": "done", "answer": answer})
        return "finished"

    async with running(provider, registry) as client:
        await client.start_orchestration("reporter", "reporter")

        async def custom_status() -> Any:
            state = await client.get_status("reporter")
            return state is not None and state.custom_status

        assert await wait_until(custom_status, what="the custom status was published") == {"step": "waiting"}
        assert (await client.get_status("reporter")).status is OrchestrationStatus.RUNNING  # type: ignore[union-attr]
        await client.raise_event("reporter", "go", 5)
        state = await client.wait_for_orchestration("reporter", timeout=10)

    assert state.custom_status == {"step": "done", "answer": 5}
    updates = events_of(await client.get_history("reporter"), CustomStatusUpdated)
    assert [u.value for u in updates] == [{"step": "waiting"}, {"step": "done", "answer": 5}]
