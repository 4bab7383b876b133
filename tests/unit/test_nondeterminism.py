"""Every non-determinism case of DESIGN.md §4: the instance fails, and the message names both sides."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from engine_harness import T0, Driver, replay

from perdure import OrchestrationContext, OrchestrationStatus
from perdure.engine import ReplayOutcome
from perdure.engine.events import (
    ActivityCompleted,
    ActivityScheduled,
    EventRaised,
    HistoryEvent,
    OrchestrationCompleted,
    OrchestrationFailed,
    OrchestrationStarted,
    SubOrchestrationCompleted,
    TimerFired,
)

Ctx = OrchestrationContext
ACTIVITIES = {"A": lambda _c, x: x, "B": lambda _c, x: x}


def recorded(orch: Any, *, complete: int = 0, input: Any = None) -> list[HistoryEvent]:
    """The history of ``orch`` after its first turn and ``complete`` more turns (all completions)."""
    driver = Driver(orch, activities=ACTIVITIES, children={"Child": child}).start(input)
    driver.turn()
    for _ in range(complete):
        driver.complete_all().turn()
    return driver.history


async def child(ctx: Ctx, value: Any) -> Any:
    return value


def assert_nondeterminism(result: ReplayOutcome, history: list[HistoryEvent], *fragments: str) -> str:
    assert result.status is OrchestrationStatus.FAILED
    assert result.error is not None
    assert result.error.type == "perdure.NonDeterminismError"
    if history and isinstance(history[-1], OrchestrationCompleted | OrchestrationFailed):
        assert result.new_events == [], "an execution that has ended records no second terminal event"
    else:  # only the failure is recorded, right after the stored history
        assert result.new_events == [
            OrchestrationFailed(event_id=len(history) + 1, timestamp=result.new_events[0].timestamp, error=result.error)
        ]
    for fragment in fragments:
        assert fragment in result.error.message, result.error.message
    return result.error.message


# --- the code schedules something different ---------------------------------------------------


async def calls_a(ctx: Ctx, _: Any) -> Any:
    return await ctx.call_activity("A", {"n": 1})


def test_different_kind() -> None:
    async def timer_instead(ctx: Ctx, _: Any) -> Any:
        await ctx.create_timer(5)

    history = recorded(calls_a)
    message = assert_nondeterminism(
        replay(timer_instead, history),
        history,
        "the orchestration code made the decision TimerCreated due",
        "history recorded ActivityScheduled 'A' with input {'n': 1} (event 2) at that position",
    )
    assert message.index("TimerCreated") < message.index("ActivityScheduled")


def test_different_name() -> None:
    async def calls_b(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_activity("B", {"n": 1})

    history = recorded(calls_a)
    assert_nondeterminism(
        replay(calls_b, history),
        history,
        "the orchestration code made the decision ActivityScheduled 'B' with input {'n': 1}",
        "but history recorded ActivityScheduled 'A' with input {'n': 1} (event 2)",
    )


def test_different_input() -> None:
    async def other_input(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_activity("A", {"n": 2})

    history = recorded(calls_a)
    assert_nondeterminism(
        replay(other_input, history),
        history,
        "made the decision ActivityScheduled 'A' with input {'n': 2}",
        "recorded ActivityScheduled 'A' with input {'n': 1} (event 2)",
    )


def test_same_input_as_tuple_or_list_is_the_same_decision() -> None:
    async def with_list(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_activity("A", [1, [2, 3]])

    async def with_tuple(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_activity("A", (1, (2, 3)))

    history = recorded(with_list)
    result = replay(with_tuple, history)
    assert result.error is None
    assert result.new_events == []


@pytest.mark.parametrize(
    ("before", "after", "made", "was"),
    [
        (
            lambda ctx: ctx.call_sub_orchestration("Child", 1, instance_id="c"),
            lambda ctx: ctx.call_sub_orchestration("Other", 1, instance_id="c"),
            "SubOrchestrationScheduled 'Other' with input 1",
            "SubOrchestrationScheduled 'Child' with input 1 (event 2)",
        ),
        (
            lambda ctx: ctx.call_sub_orchestration("Child", 1),
            lambda ctx: ctx.call_sub_orchestration("Child", 2),
            "SubOrchestrationScheduled 'Child' with input 2",
            "SubOrchestrationScheduled 'Child' with input 1 (event 2)",
        ),
        (
            lambda ctx: ctx.start_orchestration("Child", "x"),
            lambda ctx: ctx.start_orchestration("Child", "y"),
            "OrchestrationChained 'Child' with input 'y'",
            "OrchestrationChained 'Child' with input 'x' (event 2)",
        ),
        (
            lambda ctx: ctx.send_event("peer", "ping"),
            lambda ctx: ctx.send_event("peer", "pong"),
            "EventSent 'pong' to 'peer'",
            "EventSent 'ping' to 'peer' (event 2)",
        ),
        (
            lambda ctx: ctx.send_event("peer", "ping"),
            lambda ctx: ctx.send_event("other", "ping"),
            "EventSent 'ping' to 'other'",
            "EventSent 'ping' to 'peer' (event 2)",
        ),
        (
            lambda ctx: ctx.set_custom_status("s"),
            lambda ctx: ctx.send_event("peer", "ping"),
            "EventSent 'ping' to 'peer'",
            "CustomStatusUpdated (event 2)",
        ),
    ],
    ids=["child-name", "child-input", "detached-input", "event-name", "event-target", "status-vs-send"],
)
def test_other_decisions_that_differ(before: Any, after: Any, made: str, was: str) -> None:
    def orchestration(step: Any) -> Any:
        async def orch(ctx: Ctx, _: Any) -> None:
            task = step(ctx)
            if task is not None and not isinstance(task, str):
                await task
            await ctx.wait_for_event("never")

        return orch

    history = recorded(orchestration(before))
    assert_nondeterminism(replay(orchestration(after), history), history, f"the decision {made}", f"recorded {was}")


def test_code_makes_a_decision_where_history_recorded_a_completion() -> None:
    async def one(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_activity("A", 1)

    async def two(ctx: Ctx, _: Any) -> Any:
        return await ctx.when_all([ctx.call_activity("A", 1), ctx.call_activity("B", 2)])

    history = recorded(one, complete=1)
    assert_nondeterminism(
        replay(two, history),
        history,
        "the orchestration code made the decision ActivityScheduled 'B' with input 2",
        "but history recorded ActivityCompleted for event 2 (event 3) there",
    )


def test_code_finishes_where_history_recorded_a_decision() -> None:
    async def sequence(ctx: Ctx, _: Any) -> Any:
        await ctx.call_activity("A", 1)
        return await ctx.call_activity("B", 2)

    async def shorter(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_activity("A", 1)

    history = recorded(sequence, complete=1)
    assert_nondeterminism(
        replay(shorter, history),
        history,
        "made the decision OrchestrationCompleted",
        "recorded ActivityScheduled 'B' with input 2 (event 4)",
    )


# --- history holds a scheduling event the code no longer reaches ------------------------------


def test_scheduling_event_the_code_no_longer_reaches() -> None:
    async def both(ctx: Ctx, _: Any) -> Any:
        return await ctx.when_all([ctx.call_activity("A", 1), ctx.call_activity("B", 2)])

    async def only_a(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_activity("A", 1)

    history = recorded(both)
    assert_nondeterminism(
        replay(only_a, history),
        history,
        "history recorded ActivityScheduled 'B' with input 2 (event 3)",
        "but the orchestration code no longer makes that decision",
    )


def test_scheduling_event_after_a_completion_the_code_no_longer_reaches() -> None:
    async def waits(ctx: Ctx, _: Any) -> Any:
        await ctx.wait_for_event("go")
        ctx.set_custom_status("went")
        await ctx.create_timer(10)

    async def waits_forever(ctx: Ctx, _: Any) -> Any:
        await ctx.wait_for_event("go")
        await ctx.wait_for_event("never")

    driver = Driver(waits).start()
    driver.turn()
    driver.turn(EventRaised(name="go"))
    assert_nondeterminism(
        replay(waits_forever, driver.history),
        driver.history,
        "history recorded CustomStatusUpdated (event 3), but the orchestration code no longer makes that decision",
    )


def test_new_event_is_still_checked_after_a_changed_code_fails_on_replay() -> None:
    """A divergence found while replaying fails the turn before any new message is applied."""

    async def only_b(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_activity("B", 1)

    history = recorded(calls_a)
    result = replay(only_b, history, [ActivityCompleted(source_event_id=2, result=1)])
    assert_nondeterminism(result, history, "ActivityScheduled 'B'", "ActivityScheduled 'A'")
    assert result.consumed == [0]


# --- completions that do not match their scheduling event -------------------------------------


@pytest.mark.parametrize(
    ("completion", "fragments"),
    [
        (
            TimerFired(source_event_id=2, fire_at=T0),
            ["TimerFired for event 2", "does not match ActivityScheduled 'A' with input {'n': 1} (event 2)"],
        ),
        (
            SubOrchestrationCompleted(source_event_id=2, result=1),
            ["SubOrchestrationCompleted for event 2", "does not match ActivityScheduled 'A'"],
        ),
        (
            TimerFired(source_event_id=42, fire_at=T0),
            ["TimerFired for event 42 (new in this turn)", "but event 42 scheduled no task"],
        ),
        (
            ActivityCompleted(source_event_id=1, result=1),
            ["ActivityCompleted for event 1 (new in this turn)", "but event 1 scheduled no task"],
        ),
    ],
    ids=["timer-for-activity", "child-for-activity", "timer-never-created", "completes-the-start"],
)
def test_mismatched_completion_as_a_new_message(completion: HistoryEvent, fragments: list[str]) -> None:
    history = recorded(calls_a)
    result = replay(calls_a, history, [completion], now=T0 + timedelta(hours=1))
    assert_nondeterminism(result, history, *fragments)
    assert result.new_events[0].timestamp == T0 + timedelta(hours=1)


def test_activity_completion_for_a_timer() -> None:
    async def sleeps(ctx: Ctx, _: Any) -> None:
        await ctx.create_timer(5)

    history = recorded(sleeps)
    assert_nondeterminism(
        replay(sleeps, history, [ActivityCompleted(source_event_id=2)]),
        history,
        "ActivityCompleted for event 2 (new in this turn) does not match TimerCreated due",
    )


def test_completion_for_a_decision_without_a_task() -> None:
    async def status_then_wait(ctx: Ctx, _: Any) -> None:
        ctx.set_custom_status(1)
        await ctx.wait_for_event("e")

    history = recorded(status_then_wait)
    assert_nondeterminism(
        replay(status_then_wait, history, [TimerFired(source_event_id=2, fire_at=T0)]),
        history,
        "TimerFired for event 2 (new in this turn)",
        "event 2 scheduled no task",
    )


def test_the_message_names_only_event_ids_that_the_failed_turn_stores() -> None:
    """A new message that does not fit is not stored: the failure takes the id it would have had,
    so naming it by that id would point at the wrong event."""

    async def two_steps(ctx: Ctx, _: Any) -> None:
        await ctx.call_activity("A", 1)
        await ctx.call_activity("B", 2)

    history = recorded(two_steps, complete=1)  # 1 start, 2 A, 3 A done, 4 B
    result = replay(two_steps, history, [TimerFired(source_event_id=4, fire_at=T0)])
    message = assert_nondeterminism(result, history, "TimerFired for event 4 (new in this turn) does not match")
    stored = {e.event_id: e for e in [*history, *result.new_events]}
    assert isinstance(stored[5], OrchestrationFailed)
    assert "(event 5)" not in message
    assert "ActivityScheduled 'B' with input 2 (event 4)" in message  # stored events keep their ids


def test_mismatched_completion_stored_in_history() -> None:
    history = [*recorded(calls_a), TimerFired(event_id=3, timestamp=T0, source_event_id=2, fire_at=T0)]
    assert_nondeterminism(replay(calls_a, history), history, "TimerFired for event 2 (event 3) does not match")


def test_completion_of_a_task_twice_in_history() -> None:
    async def two_steps(ctx: Ctx, _: Any) -> None:
        await ctx.call_activity("A", 1)
        await ctx.wait_for_event("e")

    base = recorded(two_steps, complete=1)
    history = [*base, ActivityCompleted(event_id=len(base) + 1, timestamp=T0, source_event_id=2)]
    assert_nondeterminism(replay(two_steps, history), history, "history completes ActivityScheduled 'A'", "twice")


# --- malformed histories ------------------------------------------------------------------------


def test_history_out_of_order() -> None:
    history = recorded(calls_a)
    broken = [history[0], ActivityScheduled(event_id=5, timestamp=T0, name="A", input={"n": 1})]
    result = replay(calls_a, broken)
    assert result.error is not None
    assert result.error.message == (
        "history is out of order: expected event 2, found ActivityScheduled 'A' with input {'n': 1} (event 5)"
    )


def test_history_without_start() -> None:
    result = replay(calls_a, [], [ActivityCompleted(source_event_id=2)])
    assert result.error is not None
    assert result.error.type == "perdure.NonDeterminismError"
    assert "does not begin with OrchestrationStarted" in result.error.message


def test_started_twice() -> None:
    history = recorded(calls_a)
    result = replay(calls_a, history, [OrchestrationStarted(name="orch", version="1.0.0")])
    assert result.error is not None
    assert "starts the orchestration twice" in result.error.message


def test_engine_failure_consumes_every_message() -> None:
    history = recorded(calls_a)
    result = replay(
        calls_a, history, [TimerFired(source_event_id=9, fire_at=T0), EventRaised(name="x"), EventRaised(name="y")]
    )
    assert result.consumed == [0, 1, 2]
    assert result.status is OrchestrationStatus.FAILED


def test_unchanged_code_replays_without_failing() -> None:
    async def sequence(ctx: Ctx, _: Any) -> Any:
        a = await ctx.call_activity("A", 1)
        return [a, await ctx.call_activity("B", 2)]

    history = recorded(sequence, complete=2)
    result = replay(sequence, history)
    assert (result.status, result.output, result.new_events) == (OrchestrationStatus.COMPLETED, [1, 2], [])


def test_an_engine_failure_on_a_finished_history_appends_no_second_terminal_event() -> None:
    from datetime import UTC, datetime

    from perdure.engine import replay
    from perdure.engine.events import (
        ActivityScheduled,
        CustomStatusUpdated,
        OrchestrationCompleted,
        OrchestrationStarted,
    )

    now = datetime(2026, 1, 1, tzinfo=UTC)
    history = [
        OrchestrationStarted(event_id=1, timestamp=now, name="o", version="1.0.0"),
        CustomStatusUpdated(event_id=2, timestamp=now, value="stored"),
        ActivityScheduled(event_id=3, timestamp=now, name="A"),
        OrchestrationCompleted(event_id=4, timestamp=now, output=1),
    ]

    async def diverges(ctx, _):  # type: ignore[no-untyped-def]
        ctx.set_custom_status("not stored")
        await ctx.call_activity("B")

    result = replay(diverges, instance_id="i", execution_id=1, history=history, new_events=[], now=now)
    assert result.error is not None and "NonDeterminismError" in result.error.type
    assert result.new_events == []
    assert result.custom_status == "stored"


def test_a_timer_due_at_another_time() -> None:
    async def waits(ctx: Ctx, _: Any) -> Any:
        await ctx.create_timer(timedelta(hours=1))

    async def waits_longer(ctx: Ctx, _: Any) -> Any:
        await ctx.create_timer(timedelta(hours=2))

    history = recorded(waits)
    assert replay(waits, history).new_events == []
    assert_nondeterminism(
        replay(waits_longer, history),
        history,
        "the orchestration code made the decision TimerCreated due 2026-01-01T02:00:01+00:00",
        "history recorded TimerCreated due 2026-01-01T01:00:01+00:00 (event 2) at that position",
    )
