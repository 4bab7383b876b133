"""Ordering across put-backs and continue-as-new, rewinds meeting finished or never-run children,
and input that must be refused before it reaches the store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from tests.integration.runtime_support import FAST, running, wait_until

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    RuntimeOptions,
)
from perdure.engine.events import StartRequested
from perdure.providers import Message, NewInstance
from perdure.runtime._orchestration_dispatcher import OrchestrationDispatcher


async def _status(client: Client, instance_id: str, status: OrchestrationStatus) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and state.status is status


def _wait_two(registry: Registry, version: str) -> None:
    async def wait_two(ctx: OrchestrationContext, _: Any) -> list[Any]:
        return [await ctx.wait_for_event("x"), await ctx.wait_for_event("x")]

    registry.orchestrations.add("W", wait_two, version)


async def test_a_turn_put_back_keeps_its_messages_ahead_of_later_ones(provider: Provider) -> None:
    old, both = Registry(), Registry()
    _wait_two(old, "1.0.0")
    _wait_two(both, "1.0.0")
    _wait_two(both, "2.0.0")
    async with running(provider, both) as client:
        await client.start_orchestration("i", "W", version="2.0.0")
        await wait_until(lambda: _status(client, "i", OrchestrationStatus.RUNNING), what="started")
    await client.raise_event("i", "x", "first")
    patient = RuntimeOptions(dispatch_backoff=0.3, max_dispatch_attempts=100)
    async with running(provider, old, patient):  # a worker of the previous deploy puts the turn back
        await asyncio.sleep(0.1)
    await client.raise_event("i", "x", "second")
    async with running(provider, both):
        state = await client.wait_for_orchestration("i")
    assert state.output == ["first", "second"]


async def test_continue_as_new_hands_over_older_events_before_newer_ones(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("Loop")
    async def loop(ctx: OrchestrationContext, n: int) -> Any:
        if n == 0:
            await ctx.wait_for_event("go")
            ctx.continue_as_new(1)  # "first" is carried over; "second" arrived behind this turn
        return [await ctx.wait_for_event("x"), await ctx.wait_for_event("x")]

    client = Client(provider)
    await client.start_orchestration("i", "Loop", 0)
    for name, data in (("x", "first"), ("go", None), ("x", "second")):
        await client.raise_event("i", name, data)
    async with running(provider, registry):
        state = await client.wait_for_orchestration("i")
    assert state.output == ["first", "second"]


async def test_a_stray_start_does_not_hijack_the_next_execution(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("Counter")
    async def counter(ctx: OrchestrationContext, n: int) -> str:
        await ctx.wait_for_event("tick")
        if n < 1:
            ctx.continue_as_new(n + 1)
        return f"counter finished with n={n}"

    @registry.orchestration("Other")
    async def other(ctx: OrchestrationContext, x: Any) -> str:
        return f"other ran with {x!r}"

    client = Client(provider)
    await client.start_orchestration("c", "Counter", 0)
    async with running(provider, registry):
        await wait_until(lambda: _status(client, "c", OrchestrationStatus.RUNNING), what="started")
    await client.raise_event("c", "tick")
    item = await provider.fetch_orchestration_item(30)  # the turn that continues as new…
    assert item is not None
    stray = StartRequested(name="Other", input="intruder")  # …while someone starts "c" again
    new = NewInstance(name="Other", input="intruder")
    await provider.enqueue_messages([Message(instance_id="c", execution_id=None, event=stray, new_instance=new)])
    await OrchestrationDispatcher(provider, registry.orchestrations, FAST).process(item)
    async with running(provider, registry):
        await wait_until(lambda: _status(client, "c", OrchestrationStatus.RUNNING), what="execution 2 runs")
        await client.raise_event("c", "tick")
        state = await client.wait_for_orchestration("c")
    assert (state.name, state.execution_id, state.output) == ("Counter", 2, "counter finished with n=1")


async def test_a_running_child_that_finishes_as_its_parent_is_rewound_answers_the_new_execution(
    provider: Provider,
) -> None:
    registry = Registry()
    runs: list[int] = []

    @registry.activity("Boom")
    async def boom(ctx: ActivityContext, _: Any) -> str:
        runs.append(1)
        if len(runs) == 1:
            raise RuntimeError("service down")
        return "ok"

    @registry.orchestration("Child")
    async def child(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.wait_for_event("go")

    @registry.orchestration("Parent")
    async def parent(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.when_all([ctx.call_sub_orchestration("Child", instance_id="c"), ctx.call_activity("Boom")])

    client = Client(provider)
    await client.start_orchestration("p", "Parent")
    async with running(provider, registry):
        assert (await client.wait_for_orchestration("p")).status is OrchestrationStatus.FAILED
    # Queued together: the parent's rewind (which tells the child the new execution), then the
    # event that completes the child.
    await client.rewind("p", "fixed")
    await client.raise_event("c", "go", "child result")
    async with running(provider, registry, RuntimeOptions(orchestration_concurrency=1)):
        await wait_until(lambda: _status(client, "p", OrchestrationStatus.COMPLETED), what="the parent completed")
        state = await client.get_status("p")
    assert state is not None
    assert state.output == ["child result", "ok"]


async def test_rewinding_a_parent_restarts_a_child_that_failed_before_it_ever_ran(provider: Provider) -> None:
    old, new = Registry(), Registry()

    async def parent(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_sub_orchestration("Child", instance_id="c")

    async def child(ctx: OrchestrationContext, _: Any) -> str:
        return "child ok"

    old.orchestrations.add("Parent", parent)
    new.orchestrations.add("Parent", parent)
    new.orchestrations.add("Child", child)
    few = RuntimeOptions(max_dispatch_attempts=2, dispatch_backoff=0.01, max_dispatch_backoff=0.05)
    client = Client(provider)
    await client.start_orchestration("p", "Parent")
    async with running(provider, old, few):  # "Child" is not deployed yet
        assert (await client.wait_for_orchestration("p")).status is OrchestrationStatus.FAILED
    # It never ran: its history holds only what it retained, its start.
    assert [type(e) for e in await client.get_history("c")] == [StartRequested]
    await client.rewind("p", "Child deployed")
    async with running(provider, new, few):
        await wait_until(lambda: _status(client, "p", OrchestrationStatus.COMPLETED), what="the parent completed")
        assert (await client.get_status("p")).output == "child ok"  # type: ignore[union-attr]
        assert (await client.get_status("c")).status is OrchestrationStatus.COMPLETED  # type: ignore[union-attr]


async def test_a_message_that_cannot_be_read_changes_nothing_of_a_finished_instance(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("Hello")
    async def hello(ctx: OrchestrationContext, _: Any) -> str:
        return "done"

    async with running(provider, registry) as client:
        await client.start_orchestration("i", "Hello")
        before = await client.wait_for_orchestration("i")
        history = await client.get_history("i")
        # Stored by a newer version, perhaps: an event type this one does not know.
        unreadable = Message(instance_id="i", execution_id=None, event=StartRequested(name="x"))
        await provider.enqueue_messages([unreadable])
        await _corrupt_last_message(provider)
        await wait_until(lambda: _queue_is_empty(provider), what="the message was dropped")
    assert await client.get_status("i") == before
    assert await client.get_history("i") == history


@pytest.mark.parametrize(
    ("call", "error"),
    [
        (lambda c: c.suspend("i", 123), TypeError),
        (lambda c: c.terminate("i", {"why": 1}), TypeError),
        (lambda c: c.terminate("i", recursive="no"), TypeError),
        (lambda c: c.rewind("i", object()), TypeError),
        (lambda c: c.resume("i", b"bytes"), TypeError),
        (lambda c: c.start_orchestration("a\x00b", "Hello"), ValueError),
        (lambda c: c.raise_event("i", "e\x00", 1), ValueError),
        (lambda c: c.list_instances(name=5), TypeError),
        (lambda c: c.get_history("i", "1"), TypeError),
        (lambda c: c.wait_for_orchestration("i", timeout=float("nan")), ValueError),
    ],
)
async def test_bad_operator_input_is_refused_at_the_call(provider: Provider, call: Any, error: type) -> None:
    client = Client(provider)
    await client.start_orchestration("i", "Hello")
    before = await client.get_status("i")
    with pytest.raises(error):
        await call(client)
    assert await client.get_status("i") == before
    assert [s.instance_id for s in await client.list_instances()] == ["i"]


async def _corrupt_last_message(provider: Provider) -> None:
    """Overwrite the newest queued message with an event type no version of perdure has."""
    sql = (
        'UPDATE orchestrator_queue SET event = \'{"v": 1, "type": "FutureEvent"}\' '
        "WHERE message_id = (SELECT max(message_id) FROM orchestrator_queue)"
    )
    if hasattr(provider, "_db"):
        provider._db.execute(sql)
        return
    import psycopg
    from tests.conftest import POSTGRES_URL

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'SET search_path TO "{provider.schema}"')  # type: ignore[attr-defined]
        await conn.execute(sql)


async def _queue_is_empty(provider: Provider) -> bool:
    depths = await provider.queue_depths()
    return not depths.get("orchestrator")
