"""What every turn plan shares, and the turns that end an execution without running its code.

Some turns cannot run the orchestration code and still must end the execution visibly: the code
is not registered anywhere (after the attempts a rolling deploy is given), the stored history is
unreadable, a message was delivered too often (poison), or a rewind cannot proceed. Each fails
the execution with an error that says why and keeps the messages it consumed (``_retained``), so
that a rewind after the fix delivers them. A terminate needs no code at all: it is honoured at once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from perdure._errors import ErrorDetails, PerdureError, type_name
from perdure._payloads import Payloads, PayloadTypes
from perdure._state import OrchestrationState, OrchestrationStatus
from perdure._tracing import execution_trace_context
from perdure.engine._replay import LiveExecution, ReplayOutcome
from perdure.engine.events import (
    Completion,
    HistoryEvent,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestrationStarted,
    OrchestrationTerminated,
    StartRequested,
    TerminateRequested,
)
from perdure.providers._base import InstanceUpdate, Message, OrchestrationItem, QueuedMessage, TurnCommit
from perdure.runtime._options import RuntimeOptions
from perdure.runtime._outbox import Sender, end_writes, open_activities, parent_of, reply_to_parent
from perdure.runtime._registry import OrchestrationRegistry
from perdure.runtime._retained import never_ran, retainable, retained_events
from perdure.runtime._rewind import forwarded

_PLAIN_JSON = Payloads()

__all__ = ["Abandon", "Input", "TurnEndings", "TurnPlan", "instance_update", "message_ids"]


@dataclass(frozen=True, slots=True)
class Abandon:
    """Put the item back, to be retried after ``delay`` seconds (``undo_delivery``: not counted as a delivery)."""

    delay: float
    reason: str
    undo_delivery: bool = False


@dataclass(frozen=True, slots=True)
class TurnPlan:
    """What to commit, plus what happened (for logs and metrics).

    ``replayed`` is the history the engine replayed (the stored one, or a rewind's rewritten one).
    """

    commit: TurnCommit
    result: ReplayOutcome | None = None
    warnings: list[str] = field(default_factory=list)
    replayed: Sequence[HistoryEvent] = ()
    notes: list[str] = field(default_factory=list)
    """Routine events worth a debug line (e.g. a late timer dropped after the instance finished)."""
    rewound: bool = False
    """The turn rewound the instance: ``commit.history`` is the new execution's whole history."""
    errors: list[str] = field(default_factory=list)
    """What no correct run produces (e.g. a message for an execution that does not exist yet)."""


@dataclass(frozen=True, slots=True)
class Input:
    """An event a turn applies, and the message that brought it (``None``: an event retained in history)."""

    message: QueuedMessage | None
    event: HistoryEvent


class TurnEndings:
    """A turn's planner state, and the plans that end an execution without running its code."""

    def __init__(
        self,
        item: OrchestrationItem,
        registry: OrchestrationRegistry,
        options: RuntimeOptions,
        now: datetime,
        tracing: bool,
    ):
        self.item = item
        self.registry = registry
        self.options = options
        self.now = now
        self.tracing = tracing
        self.child_states: Mapping[str, OrchestrationState | None] = {}
        self.earlier: Mapping[int, list[HistoryEvent]] = {}
        self.warnings: list[str] = []
        self.notes: list[str] = []  # routine drops: a timer that lost a race, a second delivery
        self.errors: list[str] = []  # drops no correct run explains
        self.replies: list[Message] = []  # answers to would-be parents of a duplicate start
        self.consumed: list[int] = []  # message ids consumed before the engine runs
        self.live: LiveExecution | None = None  # the execution's state kept by a cache, to resume
        self.keep = False  # keep the engine's state after the turn (ReplayOutcome.live)
        self.payloads = _PLAIN_JSON
        self.types: PayloadTypes | None = None

    def planned(
        self,
        commit: TurnCommit,
        result: ReplayOutcome | None = None,
        replayed: Sequence[HistoryEvent] = (),
        *,
        rewound: bool = False,
    ) -> TurnPlan:
        return TurnPlan(commit, result, self.warnings, replayed, self.notes, rewound, self.errors)

    def drop(self, message: QueuedMessage, why: str, *, expected: bool = False, error: bool = False) -> None:
        """Consume a message without recording it; ``expected`` drops are routine (logged at debug level),
        ``error`` ones are not explained by any correct run."""
        self.consumed.append(message.message_id)
        kind = type(message.event).__name__ if message.event is not None else "a corrupted message"
        note = f"dropped {kind} for instance {self.item.instance_id!r}: {why}"
        (self.errors if error else self.notes if expected else self.warnings).append(note)

    def drop_input(self, dropped: Input, why: str) -> None:
        """An input the engine dropped (a retained event has no message to consume)."""
        if dropped.message is not None:
            self.drop(dropped.message, why, expected=True)

    def reply(self, message: Message | None) -> None:
        if message is not None:
            self.replies.append(message)

    def addressed(self, message: QueuedMessage, execution_id: int) -> HistoryEvent | None:
        """What ``message`` brings to execution ``execution_id``: its event, that event forwarded
        from an earlier execution the current one continues by rewinds, or ``None`` (stale)."""
        sent_to = message.execution_id
        if sent_to is None or sent_to == execution_id:
            return message.event
        if sent_to > execution_id or not isinstance(message.event, Completion) or self.item.history is None:
            return None
        chain = [self.earlier.get(n) for n in range(sent_to, execution_id)]
        if any(history is None for history in chain):
            return None
        return forwarded(message.event, [*chain, self.item.history])  # type: ignore[list-item]

    def sender(self, started: OrchestrationStarted, execution_id: int) -> Sender:
        """The execution as the sender of its decisions; its span context goes only where something is traced."""
        traced = started.trace_context is not None or self.tracing
        trace_context = execution_trace_context(self.item.instance_id, execution_id, started) if traced else None
        return Sender(
            instance_id=self.item.instance_id, execution_id=execution_id, started=started, trace_context=trace_context
        )

    def unregistered(self, error: PerdureError, give_up: Callable[[], TurnPlan]) -> TurnPlan | Abandon:
        """Put the turn back so that a worker that has the code takes it; after the attempts, ``give_up``."""
        attempts = max((m.dequeue_count for m in self.item.messages), default=1)
        if attempts < self.options.max_dispatch_attempts:
            return Abandon(self.options.backoff(attempts), str(error))
        return give_up()

    def cannot_run(
        self,
        state: OrchestrationState,
        history: list[HistoryEvent],
        error: PerdureError,
        started: OrchestrationStarted | None,
        inputs: list[Input],
    ) -> TurnPlan | Abandon:
        """The code for this turn is not here: honour a terminate (it needs none), else wait for a
        worker that has the code, and in the end fail the execution."""
        terminate = next((i for i in inputs if isinstance(i.event, TerminateRequested)), None)
        if terminate is not None:
            return self.terminate_without_code(state, history, started, terminate)
        return self.unregistered(error, lambda: self.fail_unrun(state, history, started, inputs, error))

    def fail_without_replay(self, error: PerdureError, *, retain: bool = True) -> TurnPlan:
        """Fail the current execution without running its code (see :meth:`fail_unrun`); without
        ``retain``, the messages are only consumed (the store refused what they carry)."""
        state = self.item.state
        assert state is not None
        inputs = [Input(m, e) for m in self.item.messages if (e := self.addressed(m, state.execution_id)) is not None]
        return self.fail_unrun(state, self.item.history, None, inputs if retain else [], error)

    def fail_unrun(
        self,
        state: OrchestrationState,
        history: list[HistoryEvent] | None,
        started: OrchestrationStarted | None,
        inputs: Sequence[Input],
        error: PerdureError,
    ) -> TurnPlan:
        """Fail the execution of ``state`` without running its code, consuming every message.

        The failure is recorded after ``history`` (nothing can be appended to an unreadable one),
        followed by the inputs it retains; an execution that never ran retains its start as well.
        """
        details = ErrorDetails(type=type_name(error), message=str(error))
        known = history or []
        first = known[0] if known else None
        started = started or (first if isinstance(first, OrchestrationStarted) else None)
        request = next((i.event for i in inputs if isinstance(i.event, StartRequested)), None)
        parent = parent_of(started if started is not None else request)
        unrun = never_ran(known)
        kept = [i.event for i in inputs if retainable(i.event) or (unrun and isinstance(i.event, StartRequested))]
        recorded: list[HistoryEvent] = []
        if history is not None and not unrun:
            failed = OrchestrationFailed(event_id=known[-1].event_id + 1, timestamp=self.now, error=details)
            recorded = [failed, *retained_events(kept, failed.event_id, self.now)]
        elif history is not None:
            recorded = retained_events(kept, known[-1].event_id if known else 0, self.now)
        messages = [*self.replies, reply_to_parent(parent, error=details)] if parent else list(self.replies)
        commit = TurnCommit(
            execution_id=state.execution_id,
            history=recorded,
            state=ended_update(state, started, OrchestrationStatus.FAILED, details),
            messages=messages,
            consumed=[m.message_id for m in self.item.messages],
        )
        self.notes.append(f"instance {self.item.instance_id!r} failed without running: {error}")
        return self.planned(commit)

    def terminate_without_code(
        self,
        state: OrchestrationState,
        history: list[HistoryEvent],
        started: OrchestrationStarted | None,
        terminate: Input,
    ) -> TurnPlan:
        """Terminate an instance whose code is not registered here: a terminate runs no code."""
        request = terminate.event
        assert isinstance(request, TerminateRequested)
        details = ErrorDetails(type="Terminated", message=request.reason or "terminated")
        messages = list(self.replies)
        recorded: list[HistoryEvent] = []
        if started is not None:
            before = history or [replace(started, event_id=1, timestamp=self.now)]
            ended = OrchestrationTerminated(event_id=before[-1].event_id + 1, timestamp=self.now, reason=request.reason)
            recorded = [*before[len(history) :], ended]
            outcome = ReplayOutcome(
                new_events=recorded, consumed=[], status=OrchestrationStatus.TERMINATED, error=details
            )
            sender = self.sender(started, state.execution_id)
            messages += end_writes(
                sender, outcome, history, parent_of(started), carried=[], recursive=request.recursive
            )
        else:  # it never started: only a parent may be waiting
            start = next((m.event for m in self.item.messages if isinstance(m.event, StartRequested)), None)
            parent = parent_of(start)
            if parent is not None:
                messages.append(reply_to_parent(parent, error=details))
        commit = TurnCommit(
            execution_id=state.execution_id,
            history=recorded,
            state=ended_update(state, started, OrchestrationStatus.TERMINATED, details),
            messages=messages,
            consumed=[m.message_id for m in self.item.messages],
            cancelled_activities=open_activities(history),
        )
        self.notes.append(f"instance {self.item.instance_id!r} terminated without running its code")
        return self.planned(commit)

    def refuse_rewind(self, request: QueuedMessage, error: PerdureError) -> TurnPlan:
        """Refuse a rewind whose failed execution cannot be continued (its history is unusable)."""
        for message in self.item.messages:
            if message is not request:
                self.drop(message, f"the rewind was refused: {error}")
        assert request.event is not None
        return self.failed_rewind(None, [], [Input(request, request.event)], error, refused=True)

    def failed_rewind(
        self,
        started: OrchestrationStarted | None,
        kept: list[HistoryEvent],
        inputs: Sequence[Input],
        error: PerdureError | ErrorDetails,
        *,
        refused: bool,
    ) -> TurnPlan:
        """A rewind that could not proceed, or whose run failed at once, as a new FAILED execution.

        Its history is the kept events, the ``ExecutionRewound`` (``inputs[0]``), the failure and
        then, retained, what the rewind would have applied: so ``wait_for_orchestration`` on the
        execution ``rewind`` returned sees the outcome, and a later rewind starts from the same point.
        """
        state = self.item.state
        assert state is not None
        if isinstance(error, ErrorDetails):
            details = error
        else:
            why = f"the rewind was refused: {error}" if refused else str(error)
            details = ErrorDetails(type=type_name(error), message=why)
        marker = replace(inputs[0].event, event_id=len(kept) + 1, timestamp=self.now)
        failed = OrchestrationFailed(event_id=len(kept) + 2, timestamp=self.now, error=details)
        retained = retained_events([i.event for i in inputs[1:] if retainable(i.event)], failed.event_id, self.now)
        parent = parent_of(started)
        messages = [*self.replies, reply_to_parent(parent, error=details)] if parent else list(self.replies)
        execution = replace(state, execution_id=state.execution_id + 1)
        commit = TurnCommit(
            execution_id=execution.execution_id,
            history=[*kept, marker, failed, *retained],
            state=ended_update(execution, started, OrchestrationStatus.FAILED, details),
            messages=messages,
            consumed=sorted({*self.consumed, *message_ids(inputs)}),
        )
        self.warnings.append(f"instance {self.item.instance_id!r}: {details.message}")
        return self.planned(commit, replayed=kept, rewound=True)


def instance_update(started: OrchestrationStarted, result: ReplayOutcome, execution_id: int) -> InstanceUpdate:
    """The instance row after a turn that ran the code; after continue-as-new, it describes the next execution."""
    terminal = result.terminal_event
    instance_input = started.input
    if isinstance(terminal, OrchestrationContinuedAsNew):
        execution_id, instance_input = execution_id + 1, terminal.input
    return InstanceUpdate(
        name=started.name,
        version=started.version,
        status=result.status,
        execution_id=execution_id,
        input=instance_input,
        output=result.output,
        error=result.error,
        custom_status=result.custom_status,
        waiting_for=tuple(result.waiting_for),
        parent_instance_id=started.parent_instance,
    )


def ended_update(
    state: OrchestrationState,
    started: OrchestrationStarted | None,
    status: OrchestrationStatus,
    error: ErrorDetails,
) -> InstanceUpdate:
    """The instance row of an execution ended without running its code: only the status and error change."""
    return InstanceUpdate(
        name=state.name,
        version=started.version if started else state.version,
        status=status,
        execution_id=state.execution_id,
        input=state.input,
        error=error,
        custom_status=state.custom_status,
        parent_instance_id=state.parent_instance_id,
    )


def message_ids(inputs: Iterable[Input]) -> list[int]:
    """The ids of the messages that brought ``inputs``."""
    return [i.message.message_id for i in inputs if i.message is not None]
