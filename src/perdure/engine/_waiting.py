"""Which external events an execution waits for at the end of a turn.

A wait for an event is not a decision, so history does not record it; the engine knows it only
while it replays. It reports the waits still open with the turn's outcome, and the runtime stores
them with the instance (``OrchestrationState.waiting_for``) so that operators can see which event
an instance waits for, since when, and until when.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from perdure._state import AwaitedEvent
from perdure.engine._tasks import DurableTask, EventWait, ScheduledTask

__all__ = ["open_event_waits"]


def open_event_waits(waiters: Iterable[Iterable[DurableTask[Any]]], finished: bool) -> list[AwaitedEvent]:
    """The waits in ``waiters`` (the engine's queues of waits, one per event name), oldest first.

    An execution that has ended waits for nothing, whatever waits its code left behind.
    """
    if finished:
        return []
    found = [_awaited(task) for queue in waiters for task in queue if isinstance(task, EventWait)]
    return sorted(found, key=lambda wait: wait.since)  # stable: waits of one turn keep their order


def _awaited(wait: EventWait) -> AwaitedEvent:
    if wait._timeout is None:
        return AwaitedEvent(name=wait._name, since=wait._since)
    timeout_at, timer = wait._timeout
    timer_event_id = timer._event_id if isinstance(timer, ScheduledTask) and timer._event_id else None
    return AwaitedEvent(name=wait._name, since=wait._since, timeout_at=timeout_at, timer_event_id=timer_event_id)
