"""What a turn sends: the queue writes that carry out its decisions, and its answers to others.

Pure translation, in one place for both paths that need it: an ordinary turn sends what its code
decided, and a rewind turn sends again the tasks the failed run left open.

- ``ActivityScheduled``: a work item on its worker queue (with ``schedule_to_close``, also its
  time-out: an ``ActivityFailed`` of type ``ActivityTimeoutError`` to the instance itself, visible
  at the deadline; whichever of it and the real completion comes first is recorded);
- ``TimerCreated``: a ``TimerFired`` message to the instance itself, visible at ``fire_at``;
- ``SubOrchestrationScheduled``: a ``StartRequested`` message to the child (to a child that a
  rewind finds existing, an ``ExecutionRewound`` message instead);
- ``OrchestrationChained``: a ``StartRequested`` message, without a parent;
- ``EventSent``: an ``EventRaised`` message to the other instance.

The end of an execution sends the start of the next one (continue-as-new), the answer to the
parent that awaits it, and, for a recursive terminate, the terminations of its open children.

Stopping work (``stop_writes``): a cancelled activity's work item is deleted (the worker running
it notices), as is that of an activity whose time-out the turn recorded, and those of every
activity an ending execution leaves open; a cancelled child is terminated; a cancelled timer
needs nothing (its firing is dropped when it comes).
"""

from __future__ import annotations

from collections.abc import Container, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeGuard

from perdure._errors import ACTIVITY_TIMEOUT, ErrorDetails, InstanceAlreadyExistsError
from perdure.engine._replay import ReplayOutcome
from perdure.engine.events import (
    ActivityFailed,
    ActivityScheduled,
    Completion,
    Decision,
    EventRaised,
    EventSent,
    ExecutionRewound,
    HistoryEvent,
    OrchestrationChained,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
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
from perdure.providers._base import ActivityRequest, Message, NewInstance

__all__ = [
    "Outbox",
    "Parent",
    "Sender",
    "decision_writes",
    "end_writes",
    "is_time_out",
    "open_activities",
    "parent_of",
    "reply_taken",
    "reply_to_parent",
    "stop_writes",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class Sender:
    """The execution whose decisions are sent.

    Attributes:
        instance_id: The instance.
        execution_id: The execution that made the decisions: timers and answers come back to it.
        started: Its start, as recorded: the name and version its activities report.
        trace_context: The span context handed to its activities and children (``None``: untraced).
    """

    instance_id: str
    execution_id: int
    started: OrchestrationStarted
    trace_context: str | None


@dataclass(frozen=True, slots=True)
class Outbox:
    """Queue writes: messages to orchestration instances and work items for the worker queues.

    ``cancelled_activities`` are the sender's activities (by scheduling event id) whose work items
    to delete (``TurnCommit.cancelled_activities``).
    """

    messages: list[Message] = field(default_factory=list)
    activity_items: list[ActivityRequest] = field(default_factory=list)
    cancelled_activities: list[int] = field(default_factory=list)


def decision_writes(
    decisions: Iterable[Decision], sender: Sender, *, rewound_children: Container[str] = frozenset()
) -> Outbox:
    """The queue writes that carry out ``decisions``, in their order.

    A child in ``rewound_children`` exists already: rather than being started again, it is told
    that its parent was rewound, so that it rewinds itself, or answers again, to ``sender``.
    """
    outbox = Outbox()
    for decision in decisions:
        if isinstance(decision, ActivityScheduled):
            outbox.activity_items.append(_activity_request(decision, sender))
            if decision.deadline is not None:
                outbox.messages.append(_deadline(decision, decision.deadline, sender))
        elif isinstance(decision, TimerCreated):
            outbox.messages.append(_timer(decision, sender))
        elif isinstance(decision, SubOrchestrationScheduled):
            rewound = decision.instance_id in rewound_children
            outbox.messages.append(_parent_rewound(decision, sender) if rewound else _child_start(decision, sender))
        elif isinstance(decision, OrchestrationChained):
            outbox.messages.append(_chained_start(decision, sender))
        elif isinstance(decision, EventSent):
            event = EventRaised(name=decision.name, data=decision.data)
            outbox.messages.append(Message(instance_id=decision.instance_id, execution_id=None, event=event))
    return outbox


def _activity_request(decision: ActivityScheduled, sender: Sender) -> ActivityRequest:
    return ActivityRequest(
        instance_id=sender.instance_id,
        execution_id=sender.execution_id,
        source_event_id=decision.event_id,
        name=decision.name,
        input=decision.input,
        queue=decision.queue,
        attempt=decision.attempt,
        orchestration_name=sender.started.name,
        orchestration_version=sender.started.version,
        trace_context=sender.trace_context,
        start_to_close=decision.start_to_close,
        deadline=decision.deadline,
        heartbeat_timeout=decision.heartbeat_timeout,
    )


def _deadline(decision: ActivityScheduled, deadline: datetime, sender: Sender) -> Message:
    """The attempt's failure when ``schedule_to_close`` runs out, due then: durable, whatever the workers do."""
    error = ErrorDetails(
        type=ACTIVITY_TIMEOUT,
        message=f"activity {decision.name!r} ran past its schedule_to_close deadline ({deadline.isoformat()})",
    )
    failed = ActivityFailed(source_event_id=decision.event_id, error=error)
    return Message(instance_id=sender.instance_id, execution_id=sender.execution_id, event=failed, visible_at=deadline)


def _timer(decision: TimerCreated, sender: Sender) -> Message:
    fired = TimerFired(source_event_id=decision.event_id, fire_at=decision.fire_at)
    return Message(
        instance_id=sender.instance_id, execution_id=sender.execution_id, event=fired, visible_at=decision.fire_at
    )


def _child_start(decision: SubOrchestrationScheduled, sender: Sender) -> Message:
    request = StartRequested(
        name=decision.name,
        version=decision.version,
        input=decision.input,
        parent_instance=sender.instance_id,
        parent_id=decision.event_id,
        parent_execution_id=sender.execution_id,
        trace_context=sender.trace_context,
    )
    new = NewInstance(name=decision.name, input=decision.input, parent_instance_id=sender.instance_id)
    return Message(instance_id=decision.instance_id, execution_id=None, event=request, new_instance=new)


def _parent_rewound(decision: SubOrchestrationScheduled, sender: Sender) -> Message:
    rewind = ExecutionRewound(reason="the parent was rewound", parent_execution_id=sender.execution_id)
    return Message(instance_id=decision.instance_id, execution_id=None, event=rewind)


def _chained_start(decision: OrchestrationChained, sender: Sender) -> Message:
    request = StartRequested(
        name=decision.name, version=decision.version, input=decision.input, trace_context=sender.trace_context
    )
    new = NewInstance(name=decision.name, input=decision.input)
    return Message(instance_id=decision.instance_id, execution_id=None, event=request, new_instance=new)


# --- the end of an execution --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Parent:
    """Who awaits an instance: the parent instance, its scheduling event, the execution to answer."""

    instance_id: str
    event_id: int
    execution_id: int | None


def parent_of(started: HistoryEvent | None) -> Parent | None:
    """Who awaits this instance: the parent execution that started it, as its start recorded.

    A parent rewound since then forwards the answer to its current execution (see ``_rewind``).
    """
    if not isinstance(started, OrchestrationStarted | StartRequested):
        return None
    if started.parent_instance is None or started.parent_id is None:
        return None
    return Parent(started.parent_instance, started.parent_id, started.parent_execution_id)


def reply_to_parent(parent: Parent, *, output: Any = None, error: ErrorDetails | None = None) -> Message:
    """The child's completion, addressed to the parent execution that awaits it."""
    event: HistoryEvent
    if error is None:
        event = SubOrchestrationCompleted(source_event_id=parent.event_id, result=output)
    else:
        event = SubOrchestrationFailed(source_event_id=parent.event_id, error=error)
    return Message(instance_id=parent.instance_id, execution_id=parent.execution_id, event=event)


def reply_taken(instance_id: str, request: StartRequested) -> Message | None:
    """The answer to a would-be parent whose child id ``instance_id`` is taken (``None``: no parent)."""
    if request.parent_instance is None or request.parent_id is None:
        return None
    error = ErrorDetails.from_exception(
        InstanceAlreadyExistsError(f"an instance with id {instance_id!r} already exists")
    )
    return Message(
        instance_id=request.parent_instance,
        execution_id=request.parent_execution_id,
        event=SubOrchestrationFailed(source_event_id=request.parent_id, error=error),
    )


def end_writes(
    sender: Sender,
    result: ReplayOutcome,
    history: Sequence[HistoryEvent],
    parent: Parent | None,
    *,
    carried: Sequence[HistoryEvent],
    recursive: bool,
) -> list[Message]:
    """What the end of an execution sends, if the turn in ``result`` (run on ``history``) ended it.

    After continue-as-new: the next execution's start, then the ``carried`` events it inherits.
    After an end: the answer to the ``parent``; after a ``recursive`` terminate, the terminations
    of the children that have not reported back.
    """
    terminal = result.terminal_event
    messages: list[Message] = []
    if isinstance(terminal, OrchestrationContinuedAsNew):
        messages.extend(_continuation(sender, terminal, parent, carried))
    elif isinstance(terminal, OrchestrationCompleted) and parent is not None:
        messages.append(reply_to_parent(parent, output=terminal.output))
    elif isinstance(terminal, OrchestrationFailed | OrchestrationTerminated) and parent is not None:
        assert result.error is not None
        messages.append(reply_to_parent(parent, error=result.error))
    if isinstance(terminal, OrchestrationTerminated) and recursive:
        messages.extend(_terminate_children([*history, *result.new_events], terminal.reason))
    return messages


def _continuation(
    sender: Sender, terminal: OrchestrationContinuedAsNew, parent: Parent | None, carried: Iterable[HistoryEvent]
) -> list[Message]:
    """The start of the next execution, then the events it inherits, in order."""
    started = sender.started
    request = StartRequested(
        name=started.name,
        version=terminal.version or started.version,  # the upgrade point is explicit
        input=terminal.input,
        parent_instance=started.parent_instance,
        parent_id=started.parent_id,
        parent_execution_id=parent.execution_id if parent else None,
        trace_context=started.trace_context,
    )
    start = Message(instance_id=sender.instance_id, execution_id=sender.execution_id + 1, event=request)
    # Addressed to the new execution, so that they go before what is still queued for the instance.
    next_execution = sender.execution_id + 1
    return [start, *(Message(instance_id=sender.instance_id, execution_id=next_execution, event=e) for e in carried)]


def _terminate_children(history: Sequence[HistoryEvent], reason: str | None) -> list[Message]:
    """Terminations for the children scheduled in ``history`` that have not reported back (nor been cancelled)."""
    children = {e.event_id: e.instance_id for e in history if isinstance(e, SubOrchestrationScheduled)}
    for event in history:
        if isinstance(event, Completion):
            children.pop(event.source_event_id, None)
    return [
        Message(instance_id=child, execution_id=None, event=TerminateRequested(reason=reason), control=True)
        for child in children.values()
    ]


# --- stopping work ------------------------------------------------------------------------------


def stop_writes(sender: Sender, history: Sequence[HistoryEvent], result: ReplayOutcome) -> Outbox:
    """What the turn in ``result`` (run on ``history``) sends to stop work it no longer wants.

    Only the turn's new events are scanned (and the whole history only when the execution ends),
    so that a turn of a long history costs what its new events cost.
    """
    outbox = Outbox()
    for event in result.new_events:
        if isinstance(event, TaskCancelled):
            source = _event_at(history, result.new_events, event.source_event_id)
            if isinstance(source, ActivityScheduled):
                outbox.cancelled_activities.append(source.event_id)
            elif isinstance(source, SubOrchestrationScheduled):
                terminate = TerminateRequested(reason="cancelled by its parent", recursive=True)
                outbox.messages.append(
                    Message(instance_id=source.instance_id, execution_id=None, event=terminate, control=True)
                )
        elif is_time_out(event):
            outbox.cancelled_activities.append(event.source_event_id)  # its attempt may still run somewhere
    # A failed execution lets its running activities finish: their results are kept with it, so that a
    # rewind does not run them again (docs/rewind.md). Every other ending stops them.
    if result.terminal_event is not None and not isinstance(result.terminal_event, OrchestrationFailed):
        outbox.cancelled_activities.extend(open_activities([*history, *result.new_events]))
    outbox.cancelled_activities[:] = sorted(set(outbox.cancelled_activities))
    return outbox


def _event_at(history: Sequence[HistoryEvent], new: Sequence[HistoryEvent], event_id: int) -> HistoryEvent | None:
    """The event ``event_id`` of the execution: events are numbered 1, 2, 3… in order, so it is found by position."""
    at = event_id - 1
    if 0 <= at < len(history) and history[at].event_id == event_id:
        return history[at]
    return next((e for e in (*history, *new) if e.event_id == event_id), None)


def open_activities(history: Sequence[HistoryEvent]) -> list[int]:
    """Event ids of the activities scheduled in ``history`` that no event completed or cancelled."""
    scheduled = {e.event_id for e in history if isinstance(e, ActivityScheduled)}
    return sorted(scheduled - {e.source_event_id for e in history if isinstance(e, Completion)})


def is_time_out(event: HistoryEvent | None) -> TypeGuard[ActivityFailed]:
    """Whether ``event`` is an activity attempt's time-out (queued ahead of time, it usually comes
    after the attempt has finished, and is then dropped as routine)."""
    return isinstance(event, ActivityFailed) and event.error.type == ACTIVITY_TIMEOUT
