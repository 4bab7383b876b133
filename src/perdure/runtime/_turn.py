"""Planning one turn: from a fetched instance to the one commit that records it.

``plan_turn`` is pure: it filters the dequeued messages by the turn rules, resolves the pinned
version, runs the replay engine and records the outcome with the queue writes that carry out its
decisions (built by ``_outbox``; a rewind's history and reopened tasks come from ``_rewind``).
The dispatcher does the I/O around it (fetch, ack or abandon).

Turn rules:
- a message for another execution (a stale completion) is dropped with a warning;
- a start for an instance that has already started is dropped with a warning (a child's parent is
  told the child id is taken);
- messages to a finished instance, or to an instance that does not exist, are dropped;
- a duplicate completion is dropped (by the engine).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime

from perdure._errors import (
    ErrorDetails,
    HistoryFormatError,
    PerdureError,
    PoisonMessageError,
    UnregisteredOrchestrationError,
    type_name,
)
from perdure._state import OrchestrationState, OrchestrationStatus
from perdure._tracing import execution_trace_context
from perdure.engine._replay import OrchestrationFunction, ReplayOutcome, replay
from perdure.engine.events import (
    Completion,
    EventRaised,
    ExecutionRewound,
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
from perdure.runtime._outbox import Sender, decision_writes, end_writes, parent_of, reply_taken, reply_to_parent
from perdure.runtime._registry import OrchestrationRegistry
from perdure.runtime._rewind import answer_again, reopened_task_writes, rewound_history, start_from_row

__all__ = ["Abandon", "TurnPlan", "plan_turn"]


@dataclass(frozen=True, slots=True)
class Abandon:
    """Put the item back, to be retried after ``delay`` seconds."""

    delay: float
    reason: str


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


def plan_turn(
    item: OrchestrationItem,
    registry: OrchestrationRegistry,
    options: RuntimeOptions,
    now: datetime,
    child_states: Mapping[str, OrchestrationState | None] | None = None,
    *,
    tracing: bool = False,
) -> TurnPlan | Abandon:
    """Decide what one turn of ``item`` commits (or that it must be put back).

    ``child_states`` are the states of the children a rewind must restart (see
    :func:`perdure.runtime._rewind.children_to_rewind`), read by the dispatcher beforehand so that
    planning stays pure. With ``tracing``, the execution's span context is handed to its activities
    and children even when its start carried none (it then heads its own trace); a start that
    carried one always passes it on, so a traced client's trace continues through workers that do
    not trace.
    """
    return _Planner(item, registry, options, now, child_states or {}, tracing).plan()


class _Planner:
    """The turn rules applied to one item; collects what they drop and the answers they owe."""

    def __init__(
        self,
        item: OrchestrationItem,
        registry: OrchestrationRegistry,
        options: RuntimeOptions,
        now: datetime,
        child_states: Mapping[str, OrchestrationState | None],
        tracing: bool,
    ):
        self.item = item
        self.registry = registry
        self.options = options
        self.now = now
        self.child_states = child_states
        self.tracing = tracing
        self.warnings: list[str] = []
        self.notes: list[str] = []  # routine drops: a timer that lost a race, a second delivery
        self.replies: list[Message] = []  # answers to would-be parents of a duplicate start
        self.consumed: list[int] = []  # message ids consumed before the engine runs

    def planned(
        self,
        commit: TurnCommit,
        result: ReplayOutcome | None = None,
        replayed: Sequence[HistoryEvent] = (),
        *,
        rewound: bool = False,
    ) -> TurnPlan:
        return TurnPlan(commit, result, self.warnings, replayed, self.notes, rewound)

    def drop(self, message: QueuedMessage, why: str, *, expected: bool = False) -> None:
        """Consume a message without recording it; ``expected`` drops are routine (logged at debug level)."""
        self.consumed.append(message.message_id)
        note = f"dropped {_kind(message)} for instance {self.item.instance_id!r}: {why}"
        (self.notes if expected else self.warnings).append(note)

    def plan(self) -> TurnPlan | Abandon:
        item, state = self.item, self.item.state
        if state is None:
            for message in item.messages:
                self.drop(message, "the instance does not exist")
            return self.planned(TurnCommit(execution_id=0, consumed=self.consumed))
        if state.status.is_terminal:
            return self.finished(state)  # first: nothing may append to an ended execution
        if item.history is None:
            return self.fail_without_replay(
                HistoryFormatError(f"the stored history is corrupted: {item.history_error}")
            )
        attempts = max((m.dequeue_count for m in item.messages), default=0)
        if attempts > self.options.max_dispatch_attempts:
            return self.fail_without_replay(
                PoisonMessageError(
                    f"a message was delivered {attempts} times without a turn completing "
                    f"(the limit is {self.options.max_dispatch_attempts}); see the worker logs for why"
                )
            )
        corrupt = next((m for m in item.messages if m.event is None), None)
        if corrupt is not None:
            return self.fail_without_replay(HistoryFormatError(f"a queued message is corrupted: {corrupt.error}"))
        return self.advance(state, item.messages)

    def finished(self, state: OrchestrationState) -> TurnPlan | Abandon:
        """A turn for an instance that has ended: rewind it, restart it, or drop what came."""
        item = self.item
        if state.status is OrchestrationStatus.FAILED and item.history is not None:
            rewind = next((m for m in item.messages if isinstance(m.event, ExecutionRewound)), None)
            restart = next((m for m in item.messages if isinstance(m.event, StartRequested)), None)
            if not item.history and (rewind or restart):
                # It failed before it ever ran (e.g. its version was unknown): run it from the start now.
                return self.advance(state, [restart or self.start_again(state, rewind)])  # type: ignore[arg-type]
            if rewind is not None:
                return self.rewind(rewind)
        for message in item.messages:
            if isinstance(message.event, ExecutionRewound):
                # A rewound parent waits for this finished child.
                self.reply(answer_again(state, item.history, message.event))
            # A timer that lost a when_any, or an activity's second delivery: routine. A start is not.
            routine = message.event is not None and not isinstance(message.event, StartRequested)
            self.drop(message, f"the instance is {state.status.value}", expected=routine)
            if isinstance(message.event, StartRequested):
                self.reply(reply_taken(item.instance_id, message.event))  # else a parent would wait forever
        commit = TurnCommit(execution_id=state.execution_id, messages=self.replies, consumed=self.consumed)
        return self.planned(commit)

    def reply(self, message: Message | None) -> None:
        if message is not None:
            self.replies.append(message)

    def rewinds(self) -> list[HistoryEvent]:
        """Rewind messages of this turn, even ones the engine dropped because the run just ended:
        a rewound parent's new execution is where the answer must go."""
        return [m.event for m in self.item.messages if isinstance(m.event, ExecutionRewound)]

    def start_again(self, state: OrchestrationState, rewind: QueuedMessage) -> QueuedMessage:
        """The rewind of an instance that never ran, as a start from what its row recorded."""
        self.drop(rewind, "the instance never ran: it starts afresh", expected=True)
        return start_from_row(state, rewind)

    def advance(self, state: OrchestrationState, messages: Sequence[QueuedMessage]) -> TurnPlan | Abandon:
        """An ordinary turn: apply the messages to the current execution (starting it if needed)."""
        item = self.item
        history = item.history or []
        start: QueuedMessage | None = None
        accepted: list[QueuedMessage] = []
        for message in messages:
            if message.execution_id is not None and message.execution_id != state.execution_id:
                self.drop(message, f"it belongs to execution {message.execution_id}, not {state.execution_id}")
            elif isinstance(message.event, StartRequested):
                # After continue-as-new only the start addressed to the new execution may begin it.
                stray = state.execution_id > 1 and message.execution_id is None
                if history or start is not None or stray:
                    self.drop(message, "the instance has already started")
                    self.reply(reply_taken(item.instance_id, message.event))
                else:
                    start = message
            else:
                accepted.append(message)

        if not history and start is None:
            if not accepted:
                return self.planned(TurnCommit(execution_id=state.execution_id, consumed=self.consumed))
            # Messages that overtook the start of a new execution: let the start arrive first.
            return Abandon(self.options.backoff(1), "no start message yet for a new execution")

        if start is not None:
            assert isinstance(start.event, StartRequested)
            started = _pinned_start(self.registry, start.event)
            if isinstance(started, PerdureError):
                unresolved = started
                return self.unregistered(unresolved, lambda: self.fail_without_replay(unresolved))
            # What a continue-as-new handed over is addressed to this execution; it was raised before
            # what is addressed to whichever execution is current, though it was queued after it.
            accepted.sort(key=lambda m: m.execution_id is None)
            accepted.insert(0, start)
            new_events: list[HistoryEvent] = [started, *_events(accepted[1:])]
        else:
            started = history[0]  # type: ignore[assignment]
            if not isinstance(started, OrchestrationStarted):
                return self.fail_without_replay(HistoryFormatError("history does not begin with OrchestrationStarted"))
            new_events = _events(accepted)

        function = self.registry.get(started.name, started.version)
        if function is None:
            error = UnregisteredOrchestrationError(
                f"orchestration {started.name}@{started.version} is not registered on any worker that tried it"
            )
            return self.unregistered(error, lambda: self.fail_without_replay(error, started))
        return self.run(function, started, state.execution_id, accepted, new_events)

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

    def fail_without_replay(self, error: PerdureError, started: OrchestrationStarted | None = None) -> TurnPlan:
        """Fail the instance without running its code, consuming every message."""
        item, state = self.item, self.item.state
        assert state is not None
        details = ErrorDetails(type=type_name(error), message=str(error))
        history = item.history or []
        if started is None and history and isinstance(history[0], OrchestrationStarted):
            started = history[0]
        if started is None:
            request = next((m.event for m in item.messages if isinstance(m.event, StartRequested)), None)
            parent = parent_of(request, [])
        else:
            parent = parent_of(started, [*history, *self.rewinds()])
        new_events: list[HistoryEvent] = []
        if item.history is not None and history:
            new_events = [OrchestrationFailed(event_id=history[-1].event_id + 1, timestamp=self.now, error=details)]
        messages = list(self.replies)
        if parent is not None:
            messages.append(reply_to_parent(parent, error=details))
        commit = TurnCommit(
            execution_id=state.execution_id,
            history=new_events,
            state=_failed_update(state, started, details),
            messages=messages,
            consumed=[m.message_id for m in item.messages],
        )
        self.warnings.append(f"instance {item.instance_id!r} failed without running: {error}")
        return self.planned(commit)

    def run(
        self,
        function: OrchestrationFunction,
        started: OrchestrationStarted,
        execution_id: int,
        accepted: list[QueuedMessage],
        new_events: list[HistoryEvent],
        rewritten: list[HistoryEvent] | None = None,
    ) -> TurnPlan:
        """Run the engine; ``rewritten`` replaces the stored history (rewind) and is written in full."""
        item = self.item
        history = item.history or [] if rewritten is None else rewritten
        result = replay(
            function,
            instance_id=item.instance_id,
            execution_id=execution_id,
            history=history,
            new_events=new_events,
            now=self.now,
            determinism_guards=self.options.determinism_guards,
        )
        if not history and result.new_events and isinstance(result.new_events[0], OrchestrationStarted):
            started = result.new_events[0]  # as recorded, time-stamped: a root trace id derives from it
        for index, why in result.dropped:
            self.drop(accepted[index], why, expected=True)
        self.warnings += (f"instance {item.instance_id!r}: {warning}" for warning in result.warnings)
        consumed = {*self.consumed, *(accepted[i].message_id for i in result.consumed)}
        sender = self.sender(started, execution_id)
        outbox = decision_writes(result.decisions, sender)
        terminal = result.terminal_event
        carried: list[HistoryEvent] = []
        if isinstance(terminal, OrchestrationContinuedAsNew):
            # Unawaited events first, then what arrived behind the continue-as-new, all in arrival order,
            # addressed to the new execution so that they go before what is still queued for the instance.
            used = set(result.consumed)
            left = [m for i, m in enumerate(accepted) if i not in used]
            consumed.update(m.message_id for m in left)
            carried = [EventRaised(name=e.name, data=e.data) for e in result.carryover]
            # A completion answers a task of the execution that ends here; everything else carries over.
            carried += [m.event for m in left if m.event is not None and not isinstance(m.event, Completion)]
        recursive = isinstance(terminal, OrchestrationTerminated) and self.terminate_recursively(accepted, result)
        parent = parent_of(started, [*history, *result.new_events, *self.rewinds()])
        ending = end_writes(sender, result, history, parent, carried=carried, recursive=recursive)
        commit = TurnCommit(
            execution_id=execution_id,
            history=result.new_events if rewritten is None else [*rewritten, *result.new_events],
            state=_instance_update(started, result, execution_id),
            activity_items=outbox.activity_items,
            messages=[*self.replies, *outbox.messages, *ending],
            consumed=sorted(consumed),
        )
        return self.planned(commit, result, history, rewound=rewritten is not None)

    def terminate_recursively(self, accepted: list[QueuedMessage], result: ReplayOutcome) -> bool:
        return any(
            isinstance(accepted[i].event, TerminateRequested) and accepted[i].event.recursive  # type: ignore[union-attr]
            for i in result.consumed
        )

    # --- rewind ----------------------------------------------------------------------------------

    def rewind(self, request: QueuedMessage) -> TurnPlan | Abandon:
        """Continue a failed execution in a new one, from where it failed (see ``_rewind``)."""
        item, state = self.item, self.item.state
        assert state is not None and item.history
        started = item.history[0]
        if not isinstance(started, OrchestrationStarted):
            return self.fail_without_replay(HistoryFormatError("history does not begin with OrchestrationStarted"))
        function = self.registry.get(started.name, started.version)
        if function is None:
            error = UnregisteredOrchestrationError(
                f"cannot rewind: orchestration {started.name}@{started.version} is not registered"
            )
            return self.unregistered(error, lambda: self.refuse(error))
        for message in item.messages:
            if message is not request:
                self.drop(message, "it was addressed to the failed execution", expected=True)
        assert isinstance(request.event, ExecutionRewound)
        marker = ExecutionRewound(reason=request.event.reason, parent_execution_id=request.event.parent_execution_id)
        kept = rewound_history(item.history)
        execution_id = state.execution_id + 1
        plan = self.run(function, started, execution_id, [request], [marker], rewritten=kept)
        if plan.result is not None and plan.result.terminal_event is not None:
            return plan  # the code failed again at once: nothing to dispatch
        reopened = reopened_task_writes(kept, self.sender(started, execution_id), self.child_states)
        commit = replace(
            plan.commit,
            messages=[*plan.commit.messages, *reopened.messages],
            activity_items=[*plan.commit.activity_items, *reopened.activity_items],
        )
        return replace(plan, commit=commit)

    def refuse(self, error: PerdureError) -> TurnPlan:
        """Consume every message and change nothing (the instance stays as it is)."""
        for message in self.item.messages:
            self.drop(message, f"refused: {error}")
        assert self.item.state is not None
        return self.planned(TurnCommit(execution_id=self.item.state.execution_id, consumed=self.consumed))


def _pinned_start(registry: OrchestrationRegistry, request: StartRequested) -> OrchestrationStarted | PerdureError:
    """The start of a new execution, pinned to the version the registry's policy resolves."""
    try:
        version = registry.resolve(request.name, request.version)
    except UnregisteredOrchestrationError as exc:
        return exc
    return OrchestrationStarted(
        name=request.name,
        version=version,
        input=request.input,
        parent_instance=request.parent_instance,
        parent_id=request.parent_id,
        parent_execution_id=request.parent_execution_id,
        trace_context=request.trace_context,
    )


def _instance_update(started: OrchestrationStarted, result: ReplayOutcome, execution_id: int) -> InstanceUpdate:
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
        parent_instance_id=started.parent_instance,
    )


def _failed_update(
    state: OrchestrationState, started: OrchestrationStarted | None, error: ErrorDetails
) -> InstanceUpdate:
    """The instance row of an execution failed without running its code: only the status and error change."""
    return InstanceUpdate(
        name=state.name,
        version=started.version if started else state.version,
        status=OrchestrationStatus.FAILED,
        execution_id=state.execution_id,
        input=state.input,
        error=error,
        custom_status=state.custom_status,
        parent_instance_id=state.parent_instance_id,
    )


def _events(messages: list[QueuedMessage]) -> list[HistoryEvent]:
    events = [m.event for m in messages]
    assert all(e is not None for e in events), "corrupted messages are handled before replay"
    return events  # type: ignore[return-value]


def _kind(message: QueuedMessage) -> str:
    return type(message.event).__name__ if message.event is not None else "a corrupted message"
