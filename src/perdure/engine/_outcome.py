"""What a replay returns (``ReplayOutcome``), the outcome of a turn the engine itself fails, and
``describe``, the short description of an event that errors and logs use."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, NamedTuple

from perdure._errors import ErrorDetails, PerdureError, type_name
from perdure._payloads import UnreadablePayloadError
from perdure._state import AwaitedEvent, OrchestrationStatus
from perdure.engine.events import (
    TERMINAL_EVENTS,
    ActivityScheduled,
    Completion,
    CustomStatusUpdated,
    Decision,
    EventRaised,
    EventSent,
    HistoryEvent,
    OrchestrationChained,
    OrchestrationFailed,
    Patched,
    SubOrchestrationScheduled,
    TimerCreated,
)

if TYPE_CHECKING:
    from perdure.engine._replay import LiveExecution

__all__ = ["ReplayOutcome", "StoredEnd", "describe", "failed_by_engine", "stored_end"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ReplayOutcome:
    """What one replay produced: the events to append and what the code decided.

    Attributes:
        new_events: Events to append to history, numbered and time-stamped, in order.
        consumed: Indices of the new events (messages) this turn used or dropped; the others stay queued.
        status: The instance status after the turn.
        output: The output, when the orchestration completed.
        error: The failure, when it failed.
        custom_status: The custom status after the turn; ``waiting_for``: the external events it waits for.
        carryover: Unawaited external events to hand to the next execution after continue-as-new.
        dropped: (index of the new event, why) for messages consumed without being recorded.
        unapplied: Indices of consumed new events the execution never saw, because it had already
            ended or because the turn failed as a whole (non-determinism): the runtime keeps those
            that carry input with a failed execution, so that a rewind can apply them.
        engine_error: Why the engine, not the code, failed the execution; ``failed_at``: at which event.
        warnings: What the code did that is likely a mistake (tasks it never awaited…), to log.
        live: The execution's engine state after the turn, when the replay was asked to keep it and
            the execution goes on: hand it to :func:`~perdure.engine._replay.resume` with the next
            turn's events (only if history has not changed meanwhile), or close it.
    """

    new_events: list[HistoryEvent]
    consumed: list[int]
    status: OrchestrationStatus
    output: Any = None
    error: ErrorDetails | None = None
    custom_status: Any = None
    waiting_for: list[AwaitedEvent] = field(default_factory=list)
    carryover: list[EventRaised] = field(default_factory=list)
    dropped: list[tuple[int, str]] = field(default_factory=list)
    unapplied: list[int] = field(default_factory=list)
    engine_error: PerdureError | None = None
    failed_at: HistoryEvent | None = None
    warnings: list[str] = field(default_factory=list)
    live: LiveExecution | None = None

    @property
    def decisions(self) -> list[Decision]:
        """The new events that record decisions: what the runtime must act on."""
        return [e for e in self.new_events if isinstance(e, Decision)]

    @property
    def terminal_event(self) -> HistoryEvent | None:
        """The event that ended the execution in this turn, if any."""
        last = self.new_events[-1] if self.new_events else None
        return last if isinstance(last, TERMINAL_EVENTS) else None


class StoredEnd(NamedTuple):
    """Where the stored history of a turn ends: what a turn the engine fails leaves in place."""

    last_event_id: int
    custom_status: Any
    ended: bool


def stored_end(history: Sequence[HistoryEvent]) -> StoredEnd:
    """The :class:`StoredEnd` of ``history``."""
    custom_status = next((e.value for e in reversed(history) if isinstance(e, CustomStatusUpdated)), None)
    ended = bool(history) and isinstance(history[-1], TERMINAL_EVENTS)
    return StoredEnd(history[-1].event_id if history else 0, custom_status, ended)


def failed_by_engine(
    exc: PerdureError, stored: StoredEnd, message_count: int, now: datetime, at: HistoryEvent | None
) -> ReplayOutcome:
    """The turn cannot be trusted: record only the failure, and consume every message (none applied).

    An :class:`UnreadablePayloadError` is raised again instead: this process cannot read the
    instance's data (no codec, or not the key), which says nothing about the instance.
    """
    if isinstance(exc, UnreadablePayloadError):
        raise exc
    error = ErrorDetails(type=type_name(exc), message=str(exc))
    new_events: list[HistoryEvent] = []
    if not stored.ended:  # an execution records one terminal event, never a second
        new_events = [OrchestrationFailed(event_id=stored.last_event_id + 1, timestamp=now, error=error)]
    return ReplayOutcome(
        new_events=new_events,
        consumed=list(range(message_count)),
        status=OrchestrationStatus.FAILED,
        error=error,
        # The custom status is what the stored history says; the part of this turn is thrown away.
        custom_status=stored.custom_status,
        unapplied=list(range(message_count)),
        engine_error=exc,
        failed_at=at,
    )


def describe(event: HistoryEvent | None) -> str:
    """A short human description of an event, for error messages and logs."""
    if event is None:
        return "nothing"
    kind = type(event).__name__
    where = f" (event {event.event_id})" if event.event_id else ""
    if isinstance(event, ActivityScheduled | SubOrchestrationScheduled | OrchestrationChained):
        return f"{kind} {event.name!r} with input {_short(event.input)}{where}"
    if isinstance(event, EventSent):
        return f"{kind} {event.name!r} to {event.instance_id!r}{where}"
    if isinstance(event, EventRaised):
        return f"{kind} {event.name!r}{where}"
    if isinstance(event, Patched):
        return f"{kind} {event.change_id!r}{where}"
    if isinstance(event, Completion):
        return f"{kind} for event {event.source_event_id}{where}"
    if isinstance(event, TimerCreated):
        return f"{kind} due {event.fire_at.isoformat()}{where}"
    return f"{kind}{where}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."
