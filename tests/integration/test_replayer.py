"""``perdure.testing.Replayer`` against a real store, and a patched workflow deployed over running instances."""

from __future__ import annotations

import dataclasses
import time
from typing import Any

from tests.integration import replay_app
from tests.integration.runtime_support import FAST, running

from perdure import (
    Client,
    NonDeterminismError,
    NonDeterministicCallError,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    UnregisteredOrchestrationError,
)
from perdure.engine.events import ActivityScheduled, OrchestrationStarted, Patched
from perdure.testing import Replayer


async def seeded(provider: Provider) -> Client:
    async with running(provider, replay_app.original) as client:
        await replay_app.seed(client)
    return Client(provider)


async def test_each_breaking_change_is_reported_per_instance_at_the_first_differing_event(provider: Provider) -> None:
    client = await seeded(provider)
    for variant, event_id in replay_app.DIVERGES_AT.items():
        results = await Replayer(getattr(replay_app, variant)).replay_store(client)
        assert sorted(results) == sorted(replay_app.INSTANCES), variant
        for instance_id, result in results.items():
            assert not result.ok, (variant, instance_id)
            assert isinstance(result.error, NonDeterminismError), (variant, result.error)
            assert result.event is not None and result.event.event_id == event_id, (variant, instance_id, result)
            assert f"(event {event_id})" in str(result.error)
    for variant in ("original", "unchanged", "patched"):
        results = await Replayer(getattr(replay_app, variant)).replay_store(client)
        assert {i: r.ok for i, r in results.items()} == {"done": True, "waiting": True}, (variant, results)


async def test_replay_store_takes_the_listing_filters(provider: Provider) -> None:
    client = await seeded(provider)
    replayer = Replayer(replay_app.reordered)
    assert list(await replayer.replay_store(client, status=OrchestrationStatus.RUNNING)) == ["waiting"]
    assert list(await replayer.replay_store(client, status=[OrchestrationStatus.COMPLETED])) == ["done"]
    assert await replayer.replay_store(client, name="Other") == {}


async def test_a_pinned_version_that_is_not_registered_is_reported_per_instance(provider: Provider) -> None:
    client = await seeded(provider)
    newer = Registry()
    newer.orchestrations.add("Order", replay_app._original, "2.0.0")
    for result in (await Replayer(newer).replay_store(client)).values():
        assert not result.ok
        assert isinstance(result.error, UnregisteredOrchestrationError)
        assert "Order@1.0.0 is not registered" in str(result.error)
        assert isinstance(result.event, OrchestrationStarted)


async def test_a_patched_workflow_completes_old_and_new_instances(provider: Provider) -> None:
    await seeded(provider)  # "waiting" went past the patched point under the old code
    async with running(provider, replay_app.patched) as client:
        await client.start_orchestration("fresh", "Order", "fresh")
        for instance_id in ("waiting", "fresh"):
            await _approve_when_charged(client, instance_id)
        for instance_id in ("waiting", "fresh"):
            state = await client.wait_for_orchestration(instance_id, timeout=10)
            assert state.status is OrchestrationStatus.COMPLETED, state.error
            assert state.output == f"Ship {instance_id}"
    old, new = [await client.get_history(i) for i in ("waiting", "fresh")]
    assert _activities(old) == ["Reserve", "Charge", "Ship"]
    assert not any(isinstance(e, Patched) for e in old)
    assert _activities(new) == ["Reserve", "Audit", "Charge", "Ship"]
    assert [e.change_id for e in new if isinstance(e, Patched)] == ["audit-reservations"]

    everything = await Replayer(replay_app.patched).replay_store(client)
    assert {i: r.ok for i, r in everything.items()} == {"done": True, "fresh": True, "waiting": True}
    # The code of before the patch cannot replay what the patched code recorded...
    before = Replayer(replay_app.original).replay(new, instance_id="fresh")
    assert before.event is not None and isinstance(before.event, Patched)
    # ...and the cleanup step may ship only once no history without the marker is left.
    cleaned = Replayer(_deprecated_registry())
    assert cleaned.replay(new, instance_id="fresh").ok
    assert not cleaned.replay(old, instance_id="waiting").ok


async def _approve_when_charged(client: Client, instance_id: str) -> None:
    while "Charge" not in _activities(await client.get_history(instance_id)):
        await client.provider.wait_for_state_change(instance_id, 0.05)
    await client.raise_event(instance_id, "approve")


def _activities(history: list[Any]) -> list[str]:
    return [e.name for e in history if isinstance(e, ActivityScheduled)]


def _deprecated_registry() -> Registry:
    async def cleaned_up(ctx: OrchestrationContext, item: str) -> str:
        await ctx.call_activity("Reserve", item)
        ctx.deprecate_patch("audit-reservations")
        await ctx.call_activity("Audit", item)
        await ctx.create_timer(replay_app.TIMER)
        await ctx.call_activity("Charge", item)
        await ctx.wait_for_event("approve")
        return str(await ctx.call_activity("Ship", item))

    registry = Registry()
    registry.orchestrations.add("Order", cleaned_up)
    return registry


async def test_the_replayer_honours_the_determinism_guards_option(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("Clock")
    async def clock(ctx: OrchestrationContext, _: Any) -> Any:
        await ctx.create_timer(0.01)
        return time.time() > 0

    unguarded = dataclasses.replace(FAST, determinism_guards=False)
    async with running(provider, registry, unguarded) as client:
        await client.start_orchestration("clock", "Clock")
        state = await client.wait_for_orchestration("clock", timeout=10)
        assert state.status is OrchestrationStatus.COMPLETED and state.output is True, state.error
    history = await client.get_history("clock")
    assert Replayer(registry, unguarded).replay(history, instance_id="clock").ok
    guarded = Replayer(registry).replay(history, instance_id="clock")
    assert isinstance(guarded.error, NonDeterministicCallError)
    assert "ctx.now()" in str(guarded.error)
