"""Rewind: the history a failed execution continues from, and what its rewind turn sends. All pure.

A failed execution is rewound into a new execution whose history is the failed one minus:

- the **unhandled failure**: the task failure whose processing ended the run (for an activity
  or a child with a retry policy, the failure of its *first* attempt, so the whole retry budget
  is fresh);
- everything **caused** by removed events: the decisions the code made in response to them
  (backoff timers, the next attempts, the terminal event) and, transitively, the completions of
  those decisions;
- the terminal event, and what the failed execution kept after it (``_retained``).

Because history is the exact trace of the run (every decision directly follows the event that
caused it), what remains is itself a valid trace: replaying it makes exactly the recorded
decisions, so a rewound run never meets a non-determinism error. The failed task's scheduling
event stays, so the task is simply *open* again. The rewind turn then applies what the failed
execution kept (its failures excepted: those tasks are rewound too) and dispatches every task
still open (activities, timers, children that ended). Failures the code caught and handled are
part of its logic and are kept, as is the custom status and ``OrchestrationStarted`` with its
original timestamp.

Events keep their order but not their ids: a completion for the failed execution (a running
child's answer, a late activity result) is **forwarded** to the rewound one by renumbering its
source event id the same way.

The rest of this module is what a rewind turn needs besides the turn rules: which children's
states and which earlier histories to read first, the writes that reopen the open tasks, the
answer a finished child gives a rewound parent, and the start of an instance that never ran.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
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
from perdure.runtime._retained import never_ran, split_retained

__all__ = [
    "answer_again",
    "carried_into_rewind",
    "children_to_rewind",
    "earlier_executions",
    "forwarded",
    "is_rewind_of",
    "open_tasks",
    "renumbering",
    "reopened_task_writes",
    "restart_request",
    "rewind_requested",
    "rewound_history",
]

_TASKS = (ActivityScheduled, TimerCreated, SubOrchestrationScheduled)


def rewound_history(failed: list[HistoryEvent]) -> list[HistoryEvent]:
    """The history a rewind of the ``failed`` execution continues from, renumbered 1..n."""
    return _renumber(_kept(split_retained(failed)[0]))


def renumbering(failed: list[HistoryEvent]) -> dict[int, int]:
    """How a rewind of ``failed`` renumbers the events it keeps: old event id to new event id."""
    return {e.event_id: n for n, e in enumerate(_kept(split_retained(failed)[0]), start=1)}


def _kept(failed: list[HistoryEvent]) -> list[HistoryEvent]:
    """The events of a failed run (retained events removed) that its rewind keeps, with their old ids."""
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
    return kept


def open_tasks(history: list[HistoryEvent]) -> list[Decision]:
    """Scheduled activities, timers and children of ``history`` that no event completed."""
    scheduled = {e.event_id: e for e in history if isinstance(e, _TASKS)}
    for event in history:
        if isinstance(event, Completion):
            scheduled.pop(event.source_event_id, None)
    return list(scheduled.values())


def _unhandled_failures(history: list[HistoryEvent]) -> set[int]:
    """Ids of the failure events to remove: the one that ended the run, traced to its first retry."""
    terminal = history[-1] if history else None
    trigger = _cause_of(history, len(history) - 1) if isinstance(terminal, OrchestrationFailed) else None
    if not isinstance(trigger, ActivityFailed | SubOrchestrationFailed):
        return set()  # the code itself raised (or the runtime failed it): only the terminal event goes
    assert isinstance(terminal, OrchestrationFailed)
    if not _escaped(terminal):
        return set()  # e.g. non-determinism right after a failure the code had handled: keep that one
    by_id = {e.event_id: e for e in history}
    failure: Completion = trigger
    while (previous := _previous_attempt(history, by_id, failure)) is not None:
        failure = previous
    return {failure.event_id}


def _previous_attempt(
    history: list[HistoryEvent], by_id: dict[int, HistoryEvent], failure: Completion
) -> Completion | None:
    """The failure of the attempt a retry policy made before the one ``failure`` ended, if there was one.

    Attempt N of a retried activity or child was scheduled when the backoff timer that attempt
    N-1's failure started fired, and asks for the same task again.
    """
    attempt = by_id.get(failure.source_event_id)
    if isinstance(attempt, ActivityScheduled) and attempt.attempt <= 1:
        return None
    if not isinstance(attempt, ActivityScheduled | SubOrchestrationScheduled):
        return None
    timer_fired = _cause_of(history, attempt.event_id - 1)
    timer = by_id.get(timer_fired.source_event_id) if isinstance(timer_fired, TimerFired) else None
    previous = _cause_of(history, timer.event_id - 1) if timer is not None else None
    if not isinstance(previous, ActivityFailed | SubOrchestrationFailed):
        return None
    return previous if _same_task(by_id.get(previous.source_event_id), attempt) else None


def _same_task(before: HistoryEvent | None, attempt: ActivityScheduled | SubOrchestrationScheduled) -> bool:
    """Whether ``before`` scheduled the task that ``attempt`` retries (children carry no attempt number)."""
    if isinstance(attempt, ActivityScheduled):
        return (
            isinstance(before, ActivityScheduled)
            and before.name == attempt.name
            and before.attempt == attempt.attempt - 1
        )
    return isinstance(before, SubOrchestrationScheduled) and (before.name, before.version, before.input) == (
        attempt.name,
        attempt.version,
        attempt.input,
    )


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


def carried_into_rewind(retained: list[HistoryEvent], ids: Mapping[int, int]) -> list[HistoryEvent]:
    """The retained events of a failed execution that its rewind applies, renumbered by ``ids``.

    A retained failure is not applied: like the unhandled failure, it is rewound, so its task is
    open again and runs again. A completion whose task the rewind removed is stale.
    """
    carried: list[HistoryEvent] = []
    for event in retained:
        if isinstance(event, ActivityFailed | SubOrchestrationFailed):
            continue
        if isinstance(event, Completion):
            if event.source_event_id not in ids:
                continue
            event = replace(event, source_event_id=ids[event.source_event_id])
        carried.append(event)
    return carried


def forwarded(completion: Completion, chain: Sequence[list[HistoryEvent]]) -> Completion | None:
    """A completion for the first execution of ``chain``, as a completion for its last one.

    Each execution of ``chain`` after the first must be the rewind of the one before it (a running
    child of a rewound parent, or an activity that was still running, answers the execution that
    scheduled it); the completion's source event id is renumbered as each rewind renumbered
    history. ``None`` when an execution of the chain was not such a rewind (it continued as new,
    say) or when a rewind removed the task (a retry attempt it walked back).
    """
    source = completion.source_event_id
    for failed, rewound in itertools.pairwise(chain):
        ids = renumbering(failed)
        if source not in ids or not is_rewind_of(rewound_history(failed), rewound):
            return None
        source = ids[source]
    return replace(completion, source_event_id=source)


def is_rewind_of(kept: Sequence[HistoryEvent], history: Sequence[HistoryEvent]) -> bool:
    """Whether ``history`` is the execution a rewind built on ``kept`` (its predecessor's kept events)."""
    marker = len(kept)
    return len(history) > marker and isinstance(history[marker], ExecutionRewound) and list(history[:marker]) == kept


def earlier_executions(item: OrchestrationItem) -> list[int]:
    """The earlier executions of ``item`` whose histories its turn needs to forward completions (ascending)."""
    state, history = item.state, item.history
    if state is None or not history:
        return []
    stale = [
        m.execution_id
        for m in item.messages
        if isinstance(m.event, Completion) and m.execution_id is not None and m.execution_id < state.execution_id
    ]
    # Messages first: most turns carry no stale completion, and need not scan a long history.
    if not stale or not any(isinstance(e, ExecutionRewound) for e in history):
        return []
    return list(range(min(stale), state.execution_id))


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
    if not failed or not history or never_ran(history):
        return []
    if not any(isinstance(m.event, ExecutionRewound) for m in item.messages):
        return []
    return [t.instance_id for t in open_tasks(rewound_history(history)) if isinstance(t, SubOrchestrationScheduled)]


def reopened_task_writes(
    tasks: list[Decision], sender: Sender, child_states: Mapping[str, OrchestrationState | None]
) -> Outbox:
    """Queue writes that restart the ``tasks`` a failed run left open, for the new execution.

    A child that has ended is told of the rewind: a failed one rewinds itself, a finished one
    answers again. A child still running is left alone: it answers the execution that started it,
    and that answer is forwarded. A child without a state (purged, or failed before it ran) is
    started again.
    """
    running = {child for child, state in child_states.items() if state is not None and not state.status.is_terminal}
    tasks = [t for t in tasks if not (isinstance(t, SubOrchestrationScheduled) and t.instance_id in running)]
    ended = {child for child, state in child_states.items() if state is not None and state.status.is_terminal}
    return decision_writes(tasks, sender, rewound_children=ended)


def answer_again(
    state: OrchestrationState, history: list[HistoryEvent] | None, request: ExecutionRewound
) -> Message | None:
    """How a finished child ended, told again to the rewound parent that asks (``None``: nothing to tell).

    The answer goes to the parent execution that started the child, which forwards it.
    """
    started = history[0] if history else None
    parent = parent_of(started) if isinstance(started, OrchestrationStarted) else None
    if parent is None or request.parent_execution_id is None:
        return None
    if state.status is OrchestrationStatus.COMPLETED:
        return reply_to_parent(parent, output=state.output)
    if state.error is not None:
        return reply_to_parent(parent, error=state.error)
    return None


def restart_request(state: OrchestrationState, history: list[HistoryEvent], rewind: QueuedMessage) -> QueuedMessage:
    """The rewind of an instance that never ran, as its start: the one it retained, or one from its row."""
    request = next((e for e in history if isinstance(e, StartRequested)), None)
    if request is None:
        request = StartRequested(name=state.name, version=state.version, input=state.input)
    return replace(rewind, event=request, execution_id=None)
