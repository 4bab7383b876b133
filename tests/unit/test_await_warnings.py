"""Tasks scheduled but never awaited, and tasks awaited that nothing will complete, are reported."""

from __future__ import annotations

import contextlib
from typing import Any

from engine_harness import Driver

from perdure import OrchestrationContext, OrchestrationStatus, RetryPolicy
from perdure.engine import DurableTask

Ctx = OrchestrationContext
ACTIVITIES = {"A": lambda _c, x: x, "B": lambda _c, x: x, "Flaky": lambda _c, x: 1 / 0}


def warnings_of(orchestration: Any, **driver: Any) -> list[str]:
    run = Driver(orchestration, activities=ACTIVITIES, **driver).start()
    run.run()
    assert run.status is OrchestrationStatus.COMPLETED or run.status is OrchestrationStatus.RUNNING, run.result.error
    return [warning for result in run.results for warning in result.warnings]


def test_an_execution_that_ends_before_awaiting_its_tasks_names_them() -> None:
    async def forgets(ctx: Ctx, _: Any) -> str:
        ctx.call_activity("A", 1)  # never awaited
        ctx.create_timer(60)
        return str(await ctx.call_activity("B", 2))

    driver = Driver(forgets, activities=ACTIVITIES).start()
    driver.turn()
    driver.complete(4).turn()  # B finishes first: A and the timer are still out when the code returns
    assert driver.status is OrchestrationStatus.COMPLETED
    (warning,) = driver.result.warnings
    assert "ended without awaiting ActivityScheduled 'A' with input 1 (event 2), TimerCreated due" in warning
    assert "(event 3)" in warning and "ctx.when_all" in warning


def test_tasks_awaited_together_or_raced_are_not_reported() -> None:
    async def careful(ctx: Ctx, _: Any) -> Any:
        both = await ctx.when_all([ctx.call_activity("A", 1), ctx.call_activity("B", 2)])
        retried = ctx.call_activity("A", 3, retry=RetryPolicy(max_attempts=2))
        with contextlib.suppress(TimeoutError):
            await ctx.wait_for_event("never", timeout=1)
        await ctx.when_any([retried, ctx.create_timer(3600)])  # both stay out: raced, not forgotten
        return both

    driver = Driver(careful, activities=ACTIVITIES).start()
    driver.turn()
    driver.complete_all().turn()  # A and B
    timeout = next(i for i, d in driver.outstanding.items() if type(d).__name__ == "TimerCreated")
    driver.complete(timeout).turn()
    winner = max(driver.outstanding)  # the hour-long timer: the retried activity stays out
    result = driver.complete(winner).turn()
    assert result.status is OrchestrationStatus.COMPLETED, result.error
    assert driver.outstanding, "the raced activity is still out when the code returns"
    assert [w for r in driver.results for w in r.warnings] == []


def test_awaiting_a_task_this_execution_did_not_make_is_reported() -> None:
    stray: DurableTask[Any] = DurableTask()

    async def waits_for_a_stranger(ctx: Ctx, _: Any) -> Any:
        await ctx.call_activity("A", 1)
        return await stray

    (warning,) = warnings_of(waits_for_a_stranger)
    assert "awaits a DurableTask that this execution never scheduled" in warning
    assert "wait forever" in warning


def test_replayed_turns_report_nothing_again() -> None:
    async def forgets(ctx: Ctx, _: Any) -> str:
        ctx.call_activity("A", 1)
        return "done"

    driver = Driver(forgets, activities=ACTIVITIES).start()
    driver.run()
    assert len(driver.results[0].warnings) == 1
    assert all(not result.warnings for result in driver.results[1:])
