"""Rewind: the history a failed execution continues from, and what its rewind turn sends. All pure.

A failed execution is rewound into a new execution whose history is the failed one minus:

- the **unhandled failure**: the task failure whose processing ended the run (for an activity
  with a retry policy, the failure of its *first* attempt, so the whole retry budget is fresh);
- everything **caused** by removed events: the decisions the code made in response to them
  (backoff timers, the next attempts, the terminal event) and, transitively, the completions of
  those decisions;
- the terminal event.

Because history is the exact trace of the run (every decision directly follows the event that
caused it), what remains is itself a valid trace: replaying it makes exactly the recorded
decisions, so a rewound run never meets a non-determinism error. The failed task's scheduling
event stays, so the task is simply *open* again: the rewind turn dispatches every open task once
more (activities, timers, children). Failures the code caught and handled are part of its logic
and are kept, as is the custom status and ``OrchestrationStarted`` with its original timestamp.

The rest of this module is what a rewind turn needs besides the turn rules: which children's
states to read first, the writes that reopen the open tasks, the answer a finished child gives a
rewound parent, and the start of an instance that failed before it ever ran.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from perdure._state import OrchestrationState, OrchestrationStatus
from perdure.engine.events import (
    ActivityFailed,
    ActivityScheduled,
    Completion,
    Decision,
    ExecutionRewound,
    HistoryEvent,
    OrchestrationFailed,
    OrchestrationStarted,
    StartRequested,
    SubOrchestrationFailed,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
)
from perdure.providers._base import Message, OrchestrationItem, QueuedMessage
from perdure.runtime._outbox import Outbox, Sender, decision_writes, parent_of, reply_to_parent

__all__ = [
    "answer_again",
    "children_to_rewind",
    "open_tasks",
    "reopened_task_writes",
    "rewind_requested",
    "rewound_history",
    "start_from_row",
]

_TASKS = (ActivityScheduled, TimerCreated, SubOrchestrationScheduled)


def rewound_history(failed: list[HistoryEvent]) -> list[HistoryEvent]:
    """The history a rewind of the ``failed`` execution continues from, renumbered 1..n."""
    removed_decisions: set[int] = set()
    roots = _unhandled_failures(failed)
    kept: list[HistoryEvent] = []
    cause_removed = False
    for event in failed:
        if isinstance(event, Decision):
            if cause_removed or isinstance(event, OrchestrationFailed):
                removed_decisions.add(event.event_id)
            else:
                kept.append(event)
            continue
        source = event.source_event_id if isinstance(event, Completion) else None
        cause_removed = event.event_id in roots or source in removed_decisions
        if not cause_removed:
            kept.append(event)
    return _renumber(kept)


def open_tasks(history: list[HistoryEvent]) -> list[Decision]:
    """Scheduled activities, timers and children of ``history`` that no event completed."""
    scheduled = {e.event_id: e for e in history if isinstance(e, _TASKS)}
    for event in history:
        if isinstance(event, Completion):
            scheduled.pop(event.source_event_id, None)
    return list(scheduled.values())


def _unhandled_failures(history: list[HistoryEvent]) -> set[int]:
    """Ids of the failure events to remove: the one that ended the run, traced to its first retry."""
    by_id = {e.event_id: e for e in history}
    terminal = history[-1]
    trigger = _cause_of(history, len(history) - 1) if isinstance(terminal, OrchestrationFailed) else None
    if not isinstance(trigger, ActivityFailed | SubOrchestrationFailed):
        return set()  # the code itself raised (or the runtime failed it): only the terminal event goes
    assert isinstance(terminal, OrchestrationFailed)
    if not _escaped(terminal):
        return set()  # e.g. non-determinism right after a failure the code had handled: keep that one
    failure: HistoryEvent = trigger
    # A retried activity's attempt N was scheduled when the backoff timer after attempt N-1's failure fired.
    while True:
        attempt = by_id.get(failure.source_event_id) if isinstance(failure, ActivityFailed) else None
        if not isinstance(attempt, ActivityScheduled) or attempt.attempt <= 1:
            return {failure.event_id}
        timer_fired = _cause_of(history, attempt.event_id - 1)
        timer = by_id.get(timer_fired.source_event_id) if isinstance(timer_fired, TimerFired) else None
        previous = _cause_of(history, timer.event_id - 1) if timer is not None else None
        if not isinstance(previous, ActivityFailed):
            return {failure.event_id}
        failure = previous


def _escaped(terminal: OrchestrationFailed) -> bool:
    """Whether the run ended because a task's failure escaped the code (directly, or as the cause or
    context of the error it raised), rather than for a reason of its own."""
    error = terminal.error
    kinds = ("ActivityFailedError", "SubOrchestrationFailedError")
    return any(error.is_type(kind) or kind in (error.traceback or "") for kind in kinds)


def _cause_of(history: list[HistoryEvent], index: int) -> HistoryEvent | None:
    """The non-decision event that the decision at ``index`` was made in response to."""
    while index >= 0 and isinstance(history[index], Decision):
        index -= 1
    return history[index] if index >= 0 else None


def _renumber(events: list[HistoryEvent]) -> list[HistoryEvent]:
    new_ids = {e.event_id: n for n, e in enumerate(events, start=1)}
    renumbered: list[HistoryEvent] = []
    for event in events:
        changes: dict[str, int] = {"event_id": new_ids[event.event_id]}
        if isinstance(event, Completion):
            changes["source_event_id"] = new_ids[event.source_event_id]
        renumbered.append(replace(event, **changes))  # type: ignore[arg-type]
    return renumbered


# --- the rewind turn ----------------------------------------------------------------------------


def rewind_requested(state: OrchestrationState | None) -> bool:
    """Whether a client's rewind of this failed instance waits for its turn.

    ``Client.rewind`` marks the instance PENDING at once, so that it reads as in progress, and
    the provider keeps its error (``Provider.request_rewind``): no other PENDING instance has one.
    Its turn treats it as the FAILED instance it still is until the rewind is applied.
    """
    return state is not None and state.status is OrchestrationStatus.PENDING and state.error is not None


def children_to_rewind(item: OrchestrationItem) -> list[str]:
    """Instance ids of the children whose state a rewind turn of ``item`` needs."""
    state, history = item.state, item.history
    failed = state is not None and (state.status is OrchestrationStatus.FAILED or rewind_requested(state))
    if not failed or not history:
        return []
    if not any(isinstance(m.event, ExecutionRewound) for m in item.messages):
        return []
    return [t.instance_id for t in open_tasks(rewound_history(history)) if isinstance(t, SubOrchestrationScheduled)]


def reopened_task_writes(
    kept: list[HistoryEvent], sender: Sender, child_states: Mapping[str, OrchestrationState | None]
) -> Outbox:
    """Queue writes that restart the tasks a failed run left open, for the new execution.

    A child with a state rewinds itself, or answers again, to the new execution; a child without
    one (purged, or failed before it ran) is started again.
    """
    rewound = {child for child, state in child_states.items() if state is not None}
    return decision_writes(open_tasks(kept), sender, rewound_children=rewound)


def answer_again(
    state: OrchestrationState, history: list[HistoryEvent] | None, request: ExecutionRewound
) -> Message | None:
    """How a finished child ended, told to a rewound parent's new execution (``None``: nothing to tell)."""
    started = history[0] if history else None
    parent = parent_of(started, [request]) if isinstance(started, OrchestrationStarted) else None
    if parent is None or request.parent_execution_id is None:
        return None
    if state.status is OrchestrationStatus.COMPLETED:
        return reply_to_parent(parent, output=state.output)
    if state.error is not None:
        return reply_to_parent(parent, error=state.error)
    return None


def start_from_row(state: OrchestrationState, rewind: QueuedMessage) -> QueuedMessage:
    """The rewind of an instance that never ran, as a start from what its row recorded."""
    request = StartRequested(name=state.name, version=state.version, input=state.input)
    return replace(rewind, event=request, execution_id=state.execution_id)
