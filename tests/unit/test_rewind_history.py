"""The rewound history is computed from the failed one alone: pure, and exactly specified."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

from perdure import ErrorDetails
from perdure.engine.events import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CustomStatusUpdated,
    EventRaised,
    ExecutionRewound,
    HistoryEvent,
    OrchestrationFailed,
    OrchestrationStarted,
    StartRequested,
    SubOrchestrationCompleted,
    SubOrchestrationFailed,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
)
from perdure.runtime._retained import never_ran, split_retained
from perdure.runtime._rewind import carried_into_rewind, forwarded, open_tasks, renumbering, rewound_history

T = datetime(2026, 1, 1, tzinfo=UTC)
BOOM = ErrorDetails(type="ConnectionError", message="down")
# What OrchestrationFailed records when a task's failure escapes the code.
ESCAPED = ErrorDetails(type="perdure.ActivityFailedError", message="activity failed: ConnectionError: down")
CHILD_ESCAPED = ErrorDetails(type="perdure.SubOrchestrationFailedError", message="sub-orchestration failed")


def numbered(*events: HistoryEvent) -> list[HistoryEvent]:
    return [replace(e, event_id=n, timestamp=T) for n, e in enumerate(events, start=1)]


def kinds(history: list[HistoryEvent]) -> list[str]:
    return [type(e).__name__ for e in history]


def test_the_unhandled_failure_and_the_terminal_event_go_the_scheduling_stays_open() -> None:
    failed = numbered(
        OrchestrationStarted(name="o", version="1.0.0"),
        ActivityScheduled(name="A"),
        ActivityCompleted(source_event_id=2, result=1),
        CustomStatusUpdated(value="b"),
        ActivityScheduled(name="B"),
        ActivityFailed(source_event_id=5, error=BOOM),
        OrchestrationFailed(error=ESCAPED),
    )
    kept = rewound_history(failed)
    assert kinds(kept) == [
        "OrchestrationStarted",
        "ActivityScheduled",
        "ActivityCompleted",
        "CustomStatusUpdated",
        "ActivityScheduled",
    ]
    assert kept == failed[:5]
    assert [t.name for t in open_tasks(kept)] == ["B"]  # type: ignore[attr-defined]


def test_retry_attempts_and_their_timers_go_together_back_to_the_first_attempt() -> None:
    failed = numbered(
        OrchestrationStarted(name="o", version="1.0.0"),
        ActivityScheduled(name="A", attempt=1),  # 2
        ActivityFailed(source_event_id=2, error=BOOM),  # 3
        TimerCreated(fire_at=T),  # 4
        TimerFired(source_event_id=4, fire_at=T),  # 5
        ActivityScheduled(name="A", attempt=2),  # 6
        ActivityFailed(source_event_id=6, error=BOOM),  # 7
        OrchestrationFailed(error=ESCAPED),  # 8
    )
    kept = rewound_history(failed)
    assert kept == failed[:2]
    assert open_tasks(kept) == [failed[1]]


def test_a_handled_failure_is_kept_and_ids_are_renumbered() -> None:
    failed = numbered(
        OrchestrationStarted(name="o", version="1.0.0"),
        ActivityScheduled(name="Optional"),  # 2
        ActivityScheduled(name="Other"),  # 3
        ActivityFailed(source_event_id=2, error=BOOM),  # 4: handled, the code went on
        ActivityScheduled(name="Required"),  # 5
        ActivityCompleted(source_event_id=3, result="x"),  # 6
        ActivityFailed(source_event_id=5, error=BOOM),  # 7: unhandled
        OrchestrationFailed(error=ESCAPED),
    )
    kept = rewound_history(failed)
    assert kinds(kept) == [
        "OrchestrationStarted",
        "ActivityScheduled",
        "ActivityScheduled",
        "ActivityFailed",
        "ActivityScheduled",
        "ActivityCompleted",
    ]
    assert [e.event_id for e in kept] == [1, 2, 3, 4, 5, 6]
    assert kept[5].source_event_id == 3  # type: ignore[attr-defined]


def test_a_failed_child_keeps_its_scheduling_and_a_code_error_removes_only_the_terminal_event() -> None:
    child_failed = numbered(
        OrchestrationStarted(name="o", version="1.0.0"),
        SubOrchestrationScheduled(name="c", instance_id="c1"),
        SubOrchestrationFailed(source_event_id=2, error=BOOM),
        OrchestrationFailed(error=CHILD_ESCAPED),
    )
    assert rewound_history(child_failed) == child_failed[:2]
    code_failed = numbered(
        OrchestrationStarted(name="o", version="1.0.0"),
        ActivityScheduled(name="A"),
        ActivityCompleted(source_event_id=2, result=1),
        OrchestrationFailed(error=ErrorDetails(type="KeyError", message="'x'")),
    )
    kept = rewound_history(code_failed)
    assert kept == code_failed[:3]
    assert open_tasks(kept) == []


def test_a_failure_handled_just_before_the_run_failed_for_another_reason_is_kept() -> None:
    failed = numbered(
        OrchestrationStarted(name="o", version="1.0.0"),
        ActivityScheduled(name="Charge"),  # 2
        ActivityFailed(source_event_id=2, error=BOOM),  # 3: caught; the code compensates
        ActivityScheduled(name="Refund"),  # 4
        OrchestrationFailed(error=ErrorDetails(type="perdure.NonDeterminismError", message="...")),
    )
    kept = rewound_history(failed)
    assert kept == failed[:4]
    assert [t.name for t in open_tasks(kept)] == ["Refund"]  # type: ignore[attr-defined]


def test_a_task_failure_the_code_converted_into_its_own_error_counts_as_escaped() -> None:
    converted = ErrorDetails(
        type="ValueError",
        message="payment impossible",
        traceback="perdure.ActivityFailedError: activity 'Charge' failed\n\nThe above exception was the direct "
        "cause of the following exception:\n\nValueError: payment impossible\n",
    )
    failed = numbered(
        OrchestrationStarted(name="o", version="1.0.0"),
        ActivityScheduled(name="Charge"),
        ActivityFailed(source_event_id=2, error=BOOM),
        OrchestrationFailed(error=converted),
    )
    assert rewound_history(failed) == failed[:2]


def test_retry_attempts_of_a_child_go_together_back_to_the_first_attempt() -> None:
    failed = numbered(
        OrchestrationStarted(name="o", version="1.0.0"),
        SubOrchestrationScheduled(name="c", instance_id="kid", input=1),  # 2
        SubOrchestrationFailed(source_event_id=2, error=BOOM),  # 3
        TimerCreated(fire_at=T),  # 4
        TimerFired(source_event_id=4, fire_at=T),  # 5
        SubOrchestrationScheduled(name="c", instance_id="kid:2", input=1),  # 6
        SubOrchestrationFailed(source_event_id=6, error=BOOM),  # 7
        OrchestrationFailed(error=CHILD_ESCAPED),
    )
    kept = rewound_history(failed)
    assert kept == failed[:2]
    assert open_tasks(kept) == [failed[1]]  # the first attempt's child is rewound, the budget is fresh


def test_a_different_child_after_a_handled_failure_and_a_timer_is_not_a_retry() -> None:
    failed = numbered(
        OrchestrationStarted(name="o", version="1.0.0"),
        SubOrchestrationScheduled(name="a", instance_id="a1"),  # 2
        SubOrchestrationFailed(source_event_id=2, error=BOOM),  # 3: handled, then a pause
        TimerCreated(fire_at=T),  # 4
        TimerFired(source_event_id=4, fire_at=T),  # 5
        SubOrchestrationScheduled(name="b", instance_id="b1"),  # 6
        SubOrchestrationFailed(source_event_id=6, error=BOOM),  # 7
        OrchestrationFailed(error=CHILD_ESCAPED),
    )
    assert rewound_history(failed) == failed[:6]


def test_events_retained_after_the_failure_are_not_part_of_the_run() -> None:
    run = numbered(
        OrchestrationStarted(name="o", version="1.0.0"),
        ActivityScheduled(name="A"),  # 2
        ActivityScheduled(name="B"),  # 3
        ActivityScheduled(name="C"),  # 4
        ActivityFailed(source_event_id=2, error=BOOM),  # 5
        OrchestrationFailed(error=ESCAPED),  # 6
    )
    late = [
        ActivityCompleted(event_id=7, timestamp=T, source_event_id=3, result="b"),
        ActivityFailed(event_id=8, timestamp=T, source_event_id=4, error=BOOM),
        EventRaised(event_id=9, timestamp=T, name="go"),
    ]
    assert split_retained([*run, *late]) == (run, late)
    assert rewound_history([*run, *late]) == rewound_history(run) == run[:4]
    ids = renumbering(run)
    # A late result is applied; a late failure is rewound like the one that ended the run.
    assert carried_into_rewind(late, ids) == [late[0], late[2]]


def test_an_execution_that_never_ran_holds_only_what_it_retained() -> None:
    history = numbered(StartRequested(name="o"), EventRaised(name="go"))
    assert never_ran([]) and never_ran(history)
    assert split_retained(history) == ([], history)
    assert not never_ran(numbered(OrchestrationStarted(name="o", version="1.0.0")))


def test_a_completion_is_forwarded_renumbered_through_rewinds() -> None:
    first = numbered(
        OrchestrationStarted(name="o", version="1.0.0"),
        ActivityScheduled(name="A", attempt=1),  # 2
        ActivityFailed(source_event_id=2, error=BOOM),  # 3: retried below
        TimerCreated(fire_at=T),  # 4
        TimerFired(source_event_id=4, fire_at=T),  # 5
        ActivityScheduled(name="A", attempt=2),  # 6
        EventRaised(name="go"),  # 7
        SubOrchestrationScheduled(name="c", instance_id="slow"),  # 8: still running when the run failed
        ActivityFailed(source_event_id=6, error=BOOM),  # 9
        OrchestrationFailed(error=ESCAPED),  # 10
    )
    kept = rewound_history(first)
    assert kinds(kept)[-1] == "SubOrchestrationScheduled" and kept[-1].event_id == 4
    second = [*kept, ExecutionRewound(event_id=len(kept) + 1, timestamp=T, reason="fixed")]
    answer = SubOrchestrationCompleted(source_event_id=8, result="done")
    assert forwarded(answer, [first, second]) == SubOrchestrationCompleted(source_event_id=4, result="done")
    # Through a second rewind that failed at once (only its terminal event goes), ids stay.
    third_failed = [*second, OrchestrationFailed(event_id=len(second) + 1, timestamp=T, error=BOOM)]
    third = [*second, ExecutionRewound(event_id=len(second) + 1, timestamp=T)]
    assert forwarded(answer, [first, third_failed, third]) == SubOrchestrationCompleted(
        source_event_id=4, result="done"
    )
    # A task the rewind removed (the second attempt) is stale; so is anything after a continue-as-new.
    assert forwarded(ActivityCompleted(source_event_id=6), [first, second]) is None
    assert forwarded(answer, [first, numbered(OrchestrationStarted(name="o", version="1.0.0"))]) is None
