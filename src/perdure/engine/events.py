"""History events: the append-only record of one execution, and the messages that feed it.

Every event is a frozen dataclass. ``event_id`` numbers the events of one execution 1, 2, 3…
and is 0 while the event travels as a queue message, before it is appended. Completions carry
``source_event_id``: the id of the event that scheduled them. Code that reads histories
(``Client.get_history``) and providers written outside perdure import them from here; how they
are stored is the codec's business (``perdure.engine._codec``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from perdure._errors import ErrorDetails

__all__ = [
    "ActivityCompleted",
    "ActivityFailed",
    "ActivityScheduled",
    "Completion",
    "CustomStatusUpdated",
    "Decision",
    "EventRaised",
    "EventSent",
    "ExecutionRewound",
    "HistoryEvent",
    "OrchestrationChained",
    "OrchestrationCompleted",
    "OrchestrationContinuedAsNew",
    "OrchestrationFailed",
    "OrchestrationResumed",
    "OrchestrationStarted",
    "OrchestrationSuspended",
    "OrchestrationTerminated",
    "Patched",
    "StartRequested",
    "SubOrchestrationCompleted",
    "SubOrchestrationFailed",
    "SubOrchestrationScheduled",
    "TERMINAL_EVENTS",
    "TaskCancelled",
    "TerminateRequested",
    "TimerCreated",
    "TimerFired",
]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryEvent:
    """Base of every event.

    Attributes:
        event_id: Position in the execution's history (1-based); 0 until appended.
        timestamp: When the event was recorded (UTC).
    """

    event_id: int = 0
    timestamp: datetime = _EPOCH

    #: Whether the event is a decision: something the orchestration code asked for.
    is_decision: ClassVar[bool] = False
    #: Whether the event exists only as a queue message and is never appended to history.
    message_only: ClassVar[bool] = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision(HistoryEvent):
    """Base of the events that record a decision of the orchestration code."""

    is_decision: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True, slots=True)
class Completion(HistoryEvent):
    """Base of the events that complete a scheduled task."""

    source_event_id: int


# --- lifecycle ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationStarted(HistoryEvent):
    """Always event 1 of an execution. The version is resolved before it is written: it is the pin.

    Attributes:
        parent_instance: The parent's instance id, for a child orchestration.
        parent_id: The event id of ``SubOrchestrationScheduled`` in the parent's history.
        parent_execution_id: The parent's execution that awaits this child's completion.
        trace_context: The W3C ``traceparent`` of the span this execution's span is a child of
            (the client's span, or the parent orchestration's execution span); ``None`` when untraced.
    """

    name: str
    version: str
    input: Any = None
    parent_instance: str | None = None
    parent_id: int | None = None
    parent_execution_id: int | None = None
    trace_context: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationCompleted(Decision):
    """The orchestration returned ``output``."""

    output: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationFailed(Decision):
    """An exception escaped the orchestration (or the runtime failed it)."""

    error: ErrorDetails


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationContinuedAsNew(Decision):
    """The execution ended by continuing as a new execution with ``input`` (and maybe another version)."""

    input: Any = None
    version: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationTerminated(HistoryEvent):
    """An operator terminated the instance."""

    reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationSuspended(HistoryEvent):
    """An operator suspended the instance; it runs no turns until resumed."""

    reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationResumed(HistoryEvent):
    """An operator resumed a suspended instance."""

    reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ExecutionRewound(HistoryEvent):
    """A failed execution was rewound into this one (or, as a message, asks for that)."""

    reason: str | None = None
    parent_execution_id: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class CustomStatusUpdated(Decision):
    """The orchestration set its custom status."""

    value: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Patched(Decision):
    """The code took the new branch of ``ctx.patched(change_id)`` here; old histories lack this marker."""

    change_id: str


# --- activities --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ActivityScheduled(Decision):
    """An activity was scheduled on worker queue ``queue``; ``attempt`` counts retries (1-based).

    Attributes:
        start_to_close: Seconds one attempt may run, from when a worker starts it.
        deadline: When ``schedule_to_close`` runs out: the same for every attempt of one call.
        heartbeat_timeout: Seconds a running attempt may go without a heartbeat.
    """

    name: str
    input: Any = None
    queue: str = "default"
    attempt: int = 1
    start_to_close: float | None = None
    deadline: datetime | None = None
    heartbeat_timeout: float | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ActivityCompleted(Completion):
    """The activity returned ``result``."""

    result: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ActivityFailed(Completion):
    """The activity raised."""

    error: ErrorDetails


# --- timers ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class TimerCreated(Decision):
    """A durable timer due at ``fire_at``."""

    fire_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class TimerFired(Completion):
    """The timer created by ``source_event_id`` fired."""

    fire_at: datetime


# --- events between instances ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class EventRaised(HistoryEvent):
    """An external event arrived."""

    name: str
    data: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class EventSent(Decision):
    """The orchestration sent an event to another instance."""

    instance_id: str
    name: str
    data: Any = None


# --- children ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class SubOrchestrationScheduled(Decision):
    """A child orchestration was started; ``version`` is ``None`` when the child's policy picks it."""

    name: str
    version: str | None = None
    instance_id: str
    input: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SubOrchestrationCompleted(Completion):
    """The child returned ``result``."""

    result: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SubOrchestrationFailed(Completion):
    """The child failed or was terminated."""

    error: ErrorDetails


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationChained(Decision):
    """A detached orchestration was started (fire-and-forget: no completion comes back)."""

    name: str
    version: str | None = None
    instance_id: str
    input: Any = None


# --- cancellation ------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class TaskCancelled(Decision, Completion):
    """The code cancelled the task scheduled by ``source_event_id`` (``task.cancel()``).

    A decision, matched on replay like any other, that also ends its task: a completion arriving
    for it later is dropped. A cancelled activity's work item is deleted, a cancelled child is
    terminated, a cancelled timer's firing is dropped.
    """


# --- message-only events -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class StartRequested(HistoryEvent):
    """Asks to start an execution. The runtime resolves the version and records ``OrchestrationStarted``.

    ``trace_context`` (a W3C ``traceparent``) is copied into ``OrchestrationStarted``.
    """

    message_only: ClassVar[bool] = True

    name: str
    version: str | None = None
    input: Any = None
    parent_instance: str | None = None
    parent_id: int | None = None
    parent_execution_id: int | None = None
    trace_context: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TerminateRequested(HistoryEvent):
    """Asks to terminate the instance (and, with ``recursive``, its unfinished children)."""

    message_only: ClassVar[bool] = True

    reason: str | None = None
    recursive: bool = True


TERMINAL_EVENTS: tuple[type[HistoryEvent], ...] = (
    OrchestrationCompleted,
    OrchestrationFailed,
    OrchestrationTerminated,
    OrchestrationContinuedAsNew,
)
"""Events after which an execution records nothing more."""
