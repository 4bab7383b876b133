"""The task table of one execution: what scheduled each task, which are open, who waits for which event."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from perdure._errors import NonDeterminismError
from perdure._payloads import Payloads, PayloadTypes
from perdure.engine._matching import event_key
from perdure.engine._payload_fields import hand_over, hand_over_result
from perdure.engine._tasks import DurableTask, ScheduledTask
from perdure.engine.events import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    Completion,
    Decision,
    EventRaised,
    HistoryEvent,
    SubOrchestrationCompleted,
    SubOrchestrationFailed,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
)

__all__ = ["TaskTable"]

# Which completion events may complete a task scheduled by which decision.
_COMPLETED_BY: dict[type[Decision], tuple[type[Completion], ...]] = {
    ActivityScheduled: (ActivityCompleted, ActivityFailed),
    TimerCreated: (TimerFired,),
    SubOrchestrationScheduled: (SubOrchestrationCompleted, SubOrchestrationFailed),
}


class TaskTable:
    """The durable tasks of one execution, as its history has made them so far.

    Attributes:
        scheduled: Every decision that scheduled a task, by its event id.
        open: The tasks no event has completed (nor the code cancelled), by their decision's event id.
        cancelled: The event ids of the decisions whose tasks the code cancelled.
        waiters: The event waits not yet answered, by event name (as matched).
        buffered: The events raised that no wait has taken yet, by event name (as matched).
        payloads: How the results and event data handed to the tasks are decoded.
        types: The result types of activities and orchestrations, for tasks without ``result_type``.
    """

    __slots__ = ("buffered", "cancelled", "open", "payloads", "scheduled", "types", "waiters")

    def __init__(self, payloads: Payloads, types: PayloadTypes | None = None) -> None:
        self.payloads = payloads
        self.types = types
        self.scheduled: dict[int, Decision] = {}
        self.open: dict[int, DurableTask[Any]] = {}
        self.cancelled: set[int] = set()
        self.waiters: dict[str, deque[DurableTask[Any]]] = {}
        self.buffered: dict[str, deque[EventRaised]] = {}

    def complete(self, event: Completion, name: Callable[[HistoryEvent], str]) -> None:
        """Finish the task ``event`` completes; ``name`` describes an event for the errors."""
        source = self.scheduled.get(event.source_event_id)
        if source is None:
            raise NonDeterminismError(
                f"{name(event)} claims to complete a task, but event {event.source_event_id} scheduled no task"
            )
        if not isinstance(event, _COMPLETED_BY[type(source)]):
            raise NonDeterminismError(f"{name(event)} does not match {name(source)} that it claims to complete")
        task = self.open.pop(event.source_event_id, None)
        if task is None:
            raise NonDeterminismError(f"history completes {name(source)} twice: {name(event)}")
        if isinstance(event, ActivityFailed | SubOrchestrationFailed):
            assert isinstance(task, ScheduledTask)
            task._fail_with(event.error)
        else:
            hand_over_result(task, source, event, self.payloads, self.types)

    def late_completion(self, event: Completion) -> str | None:
        """Why a new ``event`` completes nothing (its task was cancelled or already completed), if so."""
        source = event.source_event_id
        if source not in self.scheduled or source in self.open:
            return None
        return "its task was cancelled" if source in self.cancelled else f"duplicate completion of event {source}"

    def wait_event(self, name: str, task: DurableTask[Any]) -> None:
        """A wait for the event ``name``: answered at once by one raised earlier, else queued."""
        buffered = self.buffered.get(event_key(name))
        if buffered:
            hand_over(task, buffered.popleft().data, f"data of event {name!r}", self.payloads)
        else:
            self.waiters.setdefault(event_key(name), deque()).append(task)

    def withdraw_wait(self, name: str, task: DurableTask[Any]) -> None:
        """Stop waiting: a later event of that name goes to the next wait."""
        waiters = self.waiters.get(event_key(name))
        if waiters and task in waiters:
            waiters.remove(task)

    def deliver(self, event: EventRaised) -> None:
        """An event raised: to the first wait for it, else kept for the next one."""
        waiters = self.waiters.get(event_key(event.name))
        if waiters:
            hand_over(waiters.popleft(), event.data, f"data of event {event.name!r}", self.payloads)
        else:
            self.buffered.setdefault(event_key(event.name), deque()).append(event)

    def unawaited_events(self) -> list[EventRaised]:
        """The events raised that no wait took, in arrival order (what continue-as-new carries over)."""
        return sorted((e for q in self.buffered.values() for e in q), key=lambda e: e.event_id)
