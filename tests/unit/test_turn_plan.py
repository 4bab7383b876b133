"""Planning a turn says whether it rewound the instance, so the dispatcher need not infer it."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from perdure import ErrorDetails, OrchestrationContext, OrchestrationState, OrchestrationStatus, Registry
from perdure.engine.events import (
    ActivityFailed,
    ActivityScheduled,
    EventRaised,
    ExecutionRewound,
    HistoryEvent,
    OrchestrationFailed,
    OrchestrationStarted,
    StartRequested,
    TerminateRequested,
    TimerFired,
)
from perdure.providers._base import OrchestrationItem, QueuedMessage
from perdure.runtime import RuntimeOptions
from perdure.runtime._turn import Abandon, TurnPlan, plan_turn

T = datetime(2026, 1, 1, tzinfo=UTC)
PENDING, RUNNING = OrchestrationStatus.PENDING, OrchestrationStatus.RUNNING
ESCAPED = ErrorDetails(type="perdure.ActivityFailedError", message="activity failed: ConnectionError: down")

registry = Registry()


@registry.orchestration("o", version="1.0.0")
async def o(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.call_activity("A")


def plan(status: OrchestrationStatus, history: list[HistoryEvent], event: HistoryEvent) -> TurnPlan:
    state = OrchestrationState(
        instance_id="i", name="o", version="1.0.0", status=status, execution_id=1, created_at=T, updated_at=T
    )
    message = QueuedMessage(message_id=1, instance_id="i", execution_id=None, event=event, dequeue_count=1)
    item = OrchestrationItem(instance_id="i", lock_token="t", messages=[message], state=state, history=history)
    planned = plan_turn(item, registry.orchestrations, RuntimeOptions(), T)
    assert isinstance(planned, TurnPlan)
    return planned


def test_a_rewind_turn_is_marked_and_writes_the_new_executions_whole_history() -> None:
    failed: list[HistoryEvent] = [
        OrchestrationStarted(event_id=1, timestamp=T, name="o", version="1.0.0"),
        ActivityScheduled(event_id=2, timestamp=T, name="A"),
        ActivityFailed(event_id=3, timestamp=T, source_event_id=2, error=ESCAPED),
        OrchestrationFailed(event_id=4, timestamp=T, error=ESCAPED),
    ]
    rewound = plan(OrchestrationStatus.FAILED, failed, ExecutionRewound(reason="fixed"))
    assert rewound.rewound
    assert rewound.commit.execution_id == 2
    assert [type(e).__name__ for e in rewound.commit.history] == [
        "OrchestrationStarted",
        "ActivityScheduled",
        "ExecutionRewound",
    ]
    assert [e.event_id for e in rewound.commit.history] == [1, 2, 3]
    [again] = rewound.commit.activity_items  # the failed activity is open again, for execution 2
    assert (again.name, again.execution_id, again.source_event_id) == ("A", 2, 2)


def test_an_ordinary_first_turn_is_not_marked_as_a_rewind() -> None:
    first = plan(OrchestrationStatus.PENDING, [], StartRequested(name="o"))
    assert not first.rewound
    assert first.commit.history[0].event_id == 1  # also starts at 1: why the flag is needed
    assert [w.name for w in first.commit.activity_items] == ["A"]


FAILED_RUN: list[HistoryEvent] = [
    OrchestrationStarted(event_id=1, timestamp=T, name="o", version="1.0.0"),
    ActivityScheduled(event_id=2, timestamp=T, name="A"),
    ActivityFailed(event_id=3, timestamp=T, source_event_id=2, error=ESCAPED),
    OrchestrationFailed(event_id=4, timestamp=T, error=ESCAPED),
]


def test_a_late_result_is_kept_after_the_failure_and_changes_nothing_else() -> None:
    late = plan(OrchestrationStatus.FAILED, FAILED_RUN, EventRaised(name="go", data=1))
    assert late.commit.state is None and late.commit.messages == []
    assert late.commit.history == [EventRaised(event_id=5, timestamp=T, name="go", data=1)]
    assert late.commit.consumed == [1]


def test_a_rewind_applies_what_the_failed_execution_kept() -> None:
    kept_event = EventRaised(event_id=5, timestamp=T, name="go", data=1)
    rewound = plan(OrchestrationStatus.FAILED, [*FAILED_RUN, kept_event], ExecutionRewound(reason="fixed"))
    assert [type(e).__name__ for e in rewound.commit.history] == [
        "OrchestrationStarted",
        "ActivityScheduled",
        "ExecutionRewound",
        "EventRaised",
    ]


def test_a_turn_that_ends_the_execution_cancels_its_open_activities() -> None:
    running: list[HistoryEvent] = [
        OrchestrationStarted(event_id=1, timestamp=T, name="o", version="1.0.0"),
        ActivityScheduled(event_id=2, timestamp=T, name="A"),
    ]
    terminated = plan(OrchestrationStatus.RUNNING, running, TerminateRequested(reason="stop"))
    assert terminated.commit.cancelled_activities == [2]
    assert plan(OrchestrationStatus.PENDING, [], StartRequested(name="o")).commit.cancelled_activities == []


def test_an_instance_failed_without_running_its_code_lets_its_activities_finish_for_a_rewind() -> None:
    running: list[HistoryEvent] = [
        OrchestrationStarted(event_id=1, timestamp=T, name="o", version="1.0.0"),
        ActivityScheduled(event_id=2, timestamp=T, name="A"),
    ]
    state = OrchestrationState(
        instance_id="i",
        name="o",
        version="1.0.0",
        status=OrchestrationStatus.RUNNING,
        execution_id=1,
        created_at=T,
        updated_at=T,
    )
    poison = QueuedMessage(
        message_id=1, instance_id="i", execution_id=None, event=TerminateRequested(), dequeue_count=99
    )
    item = OrchestrationItem(instance_id="i", lock_token="t", messages=[poison], state=state, history=running)
    planned = plan_turn(item, registry.orchestrations, RuntimeOptions(max_dispatch_attempts=3), T)
    assert isinstance(planned, TurnPlan)
    assert planned.commit.state is not None and planned.commit.state.status is OrchestrationStatus.FAILED
    assert not planned.commit.cancelled_activities  # their results are kept with the failed run


def test_a_time_out_for_an_earlier_execution_is_dropped_as_routine() -> None:
    """Queued when its attempt was scheduled or started, a time-out usually arrives after it is moot."""
    history: list[HistoryEvent] = [OrchestrationStarted(event_id=1, timestamp=T, name="o", version="1.0.0")]
    state = OrchestrationState(
        instance_id="i",
        name="o",
        version="1.0.0",
        status=OrchestrationStatus.RUNNING,
        execution_id=2,
        created_at=T,
        updated_at=T,
    )
    timed_out = ErrorDetails(type="ActivityTimeoutError", message="late")
    failures = [ActivityFailed(source_event_id=2, error=timed_out), ActivityFailed(source_event_id=3, error=ESCAPED)]
    messages = [
        QueuedMessage(message_id=n, instance_id="i", execution_id=1, event=event, dequeue_count=1)
        for n, event in enumerate(failures, start=1)
    ]
    item = OrchestrationItem(instance_id="i", lock_token="t", messages=messages, state=state, history=history)
    planned = plan_turn(item, registry.orchestrations, RuntimeOptions(), T)
    assert isinstance(planned, TurnPlan)
    assert planned.commit.consumed == [1, 2]
    assert [n.split(":")[0] for n in planned.notes] == ["dropped ActivityFailed for instance 'i'"]
    assert [w.split(":")[0] for w in planned.warnings] == ["dropped ActivityFailed for instance 'i'"]


def test_a_timer_firing_for_an_earlier_execution_is_dropped_as_routine() -> None:
    """A cancelled timer, or one a continue-as-new left behind (a schedule does both), still fires."""
    state = OrchestrationState(
        instance_id="i", name="o", version="1.0.0", status=RUNNING, execution_id=2, created_at=T, updated_at=T
    )
    history: list[HistoryEvent] = [OrchestrationStarted(event_id=1, timestamp=T, name="o", version="1.0.0")]
    fired = QueuedMessage(
        message_id=1, instance_id="i", execution_id=1, event=TimerFired(source_event_id=2, fire_at=T), dequeue_count=1
    )
    item = OrchestrationItem(instance_id="i", lock_token="t", messages=[fired], state=state, history=history)
    planned = plan_turn(item, registry.orchestrations, RuntimeOptions(), T)
    assert isinstance(planned, TurnPlan)
    assert planned.commit.consumed == [1] and planned.warnings == []
    assert [n.split(":")[0] for n in planned.notes] == ["dropped TimerFired for instance 'i'"]


def pending_item(*events: HistoryEvent) -> OrchestrationItem:
    """An instance whose delayed start is not visible yet, and the messages that came before it."""
    state = OrchestrationState(
        instance_id="i", name="o", version=None, status=PENDING, execution_id=1, created_at=T, updated_at=T
    )
    messages = [
        QueuedMessage(message_id=n, instance_id="i", execution_id=None, event=e, dequeue_count=1)
        for n, e in enumerate(events, start=1)
    ]
    return OrchestrationItem(instance_id="i", lock_token="t", messages=messages, state=state, history=[])


def test_what_reaches_a_delayed_start_early_waits_for_it_without_counting_a_delivery() -> None:
    options = RuntimeOptions(max_dispatch_backoff=7.0)
    planned = plan_turn(pending_item(EventRaised(name="Go", data=1)), registry.orchestrations, options, T)
    assert isinstance(planned, Abandon)
    assert (planned.delay, planned.undo_delivery) == (7.0, True)


def test_a_terminate_ends_an_instance_whose_delayed_start_has_not_come() -> None:
    item = pending_item(EventRaised(name="Go"), TerminateRequested(reason="not needed"))
    planned = plan_turn(item, registry.orchestrations, RuntimeOptions(), T)
    assert isinstance(planned, TurnPlan)
    assert planned.commit.state is not None and planned.commit.state.status is OrchestrationStatus.TERMINATED
    assert planned.commit.consumed == [1, 2] and planned.commit.history == []
