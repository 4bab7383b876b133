"""Rewind: a FAILED instance continues from where it failed; what succeeded is never redone."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from tests.integration.runtime_support import assert_history_sound, history_has, running, wait_until

from perdure import (
    ActivityContext,
    Client,
    InstanceNotFoundError,
    InvalidInstanceStateError,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    RetryPolicy,
)
from perdure.engine.events import (
    ActivityCompleted,
    ActivityFailed,
    ExecutionRewound,
    HistoryEvent,
    OrchestrationFailed,
    OrchestrationStarted,
    SubOrchestrationFailed,
    TimerCreated,
)


class Flaky:
    """Activities that count their runs and fail while their name is in ``broken``."""

    def __init__(
        self,
        registry: Registry,
        *names: str,
        delays: dict[str, float] | None = None,
        gates: set[str] | None = None,
    ) -> None:
        self.runs: Counter[str] = Counter()
        self.broken: set[str] = set()
        self.gate = asyncio.Event()  # the activities in ``gates`` wait for it on their first run
        delays, gates = delays or {}, gates or set()
        for name in names:
            registry.activities.add(name, self._activity(name, delays.get(name, 0.0), name in gates))

    def _activity(self, name: str, delay: float, gated: bool) -> Any:
        async def activity(ctx: ActivityContext, value: Any) -> Any:
            self.runs[name] += 1
            if gated:
                await self.gate.wait()
            await asyncio.sleep(delay)
            if name in self.broken:
                raise ConnectionError(f"{name} is down")
            return f"{name}({value})"

        return activity


async def failed(client: Client, instance_id: str) -> None:
    state = await client.wait_for_orchestration(instance_id)
    assert state.status is OrchestrationStatus.FAILED, state


async def rewound(client: Client, instance_id: str, reason: str | None = "fixed") -> Any:
    """Rewind, wait, and check the new execution's history; return the completed state."""
    before = await client.get_status(instance_id)
    assert before is not None
    await client.rewind(instance_id, reason)
    await next_execution(client, instance_id, before.execution_id)
    state = await client.wait_for_orchestration(instance_id)
    assert state.status is OrchestrationStatus.COMPLETED, state.error
    assert state.execution_id == before.execution_id + 1
    history = await client.get_history(instance_id)
    assert_history_sound(history)
    marks = [e for e in history if isinstance(e, ExecutionRewound)]
    assert len(marks) == before.execution_id  # one per rewind so far
    assert marks[-1].reason == reason
    assert not any(isinstance(e, OrchestrationFailed) for e in history)
    first = await client.get_history(instance_id, before.execution_id)
    assert history[0] == first[0], "OrchestrationStarted keeps its original timestamp"
    return state


async def next_execution(client: Client, instance_id: str, execution_id: int) -> None:
    """Wait until the rewind turn has moved the instance on from ``execution_id``."""

    async def moved_on() -> bool:
        state = await client.get_status(instance_id)
        return state is not None and state.execution_id > execution_id

    await wait_until(moved_on, what=f"{instance_id} left execution {execution_id}")


def failures(history: list[HistoryEvent]) -> list[HistoryEvent]:
    return [e for e in history if isinstance(e, ActivityFailed | SubOrchestrationFailed)]


async def test_a_failed_activity_runs_again_and_the_successful_ones_do_not(provider: Provider) -> None:
    registry = Registry()
    flaky = Flaky(registry, "Reserve", "Charge", "Ship")

    @registry.orchestration("Order")
    async def order(ctx: OrchestrationContext, n: int) -> list[Any]:
        ctx.set_custom_status("reserving")
        steps = [await ctx.call_activity("Reserve", n)]
        ctx.set_custom_status("charging")
        steps.append(await ctx.call_activity("Charge", n))
        steps.append(await ctx.call_activity("Ship", n))
        return steps

    flaky.broken.add("Charge")
    async with running(provider, registry) as client:
        await client.start_orchestration("order", "Order", 7)
        await failed(client, "order")
        flaky.broken.clear()
        state = await rewound(client, "order")
        history = await client.get_history("order")
    assert state.output == ["Reserve(7)", "Charge(7)", "Ship(7)"]
    assert flaky.runs == {"Reserve": 1, "Charge": 2, "Ship": 1}
    assert failures(history) == []
    assert state.custom_status == "charging"


async def test_rewind_refuses_unknown_running_and_completed_instances(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("Waits")
    async def waits(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.wait_for_event("go")

    async with running(provider, registry) as client:
        with pytest.raises(InstanceNotFoundError):
            await client.rewind("nobody")
        await client.start_orchestration("w", "Waits")
        with pytest.raises(InvalidInstanceStateError, match="only FAILED"):
            await client.rewind("w")
        await client.raise_event("w", "go", 1)
        await client.wait_for_orchestration("w")
        with pytest.raises(InvalidInstanceStateError, match="COMPLETED"):
            await client.rewind("w")


async def test_a_rewind_without_a_reason(provider: Provider) -> None:
    registry = Registry()
    flaky = Flaky(registry, "Step")

    @registry.orchestration("One")
    async def one(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("Step", 1)

    flaky.broken.add("Step")
    async with running(provider, registry) as client:
        await client.start_orchestration("one", "One")
        await failed(client, "one")
        flaky.broken.clear()
        state = await rewound(client, "one", reason=None)
    assert state.output == "Step(1)"


async def test_a_failed_grandchild_is_rewound_first_and_the_parent_completes(provider: Provider) -> None:
    registry = Registry()
    flaky = Flaky(registry, "Leaf", "Before")

    @registry.orchestration("Grandchild")
    async def grandchild(ctx: OrchestrationContext, n: int) -> Any:
        return await ctx.call_activity("Leaf", n)

    @registry.orchestration("Child")
    async def child(ctx: OrchestrationContext, n: int) -> Any:
        return ["child", await ctx.call_sub_orchestration("Grandchild", n, instance_id="grandchild")]

    @registry.orchestration("Parent")
    async def parent(ctx: OrchestrationContext, n: int) -> Any:
        before = await ctx.call_activity("Before", n)
        return [before, await ctx.call_sub_orchestration("Child", n, instance_id="child")]

    flaky.broken.add("Leaf")
    async with running(provider, registry) as client:
        await client.start_orchestration("parent", "Parent", 3)
        for instance_id in ("parent", "child", "grandchild"):  # the parent fails last; then all exist
            await failed(client, instance_id)
        flaky.broken.clear()
        state = await rewound(client, "parent")
        for instance_id in ("child", "grandchild"):
            descendant = await client.get_status(instance_id)
            assert descendant is not None
            assert (descendant.status, descendant.execution_id) == (OrchestrationStatus.COMPLETED, 2)
            assert failures(await client.get_history(instance_id)) == []
    assert state.output == ["Before(3)", ["child", "Leaf(3)"]]
    assert flaky.runs == {"Before": 1, "Leaf": 2}


async def test_a_purged_failed_child_is_started_again_from_what_the_parent_recorded(provider: Provider) -> None:
    registry = Registry()
    flaky = Flaky(registry, "Work")

    @registry.orchestration("Child")
    async def child(ctx: OrchestrationContext, n: int) -> Any:
        return await ctx.call_activity("Work", n * 2)

    @registry.orchestration("Parent")
    async def parent(ctx: OrchestrationContext, n: int) -> Any:
        return await ctx.call_sub_orchestration("Child", n, instance_id="purged-child")

    flaky.broken.add("Work")
    async with running(provider, registry) as client:
        await client.start_orchestration("parent", "Parent", 5)
        await failed(client, "parent")
        assert await client.purge("purged-child") == 1
        flaky.broken.clear()
        state = await rewound(client, "parent")
        child_state = await client.get_status("purged-child")
    assert state.output == "Work(10)"
    assert child_state is not None
    assert (child_state.execution_id, child_state.input) == (1, 5)


async def test_a_fan_out_where_3_of_10_failed_runs_only_those_3_again(provider: Provider) -> None:
    registry = Registry()
    names = [f"Part{n}" for n in range(10)]
    doomed = {"Part2", "Part5", "Part8"}
    flaky = Flaky(registry, *names, gates=doomed)

    @registry.orchestration("Fan")
    async def fan(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.when_all([ctx.call_activity(name, n) for n, name in enumerate(names)])

    flaky.broken |= doomed
    async with running(provider, registry) as client:
        await client.start_orchestration("fan", "Fan")
        # The doomed parts answer only once the seven others are recorded, so the run fails after them.
        await wait_until(lambda: history_has(client, "fan", ActivityCompleted, 7), what="seven parts recorded")
        flaky.gate.set()
        await failed(client, "fan")
        await wait_until(lambda: set(flaky.runs) == set(names), what="every part ran once")
        flaky.broken.clear()
        state = await rewound(client, "fan")
    assert state.output == [f"Part{n}({n})" for n in range(10)]
    assert flaky.runs == {name: 2 if name in doomed else 1 for name in names}


async def test_rewinding_twice_after_a_second_failure(provider: Provider) -> None:
    registry = Registry()
    flaky = Flaky(registry, "A", "B")

    @registry.orchestration("Two")
    async def two(ctx: OrchestrationContext, _: Any) -> Any:
        return [await ctx.call_activity("A", 1), await ctx.call_activity("B", 2)]

    flaky.broken = {"A", "B"}
    async with running(provider, registry) as client:
        await client.start_orchestration("two", "Two")
        await failed(client, "two")
        flaky.broken = {"B"}
        await client.rewind("two", "A fixed")
        await next_execution(client, "two", 1)
        await failed(client, "two")
        assert (await client.get_status("two")).execution_id == 2  # type: ignore[union-attr]
        flaky.broken.clear()
        state = await rewound(client, "two", "B fixed")
    assert state.output == ["A(1)", "B(2)"]
    assert state.execution_id == 3
    assert flaky.runs == {"A": 2, "B": 2}


async def test_retry_attempts_are_removed_with_their_backoff_timers(provider: Provider) -> None:
    registry = Registry()
    flaky = Flaky(registry, "Unstable")
    policy = RetryPolicy(max_attempts=3, initial_interval=0.01)

    @registry.orchestration("Retrying")
    async def retrying(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("Unstable", 1, retry=policy)

    flaky.broken.add("Unstable")
    async with running(provider, registry) as client:
        await client.start_orchestration("r", "Retrying")
        await failed(client, "r")
        assert flaky.runs["Unstable"] == 3
        failed_history = await client.get_history("r")
        assert sum(isinstance(e, TimerCreated) for e in failed_history) == 2
        flaky.broken.clear()
        state = await rewound(client, "r")
        history = await client.get_history("r")
    assert state.output == "Unstable(1)"
    assert flaky.runs["Unstable"] == 4  # one more run: the first attempt, afresh
    assert not any(isinstance(e, TimerCreated) for e in history)


async def test_a_when_all_that_failed_fast_dispatches_the_unfinished_tasks_again(provider: Provider) -> None:
    registry = Registry()
    flaky = Flaky(registry, "Fast", "Slow", gates={"Slow"})

    @registry.orchestration("FailFast")
    async def fail_fast(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.when_all([ctx.call_activity("Fast", 1), ctx.call_activity("Slow", 2)])

    flaky.broken.add("Fast")
    async with running(provider, registry) as client:
        await client.start_orchestration("ff", "FailFast")
        await failed(client, "ff")  # Slow is still running: held at the gate
        first = await client.get_history("ff")
        assert not any(isinstance(e, ActivityCompleted) for e in first)
        flaky.broken.clear()
        await client.rewind("ff")
        await next_execution(client, "ff", 1)
        await wait_until(lambda: flaky.runs["Slow"] == 2, what="Slow dispatched again")
        flaky.gate.set()  # both runs of Slow finish: the first answer counts, the other is a duplicate
        state = await client.wait_for_orchestration("ff", execution_id=2)
        assert_history_sound(await client.get_history("ff"))
    assert state.output == ["Fast(1)", "Slow(2)"]
    assert flaky.runs == {"Fast": 2, "Slow": 2}


async def test_a_result_that_arrives_after_the_failure_is_kept_and_not_redone(provider: Provider) -> None:
    registry = Registry()
    flaky = Flaky(registry, "Fast", "Slow", gates={"Slow"})

    @registry.orchestration("FailFast")
    async def fail_fast(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.when_all([ctx.call_activity("Fast", 1), ctx.call_activity("Slow", 2)])

    flaky.broken.add("Fast")
    async with running(provider, registry) as client:
        await client.start_orchestration("ff", "FailFast")
        await failed(client, "ff")
        failed_state = await client.get_status("ff")
        flaky.gate.set()  # Slow finishes after the run failed: its result is kept with execution 1
        await wait_until(lambda: history_has(client, "ff", ActivityCompleted), what="Slow's late result kept")
        late = await client.get_history("ff")
        assert isinstance(late[-2], OrchestrationFailed) and isinstance(late[-1], ActivityCompleted)
        assert await client.get_status("ff") == failed_state, "a kept result changes nothing"
        flaky.broken.clear()
        state = await rewound(client, "ff")
    assert state.output == ["Fast(1)", "Slow(2)"]
    assert flaky.runs == {"Fast": 2, "Slow": 1}


async def test_a_failure_the_code_handled_is_kept_and_not_run_again(provider: Provider) -> None:
    registry = Registry()
    flaky = Flaky(registry, "Optional", "Required")

    @registry.orchestration("Handles")
    async def handles(ctx: OrchestrationContext, _: Any) -> Any:
        try:
            optional = await ctx.call_activity("Optional", 1)
        except Exception:
            optional = "skipped"
        return [optional, await ctx.call_activity("Required", 2)]

    flaky.broken = {"Optional", "Required"}
    async with running(provider, registry) as client:
        await client.start_orchestration("h", "Handles")
        await failed(client, "h")
        flaky.broken.clear()
        await client.rewind("h", "fixed")
        await next_execution(client, "h", 1)
        state = await client.wait_for_orchestration("h")
        history = await client.get_history("h")
    assert state.output == ["skipped", "Required(2)"]
    assert flaky.runs == {"Optional": 1, "Required": 2}
    kept = failures(history)
    assert len(kept) == 1, "only the handled failure stays"
    assert isinstance(history[0], OrchestrationStarted)
    assert any(isinstance(e, ExecutionRewound) for e in history)


async def test_rewind_returns_the_execution_to_wait_for(provider: Provider) -> None:
    registry = Registry()
    flaky = Flaky(registry, "Step")

    @registry.orchestration("One")
    async def one(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("Step", 1)

    flaky.broken.add("Step")
    async with running(provider, registry) as client:
        await client.start_orchestration("one", "One")
        await failed(client, "one")
        flaky.broken.clear()
        execution = await client.rewind("one")
        # Without execution_id this could return the old failure at once; with it, the rewound run.
        state = await client.wait_for_orchestration("one", execution_id=execution)
    assert execution == 2
    assert (state.status, state.execution_id, state.output) == (OrchestrationStatus.COMPLETED, 2, "Step(1)")
