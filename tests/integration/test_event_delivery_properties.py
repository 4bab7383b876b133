"""Property: on a real runtime, every raised event is delivered exactly once, in the order raised.

Hypothesis chooses how many events a client raises and when (in a burst right after the start, so
before the first wait, or after short pauses, so during turns), the case of their names, and how
the orchestration consumes them: the plain or the timeout form of the wait (with a timeout short
enough to fire between events), an activity or a timer after each event (turns during which
events arrive), and continue-as-new every few events (events in flight around it).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import warnings
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from runtime_support import running

from perdure import ActivityContext, OrchestrationContext, OrchestrationStatus, Provider, Registry

# When a property fails, Hypothesis imports libcst to suggest a patch, which warns on import; with
# warnings as errors that would hide the falsifying example (see tests/unit/conftest.py).
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401

registry = Registry()


@registry.activity("Echo")
async def echo(ctx: ActivityContext, value: Any) -> Any:
    return value


@registry.orchestration("Consume")
async def consume(ctx: OrchestrationContext, state: dict[str, Any]) -> list[int]:
    plan, seen = state["plan"], list(state["seen"])
    while len(seen) < plan["count"]:
        if plan["timeout"] is None:
            data = await ctx.wait_for_event("e")
        else:
            try:
                data = await ctx.wait_for_event("e", timeout=plan["timeout"])
            except TimeoutError:
                continue  # nothing yet: wait again (the timed-out wait is withdrawn)
        seen.append(data)
        step = plan["steps"][len(seen) - 1]
        if step == "activity":
            await ctx.call_activity("Echo", data)
        elif step == "timer":
            await ctx.create_timer(0.005)
        if plan["every"] and len(seen) % plan["every"] == 0 and len(seen) < plan["count"]:
            ctx.continue_as_new({"plan": plan, "seen": seen})
    return seen


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[dict[str, Any], list[tuple[str, float]]]:
    count = draw(st.integers(1, 8))
    plan = {
        "count": count,
        "timeout": draw(st.sampled_from([None, 0.03, 5.0])),
        "steps": draw(st.lists(st.sampled_from(["none", "activity", "timer"]), min_size=count, max_size=count)),
        "every": draw(st.sampled_from([0, 1, 2, 3])),
    }
    pauses = st.sampled_from([0.0, 0.0, 0.005, 0.02])  # 0: in a burst with the previous raise
    raises = draw(st.lists(st.tuples(st.sampled_from(["e", "E"]), pauses), min_size=count, max_size=count))
    return plan, raises


_instance_ids = itertools.count()


@settings(
    max_examples=20,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(scenario=scenarios())
async def test_every_event_is_delivered_once_and_in_the_order_raised(
    provider: Provider, scenario: tuple[dict[str, Any], list[tuple[str, float]]]
) -> None:
    plan, raises = scenario
    instance_id = f"consume-{next(_instance_ids)}"
    async with running(provider, registry) as client:
        await client.start_orchestration(instance_id, "Consume", {"plan": plan, "seen": []})
        for data, (name, pause) in enumerate(raises):
            if pause:
                await asyncio.sleep(pause)
            await client.raise_event(instance_id, name, data)
        state = await client.wait_for_orchestration(instance_id, timeout=20)
    assert state.status is OrchestrationStatus.COMPLETED, state.error
    assert state.output == list(range(len(raises)))
    executions = 1 if not plan["every"] else 1 + (len(raises) - 1) // plan["every"]
    assert state.execution_id == executions
