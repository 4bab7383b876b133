"""A bad deploy loses nothing: the event that woke an instance into a non-determinism failure is
applied by the rewind after the fix, which the replayer confirms first (issue 20, item 4).

The story, in deploys: the code that started the instance; a change that breaks its history,
deployed while the instance waits for an event; the event arrives and the turn fails; the fix
(a patch that keeps the old branch for old histories) is checked by the replayer against the
stored history, deployed, and the instance rewound.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.integration.runtime_support import assert_history_sound, running, wait_until

from perdure import (
    ActivityContext,
    Client,
    NonDeterminismError,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
)
from perdure.engine.events import ActivityCompleted, EventRaised, OrchestrationFailed, Patched
from perdure.testing import Replayer

Code = Any


async def _before(ctx: OrchestrationContext, order: str) -> list[str]:
    reserved = await ctx.call_activity("Reserve", order)
    approval = await ctx.wait_for_event("approve")
    return [reserved, approval, await ctx.call_activity("Ship", order)]


async def _broken(ctx: OrchestrationContext, order: str) -> list[str]:
    # "Hold" replaced "Reserve" in place: every history that went past it no longer replays.
    reserved = await ctx.call_activity("Hold", order)
    approval = await ctx.wait_for_event("approve")
    return [reserved, approval, await ctx.call_activity("Ship", order)]


async def _fixed(ctx: OrchestrationContext, order: str) -> list[str]:
    # The same change, patched: histories from before it keep their branch.
    step = "Hold" if ctx.patched("hold-instead-of-reserve") else "Reserve"
    reserved = await ctx.call_activity(step, order)
    approval = await ctx.wait_for_event("approve")
    return [reserved, approval, await ctx.call_activity("Ship", order)]


def deploy(code: Code, runs: Counter[str]) -> Registry:
    registry = Registry()
    registry.orchestrations.add("Order", code)
    for name in ("Reserve", "Hold", "Ship"):

        async def activity(ctx: ActivityContext, order: str, name: str = name) -> str:
            runs[name] += 1
            return f"{name} {order}"

        registry.activities.add(name, activity)
    return registry


async def _reserved(client: Client) -> bool:
    return any(isinstance(e, ActivityCompleted) for e in await client.get_history("order-7"))


async def test_a_fixed_deploy_checked_by_the_replayer_and_a_rewind_apply_the_event_once(provider: Provider) -> None:
    runs: Counter[str] = Counter()
    async with running(provider, deploy(_before, runs)) as client:
        await client.start_orchestration("order-7", "Order", "order-7")
        await wait_until(lambda: _reserved(client), what="the reservation")

    broken = deploy(_broken, runs)
    async with running(provider, broken) as client:
        await client.raise_event("order-7", "approve", "approved by Ada")
        state = await client.wait_for_orchestration("order-7", timeout=10)
    assert state.status is OrchestrationStatus.FAILED and state.error is not None
    assert state.error.type.endswith("NonDeterminismError"), state.error
    history = await client.get_history("order-7")
    end = next(i for i, e in enumerate(history) if isinstance(e, OrchestrationFailed))
    assert [(e.name, e.data) for e in history[end + 1 :] if isinstance(e, EventRaised)] == [
        ("approve", "approved by Ada")
    ], "the failed execution keeps the event that woke it"

    # Before deploying anything, check it against the stored history: the broken code (what the
    # workers run now) does not replay it, the fix does.
    failed = [OrchestrationStatus.FAILED]
    [refused] = (await Replayer(broken).replay_store(client, status=failed)).values()
    assert not refused.ok and isinstance(refused.error, NonDeterminismError)
    assert refused.event is not None and refused.event.event_id == 2  # ActivityScheduled 'Reserve'
    fixed = deploy(_fixed, runs)
    assert {i: r.ok for i, r in (await Replayer(fixed).replay_store(client, status=failed)).items()} == {
        "order-7": True
    }

    async with running(provider, fixed) as client:
        execution = await client.rewind("order-7", "the patched code is deployed")
        state = await client.wait_for_orchestration("order-7", execution_id=execution, timeout=10)
        # A new order takes the new branch of the same code.
        await client.start_orchestration("order-8", "Order", "order-8")
        await client.raise_event("order-8", "approve", "approved by Bob")
        new = await client.wait_for_orchestration("order-8", timeout=10)

    assert state.status is OrchestrationStatus.COMPLETED, state.error
    assert state.output == ["Reserve order-7", "approved by Ada", "Ship order-7"]  # the event was not raised again
    history = await client.get_history("order-7")
    assert_history_sound(history)
    assert not any(isinstance(e, Patched) for e in history)
    assert new.output == ["Hold order-8", "approved by Bob", "Ship order-8"]
    assert runs == Counter({"Reserve": 1, "Ship": 2, "Hold": 1}), "nothing ran twice"
    assert all(r.ok for r in (await Replayer(fixed).replay_store(client)).values())
