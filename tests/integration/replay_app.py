"""One workflow, and the same workflow changed in each way that breaks replay, or does not.

``original`` made the stored histories; every other registry is a deploy candidate, as the CLI
loads it: ``perdure replay tests.integration.replay_app:reordered --db …``. ``DIVERGES_AT`` is the
first stored event each breaking change contradicts, in the histories :func:`seed` makes:

1 OrchestrationStarted, 2 ActivityScheduled Reserve, 3 ActivityCompleted, 4 TimerCreated,
5 TimerFired, 6 ActivityScheduled Charge, 7 ActivityCompleted, then "waiting" waits for the event
"approve" and "done" goes on: 8 EventRaised, 9 ActivityScheduled Ship, 10 ActivityCompleted,
11 OrchestrationCompleted.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from perdure import ActivityContext, Client, OrchestrationContext, OrchestrationStatus, Registry
from perdure.engine.events import ActivityCompleted, HistoryEvent

TIMER = 0.05
INSTANCES = ("done", "waiting")

Step = Callable[[OrchestrationContext, str], Coroutine[Any, Any, Any]]


def _registry(code: Step) -> Registry:
    registry = Registry()
    registry.orchestrations.add("Order", code)
    for name in ("Reserve", "Charge", "Ship", "Audit", "Hold", "Wrap"):

        def activity(ctx: ActivityContext, item: str, name: str = name) -> str:
            return f"{name} {item}"

        registry.activities.add(name, activity)
    return registry


async def _original(ctx: OrchestrationContext, item: str) -> str:
    await ctx.call_activity("Reserve", item)
    await ctx.create_timer(TIMER)
    await ctx.call_activity("Charge", item)
    await ctx.wait_for_event("approve")
    return str(await ctx.call_activity("Ship", item))


async def _reordered(ctx: OrchestrationContext, item: str) -> str:
    await ctx.call_activity("Charge", item)
    await ctx.create_timer(TIMER)
    await ctx.call_activity("Reserve", item)
    await ctx.wait_for_event("approve")
    return str(await ctx.call_activity("Ship", item))


async def _removed(ctx: OrchestrationContext, item: str) -> str:
    await ctx.call_activity("Reserve", item)
    await ctx.create_timer(TIMER)
    await ctx.wait_for_event("approve")
    return str(await ctx.call_activity("Ship", item))


async def _added(ctx: OrchestrationContext, item: str) -> str:
    await ctx.call_activity("Reserve", item)
    await ctx.call_activity("Audit", item)
    await ctx.create_timer(TIMER)
    await ctx.call_activity("Charge", item)
    await ctx.wait_for_event("approve")
    return str(await ctx.call_activity("Ship", item))


async def _renamed(ctx: OrchestrationContext, item: str) -> str:
    await ctx.call_activity("Hold", item)
    await ctx.create_timer(TIMER)
    await ctx.call_activity("Charge", item)
    await ctx.wait_for_event("approve")
    return str(await ctx.call_activity("Ship", item))


async def _timer(ctx: OrchestrationContext, item: str) -> str:
    await ctx.call_activity("Reserve", item)
    await ctx.create_timer(TIMER * 2)
    await ctx.call_activity("Charge", item)
    await ctx.wait_for_event("approve")
    return str(await ctx.call_activity("Ship", item))


async def _patched(ctx: OrchestrationContext, item: str) -> str:
    """The "added" change done right: old histories take the old branch."""
    await ctx.call_activity("Reserve", item)
    if ctx.patched("audit-reservations"):
        await ctx.call_activity("Audit", item)
    await ctx.create_timer(TIMER)
    await ctx.call_activity("Charge", item)
    await ctx.wait_for_event("approve")
    return str(await ctx.call_activity("Ship", item))


async def _unchanged(ctx: OrchestrationContext, item: str) -> str:
    """The original with a comment and a local renamed: nothing it decides changes."""
    reservation = await ctx.call_activity("Reserve", item)  # a name of our own
    assert reservation
    await ctx.create_timer(TIMER)
    await ctx.call_activity("Charge", item)
    await ctx.wait_for_event("approve")
    return str(await ctx.call_activity("Ship", item))


original = _registry(_original)
reordered = _registry(_reordered)
removed = _registry(_removed)
added = _registry(_added)
renamed = _registry(_renamed)
timer = _registry(_timer)
patched = _registry(_patched)
unchanged = _registry(_unchanged)

DIVERGES_AT = {"reordered": 2, "removed": 6, "added": 4, "renamed": 2, "timer": 4}
"""The first stored event each breaking change contradicts, for both instances."""


async def _charged(client: Client, instance_id: str) -> bool:
    history: list[HistoryEvent] = await client.get_history(instance_id)
    return sum(isinstance(e, ActivityCompleted) for e in history) >= 2


async def seed(client: Client) -> None:
    """With a runtime of ``original`` running: "done" completes, "waiting" waits for "approve"."""
    for instance_id in INSTANCES:
        await client.start_orchestration(instance_id, "Order", instance_id)
    for instance_id in INSTANCES:
        while not await _charged(client, instance_id):
            await client.provider.wait_for_state_change(instance_id, 0.05)
    await client.raise_event("done", "approve")
    state = await client.wait_for_orchestration("done", timeout=10)
    assert state.status is OrchestrationStatus.COMPLETED, state.error
