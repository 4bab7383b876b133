"""Determinism guards in a running runtime: orchestration code is refused, activities in threads are not."""

from __future__ import annotations

import asyncio
import logging
import os
import random
import secrets
import threading
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from tests.integration.runtime_support import running

from perdure import ActivityContext, OrchestrationContext, OrchestrationStatus, Provider, Registry

registry = Registry()
busy = threading.Event()


@registry.activity("Clocks")
def clocks(ctx: ActivityContext, rounds: int) -> list[Any]:
    """A plain activity, run in a thread while orchestration turns run on the loop."""
    busy.set()
    seen: list[Any] = []
    for _ in range(rounds):
        seen = [
            time.time() > 0,
            time.monotonic() > 0,
            datetime.now(UTC).year >= 2024,
            len(str(uuid.uuid4())),
            0 <= random.random() < 1,
            len(os.urandom(4)),
            len(secrets.token_hex(4)),
        ]
    return seen


@registry.orchestration("Activity")
async def activity(ctx: OrchestrationContext, rounds: int) -> Any:
    return await ctx.call_activity("Clocks", rounds)


@registry.orchestration("ReadsTheClock")
async def reads_the_clock(ctx: OrchestrationContext, _: Any) -> Any:
    await ctx.create_timer(0.01)
    return datetime.now(UTC).isoformat()


@registry.orchestration("Forgets")
async def forgets(ctx: OrchestrationContext, _: Any) -> str:
    ctx.call_activity("Clocks", 1)  # never awaited
    return "done"


async def test_orchestration_code_is_refused_while_activities_in_threads_use_the_same_calls(provider: Provider) -> None:
    busy.clear()
    async with running(provider, registry) as client:
        await client.start_orchestration("activity", "Activity", 20_000)
        assert await asyncio.to_thread(busy.wait, 10)
        # Turns of these run while the activity's thread is still calling the guarded functions.
        for n in range(8):
            await client.start_orchestration(f"clock-{n}", "ReadsTheClock")
        for n in range(8):
            state = await client.wait_for_orchestration(f"clock-{n}", timeout=20)
            assert state.status is OrchestrationStatus.FAILED
            assert state.error is not None and state.error.type == "perdure.NonDeterministicCallError"
            assert state.error.message.startswith("datetime.now() in orchestration code")
            assert "ctx.now()" in state.error.message
        state = await client.wait_for_orchestration("activity", timeout=30)
        assert state.status is OrchestrationStatus.COMPLETED, state.error
        assert state.output == [True, True, True, 36, True, 4, 8]


async def test_an_execution_that_ends_without_awaiting_a_task_is_logged(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="perdure.runtime")
    async with running(provider, registry) as client:
        await client.start_orchestration("forgets", "Forgets")
        state = await client.wait_for_orchestration("forgets", timeout=10)
        assert state.status is OrchestrationStatus.COMPLETED
    warnings = [
        r.getMessage() for r in caplog.records if r.name == "perdure.runtime" and "without awaiting" in r.getMessage()
    ]
    assert warnings == [
        "instance 'forgets': the orchestration ended without awaiting ActivityScheduled 'Clocks' with input 1 "
        "(event 2): they may still run, and their results are dropped (await them, alone or with ctx.when_all)"
    ]
