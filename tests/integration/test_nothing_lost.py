"""Nothing consumed is lost: a failed execution keeps what it consumed, and a rewind redoes only what failed.

Every turn that fails an execution (non-determinism, poison, an unregistered version) keeps the
messages it consumed after the terminal event; results that reach a failed instance are kept the
same way; a rewind applies them, so no event is asked for twice and no finished work runs again.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter
from typing import Any

import pytest
from tests.integration.runtime_support import FAST, assert_history_sound, history_has, running, wait_until

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    RetryPolicy,
    RuntimeOptions,
)
from perdure.engine.events import (
    ActivityCompleted,
    EventRaised,
    ExecutionRewound,
    HistoryEvent,
    OrchestrationFailed,
    SubOrchestrationCompleted,
    SubOrchestrationFailed,
)
from perdure.runtime import _turn

FAILED, COMPLETED = OrchestrationStatus.FAILED, OrchestrationStatus.COMPLETED
FEW_ATTEMPTS = RuntimeOptions(
    idle_timeout=1.0, max_dispatch_attempts=2, dispatch_backoff=0.01, max_dispatch_backoff=0.02
)


class Parts:
    """Activities ``Part0``… that count their runs, fail while broken, and wait for ``gate`` if gated."""

    def __init__(self, registry: Registry, names: list[str], *, broken: set[str], gated: set[str]) -> None:
        self.runs: Counter[str] = Counter()
        self.broken = set(broken)
        self.gate = asyncio.Event()
        for name in names:
            registry.activities.add(name, self._activity(name, name in gated))

    def _activity(self, name: str, gated: bool) -> Any:
        async def activity(ctx: ActivityContext, value: Any) -> Any:
            self.runs[name] += 1
            if gated:
                await self.gate.wait()
            if name in self.broken:
                raise ConnectionError(f"{name} is down")
            return f"{name}({value})"

        return activity


def retained(history: list[HistoryEvent]) -> list[HistoryEvent]:
    """The events a failed execution kept after its terminal event."""
    end = next(i for i, e in enumerate(history) if isinstance(e, OrchestrationFailed))
    return history[end + 1 :]


async def retained_count(client: Client, instance_id: str, count: int) -> bool:
    history = await client.get_history(instance_id)
    return any(isinstance(e, OrchestrationFailed) for e in history) and len(retained(history)) >= count


async def rewind_and_wait(client: Client, instance_id: str) -> Any:
    execution = await client.rewind(instance_id, "fixed")
    state = await client.wait_for_orchestration(instance_id, execution_id=execution)
    assert state.status is COMPLETED, state.error
    assert_history_sound(await client.get_history(instance_id))
    return state


async def test_an_event_consumed_by_a_non_determinism_failure_is_applied_by_the_rewind(provider: Provider) -> None:
    registry = Registry()
    code = {"changed": False}

    @registry.activity("Step")
    async def step(ctx: ActivityContext, name: str) -> str:
        return name

    @registry.orchestration("Approval")
    async def approval(ctx: OrchestrationContext, _: Any) -> Any:
        first = await ctx.call_activity("Step", "renamed" if code["changed"] else "prepare")
        return [first, await ctx.wait_for_event("approve")]

    # A deploy is a new process, with an empty execution cache; here one runtime plays both, without one.
    async with running(provider, registry, dataclasses.replace(FAST, cache_size=0)) as client:
        await client.start_orchestration("a", "Approval")
        await wait_until(lambda: history_has(client, "a", ActivityCompleted), what="the first step done")
        code["changed"] = True  # a bad deploy: the code no longer makes the recorded decision
        await client.raise_event("a", "approve", "yes")
        state = await client.wait_for_orchestration("a")
        assert state.status is FAILED and state.error is not None
        assert state.error.type.endswith("NonDeterminismError")
        [kept] = retained(await client.get_history("a"))
        assert isinstance(kept, EventRaised) and (kept.name, kept.data) == ("approve", "yes")
        code["changed"] = False  # the fix
        state = await rewind_and_wait(client, "a")  # the event is not raised again
    assert state.output == ["prepare", "yes"]


async def test_a_fan_out_whose_siblings_finish_after_the_failure_reruns_only_the_failed(provider: Provider) -> None:
    registry = Registry()
    names = [f"Part{n}" for n in range(10)]
    doomed = {"Part2", "Part5", "Part8"}
    parts = Parts(registry, names, broken=doomed, gated=set(names) - {"Part2"})

    @registry.orchestration("Fan")
    async def fan(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.when_all([ctx.call_activity(name, n) for n, name in enumerate(names)])

    async with running(provider, registry) as client:
        await client.start_orchestration("fan", "Fan")
        failed = await client.wait_for_orchestration("fan")  # Part2 failed; the nine others still run
        assert failed.status is FAILED
        parts.gate.set()
        await wait_until(lambda: retained_count(client, "fan", 9), what="the nine late results kept")
        assert await client.get_status("fan") == failed, "late results change nothing of the failed execution"
        parts.broken.clear()
        state = await rewind_and_wait(client, "fan")
    assert state.output == [f"Part{n}({n})" for n in range(10)]
    assert parts.runs == {name: 2 if name in doomed else 1 for name in names}


async def test_a_fan_out_of_children_whose_siblings_finish_after_the_failure(provider: Provider) -> None:
    registry = Registry()
    names = [f"Part{n}" for n in range(10)]
    doomed = {"Part2", "Part5", "Part8"}
    parts = Parts(registry, names, broken=doomed, gated=set(names) - {"Part2"})

    @registry.orchestration("Piece")
    async def piece(ctx: OrchestrationContext, n: int) -> Any:
        return await ctx.call_activity(names[n], n)

    @registry.orchestration("Fan")
    async def fan(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.when_all([ctx.call_sub_orchestration("Piece", n, instance_id=f"piece-{n}") for n in range(10)])

    async with running(provider, registry) as client:
        await client.start_orchestration("fan", "Fan")
        assert (await client.wait_for_orchestration("fan")).status is FAILED
        parts.gate.set()
        await wait_until(lambda: retained_count(client, "fan", 9), what="the nine late answers kept")
        late = retained(await client.get_history("fan"))
        assert Counter(type(e) for e in late) == {SubOrchestrationCompleted: 7, SubOrchestrationFailed: 2}
        parts.broken.clear()
        state = await rewind_and_wait(client, "fan")
        for n in range(10):
            child = await client.get_status(f"piece-{n}")
            assert child is not None and child.status is COMPLETED
            assert child.execution_id == (2 if names[n] in doomed else 1), "only the failed children are rewound"
    assert state.output == [f"Part{n}({n})" for n in range(10)]
    assert parts.runs == {name: 2 if name in doomed else 1 for name in names}


async def test_a_rewind_reruns_only_the_failed_branch_and_leaves_a_running_child_alone(provider: Provider) -> None:
    registry = Registry()
    parts = Parts(registry, ["SlowWork", "LeafWork"], broken={"LeafWork"}, gated={"SlowWork"})

    @registry.orchestration("Slow")
    async def slow(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("SlowWork", "slow")

    @registry.orchestration("Leaf")
    async def leaf(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("LeafWork", "leaf")

    @registry.orchestration("Mid")
    async def mid(ctx: OrchestrationContext, _: Any) -> Any:
        return ["mid", await ctx.call_sub_orchestration("Leaf", instance_id="leaf")]

    @registry.orchestration("Top")
    async def top(ctx: OrchestrationContext, _: Any) -> Any:
        slow_child = ctx.call_sub_orchestration("Slow", instance_id="slow")
        mid_child = ctx.call_sub_orchestration("Mid", instance_id="mid")
        return await ctx.when_all([slow_child, mid_child])

    async with running(provider, registry) as client:
        await client.start_orchestration("top", "Top")
        assert (await client.wait_for_orchestration("top")).status is FAILED  # leaf → mid → top
        parts.broken.clear()
        execution = await client.rewind("top", "leaf fixed")
        await wait_until(lambda: _status_is(client, "mid", COMPLETED, 2), what="the failed branch rewound")
        parts.gate.set()  # the running child finishes only now, answering the execution that started it
        state = await client.wait_for_orchestration("top", execution_id=execution)
        slow_state = await client.get_status("slow")
        slow_history = await client.get_history("slow")
        leaf_state = await client.get_status("leaf")
    assert state.status is COMPLETED, state.error
    assert state.output == ["SlowWork(slow)", ["mid", "LeafWork(leaf)"]]
    assert slow_state is not None and (slow_state.status, slow_state.execution_id) == (COMPLETED, 1)
    assert not any(isinstance(e, ExecutionRewound) for e in slow_history), "a running child is not marked"
    assert leaf_state is not None and leaf_state.execution_id == 2
    assert parts.runs == {"SlowWork": 1, "LeafWork": 2}


async def _status_is(client: Client, instance_id: str, status: OrchestrationStatus, execution_id: int) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and (state.status, state.execution_id) == (status, execution_id)


async def test_retry_attempts_of_a_child_are_walked_back_with_a_fresh_budget(provider: Provider) -> None:
    registry = Registry()
    parts = Parts(registry, ["Work"], broken={"Work"}, gated=set())
    policy = RetryPolicy(max_attempts=2, initial_interval=0.01)

    @registry.orchestration("Child")
    async def child(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("Work", ctx.instance_id)

    @registry.orchestration("Parent")
    async def parent(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_sub_orchestration("Child", instance_id="kid", retry=policy)

    async with running(provider, registry) as client:
        await client.start_orchestration("p", "Parent")
        assert (await client.wait_for_orchestration("p")).status is FAILED
        assert parts.runs["Work"] == 2  # both attempts
        parts.broken.clear()
        state = await rewind_and_wait(client, "p")
        history = await client.get_history("p")
        first = await client.get_status("kid")
    # The first attempt's child is rewound and succeeds: no backoff timer, no second attempt.
    assert state.output == "Work(kid)"
    assert [type(e).__name__ for e in history if type(e).__name__.startswith(("Timer", "SubOrch"))] == [
        "SubOrchestrationScheduled",
        "SubOrchestrationCompleted",
    ]
    assert first is not None and (first.status, first.execution_id) == (COMPLETED, 2)
    assert parts.runs["Work"] == 3


async def test_a_poisoned_instance_keeps_its_event_and_a_rewind_delivers_it(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    code = {"crashes": True}

    def crashing(real: Any) -> Any:
        def engine(*args: Any, **kwargs: Any) -> Any:
            if code["crashes"] and any(isinstance(e, EventRaised) for e in kwargs["new_events"]):
                raise RuntimeError("this event crashes the turn")  # as a bug in a worker would
            return real(*args, **kwargs)

        return engine

    # A replay, or the resumption of the execution the cache kept: the turn crashes either way.
    monkeypatch.setattr(_turn, "replay", crashing(_turn.replay))
    monkeypatch.setattr(_turn, "resume", crashing(_turn.resume))
    registry = Registry()

    @registry.orchestration("Waits")
    async def waits(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.wait_for_event("go")

    async with running(provider, registry, FEW_ATTEMPTS) as client:
        await client.start_orchestration("w", "Waits")
        await wait_until(lambda: _status_is(client, "w", OrchestrationStatus.RUNNING, 1), what="it waits")
        await client.raise_event("w", "go", 42)
        state = await client.wait_for_orchestration("w")
        assert state.status is FAILED and state.error is not None
        assert state.error.type.endswith("PoisonMessageError")
        [kept] = retained(await client.get_history("w"))
        assert isinstance(kept, EventRaised) and kept.data == 42
        code["crashes"] = False
        state = await rewind_and_wait(client, "w")
    assert state.output == 42


async def test_an_unregistered_version_keeps_its_messages_until_a_rewind_after_the_deploy(provider: Provider) -> None:
    old, new = Registry(), Registry()

    async def waits(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.wait_for_event("go")

    new.orchestrations.add("Waits", waits)
    client = Client(provider)
    await client.start_orchestration("early", "Waits")
    await client.raise_event("early", "go", "kept")  # consumed with the start that cannot run
    async with running(provider, old, FEW_ATTEMPTS):  # "Waits" is not deployed yet
        state = await client.wait_for_orchestration("early")
    assert state.status is FAILED and state.error is not None
    assert "UnregisteredOrchestrationError" in state.error.type
    assert [type(e).__name__ for e in await client.get_history("early")] == ["StartRequested", "EventRaised"]
    async with running(provider, new, FEW_ATTEMPTS):
        state = await rewind_and_wait(client, "early")
    assert (state.output, state.execution_id) == ("kept", 2)


async def test_a_refused_rewind_is_a_failed_execution_that_says_why(provider: Provider) -> None:
    deployed, gone = Registry(), Registry()
    parts = Parts(deployed, ["Step"], broken={"Step"}, gated=set())

    @deployed.orchestration("Job")
    async def job(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("Step", 1)

    client = Client(provider)
    async with running(provider, deployed, FEW_ATTEMPTS):
        await client.start_orchestration("job", "Job")
        assert (await client.wait_for_orchestration("job")).status is FAILED
    parts.broken.clear()
    async with running(provider, gone, FEW_ATTEMPTS):  # a worker without the pinned version
        execution = await client.rewind("job", "try again")
        state = await client.wait_for_orchestration("job", execution_id=execution, timeout=10)
    assert (state.status, state.execution_id) == (FAILED, 2)
    assert state.error is not None and "UnregisteredOrchestrationError" in state.error.type
    assert state.error.message.startswith("the rewind was refused: orchestration Job@1.0.0 is not registered")
    assert await client.get_status("job") == state
    # The refused execution keeps the failed run's state: a rewind once the code is back continues it.
    async with running(provider, deployed, FEW_ATTEMPTS):
        state = await rewind_and_wait(client, "job")
    assert (state.output, state.execution_id) == ("Step(1)", 3)
    assert parts.runs["Step"] == 2


async def test_a_terminate_is_honoured_when_no_worker_has_the_code(provider: Provider) -> None:
    known, unknown = Registry(), Registry()

    @known.orchestration("Waits")
    async def waits(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.wait_for_event("never")

    client = Client(provider)
    async with running(provider, known):
        await client.start_orchestration("w", "Waits")
        await wait_until(lambda: _status_is(client, "w", OrchestrationStatus.RUNNING, 1), what="it runs")
    await client.start_orchestration("n", "Nowhere")  # never deployed anywhere
    # The default options would put these back for minutes, waiting for a worker with the code.
    async with running(provider, unknown, RuntimeOptions(idle_timeout=1.0)):
        for instance_id in ("w", "n"):
            await client.terminate(instance_id, "not needed")
            state = await client.wait_for_orchestration(instance_id, timeout=5)
            assert state.status is OrchestrationStatus.TERMINATED, state
            assert state.error is not None and state.error.message == "not needed"
    history = await client.get_history("w")
    assert [type(e).__name__ for e in history][-1] == "OrchestrationTerminated"


async def test_a_rewind_of_an_unreadable_history_is_refused_visibly(provider: Provider) -> None:
    registry = Registry()
    Parts(registry, ["Step"], broken={"Step"}, gated=set())

    @registry.orchestration("Job")
    async def job(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("Step", 1)

    async with running(provider, registry) as client:
        await client.start_orchestration("job", "Job")
        assert (await client.wait_for_orchestration("job")).status is FAILED
        await _corrupt_history(provider, "job")
        execution = await client.rewind("job")
        state = await client.wait_for_orchestration("job", execution_id=execution, timeout=10)
    assert (state.status, state.execution_id) == (FAILED, 2)
    assert state.error is not None and state.error.type.endswith("HistoryFormatError")
    assert state.error.message.startswith("the rewind was refused: the stored history cannot be read")


async def _corrupt_history(provider: Provider, instance_id: str) -> None:
    """Overwrite an event of the instance's history with a type no version of perdure has."""
    future = '{"v": 1, "type": "FutureEvent"}'
    sql = f"UPDATE history SET event = '{future}' WHERE instance_id = '{instance_id}' AND event_id = 2"
    if hasattr(provider, "_db"):
        provider._db.execute(sql)
        return
    import psycopg
    from tests.conftest import POSTGRES_URL

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'SET search_path TO "{provider.schema}"')  # type: ignore[attr-defined]
        await conn.execute(sql)
