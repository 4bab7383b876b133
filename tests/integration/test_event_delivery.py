"""Events, terminate requests and wake-ups on a real store: order across continue-as-new, buffered
events and the timeout form of the wait, a terminate before the first turn, event names in any
case, and idle dispatchers and waiting clients woken at once rather than by their fallback poll."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Sequence
from datetime import timedelta
from typing import Any

from runtime_support import DelegatingProvider, running, wait_until

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationState,
    OrchestrationStatus,
    Provider,
    Registry,
    RuntimeOptions,
)
from perdure.engine.events import EventRaised, OrchestrationTerminated, TimerCreated
from perdure.providers._base import Message, OrchestrationItem, TurnCommit, WorkItem


async def test_continue_as_new_keeps_events_raised_in_a_burst_in_order(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("Collect")
    async def collect(ctx: OrchestrationContext, seen: list[int]) -> list[int]:
        seen = [*seen, await ctx.wait_for_event("e")]
        if len(seen) < 8:
            ctx.continue_as_new(seen)  # unconsumed events go to the next execution, in order
        return seen

    async with running(provider, registry) as client:
        for run in range(10):  # a race with the turns: every run must keep the order
            await client.start_orchestration(f"burst-{run}", "Collect", [])
            for data in range(1, 9):
                await client.raise_event(f"burst-{run}", "e", data)
            state = await client.wait_for_orchestration(f"burst-{run}", timeout=20)
            assert (state.status, state.output, state.execution_id) == (
                OrchestrationStatus.COMPLETED,
                list(range(1, 9)),
                8,
            ), f"run {run}"


async def test_the_timeout_form_of_the_wait_takes_an_event_raised_before_the_wait(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("EventOrTimeout")
    async def event_or_timeout(ctx: OrchestrationContext, _: Any) -> Any:
        await ctx.create_timer(0.2)
        return await ctx.wait_for_event("e", timeout=2)

    async with running(provider, registry) as client:
        await client.start_orchestration("early", "EventOrTimeout")
        await client.raise_event("early", "e", "arrived first")
        state = await client.wait_for_orchestration("early", timeout=10)
    assert (state.status, state.output) == (OrchestrationStatus.COMPLETED, "arrived first")
    assert [e.data for e in await client.get_history("early") if isinstance(e, EventRaised)] == ["arrived first"]


async def test_a_terminate_before_the_first_turn_wins_over_the_start(provider: Provider) -> None:
    registry = Registry()
    ran: list[str] = []

    @registry.activity("Work")
    async def work(ctx: ActivityContext, _: Any) -> None:
        ran.append(ctx.instance_id)

    @registry.orchestration("OneTurn")
    async def one_turn(ctx: OrchestrationContext, _: Any) -> str:
        return "done"

    @registry.orchestration("Longer")
    async def longer(ctx: OrchestrationContext, _: Any) -> str:
        await ctx.when_all([ctx.call_activity("Work"), ctx.call_activity("Work")])
        await ctx.call_activity("Work")
        return "done"

    client = Client(provider)
    for instance_id, name in (("one-turn", "OneTurn"), ("longer", "Longer")):
        await client.start_orchestration(instance_id, name)
        assert await client.terminate(instance_id, "not wanted after all")
    async with running(provider, registry):
        states = [await client.wait_for_orchestration(i, timeout=10) for i in ("one-turn", "longer")]
        # Give a wrongly scheduled activity time to run before looking.
        await client.start_orchestration("after", "Longer")
        await client.wait_for_orchestration("after", timeout=10)
    for state in states:
        assert (state.status, state.output) == (OrchestrationStatus.TERMINATED, None)
        assert state.error is not None and state.error.message == "not wanted after all"
        history = await client.get_history(state.instance_id)
        assert [type(e).__name__ for e in history] == ["OrchestrationStarted", "OrchestrationTerminated"]
        assert isinstance(history[-1], OrchestrationTerminated)
    assert ran == ["after"] * 3


async def test_event_names_match_in_any_case(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("Approve")
    async def approve(ctx: OrchestrationContext, _: Any) -> list[Any]:
        return [await ctx.wait_for_event("approval"), await ctx.wait_for_event("APPROVAL", timeout=10)]

    async with running(provider, registry) as client:
        await client.start_orchestration("approve", "Approve")
        await client.raise_event("approve", "Approval", "yes")
        await client.raise_event("approve", "approval", "again")
        state = await client.wait_for_orchestration("approve", timeout=10)
    assert state.output == ["yes", "again"]
    history = await client.get_history("approve")
    assert [e.name for e in history if isinstance(e, EventRaised)] == ["Approval", "approval"]


class _PickupClock(DelegatingProvider):
    """Notes when the first orchestration and the first activity became ready, and when they were picked up."""

    def __init__(self, inner: Provider) -> None:
        super().__init__(inner)
        self.ready: dict[str, float] = {}
        self.picked: dict[str, float] = {}

    async def create_instance(self, start: Message) -> None:
        await self.inner.create_instance(start)
        self.ready.setdefault("orchestration", time.monotonic())

    async def fetch_orchestration_item(self, lock_seconds: float, **kwargs: Any) -> OrchestrationItem | None:
        item = await self.inner.fetch_orchestration_item(lock_seconds, **kwargs)
        if item is not None:
            self.picked.setdefault("orchestration", time.monotonic())
        return item

    async def ack_orchestration_item(self, item: OrchestrationItem, commit: TurnCommit) -> None:
        await self.inner.ack_orchestration_item(item, commit)
        if commit.activity_items:
            self.ready.setdefault("activity", time.monotonic())

    async def fetch_work_item(self, queues: Sequence[str], lock_seconds: float) -> WorkItem | None:
        item = await self.inner.fetch_work_item(queues, lock_seconds)
        if item is not None:
            self.picked.setdefault("activity", time.monotonic())
        return item


async def test_idle_dispatchers_of_a_fresh_runtime_are_woken_not_polled(provider: Provider) -> None:
    """Work that arrives while a dispatcher goes idle must wake it: a missed wake-up shows as a
    pickup after the fallback poll (a second), not the few milliseconds of a signal."""
    registry = Registry()

    @registry.activity("Nothing")
    async def nothing(ctx: ActivityContext, _: Any) -> None:
        return None

    @registry.orchestration("OneActivity")
    async def one_activity(ctx: OrchestrationContext, _: Any) -> None:
        await ctx.call_activity("Nothing")

    options = RuntimeOptions(orchestration_concurrency=2, activity_concurrency=2, idle_timeout=5.0)
    slow: list[tuple[int, str, float]] = []
    for run in range(20):
        clock = _PickupClock(provider)
        async with running(clock, registry, options) as client:  # its dispatchers go idle as work arrives
            await client.start_orchestration(f"fresh-{run}", "OneActivity")
            await client.wait_for_orchestration(f"fresh-{run}", timeout=10)
        for kind, ready in clock.ready.items():
            latency = clock.picked[kind] - ready
            if latency >= 0.1:
                slow.append((run, kind, round(latency, 3)))
    assert slow == [], f"picked up late (run, kind, seconds): {slow}"


class _SlowFirstRead(DelegatingProvider):
    """The first state read answers only after ``meanwhile`` ran: what it read is stale by then."""

    def __init__(self, inner: Provider, meanwhile: Callable[[], Awaitable[None]]) -> None:
        super().__init__(inner)
        self.meanwhile: Callable[[], Awaitable[None]] | None = meanwhile

    async def get_state(self, instance_id: str) -> Any:
        state = await self.inner.get_state(instance_id)
        if self.meanwhile is not None:
            meanwhile, self.meanwhile = self.meanwhile, None
            await meanwhile()
        return state


async def test_waiting_for_an_instance_is_woken_by_a_change_made_while_its_state_was_read(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("AwaitGo")
    async def await_go(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.wait_for_event("go")

    async with running(provider, registry) as client:
        await client.start_orchestration("go", "AwaitGo")

        async def finish() -> None:
            await client.raise_event("go", "go", "went")
            await wait_until(lambda: _finished(client, "go"), what="the instance finished")

        waiting = Client(_SlowFirstRead(provider, finish))
        started = time.monotonic()
        state = await waiting.wait_for_orchestration("go", timeout=10)
    assert (state.status, state.output) == (OrchestrationStatus.COMPLETED, "went")
    assert time.monotonic() - started < 1.0  # woken by the change, not by the fallback poll


async def _finished(client: Client, instance_id: str) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and state.status.is_terminal


async def test_the_state_names_the_events_the_code_waits_for_until_it_ends(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("Approve")
    async def approve(ctx: OrchestrationContext, rounds: int) -> Any:
        await ctx.wait_for_event("Approved", timeout=3600)
        if rounds > 1:
            ctx.continue_as_new(rounds - 1)
        return await ctx.wait_for_event("comment")

    async def waiting(execution_id: int, *names: str) -> OrchestrationState | None:
        state = await client.get_status("a-1")
        if state is None or state.execution_id != execution_id:
            return None
        return state if tuple(w.name for w in state.waiting_for) == names else None

    async with running(provider, registry) as client:
        await client.start_orchestration("a-1", "Approve", 2)
        state = await wait_until(lambda: waiting(1, "Approved"), what="the first wait")
        [first] = state.waiting_for
        assert first.timeout_at is not None and first.timeout_at - first.since == timedelta(hours=1)
        history = await client.get_history("a-1")
        assert [e.event_id for e in history if isinstance(e, TimerCreated)] == [first.timer_event_id]

        await client.raise_event("a-1", "approved")  # continue-as-new: the next execution waits anew
        second = await wait_until(lambda: waiting(2, "Approved"), what="the wait of the second execution")
        assert second.waiting_for[0].since > first.since
        await client.raise_event("a-1", "approved")
        comment = await wait_until(lambda: waiting(2, "comment"), what="the wait for the comment")
        assert comment.waiting_for[0].timeout_at is None

        await client.terminate("a-1")
        state = await client.wait_for_orchestration("a-1", timeout=10)
        assert (state.status, state.waiting_for) == (OrchestrationStatus.TERMINATED, ())
