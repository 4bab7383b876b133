"""Cancelling durable tasks in the engine: recorded as ``TaskCancelled``, replayed identically.

The harness replays every committed turn again and checks that nothing new is decided, so each
test here also proves that a history with cancellations replays as it was made.
"""

from __future__ import annotations

from typing import Any

import pytest
from engine_harness import Driver, replay

from perdure import OrchestrationContext, OrchestrationStatus, RetryPolicy, TaskCancelledError
from perdure.engine._codec import decode_event, encode_event
from perdure.engine.events import (
    ActivityCompleted,
    HistoryEvent,
    SubOrchestrationFailed,
    TaskCancelled,
    TimerFired,
)
from perdure.tools._format import timeline_json

Ctx = OrchestrationContext
ACTIVITIES = {"Slow": lambda _c, x: x, "Fast": lambda _c, x: x, "Boom": lambda _c, x: 1 / 0}


def kinds(events: list[HistoryEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


async def race(ctx: Ctx, _: Any) -> Any:
    slow = ctx.call_activity("Slow", 1)
    fast = ctx.call_activity("Fast", 2)
    winner = await ctx.when_any([slow, fast])
    cancelled = slow.cancel()
    try:
        await slow
    except TaskCancelledError as exc:
        outcome = str(exc)
    await ctx.wait_for_event("go")
    return [winner.result(), cancelled, slow.cancel(), outcome]


def test_a_when_any_loser_is_cancelled_by_a_recorded_decision() -> None:
    driver = Driver(race, activities=ACTIVITIES).start()
    driver.turn()
    result = driver.complete(3).turn()
    assert kinds(result.new_events) == ["ActivityCompleted", "TaskCancelled"]
    assert result.new_events[1] == TaskCancelled(
        event_id=5, timestamp=result.new_events[1].timestamp, source_event_id=2
    )
    assert 2 not in driver.outstanding  # the runtime is asked to stop it, nothing awaits its answer
    late = driver.turn(ActivityCompleted(source_event_id=2, result="late"))
    assert late.dropped == [(0, "its task was cancelled")]
    assert late.new_events == []
    done = driver.raise_event("go").turn()
    assert done.output == [2, True, False, "activity 'Slow' was cancelled"]
    # The stored form round-trips, and the whole history replays to the same end.
    stored = [decode_event(encode_event(e)) for e in driver.history]
    again = replay(race, stored)
    assert (again.new_events, again.status, again.output) == ([], OrchestrationStatus.COMPLETED, done.output)


def test_an_uncaught_cancellation_fails_the_orchestration() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        task = ctx.call_activity("Slow")
        task.cancel()
        return await task

    result = Driver(orch, activities=ACTIVITIES).start().turn()
    assert kinds(result.new_events) == [
        "OrchestrationStarted",
        "ActivityScheduled",
        "TaskCancelled",
        "OrchestrationFailed",
    ]
    assert result.error is not None
    assert result.error.type == "perdure.TaskCancelledError"
    assert result.error.message == "activity 'Slow' was cancelled"


def test_cancelling_a_timer_drops_its_firing() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        timer = ctx.create_timer(3600)
        first = await ctx.when_any([timer, ctx.wait_for_event("stop")])
        timer.cancel()
        await ctx.wait_for_event("end")
        return first is timer

    driver = Driver(orch).start()
    driver.turn()
    result = driver.raise_event("stop").turn()
    assert kinds(result.new_events) == ["EventRaised", "TaskCancelled"]
    fire_at = driver.history[1].fire_at  # type: ignore[attr-defined]
    assert driver.turn(TimerFired(source_event_id=2, fire_at=fire_at)).dropped == [(0, "its task was cancelled")]
    assert driver.raise_event("end").turn().output is False


def test_cancelling_a_child_records_the_decision_and_its_late_answer_is_dropped() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        child = ctx.call_sub_orchestration("Child", instance_id="kid")
        await ctx.create_timer(5)
        child.cancel()
        await ctx.wait_for_event("end")
        return "done"

    async def child(ctx: Ctx, _: Any) -> Any:
        return 1

    driver = Driver(orch, children={"Child": child}).start()
    driver.turn()
    result = driver.complete(3).turn()
    assert kinds(result.new_events) == ["TimerFired", "TaskCancelled"]
    assert result.new_events[1].source_event_id == 2  # type: ignore[attr-defined]
    error = SubOrchestrationFailed(source_event_id=2, error=_terminated())
    assert driver.turn(error).dropped == [(0, "its task was cancelled")]


def _terminated() -> Any:
    from perdure import ErrorDetails

    return ErrorDetails(type="Terminated", message="cancelled by its parent")


def test_cancelling_a_retried_activity_in_its_backoff_cancels_the_backoff_timer() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        task = ctx.call_activity("Boom", retry=RetryPolicy(max_attempts=5, initial_interval=60))
        first = await ctx.when_any([task, ctx.wait_for_event("stop")])
        task.cancel()
        with pytest.raises(TaskCancelledError, match="activity 'Boom' was cancelled"):
            await task
        return first is task

    driver = Driver(orch, activities=ACTIVITIES).start()
    driver.turn()
    backoff = driver.complete(2).turn()
    assert kinds(backoff.new_events) == ["ActivityFailed", "TimerCreated"]
    result = driver.raise_event("stop").turn()
    assert kinds(result.new_events) == ["EventRaised", "TaskCancelled", "OrchestrationCompleted"]
    assert result.new_events[1].source_event_id == backoff.new_events[1].event_id  # type: ignore[attr-defined]
    assert result.output is False


def test_cancelling_when_all_cancels_what_is_still_running_and_is_cancelled_itself() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        a, b, c = (ctx.call_activity("Slow", n) for n in range(3))
        both = ctx.when_all([a, b, c])
        await a
        both.cancel()
        try:
            await both
        except TaskCancelledError as exc:
            return [str(exc), a.result(), b.done(), type(c.exception()).__name__]

    driver = Driver(orch, activities=ACTIVITIES).start()
    driver.turn()
    result = driver.complete(2).turn()
    cancelled = [e.source_event_id for e in result.new_events if isinstance(e, TaskCancelled)]
    assert cancelled == [3, 4]
    assert result.output == ["when_all was cancelled", 0, True, "TaskCancelledError"]


def test_cancelling_when_any_does_not_finish_it_with_the_first_cancelled_task() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        either = ctx.when_any([ctx.call_activity("Slow"), ctx.create_timer(60)])
        either.cancel()
        try:
            await either
        except TaskCancelledError as exc:
            return str(exc)

    result = Driver(orch, activities=ACTIVITIES).start().turn()
    assert result.output == "when_any was cancelled"
    assert [e.source_event_id for e in result.new_events if isinstance(e, TaskCancelled)] == [2, 3]


def test_a_cancelled_event_wait_is_withdrawn_and_records_nothing() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        plain = ctx.wait_for_event("ping")
        bounded = ctx.wait_for_event("ping", timeout=60)
        plain.cancel()
        bounded.cancel()
        return await ctx.wait_for_event("ping")

    driver = Driver(orch).start()
    first = driver.turn()
    # Only the bounded wait's timer is a task in history; the waits themselves are not.
    assert kinds(first.new_events) == ["OrchestrationStarted", "TimerCreated", "TaskCancelled"]
    assert driver.raise_event("ping", "the third wait gets it").turn().output == "the third wait gets it"


def test_scheduling_and_cancelling_in_one_step_replays_from_a_partial_history() -> None:
    """Replaying a history cut right after the scheduling decision resolves the cancellation's target."""

    async def orch(ctx: Ctx, _: Any) -> Any:
        a = ctx.call_activity("Slow", "a")
        b = ctx.call_activity("Slow", "b")
        b.cancel()
        a.cancel()
        await ctx.wait_for_event("end")

    driver = Driver(orch, activities=ACTIVITIES).start()
    result = driver.turn()
    assert kinds(result.new_events)[1:] == ["ActivityScheduled", "ActivityScheduled", "TaskCancelled", "TaskCancelled"]
    assert [e.source_event_id for e in result.new_events[3:]] == [3, 2]  # type: ignore[attr-defined]
    again = replay(orch, driver.history[:3])  # the rest is decided anew, the same way
    assert again.new_events == driver.history[3:5]


def test_cancel_is_refused_for_a_finished_task_and_changes_nothing() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        task = ctx.call_activity("Fast", 7)
        value = await task
        return [task.cancel(), value, task.result()]

    driver = Driver(orch, activities=ACTIVITIES).start()
    driver.turn()
    result = driver.complete(2).turn()
    assert result.output == [False, 7, 7]
    assert not any(isinstance(e, TaskCancelled) for e in driver.history)


# --- non-determinism -------------------------------------------------------------------------


def raced_history() -> list[HistoryEvent]:
    driver = Driver(race, activities=ACTIVITIES).start()
    driver.turn()
    driver.complete(3).turn()
    driver.raise_event("go").turn()
    return driver.history


def assert_nondeterminism(orch: Any, history: list[HistoryEvent], message: str) -> None:
    result = replay(orch, history)
    assert result.status is OrchestrationStatus.FAILED
    assert result.error is not None and result.error.type == "perdure.NonDeterminismError"
    assert result.error.message == message


def test_code_that_no_longer_cancels_what_history_cancelled() -> None:
    async def keeps_it(ctx: Ctx, _: Any) -> Any:
        slow, fast = ctx.call_activity("Slow", 1), ctx.call_activity("Fast", 2)
        await ctx.when_any([slow, fast])
        await ctx.wait_for_event("go")

    assert_nondeterminism(
        keeps_it,
        raced_history(),
        "history recorded TaskCancelled for event 2 (event 5), "
        "but the orchestration code no longer makes that decision",
    )


def test_code_that_cancels_what_history_did_not() -> None:
    async def keeps_it(ctx: Ctx, _: Any) -> Any:
        slow, fast = ctx.call_activity("Slow", 1), ctx.call_activity("Fast", 2)
        await ctx.when_any([slow, fast])
        await ctx.wait_for_event("go")
        return "done"

    driver = Driver(keeps_it, activities=ACTIVITIES).start()
    driver.turn()
    driver.complete(3).turn()
    driver.raise_event("go").turn()
    assert_nondeterminism(
        race,
        driver.history,
        "the orchestration code made the decision TaskCancelled for event 2, "
        "but history recorded EventRaised 'go' (event 5) there",
    )


def test_code_that_cancels_another_task_than_history_did() -> None:
    def cancelling(which: int) -> Any:
        async def orch(ctx: Ctx, _: Any) -> Any:
            tasks = [ctx.call_activity("Slow", n) for n in range(3)]
            await tasks[0]
            tasks[which].cancel()
            await ctx.wait_for_event("go")

        return orch

    driver = Driver(cancelling(1), activities=ACTIVITIES).start()
    driver.turn()
    driver.complete(2).turn()
    assert_nondeterminism(
        cancelling(2),
        driver.history,
        "the orchestration code made the decision TaskCancelled for event 4, "
        "but history recorded TaskCancelled for event 3 (event 6) at that position",
    )


def test_the_timeline_shows_a_cancelled_task_as_cancelled() -> None:
    driver = Driver(race, activities=ACTIVITIES).start()
    driver.turn()
    driver.complete(3).turn()
    outcomes = {span["label"]: span["outcome"] for span in timeline_json(driver.history)}
    assert outcomes == {"Slow": "cancelled", "Fast": "completed"}
