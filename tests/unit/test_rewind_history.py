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
    HistoryEvent,
    OrchestrationFailed,
    OrchestrationStarted,
    SubOrchestrationFailed,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
)
from perdure.runtime._rewind import open_tasks, rewound_history

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
