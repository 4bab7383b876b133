"""Nothing consumed is lost: what a failed execution keeps of the messages it consumed. All pure.

A turn that fails an execution (the code raised, replay met non-determinism, the instance was
poisoned, its version is not registered anywhere) still consumes the turn's messages, and so does
every turn of an instance that stays FAILED. Each consumed message that carries input for the
orchestration (a task's completion or an external event) is **retained**: appended to the failed
execution's history *after* its terminal event. Retained events are only recorded: they never
change the failed execution's status, output or error, and replay never reads past the terminal
event. A rewind applies them to the new execution (``_rewind``), so an event that woke the
instance, or a sibling activity that finished after the run failed, is neither lost nor redone.

An instance that failed before it ever ran (its start could not be resolved, or was poisoned) has
no ``OrchestrationStarted``: its history holds only retained events, its ``StartRequested`` first.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import replace
from datetime import datetime

from perdure.engine.events import (
    TERMINAL_EVENTS,
    Completion,
    EventRaised,
    HistoryEvent,
    StartRequested,
)

__all__ = ["never_ran", "retainable", "retained_events", "split_retained"]


def retainable(event: HistoryEvent | None) -> bool:
    """Whether a consumed message's event is input the orchestration would have used."""
    return isinstance(event, Completion | EventRaised)


def never_ran(history: Sequence[HistoryEvent]) -> bool:
    """Whether the execution of ``history`` never started its code: its history is empty, or holds
    only what it retained when it failed before it ran."""
    return not history or isinstance(history[0], StartRequested | EventRaised | Completion)


def split_retained(history: Sequence[HistoryEvent]) -> tuple[list[HistoryEvent], list[HistoryEvent]]:
    """The run of an execution (up to and including its terminal event) and the events retained after it."""
    if history and never_ran(history):
        return [], list(history)
    for index, event in enumerate(history):
        if isinstance(event, TERMINAL_EVENTS):
            return list(history[: index + 1]), list(history[index + 1 :])
    return list(history), []


def retained_events(events: Iterable[HistoryEvent], after: int, now: datetime) -> list[HistoryEvent]:
    """``events`` as they are appended to a failed execution: numbered after event ``after``, stamped ``now``."""
    return [replace(event, event_id=after + n, timestamp=now) for n, event in enumerate(events, start=1)]
