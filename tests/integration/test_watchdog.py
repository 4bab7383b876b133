"""The blocked-loop watchdog: code that blocks the event loop is named in one warning per stretch."""

# Blocking the loop with time.sleep in async code is the very mistake these tests make on purpose.
# ruff: noqa: ASYNC251

from __future__ import annotations

import asyncio
import logging
import threading
import time
from typing import Any

import pytest
from runtime_support import running

from perdure import ActivityContext, OrchestrationContext, OrchestrationStatus, Registry, RuntimeOptions, SqliteProvider
from perdure.runtime._watchdog import Running, Watchdog, Work

WATCHDOG = "perdure.watchdog"


def records(caplog: pytest.LogCaptureFixture, level: int = logging.WARNING) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == WATCHDOG and r.levelno == level]


def watchdog_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "perdure-watchdog"]


def blocking_registry() -> Registry:
    registry = Registry()

    @registry.activity("Hog")
    async def hog(ctx: ActivityContext, seconds: float) -> str:
        time.sleep(seconds)  # the mistake the watchdog is there to point at
        return "done"

    @registry.orchestration("CallsHog")
    async def calls_hog(ctx: OrchestrationContext, seconds: float) -> Any:
        return await ctx.call_activity("Hog", seconds)

    @registry.orchestration("Stuck")
    async def stuck(ctx: OrchestrationContext, seconds: float) -> str:
        time.sleep(seconds)
        return "done"

    @registry.orchestration("Quick")
    async def quick(ctx: OrchestrationContext, n: int) -> Any:
        return await ctx.when_all([ctx.call_activity("Echo", i) for i in range(n)])

    @registry.activity("Echo")
    async def echo(ctx: ActivityContext, value: int) -> int:
        await asyncio.sleep(0.01)
        return value

    return registry


async def test_an_async_activity_that_blocks_is_named_once(
    sqlite_provider: SqliteProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=WATCHDOG)
    async with running(sqlite_provider, blocking_registry()) as client:
        await client.start_orchestration("hogging", "CallsHog", 1.5)
        state = await client.wait_for_orchestration("hogging", timeout=20)
        assert state.status is OrchestrationStatus.COMPLETED
        await asyncio.sleep(0.5)  # let the watchdog see the loop turn again

    [warning] = records(caplog)
    message = warning.getMessage()
    assert message.startswith("the event loop has been blocked for over 1.")
    assert "running activity 'Hog' of instance 'hogging'" in message
    assert (warning.instance_id, warning.execution_id, warning.activity) == ("hogging", 1, "Hog")  # type: ignore[attr-defined]
    [recovered] = records(caplog, logging.INFO)
    assert "turns again after about 1." in recovered.getMessage()
    assert recovered.instance_id == "hogging"  # type: ignore[attr-defined]


async def test_orchestration_code_that_blocks_names_the_turns_instance(
    sqlite_provider: SqliteProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger=WATCHDOG)
    async with running(sqlite_provider, blocking_registry()) as client:
        await client.start_orchestration("stuck-1", "Stuck", 1.5)
        await client.wait_for_orchestration("stuck-1", timeout=20)

    [warning] = records(caplog)
    assert "running the turn of instance 'stuck-1'" in warning.getMessage()
    assert warning.instance_id == "stuck-1"  # type: ignore[attr-defined]
    assert not hasattr(warning, "activity")


async def test_a_normal_workload_is_not_reported(
    sqlite_provider: SqliteProvider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger=WATCHDOG)
    async with running(sqlite_provider, blocking_registry()) as client:
        for n in range(5):
            await client.start_orchestration(f"quick-{n}", "Quick", 20)
        for n in range(5):
            await client.wait_for_orchestration(f"quick-{n}", timeout=20)
        await asyncio.sleep(1.5)  # idle for longer than the threshold: waiting is not blocking
    assert not [r for r in caplog.records if r.name == WATCHDOG]


async def test_the_thread_runs_with_the_runtime_and_stops_at_shutdown(sqlite_provider: SqliteProvider) -> None:
    assert not watchdog_threads()
    async with running(sqlite_provider, blocking_registry()):
        assert len(watchdog_threads()) == 1
    assert not watchdog_threads()

    disabled = RuntimeOptions(idle_timeout=1.0, blocked_loop_warning=0)
    async with running(sqlite_provider, blocking_registry(), disabled):
        assert not watchdog_threads()


def test_the_threshold_is_not_negative() -> None:
    with pytest.raises(ValueError, match="blocked_loop_warning must be >= 0"):
        RuntimeOptions(blocked_loop_warning=-1)


async def test_a_custom_threshold_and_what_runs_outside_perdures_work(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=WATCHDOG)
    watchdog = Watchdog(Running(), threshold=0.3)
    watchdog.start()
    try:

        async def unmarked() -> None:
            time.sleep(0.8)

        # Each stretch is followed by a pause long enough for a beat, so that it is an episode of its own.
        await asyncio.create_task(unmarked(), name="app-task")
        await asyncio.sleep(0.6)
        asyncio.get_running_loop().call_soon(time.sleep, 0.8)
        await asyncio.sleep(0.6)
        with watchdog.running.doing(Work("marked", 3, "Lookup")):
            time.sleep(0.8)
        await asyncio.sleep(0.6)
    finally:
        watchdog.stop()

    warnings = [r.getMessage() for r in records(caplog)]
    assert len(warnings) == 3, warnings
    assert "running task 'app-task' (" in warnings[0] and "unmarked)" in warnings[0]
    assert "running a callback outside any task" in warnings[1]
    assert "running activity 'Lookup' of instance 'marked'" in warnings[2]
    assert len(records(caplog, logging.INFO)) == 3
    assert not watchdog_threads()


def test_the_thread_ends_when_its_loop_closes_without_a_shutdown() -> None:
    async def forget() -> Watchdog:
        watchdog = Watchdog(Running(), threshold=1.0)
        watchdog.start()
        return watchdog

    watchdog = asyncio.run(forget())
    assert watchdog._thread is not None
    watchdog._thread.join(timeout=2)
    assert not watchdog._thread.is_alive()
