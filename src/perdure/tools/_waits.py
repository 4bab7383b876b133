"""What an unfinished instance is waiting for, read from its state, its history and the live workers.

:func:`waits` is pure: the dashboard gives it what the client read and shows the lines it returns.
Each :class:`Wait` is one thing the instance waits for:

- ``start``: a PENDING instance waits for a worker to run its first turn (or the turn that applies
  its rewind), and no live worker may serve its orchestration;
- ``resume``: a SUSPENDED instance waits for an operator;
- ``activity``, ``timer``, ``child``: a task its history scheduled and nothing has completed or
  cancelled yet (with, for an activity, the worker running it, else the live workers that serve
  its name and queue);
- ``event``: an external event its code waits for, by name, since when and until when
  (``OrchestrationState.waiting_for``, written by each turn). The timer of a wait's timeout is
  part of that line, not a line of its own.

A wait for an event is not a decision, so history does not record it: only the state does. An
instance whose last turn ran before perdure stored its waits, RUNNING with nothing open, can only
be waiting for an external event, and its line says that the name is not known.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from perdure import AwaitedEvent, OrchestrationState, OrchestrationStatus, WorkerInfo
from perdure.engine.events import (
    ActivityScheduled,
    Completion,
    HistoryEvent,
    OrchestrationSuspended,
    SubOrchestrationScheduled,
    TimerCreated,
)

__all__ = ["Wait", "wait_json", "waits"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Wait:
    """One thing an instance waits for.

    Attributes:
        kind: ``start``, ``resume``, ``activity``, ``timer``, ``child`` or ``event``.
        text: One line for people, times in UTC.
        since: Since when it waits (when the task was scheduled, the instance created or suspended).
        due: When a timer fires, or an activity's deadline.
        event_id: The history event that scheduled the task (for an event wait, its timeout's timer).
        event: The event's name, for an event wait.
        instance_id: The child's instance id, for a child.
        served_by: The live workers that can run it (an activity, or a PENDING instance's turn).
        running_on: The worker running it now, for an activity (``Provider.activity_workers``).
    """

    kind: str
    text: str
    since: datetime | None = None
    due: datetime | None = None
    event_id: int | None = None
    instance_id: str | None = None
    served_by: tuple[str, ...] = ()
    event: str | None = None
    running_on: str | None = None


def waits(
    state: OrchestrationState,
    history: Sequence[HistoryEvent],
    workers: Sequence[WorkerInfo],
    running: Mapping[int, str] | None = None,
) -> list[Wait]:
    """What ``state``'s instance waits for, from the ``history`` of its current execution.

    ``workers``: the live workers (``Client.list_workers()``); ``running``: the worker running each
    activity, by the id of the event that scheduled it (``Provider.activity_workers``). A finished
    instance waits for nothing.
    """
    if state.status.is_terminal:
        return []
    live = [w for w in workers if w.alive]
    found: list[Wait] = []
    if state.status is OrchestrationStatus.PENDING:
        found.append(_start(state, live))
    elif state.status is OrchestrationStatus.SUSPENDED:
        suspended = [e.timestamp for e in history if isinstance(e, OrchestrationSuspended)]
        since = suspended[-1] if suspended else state.updated_at
        found.append(Wait(kind="resume", text=f"an operator to resume it (suspended since {_at(since)})", since=since))
    found += [_event(awaited) for awaited in state.waiting_for]
    timeouts = {awaited.timer_event_id for awaited in state.waiting_for}
    holders = running or {}
    tasks = [
        _task(event, live, holders.get(event.event_id))
        for event in _open_tasks(history)
        if event.event_id not in timeouts
    ]
    found += tasks
    if state.status is OrchestrationStatus.RUNNING and not tasks and not state.waiting_for:
        since = history[-1].timestamp if history else state.updated_at
        text = (
            f"an external event (nothing it scheduled is open since {_at(since)}; "
            "which event is not recorded: its last turn ran before perdure stored event waits)"
        )
        found.append(Wait(kind="event", text=text, since=since))
    return found


def _event(awaited: AwaitedEvent) -> Wait:
    text = f"event {awaited.name!r} since {_at(awaited.since)}"
    if awaited.timeout_at is not None:
        text += f", timeout at {_at(awaited.timeout_at)}"
    return Wait(
        kind="event",
        text=text,
        since=awaited.since,
        due=awaited.timeout_at,
        event_id=awaited.timer_event_id,
        event=awaited.name,
    )


def _open_tasks(history: Sequence[HistoryEvent]) -> list[HistoryEvent]:
    """The activities, timers and children scheduled and not yet completed or cancelled, in order."""
    open_tasks: dict[int, HistoryEvent] = {}
    for event in history:
        if isinstance(event, ActivityScheduled | TimerCreated | SubOrchestrationScheduled):
            open_tasks[event.event_id] = event
        elif isinstance(event, Completion):
            open_tasks.pop(event.source_event_id, None)
    return list(open_tasks.values())


def _start(state: OrchestrationState, live: Sequence[WorkerInfo]) -> Wait:
    # Before its first turn an instance has no version yet (its start request may pin one, unread
    # here): any version of the name counts then.
    what = f"{state.name}@{state.version}" if state.version else state.name
    serving = tuple(w.worker_id for w in live if w.serves(state.name, state.version))
    turn = "the turn that applies its rewind" if state.error is not None else "its first turn"
    text = f"a worker to run {turn} (pending since {_at(state.updated_at)})"
    return Wait(
        kind="start",
        text=text + _served(serving, live, f"orchestration {what}"),
        since=state.updated_at,
        served_by=serving,
    )


def _task(event: HistoryEvent, live: Sequence[WorkerInfo], holder: str | None) -> Wait:
    since = event.timestamp
    if isinstance(event, TimerCreated):
        return Wait(
            kind="timer",
            text=f"timer due at {_at(event.fire_at)}",
            since=since,
            due=event.fire_at,
            event_id=event.event_id,
        )
    if isinstance(event, SubOrchestrationScheduled):
        text = f"child orchestration {event.name} ({event.instance_id}) since {_at(since)}"
        return Wait(kind="child", text=text, since=since, event_id=event.event_id, instance_id=event.instance_id)
    assert isinstance(event, ActivityScheduled)
    text = f"activity {event.name}"
    if event.attempt > 1:
        text += f", attempt {event.attempt}"
    if event.queue != "default":
        text += f" on queue {event.queue}"
    text += f", scheduled at {_at(since)}"
    if event.deadline is not None:
        text += f", deadline {_at(event.deadline)}"
    serving = tuple(w.worker_id for w in live if event.name in w.activities and event.queue in w.queues)
    if holder:
        text += _running_on(holder, live)
    else:
        text += _served(serving, live, f"activity {event.name} on queue {event.queue}")
    return Wait(
        kind="activity",
        text=text,
        since=since,
        due=event.deadline,
        event_id=event.event_id,
        served_by=serving,
        running_on=holder,
    )


def _running_on(holder: str, live: Sequence[WorkerInfo]) -> str:
    """The worker running an activity, by host and process id while its record is live."""
    found = [w for w in live if w.worker_id == holder]
    return f"; running on worker {holder}" + (f" ({found[0].host}, pid {found[0].pid})" if found else "")


def _served(serving: Sequence[str], live: Sequence[WorkerInfo], what: str) -> str:
    """Who can run it: the one worker, how many, or that no live worker serves it."""
    if not serving:
        return f"; no live worker serves {what}"
    if len(serving) == 1:
        [worker] = [w for w in live if w.worker_id == serving[0]]
        return f"; served by worker {worker.worker_id} on {worker.host} (pid {worker.pid})"
    return f"; served by {len(serving)} live workers"


def _at(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def wait_json(wait: Wait) -> dict[str, Any]:
    """The JSON shape of a wait.

    ``{"kind", "text", "since", "due", "event_id", "instance_id", "served_by", "event", "running_on"}``.
    """
    return {
        "kind": wait.kind,
        "text": wait.text,
        "since": None if wait.since is None else wait.since.isoformat(),
        "due": None if wait.due is None else wait.due.isoformat(),
        "event_id": wait.event_id,
        "instance_id": wait.instance_id,
        "served_by": list(wait.served_by),
        "event": wait.event,
        "running_on": wait.running_on,
    }
