"""Client requests as users expect them: generated ids, ``if_exists``, events only to unfinished
instances, and a rewind that reads as in progress the moment it is requested."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from runtime_support import running, wait_until

from perdure import (
    Client,
    InstanceAlreadyExistsError,
    InvalidInstanceStateError,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
)
from perdure.engine.events import ExecutionRewound, OrchestrationFailed, OrchestrationStarted

PENDING, COMPLETED, FAILED = OrchestrationStatus.PENDING, OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED
BROKEN = {"on": True}


def _registry() -> Registry:
    registry = Registry()

    @registry.activity()
    async def step(ctx: Any, value: Any) -> Any:
        if BROKEN["on"] and value == "breaks":
            raise RuntimeError("broken step")
        return value

    @registry.orchestration()
    async def echo(ctx: OrchestrationContext, value: Any) -> Any:
        return await ctx.call_activity("step", value)

    @registry.orchestration()
    async def waits(ctx: OrchestrationContext) -> Any:
        return await ctx.wait_for_event("go")

    @registry.orchestration()
    async def parent(ctx: OrchestrationContext) -> Any:
        return await ctx.call_sub_orchestration("waits", instance_id=f"{ctx.instance_id}-child")

    return registry


# --- starting --------------------------------------------------------------------------------------------


async def test_without_an_id_a_new_one_is_generated_and_returned(provider: Provider) -> None:
    async with running(provider, _registry()) as client:
        first = await client.start_orchestration(None, "echo", 1)
        second = await client.start_orchestration(instance_id=None, name="echo", input=2)
        assert first != second and all(re.fullmatch(r"[0-9a-f]{32}", i) for i in (first, second))
        assert (await client.wait_for_orchestration(first)).output == 1
        assert (await client.wait_for_orchestration(second)).output == 2


async def test_if_exists_return_starts_nothing_and_returns_the_id(provider: Provider) -> None:
    async with running(provider, _registry()) as client:
        assert await client.start_orchestration("once", "echo", "first", if_exists="return") == "once"
        done = await client.wait_for_orchestration("once")
        assert await client.start_orchestration("once", "echo", "second", if_exists="return") == "once"
        with pytest.raises(InstanceAlreadyExistsError):
            await client.start_orchestration("once", "echo", "third")  # "fail" is the default
        assert await client.get_status("once") == done
        assert [type(e) for e in await client.get_history("once")].count(OrchestrationStarted) == 1


async def test_if_exists_restart_runs_a_finished_instance_afresh(provider: Provider) -> None:
    async with running(provider, _registry()) as client:
        await client.start_orchestration("again", "echo", "first")
        await client.wait_for_orchestration("again")
        assert await client.start_orchestration("again", "echo", "second", if_exists="restart") == "again"
        state = await client.wait_for_orchestration("again", execution_id=2)
        assert (state.status, state.execution_id, state.output) == (COMPLETED, 2, "second")
        assert await client.get_history("again", 1) == [], "the first run is purged"


async def test_if_exists_restart_terminates_a_running_instance_and_its_children(provider: Provider) -> None:
    async with running(provider, _registry()) as client:
        await client.start_orchestration("busy", "parent")
        await wait_until(lambda: _is(client, "busy-child", OrchestrationStatus.RUNNING), what="the child runs")
        await client.start_orchestration("busy", "echo", "fresh", if_exists="restart")
        state = await client.wait_for_orchestration("busy", execution_id=2)
        child = await client.wait_for_orchestration("busy-child")
    assert (state.name, state.status, state.output) == ("echo", COMPLETED, "fresh")
    assert child.status is OrchestrationStatus.TERMINATED


async def _is(client: Client, instance_id: str, status: OrchestrationStatus) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and state.status is status


async def test_a_misspelt_if_exists_is_refused(provider: Provider) -> None:
    client = Client(provider)
    with pytest.raises(ValueError, match="if_exists must be one of 'fail', 'return', 'restart'"):
        await client.start_orchestration("x", "echo", if_exists="replace")  # type: ignore[arg-type]
    assert await client.get_status("x") is None


# --- events ----------------------------------------------------------------------------------------------


async def test_an_event_for_a_finished_instance_is_refused(provider: Provider) -> None:
    async with running(provider, _registry()) as client:
        await client.start_orchestration("done", "echo", 1)
        await client.wait_for_orchestration("done")
        with pytest.raises(InvalidInstanceStateError, match="'done' is COMPLETED; it takes no events"):
            await client.raise_event("done", "go")
        await client.start_orchestration("open", "waits")
        await client.raise_event("open", "go", "yes")
        assert (await client.wait_for_orchestration("open")).output == "yes"


# --- rewind ----------------------------------------------------------------------------------------------


async def _failed_instance(provider: Provider, instance_id: str) -> None:
    """Run ``echo("breaks")`` until it fails, then stop the runtime."""
    BROKEN["on"] = True
    async with running(provider, _registry()) as client:
        await client.start_orchestration(instance_id, "echo", "breaks")
        assert (await client.wait_for_orchestration(instance_id)).status is FAILED


async def test_a_rewind_reads_as_in_progress_before_any_worker_runs(provider: Provider) -> None:
    await _failed_instance(provider, "r")
    client = Client(provider)  # no runtime from here until the end
    failed = await client.get_status("r")
    assert failed is not None and failed.error is not None

    assert await client.rewind("r", "fixed") == 2

    state = await client.get_status("r")
    assert state is not None
    assert (state.status, state.execution_id, state.error) == (PENDING, 1, failed.error)
    assert isinstance((await client.get_history("r"))[-1], OrchestrationFailed), "the failure stays readable"
    with pytest.raises(TimeoutError, match="still PENDING"):
        await client.wait_for_orchestration("r", timeout=0.3)
    with pytest.raises(InvalidInstanceStateError, match="'r' is PENDING; only FAILED instances can be rewound"):
        await client.rewind("r")


async def test_waiting_after_a_rewind_waits_for_the_rewound_run(provider: Provider) -> None:
    await _failed_instance(provider, "r")
    client = Client(provider)
    await client.rewind("r", "fixed")
    BROKEN["on"] = False
    async with running(provider, _registry()) as client:
        state = await client.wait_for_orchestration("r")  # no execution_id: the old failure does not count
    assert (state.status, state.execution_id, state.output) == (COMPLETED, 2, "breaks")
    history = await client.get_history("r")
    assert [e.reason for e in history if isinstance(e, ExecutionRewound)] == ["fixed"]
    assert isinstance((await client.get_history("r", 1))[-1], OrchestrationFailed)


async def test_of_two_rewinds_at_once_one_is_refused(provider: Provider) -> None:
    await _failed_instance(provider, "r")
    client = Client(provider)
    outcomes = await asyncio.gather(client.rewind("r"), client.rewind("r"), return_exceptions=True)
    assert sorted(type(o).__name__ for o in outcomes) == ["InvalidInstanceStateError", "int"]
    item = await provider.fetch_orchestration_item(30)
    assert item is not None and [type(m.event) for m in item.messages] == [ExecutionRewound]
