"""A turn that kills its process charges no activity that happened to be in flight in it.

A process's death is played in-process: each "life" is a runtime behind a provider that, once the
process is dead, lets nothing more reach the store (no ack, no release, no renewal), so the locks
it held expire as a killed process's would, and the next life takes the work over.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from typing import Any

from tests.integration.runtime_support import DelegatingProvider, wait_until

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    ProviderError,
    Registry,
    Runtime,
    RuntimeOptions,
)
from perdure.engine.events import ActivityCompleted, ActivityFailed, EventRaised
from perdure.providers._base import OrchestrationItem
from perdure.runtime import _turn

# No worker records behind the wrapper: a dead life's locks expire after these seconds.
OPTIONS = RuntimeOptions(
    lock_seconds=2.0,
    activity_lock_seconds=2.0,
    max_dispatch_attempts=2,
    idle_timeout=0.2,
    dispatch_backoff=0.01,
    max_dispatch_backoff=0.05,
)


class Process(DelegatingProvider):
    """The store as one worker process sees it: after :meth:`die`, nothing it does reaches the store."""

    def __init__(self, store: Provider) -> None:
        super().__init__(store)
        self.store = store
        self.dead = False

    def __getattribute__(self, name: str) -> Any:
        if name == "inner" and object.__getattribute__(self, "dead"):
            raise ProviderError("this worker process is dead")
        return object.__getattribute__(self, name)


async def _hold(provider: Provider, instance_id: str) -> OrchestrationItem | None:
    """Lock ``instance_id`` as another worker would, once its dead holder's lock has expired."""
    item = await provider.fetch_orchestration_item(60)
    if item is not None:
        assert item.instance_id == instance_id, item
    return item


async def test_a_turn_that_kills_its_process_again_and_again_charges_no_activity_in_flight(
    provider: Provider, monkeypatch: Any
) -> None:
    """ "Bad" kills its process in every turn that receives its event, while the one activity of
    "Healthy" is in flight in that process. The activity is run again in every new life (at least
    once: its earlier runs never reported), but only the first crash, on Bad's first delivery
    beside others, counts against it; the crashes of Bad running alone as a suspect count against
    Bad alone. With ``max_dispatch_attempts=2`` the activity would be poison in the third life if
    each crash counted; instead Bad is, and the activity completes.
    """
    registry = Registry()
    life = 0
    ran: defaultdict[int, asyncio.Event] = defaultdict(asyncio.Event)
    release = asyncio.Event()

    @registry.activity("Slow")
    async def slow(ctx: ActivityContext, value: str) -> str:
        ran[life].set()
        await release.wait()
        return value

    @registry.orchestration("Healthy")
    async def healthy(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("Slow", "done")

    @registry.orchestration("Bad")
    async def bad(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.wait_for_event("go")

    process = Process(provider)

    def killing(real: Any) -> Any:
        def engine(*args: Any, **kwargs: Any) -> Any:
            if any(isinstance(e, EventRaised) for e in kwargs["new_events"]):
                process.dead = True  # the turn kills its process, as an OOM kill would
                raise RuntimeError("killed")
            return real(*args, **kwargs)

        return engine

    # A replay, or the resumption of the execution the cache kept: the turn dies either way.
    monkeypatch.setattr(_turn, "replay", killing(_turn.replay))
    monkeypatch.setattr(_turn, "resume", killing(_turn.resume))
    client = Client(provider)
    await client.start_orchestration("healthy", "Healthy")
    await client.start_orchestration("bad", "Bad")

    async def healthy_ran_or_failed() -> bool:
        state = await client.get_status("healthy")
        return ran[life].is_set() or (state is not None and state.status is OrchestrationStatus.FAILED)

    async def dead_or_bad_failed() -> bool:
        state = await client.get_status("bad")
        return process.dead or (state is not None and state.status is OrchestrationStatus.FAILED)

    held = None
    while life < 5:
        life += 1
        process = Process(provider)
        runtime = Runtime(process, registry, OPTIONS)
        await runtime.start()
        try:
            await wait_until(healthy_ran_or_failed, timeout=60, what=f"the activity running in life {life}")
            healthy_state = await client.get_status("healthy")
            assert healthy_state is not None and healthy_state.status is not OrchestrationStatus.FAILED, (
                f"life {life}: the healthy instance paid for another's crashes: {healthy_state}"
            )
            if held is None:
                await client.raise_event("bad", "go", "payload")  # Bad's first delivery, beside the activity
            else:  # Bad comes back now that the activity runs in this life, and runs alone as a suspect
                await provider.abandon_orchestration_item(held, undo_delivery=True)
            await wait_until(dead_or_bad_failed, timeout=60, what=f"a crash or Bad's end in life {life}")
            if not process.dead:
                break
        finally:
            if process.dead:
                await runtime.shutdown(0.1)
        held = await wait_until(lambda: _hold(provider, "bad"), timeout=60, what="Bad's lock expiring")

    try:
        bad_state = await client.get_status("bad")
        assert bad_state is not None and bad_state.status is OrchestrationStatus.FAILED
        assert bad_state.error is not None and bad_state.error.type.endswith("PoisonMessageError")
        assert life == 3 and all(ran[n].is_set() for n in (1, 2, 3))  # it ran again after each crash
        release.set()
        state = await client.wait_for_orchestration("healthy", timeout=60)
        assert (state.status, state.output) == (OrchestrationStatus.COMPLETED, "done"), state.error
        history = await client.get_history("healthy")
        assert sum(isinstance(e, ActivityCompleted) for e in history) == 1
        assert not any(isinstance(e, ActivityFailed) for e in history)
    finally:
        release.set()
        await runtime.shutdown()


class RefusesOnce(DelegatingProvider):
    """Refuses the first request to take deliveries back; records every request."""

    def __init__(self, store: Provider) -> None:
        super().__init__(store)
        self.charges: list[tuple[int, bool]] = []

    async def charge_work_deliveries(self, items: Any, *, charged: bool) -> None:
        self.charges.append((len(items), charged))
        if len(self.charges) == 1:
            raise ProviderError("the store is away for a moment")
        await self.inner.charge_work_deliveries(items, charged=charged)


async def test_a_suspect_whose_activities_cannot_be_uncharged_is_put_back_unseen_and_runs_later(
    provider: Provider,
) -> None:
    """If the store refuses to take back the deliveries of the activities in flight, running the
    suspect now could make them pay for its crash: it is put back, its delivery taken back, and its
    turn runs again once the store answers (its code runs at most once per delivery counted)."""
    registry = Registry()
    running = asyncio.Event()
    release = asyncio.Event()

    @registry.activity("Slow")
    async def slow(ctx: ActivityContext, value: str) -> str:
        running.set()
        await release.wait()
        return value

    @registry.orchestration("Healthy")
    async def healthy(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.call_activity("Slow", "done")

    @registry.orchestration("Waits")
    async def waits(ctx: OrchestrationContext, _: Any) -> Any:
        return await ctx.wait_for_event("go")

    client = Client(provider)
    await client.start_orchestration("suspect", "Waits")
    await client.start_orchestration("healthy", "Healthy")
    crashed = await _hold(provider, "suspect")  # delivered once, and never finished: a suspect
    assert crashed is not None
    await provider.abandon_orchestration_item(crashed)
    held = await _hold(provider, "suspect")  # kept back until the activity is in flight
    assert held is not None and held.messages[0].dequeue_count == 2
    store = RefusesOnce(provider)
    async with Runtime(store, registry, OPTIONS):
        await asyncio.wait_for(running.wait(), 60)
        await provider.abandon_orchestration_item(held, undo_delivery=True)
        await wait_until(lambda: _status_is(client, "suspect", OrchestrationStatus.RUNNING), timeout=60)
        assert store.charges == [(1, False), (1, False), (1, True)]
        release.set()
        state = await client.wait_for_orchestration("healthy", timeout=60)
        assert (state.status, state.output) == (OrchestrationStatus.COMPLETED, "done")


async def _status_is(client: Client, instance_id: str, status: OrchestrationStatus) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and state.status is status
