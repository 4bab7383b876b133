"""How replay compares: the code's decisions with history's, event names, and the order new events apply in."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from perdure import _json
from perdure.engine.events import (
    ActivityScheduled,
    Decision,
    EventSent,
    HistoryEvent,
    OrchestrationChained,
    OrchestrationStarted,
    Patched,
    SubOrchestrationScheduled,
    TaskCancelled,
    TerminateRequested,
    TimerCreated,
)

__all__ = ["application_order", "event_key", "same_decision", "same_value"]


def same_decision(made: Decision, recorded: Decision) -> bool:
    """Whether the code made the decision history recorded at its position."""
    if type(made) is not type(recorded):
        return False
    if isinstance(made, TaskCancelled):
        return made.source_event_id == getattr(recorded, "source_event_id", None)
    if isinstance(made, ActivityScheduled | SubOrchestrationScheduled | OrchestrationChained):
        recorded_named: Any = recorded
        return made.name == recorded_named.name and same_value(made.input, recorded_named.input)
    if isinstance(made, TimerCreated | Patched):  # a timer due at another time is another decision
        return made == replace(recorded, event_id=made.event_id, timestamp=made.timestamp)
    if isinstance(made, EventSent):
        assert isinstance(recorded, EventSent)
        return made.instance_id == recorded.instance_id and event_key(made.name) == event_key(recorded.name)
    return True


def application_order(new_events: Sequence[HistoryEvent]) -> tuple[list[int], bool]:
    """Arrival order, except that a terminate queued behind the start of a new execution wins over
    it, so the code never runs; and whether that happened."""
    order = list(range(len(new_events)))
    if not new_events or not isinstance(new_events[0], OrchestrationStarted):
        return order, False
    terminate = next((i for i, e in enumerate(new_events) if isinstance(e, TerminateRequested)), None)
    if terminate is None:
        return order, False
    order.remove(terminate)
    order.insert(1, terminate)
    return order, True


def event_key(name: str) -> str:
    """External event names match case-insensitively, as in the Durable Task family."""
    return name.casefold()


def same_value(a: Any, b: Any) -> bool:
    """Equal as values, or as JSON: history holds decoded JSON (lists, not tuples)."""
    # History holds decoded JSON (lists, not tuples), so compare as JSON when plain equality fails.
    return bool(a == b) or _json.dumps(a) == _json.dumps(b)
