"""What a turn sends: decisions and the end of an execution, translated into queue writes."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import TypeVar

from perdure import ErrorDetails, OrchestrationStatus
from perdure.engine import ReplayOutcome
from perdure.engine.events import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CustomStatusUpdated,
    EventRaised,
    EventSent,
    ExecutionRewound,
    HistoryEvent,
    OrchestrationChained,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationStarted,
    OrchestrationTerminated,
    StartRequested,
    SubOrchestrationCompleted,
    SubOrchestrationFailed,
    SubOrchestrationScheduled,
    TaskCancelled,
    TerminateRequested,
    TimerCreated,
    TimerFired,
)
from perdure.providers import ActivityRequest, Message, NewInstance
from perdure.runtime._outbox import Parent, Sender, decision_writes, end_writes, parent_of, stop_writes

T = datetime(2026, 1, 1, tzinfo=UTC)
TRACE = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
STARTED = OrchestrationStarted(
    event_id=1, timestamp=T, name="o", version="2.0.0", parent_instance="p", parent_id=7, parent_execution_id=1
)
SENDER = Sender(instance_id="i", execution_id=3, started=STARTED, trace_context=TRACE)
E = TypeVar("E", bound=HistoryEvent)


def numbered(*events: E, first: int = 1) -> list[E]:
    return [replace(e, event_id=n, timestamp=T) for n, e in enumerate(events, start=first)]


def test_each_decision_becomes_its_queue_write_in_the_order_decided() -> None:
    due = T + timedelta(minutes=5)
    decisions = numbered(
        ActivityScheduled(name="A", input=1, queue="gpu", attempt=2),
        TimerCreated(fire_at=due),
        CustomStatusUpdated(value="x"),  # recorded in history only
        SubOrchestrationScheduled(name="c", version="1.0.0", instance_id="child", input=2),
        OrchestrationChained(name="d", instance_id="detached", input=3),
        EventSent(instance_id="peer", name="ping", data=4),
        first=2,
    )
    outbox = decision_writes(decisions, SENDER)
    assert outbox.activity_items == [
        ActivityRequest(
            instance_id="i",
            execution_id=3,
            source_event_id=2,
            name="A",
            input=1,
            queue="gpu",
            attempt=2,
            orchestration_name="o",
            orchestration_version="2.0.0",
            trace_context=TRACE,
        )
    ]
    child = StartRequested(
        name="c", version="1.0.0", input=2, parent_instance="i", parent_id=5, parent_execution_id=3, trace_context=TRACE
    )
    chained = StartRequested(name="d", input=3, trace_context=TRACE)  # no parent: nobody awaits it
    assert outbox.messages == [
        Message(instance_id="i", execution_id=3, event=TimerFired(source_event_id=3, fire_at=due), visible_at=due),
        Message(
            instance_id="child",
            execution_id=None,
            event=child,
            new_instance=NewInstance(name="c", input=2, parent_instance_id="i"),
        ),
        Message(
            instance_id="detached",
            execution_id=None,
            event=chained,
            new_instance=NewInstance(name=chained.name, input=chained.input),
        ),
        Message(instance_id="peer", execution_id=None, event=EventRaised(name="ping", data=4)),
    ]


def test_a_reopened_child_that_exists_is_told_of_the_rewind_and_a_missing_one_is_started() -> None:
    children = numbered(
        SubOrchestrationScheduled(name="c", instance_id="alive"),
        SubOrchestrationScheduled(name="c", instance_id="purged"),
        first=5,
    )
    outbox = decision_writes(children, SENDER, rewound_children={"alive"})
    alive, purged = outbox.messages
    assert alive == Message(
        instance_id="alive",
        execution_id=None,
        event=ExecutionRewound(reason="the parent was rewound", parent_execution_id=3),
    )
    assert purged.instance_id == "purged" and isinstance(purged.event, StartRequested)
    assert (purged.event.parent_id, purged.event.parent_execution_id) == (6, 3)


def test_the_parent_is_answered_at_the_execution_that_started_the_child() -> None:
    # A parent rewound since then forwards the answer to its current execution, renumbered.
    parent = parent_of(STARTED)
    assert parent == Parent("p", 7, 1)
    completed = OrchestrationCompleted(event_id=5, timestamp=T, output="done")
    result = ReplayOutcome(new_events=[completed], consumed=[], status=OrchestrationStatus.COMPLETED, output="done")
    assert end_writes(SENDER, result, [], parent, carried=[], recursive=False) == [
        Message(instance_id="p", execution_id=1, event=SubOrchestrationCompleted(source_event_id=7, result="done"))
    ]
    assert parent_of(replace(STARTED, parent_instance=None)) is None


def test_continue_as_new_sends_the_next_start_then_the_inherited_events_in_order() -> None:
    terminal = OrchestrationContinuedAsNew(event_id=4, timestamp=T, input=9, version="3.0.0")
    result = ReplayOutcome(new_events=[terminal], consumed=[], status=OrchestrationStatus.RUNNING)
    carried = [EventRaised(name="a", data=1), EventRaised(name="b", data=2)]
    traced = replace(SENDER, started=replace(STARTED, trace_context=TRACE))
    start, *inherited = end_writes(traced, result, [], parent_of(STARTED), carried=carried, recursive=False)
    # The new version is the one asked for; the parent stays the parent, and the trace continues.
    request = StartRequested(
        name="o",
        version="3.0.0",
        input=9,
        parent_instance="p",
        parent_id=7,
        parent_execution_id=1,
        trace_context=TRACE,
    )
    assert start == Message(instance_id="i", execution_id=4, event=request)
    # Addressed to the new execution, so that they go before events raised while this turn ran.
    assert inherited == [Message(instance_id="i", execution_id=4, event=e) for e in carried]


def test_a_recursive_terminate_reaches_only_the_children_that_have_not_answered() -> None:
    history = numbered(
        STARTED,
        SubOrchestrationScheduled(name="c", instance_id="done"),
        SubOrchestrationScheduled(name="c", instance_id="failed"),
        SubOrchestrationScheduled(name="c", instance_id="running"),
        SubOrchestrationCompleted(source_event_id=2),
        SubOrchestrationFailed(source_event_id=3, error=ErrorDetails(type="E", message="m")),
    )
    terminated = OrchestrationTerminated(event_id=7, timestamp=T, reason="stop")
    error = ErrorDetails(type="Terminated", message="stop")
    result = ReplayOutcome(new_events=[terminated], consumed=[0], status=OrchestrationStatus.TERMINATED, error=error)
    answer, *terminations = end_writes(SENDER, result, history, parent_of(STARTED), carried=[], recursive=True)
    assert answer.event == SubOrchestrationFailed(source_event_id=7, error=error)
    assert terminations == [
        Message(instance_id="running", execution_id=None, event=TerminateRequested(reason="stop"), control=True)
    ]
    alone = end_writes(SENDER, result, history, None, carried=[], recursive=False)
    assert alone == []


def test_an_activity_with_limits_carries_them_and_queues_the_failure_of_its_deadline() -> None:
    deadline = T + timedelta(minutes=10)
    [decision] = numbered(
        ActivityScheduled(name="A", start_to_close=5.0, deadline=deadline, heartbeat_timeout=2.0), first=4
    )
    outbox = decision_writes([decision], SENDER)
    [request] = outbox.activity_items
    assert (request.start_to_close, request.deadline, request.heartbeat_timeout) == (5.0, deadline, 2.0)
    [timeout] = outbox.messages
    assert (timeout.instance_id, timeout.execution_id, timeout.visible_at) == ("i", 3, deadline)
    assert timeout.event == ActivityFailed(
        source_event_id=4,
        error=ErrorDetails(
            type="ActivityTimeoutError",
            message=f"activity 'A' ran past its schedule_to_close deadline ({deadline.isoformat()})",
        ),
    )
    assert decision_writes(numbered(ActivityScheduled(name="A", start_to_close=5.0)), SENDER).messages == []


def outcome(*new_events: HistoryEvent, status: OrchestrationStatus = OrchestrationStatus.RUNNING) -> ReplayOutcome:
    return ReplayOutcome(new_events=list(new_events), consumed=[0], status=status)


HISTORY = numbered(
    STARTED,
    ActivityScheduled(name="running"),
    ActivityScheduled(name="done"),
    TimerCreated(fire_at=T),
    SubOrchestrationScheduled(name="c", instance_id="kid"),
    ActivityScheduled(name="cancelled"),
    ActivityCompleted(source_event_id=3),
    TaskCancelled(source_event_id=6),
    ActivityScheduled(name="waiting"),
)


def test_what_the_code_cancels_is_stopped_each_in_its_way() -> None:
    cancels = numbered(
        TaskCancelled(source_event_id=2),  # an activity: its work item goes
        TaskCancelled(source_event_id=4),  # a timer: nothing to do, its firing will be dropped
        TaskCancelled(source_event_id=5),  # a child: terminated
        first=10,
    )
    stop = stop_writes(SENDER, HISTORY, outcome(*cancels))
    assert stop.cancelled_activities == [2]
    terminate = TerminateRequested(reason="cancelled by its parent", recursive=True)
    assert stop.messages == [Message(instance_id="kid", execution_id=None, event=terminate, control=True)]
    assert stop.activity_items == []


def test_a_recorded_time_out_stops_the_attempt_that_may_still_run() -> None:
    timed_out = ErrorDetails(type="ActivityTimeoutError", message="late")
    failures = numbered(
        ActivityFailed(source_event_id=2, error=timed_out),
        ActivityFailed(source_event_id=9, error=ErrorDetails(type="ValueError", message="its own report")),
        first=10,
    )
    assert stop_writes(SENDER, HISTORY, outcome(*failures)).cancelled_activities == [2]


def test_an_ending_execution_stops_every_activity_it_leaves_open() -> None:
    for ending in (
        OrchestrationCompleted(event_id=10, timestamp=T),
        OrchestrationTerminated(event_id=10, timestamp=T),
        OrchestrationContinuedAsNew(event_id=10, timestamp=T),
    ):
        stop = stop_writes(SENDER, HISTORY, outcome(ending, status=OrchestrationStatus.COMPLETED))
        assert stop.cancelled_activities == [2, 9], ending  # not the completed one, nor the cancelled one
        assert stop.messages == [], "children are not stopped by the end of their parent"
    assert stop_writes(SENDER, HISTORY, outcome()).cancelled_activities == []


def test_a_recursive_terminate_leaves_a_cancelled_child_alone() -> None:
    history = numbered(
        STARTED, SubOrchestrationScheduled(name="c", instance_id="kid"), TaskCancelled(source_event_id=2)
    )
    terminated = OrchestrationTerminated(event_id=4, timestamp=T, reason="stop")
    result = ReplayOutcome(
        new_events=[terminated],
        consumed=[0],
        status=OrchestrationStatus.TERMINATED,
        error=ErrorDetails(type="Terminated", message="stop"),
    )
    assert end_writes(SENDER, result, history, None, carried=[], recursive=True) == []
