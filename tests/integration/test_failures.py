"""Failures end to end: bad results, bad awaits, unregistered code and poison messages fail cleanly."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from runtime_support import FAST, assert_history_sound, events_of, history_has, running, wait_until

from perdure import (
    ActivityContext,
    ActivityFailedError,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    RuntimeOptions,
    UnregisteredActivityError,
)
from perdure.engine.events import (
    ActivityFailed,
    EventRaised,
    OrchestrationCompleted,
    OrchestrationFailed,
    OrchestrationStarted,
)
from perdure.runtime import _turn

FAILED = OrchestrationStatus.FAILED
FEW_ATTEMPTS = RuntimeOptions(max_dispatch_attempts=3, dispatch_backoff=0.01, max_dispatch_backoff=0.05)


async def test_an_activity_returning_non_json_fails_the_activity(provider: Provider) -> None:
    registry = Registry()

    @registry.activity()
    async def returns_object(ctx: ActivityContext) -> Any:
        return object()

    @registry.activity()
    def returns_set(ctx: ActivityContext) -> Any:
        return {1j, 2}  # a set of what no JSON value holds

    @registry.orchestration()
    async def calls(ctx: OrchestrationContext, activity: str) -> Any:
        try:
            await ctx.call_activity(activity)
        except ActivityFailedError as exc:
            return [exc.details.type, exc.details.message]
        return "not raised"

    async with running(provider, registry) as client:
        for activity in ("returns_object", "returns_set"):
            await client.start_orchestration(activity, "calls", activity)
        states = [await client.wait_for_orchestration(a, timeout=10) for a in ("returns_object", "returns_set")]

    for state in states:
        assert state.status is OrchestrationStatus.COMPLETED
        kind, message = state.output
        assert kind == "perdure.SerializationError"
        assert f"result of activity {state.instance_id!r}" in message
        assert "not a JSON value" in message


async def test_awaiting_asyncio_sleep_fails_the_orchestration_clearly(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration()
    async def sleeps(ctx: OrchestrationContext) -> None:
        await asyncio.sleep(0.01)

    async with running(provider, registry) as client:
        await client.start_orchestration("sleeps", "sleeps")
        state = await client.wait_for_orchestration("sleeps", timeout=10)

    assert state.status is FAILED
    assert state.error is not None
    assert state.error.type == "perdure.NonDurableAwaitError"
    assert "create_timer" in state.error.message or "durable" in state.error.message
    history = await client.get_history("sleeps")
    assert_history_sound(history)
    assert isinstance(history[-1], OrchestrationFailed)


async def test_an_orchestration_exception_fails_the_instance_with_its_traceback(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration()
    async def broken(ctx: OrchestrationContext) -> None:
        raise KeyError("missing")

    async with running(provider, registry) as client:
        await client.start_orchestration("broken", "broken")
        state = await client.wait_for_orchestration("broken", timeout=10)

    assert state.status is FAILED
    assert state.error is not None
    assert state.error.type == "KeyError"
    assert 'raise KeyError("missing")' in (state.error.traceback or "")


async def test_an_unregistered_activity_fails_after_the_attempts(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration()
    async def calls_missing(ctx: OrchestrationContext, catch: bool) -> Any:
        try:
            return await ctx.call_activity("NoSuchActivity", 1)
        except ActivityFailedError as exc:
            if not catch:
                raise
            return exc.details.type

    async with running(provider, registry, FEW_ATTEMPTS) as client:
        await client.start_orchestration("caught", "calls_missing", True)
        await client.start_orchestration("uncaught", "calls_missing", False)
        caught = await client.wait_for_orchestration("caught", timeout=10)
        uncaught = await client.wait_for_orchestration("uncaught", timeout=10)

    assert (caught.status, caught.output) == (OrchestrationStatus.COMPLETED, "perdure.UnregisteredActivityError")
    assert uncaught.status is FAILED
    assert uncaught.error is not None
    assert uncaught.error.is_type(ActivityFailedError)
    failed = events_of(await client.get_history("uncaught"), ActivityFailed)
    assert len(failed) == 1
    assert failed[0].error.is_type(UnregisteredActivityError)
    assert "NoSuchActivity" in failed[0].error.message


async def test_an_unregistered_orchestration_fails_after_the_attempts(provider: Provider) -> None:
    async with running(provider, Registry(), FEW_ATTEMPTS) as client:
        await client.start_orchestration("nobody-runs-me", "Missing", 1, version="1.2.3")
        state = await client.wait_for_orchestration("nobody-runs-me", timeout=10)

    assert state.status is FAILED
    assert state.error is not None
    assert state.error.type == "perdure.UnregisteredOrchestrationError"
    assert "Missing" in state.error.message


async def test_a_poison_message_fails_its_instance(provider: Provider, monkeypatch: pytest.MonkeyPatch) -> None:
    """A turn that keeps crashing (a bug) fails its instance instead of looping; others are unaffected."""
    real_replay = _turn.replay
    crashes: list[str] = []

    def replay(*args: Any, **kwargs: Any) -> Any:
        if kwargs["instance_id"] == "poison":
            crashes.append("poison")
            raise RuntimeError("a bug in a turn")
        return real_replay(*args, **kwargs)

    monkeypatch.setattr(_turn, "replay", replay)
    registry = Registry()

    @registry.orchestration()
    async def simple(ctx: OrchestrationContext) -> str:
        return "fine"

    async with running(provider, registry, FEW_ATTEMPTS) as client:
        await client.start_orchestration("poison", "simple")
        await client.start_orchestration("healthy", "simple")
        poisoned = await client.wait_for_orchestration("poison", timeout=10)
        healthy = await client.wait_for_orchestration("healthy", timeout=10)

    assert (healthy.status, healthy.output) == (OrchestrationStatus.COMPLETED, "fine")
    assert poisoned.status is FAILED
    assert poisoned.error is not None
    assert poisoned.error.type == "perdure.PoisonMessageError"
    assert "delivered 4 times" in poisoned.error.message
    assert len(crashes) == FEW_ATTEMPTS.max_dispatch_attempts
    assert not any(isinstance(e, OrchestrationCompleted) for e in await client.get_history("poison"))


async def test_a_poison_message_mid_run_records_the_failure_in_history(
    provider: Provider, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A message that crashes a later turn fails the instance; the history stays sound."""
    real_replay, real_resume = _turn.replay, _turn.resume

    def crashing(real: Any) -> Any:
        def engine(*args: Any, **kwargs: Any) -> Any:
            if kwargs.get("history", True) and any(getattr(e, "name", None) == "boom" for e in kwargs["new_events"]):
                raise RuntimeError("this event crashes the turn")
            return real(*args, **kwargs)

        return engine

    # A replay, or the resumption of the execution the cache kept: the turn crashes either way.
    monkeypatch.setattr(_turn, "replay", crashing(real_replay))
    monkeypatch.setattr(_turn, "resume", crashing(real_resume))
    registry = Registry()

    @registry.orchestration()
    async def waits(ctx: OrchestrationContext) -> Any:
        return await ctx.wait_for_event("boom")

    options = RuntimeOptions(
        max_dispatch_attempts=2, dispatch_backoff=0.01, max_dispatch_backoff=0.05, idle_timeout=FAST.idle_timeout
    )
    async with running(provider, registry, options) as client:
        await client.start_orchestration("mid", "waits")
        await wait_until(lambda: history_has(client, "mid", OrchestrationStarted), what="the instance started")
        await client.raise_event("mid", "boom")
        state = await client.wait_for_orchestration("mid", timeout=10)

    assert state.status is FAILED
    assert state.error is not None
    assert state.error.type == "perdure.PoisonMessageError"
    history = await client.get_history("mid")
    assert_history_sound(history)
    # The event the poisoned turn consumed is kept after the failure, for a rewind to apply.
    assert isinstance(history[-2], OrchestrationFailed)
    assert isinstance(history[-1], EventRaised) and history[-1].name == "boom"
