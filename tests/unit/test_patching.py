"""``ctx.patched``: one code path for old histories and new executions, and its cleanup step."""

from __future__ import annotations

from typing import Any

import pytest
from engine_harness import Driver, replay

from perdure import OrchestrationContext, OrchestrationStatus
from perdure.engine.events import ActivityScheduled, HistoryEvent, Patched

Ctx = OrchestrationContext
ACTIVITIES = {name: (lambda _c, x, name=name: f"{name}:{x}") for name in ("A", "B", "New", "Old")}


async def before(ctx: Ctx, _: Any) -> list[str]:
    return [await ctx.call_activity("A", 1), await ctx.call_activity("Old", 2), await ctx.call_activity("B", 3)]


async def after(ctx: Ctx, _: Any) -> list[str]:
    first = await ctx.call_activity("A", 1)
    if ctx.patched("new-step"):
        middle = await ctx.call_activity("New", 2)
    else:
        middle = await ctx.call_activity("Old", 2)
    return [first, middle, await ctx.call_activity("B", 3)]


async def cleaned_up(ctx: Ctx, _: Any) -> list[str]:
    first = await ctx.call_activity("A", 1)
    ctx.deprecate_patch("new-step")
    middle = await ctx.call_activity("New", 2)
    return [first, middle, await ctx.call_activity("B", 3)]


def run(orchestration: Any, *, turns: int | None = None) -> Driver:
    """Run ``orchestration`` to the end, or for ``turns`` turns (each completing what is outstanding)."""
    driver = Driver(orchestration, activities=ACTIVITIES).start()
    if turns is None:
        driver.run()
        return driver
    driver.turn()
    for _ in range(turns - 1):
        driver.complete_all().turn()
    return driver


def kinds(history: list[HistoryEvent]) -> list[str]:
    return [f"{type(e).__name__} {getattr(e, 'name', getattr(e, 'change_id', ''))}".strip() for e in history]


def test_a_new_execution_records_the_marker_and_takes_the_new_branch() -> None:
    driver = run(after)
    assert driver.result.output == ["A:1", "New:2", "B:3"]
    assert kinds(driver.history)[:6] == [
        "OrchestrationStarted orch",
        "ActivityScheduled A",
        "ActivityCompleted",
        "Patched new-step",
        "ActivityScheduled New",
        "ActivityCompleted",
    ]


def test_a_history_made_before_the_patch_replays_and_goes_on_with_the_old_branch() -> None:
    for turns in (1, 2, 3, 4):  # the deploy happens at every point of the old run
        driver = run(before, turns=turns)
        driver.orchestration = after
        driver.run()
        assert driver.result.status is OrchestrationStatus.COMPLETED, (turns, driver.result.error)
        taken = [e.name for e in driver.history if isinstance(e, ActivityScheduled)]
        # Before it reached the patched point, an old instance takes the new branch: it never ran the old one.
        assert taken == (["A", "New", "B"] if turns == 1 else ["A", "Old", "B"]), turns
        assert any(isinstance(e, Patched) for e in driver.history) is (turns == 1)


def test_the_answer_is_asked_once_per_execution() -> None:
    async def loop(ctx: Ctx, _: Any) -> list[bool]:
        seen = []
        for n in range(3):
            seen.append(ctx.patched("in-a-loop"))
            await ctx.call_activity("A", n)
        return seen

    driver = run(loop)
    assert driver.result.output == [True, True, True]
    assert sum(isinstance(e, Patched) for e in driver.history) == 1


def test_deprecate_patch_replays_histories_with_the_marker_and_keeps_recording_it() -> None:
    patched = run(after)
    assert replay(cleaned_up, patched.history).new_events == []
    fresh = run(cleaned_up)
    assert fresh.result.output == ["A:1", "New:2", "B:3"]
    assert kinds(fresh.history)[3] == "Patched new-step"
    # Workers still running the patched code replay what the cleaned-up code records.
    assert replay(after, fresh.history).new_events == []


def test_removing_the_call_while_histories_hold_the_marker_is_reported() -> None:
    async def removed_too_early(ctx: Ctx, _: Any) -> list[str]:
        return [await ctx.call_activity("A", 1), await ctx.call_activity("New", 2), await ctx.call_activity("B", 3)]

    result = replay(removed_too_early, run(after, turns=2).history)
    assert result.status is OrchestrationStatus.FAILED
    assert result.error is not None
    assert "history recorded Patched 'new-step' (event 4)" in result.error.message


def test_a_marker_of_another_change_is_not_this_one() -> None:
    async def other_change(ctx: Ctx, _: Any) -> Any:
        await ctx.call_activity("A", 1)
        if ctx.patched("another"):
            return await ctx.call_activity("New", 2)
        return await ctx.call_activity("Old", 2)

    result = replay(other_change, run(after, turns=2).history)
    assert result.status is OrchestrationStatus.FAILED
    assert result.error is not None
    assert "ActivityScheduled 'Old'" in result.error.message
    assert "Patched 'new-step'" in result.error.message


@pytest.mark.parametrize("change_id", ["", " ", "a\x00b", 7])
def test_a_bad_change_id_is_refused_at_the_call(change_id: Any) -> None:
    async def bad(ctx: Ctx, _: Any) -> Any:
        return ctx.patched(change_id)

    result = run(bad).result
    assert result.status is OrchestrationStatus.FAILED
    assert result.error is not None and result.error.type in ("TypeError", "ValueError")
