"""Planning one turn: from a fetched instance to the one commit that records it.

``plan_turn`` is pure: it filters the dequeued messages by the turn rules, resolves the pinned
version, runs the replay engine and translates its decisions into queue writes. The dispatcher
does the I/O around it (fetch, ack or abandon).

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
from typing import Any

from perdure._errors import (
    ErrorDetails,
    HistoryFormatError,
    InstanceAlreadyExistsError,
    PerdureError,
    PoisonMessageError,
    UnregisteredOrchestrationError,
    type_name,
)
from perdure._state import OrchestrationState, OrchestrationStatus
from perdure.engine._history import (
    ActivityScheduled,
    Completion,
    Decision,
    EventRaised,
    EventSent,
    ExecutionRewound,
    HistoryEvent,
    OrchestrationChained,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestrationStarted,
    OrchestrationTerminated,
    StartRequested,
    SubOrchestrationCompleted,
    SubOrchestrationFailed,
    SubOrchestrationScheduled,
    TerminateRequested,
    TimerCreated,
    TimerFired,
)
from perdure.engine._replay import OrchestrationFunction, TurnResult, run_turn
from perdure.providers._base import (
    ActivityRequest,
    InstanceUpdate,
    Message,
    OrchestrationItem,
    QueuedMessage,
    TurnCommit,
)
from perdure.runtime._options import RuntimeOptions
from perdure.runtime._registry import OrchestrationRegistry
from perdure.runtime._rewind import open_tasks, rewound_history
from perdure.runtime._tracing import execution_trace_context

__all__ = ["Abandon", "TurnPlan", "children_to_rewind", "plan_turn"]


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
    result: TurnResult | None = None
    warnings: list[str] = field(default_factory=list)
    replayed: Sequence[HistoryEvent] = ()
    notes: list[str] = field(default_factory=list)
    """Routine events worth a debug line (e.g. a late timer dropped after the instance finished)."""


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
    :func:`children_to_rewind`), read by the dispatcher beforehand so that planning stays pure.
    With ``tracing``, the execution's span context is handed to its activities and children even
    when its start carried none (it then heads its own trace); a start that carried one always
    passes it on, so a traced client's trace continues through workers that do not trace.
    """
    return _Planner(item, registry, options, now, child_states or {}, tracing).plan()


def children_to_rewind(item: OrchestrationItem) -> list[str]:
    """Instance ids of the children whose state a rewind turn of ``item`` needs."""
    state, history = item.state, item.history
    if state is None or state.status is not OrchestrationStatus.FAILED or not history:
        return []
    if not any(isinstance(m.event, ExecutionRewound) for m in item.messages):
        return []
    return [t.instance_id for t in open_tasks(rewound_history(history)) if isinstance(t, SubOrchestrationScheduled)]


class _Planner:
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
        self, commit: TurnCommit, result: TurnResult | None = None, replayed: Sequence[HistoryEvent] = ()
    ) -> TurnPlan:
        return TurnPlan(commit, result, self.warnings, replayed, self.notes)

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
                self.answer_again(message.event)  # a rewound parent waits for this finished child
            # A timer that lost a when_any, or an activity's second delivery: routine. A start is not.
            routine = message.event is not None and not isinstance(message.event, StartRequested)
            self.drop(message, f"the instance is {state.status.value}", expected=routine)
            if isinstance(message.event, StartRequested):
                self.reply_taken(message.event)  # else a parent would wait for this child forever
        commit = TurnCommit(execution_id=state.execution_id, messages=self.replies, consumed=self.consumed)
        return self.planned(commit)

    def rewinds(self) -> list[HistoryEvent]:
        """Rewind messages of this turn, even ones the engine dropped because the run just ended:
        a rewound parent's new execution is where the answer must go."""
        return [m.event for m in self.item.messages if isinstance(m.event, ExecutionRewound)]

    def start_again(self, state: OrchestrationState, rewind: QueuedMessage) -> QueuedMessage:
        """The rewind of an instance that never ran, as a start from what its row recorded."""
        self.drop(rewind, "the instance never ran: it starts afresh", expected=True)
        request = StartRequested(name=state.name, version=state.version, input=state.input)
        return replace(rewind, event=request, execution_id=state.execution_id)

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
                    self.reply_taken(message.event)
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
            started = self.resolve_start(start.event)
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

    def resolve_start(self, request: StartRequested) -> OrchestrationStarted | PerdureError:
        try:
            version = self.registry.resolve(request.name, request.version)
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

    def trace_context(self, started: OrchestrationStarted, execution_id: int) -> str | None:
        """The execution's span context, for what it starts; ``None`` when nothing is traced."""
        if started.trace_context is None and not self.tracing:
            return None
        return execution_trace_context(self.item.instance_id, execution_id, started)

    def reply_taken(self, request: StartRequested) -> None:
        if request.parent_instance is None or request.parent_id is None:
            return
        error = ErrorDetails.from_exception(
            InstanceAlreadyExistsError(f"an instance with id {self.item.instance_id!r} already exists")
        )
        self.replies.append(
            Message(
                instance_id=request.parent_instance,
                execution_id=request.parent_execution_id,
                event=SubOrchestrationFailed(source_event_id=request.parent_id, error=error),
            )
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
            parent = _parent(request, [])
        else:
            parent = _parent(started, [*history, *self.rewinds()])
        new_events: list[HistoryEvent] = []
        if item.history is not None and history:
            new_events = [OrchestrationFailed(event_id=history[-1].event_id + 1, timestamp=self.now, error=details)]
        messages = list(self.replies)
        if parent is not None:
            messages.append(_reply_to_parent(parent, error=details))
        commit = TurnCommit(
            execution_id=state.execution_id,
            history=new_events,
            state=InstanceUpdate(
                name=state.name,
                version=started.version if started else state.version,
                status=OrchestrationStatus.FAILED,
                execution_id=state.execution_id,
                input=state.input,
                error=details,
                custom_status=state.custom_status,
                parent_instance_id=state.parent_instance_id,
            ),
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
        result = run_turn(
            function,
            instance_id=item.instance_id,
            execution_id=execution_id,
            history=history,
            new_events=new_events,
            now=self.now,
        )
        if not history and result.new_events and isinstance(result.new_events[0], OrchestrationStarted):
            started = result.new_events[0]  # as recorded, time-stamped: a root trace id derives from it
        for index, why in result.dropped:
            self.drop(accepted[index], why, expected=True)
        consumed = {*self.consumed, *(accepted[i].message_id for i in result.consumed)}
        messages, worker_items = self.dispatch(result, started, execution_id)
        next_execution = execution_id
        status = result.status
        instance_input = started.input
        terminal = result.terminal_event
        parent = _parent(started, [*history, *result.new_events, *self.rewinds()])
        if isinstance(terminal, OrchestrationContinuedAsNew):
            next_execution = execution_id + 1
            instance_input = terminal.input
            request = StartRequested(
                name=started.name,
                version=terminal.version or started.version,  # the upgrade point is explicit
                input=terminal.input,
                parent_instance=started.parent_instance,
                parent_id=started.parent_id,
                parent_execution_id=parent.execution_id if parent else None,
                trace_context=started.trace_context,
            )
            messages.append(Message(instance_id=item.instance_id, execution_id=next_execution, event=request))
            # Unawaited events first, then what arrived behind the continue-as-new, all in arrival order,
            # addressed to the new execution so that they go before what is still queued for the instance.
            used = set(result.consumed)
            left = [m for i, m in enumerate(accepted) if i not in used]
            consumed.update(m.message_id for m in left)
            carried: list[HistoryEvent] = [EventRaised(name=e.name, data=e.data) for e in result.carryover]
            # A completion answers a task of the execution that ends here; everything else carries over.
            carried += [m.event for m in left if m.event is not None and not isinstance(m.event, Completion)]
            messages.extend(
                Message(instance_id=item.instance_id, execution_id=next_execution, event=e) for e in carried
            )
        elif isinstance(terminal, OrchestrationCompleted) and parent is not None:
            messages.append(_reply_to_parent(parent, output=terminal.output))
        elif isinstance(terminal, OrchestrationFailed | OrchestrationTerminated) and parent is not None:
            assert result.error is not None
            messages.append(_reply_to_parent(parent, error=result.error))
        if isinstance(terminal, OrchestrationTerminated) and self.terminate_recursively(accepted, result):
            full = [*history, *result.new_events]
            messages.extend(
                Message(instance_id=child, execution_id=None, event=TerminateRequested(reason=terminal.reason))
                for child in _open_children(full)
            )
        commit = TurnCommit(
            execution_id=execution_id,
            history=result.new_events if rewritten is None else [*rewritten, *result.new_events],
            state=InstanceUpdate(
                name=started.name,
                version=started.version,
                status=status,
                execution_id=next_execution,
                input=instance_input,
                output=result.output,
                error=result.error,
                custom_status=result.custom_status,
                parent_instance_id=started.parent_instance,
            ),
            worker_items=worker_items,
            messages=[*self.replies, *messages],
            consumed=sorted(consumed),
        )
        return self.planned(commit, result, history)

    def terminate_recursively(self, accepted: list[QueuedMessage], result: TurnResult) -> bool:
        return any(
            isinstance(accepted[i].event, TerminateRequested) and accepted[i].event.recursive  # type: ignore[union-attr]
            for i in result.consumed
        )

    def dispatch(
        self, result: TurnResult, started: OrchestrationStarted, execution_id: int
    ) -> tuple[list[Message], list[ActivityRequest]]:
        """Translate the turn's decisions into queue writes."""
        messages: list[Message] = []
        worker_items: list[ActivityRequest] = []
        for decision in result.decisions:
            if isinstance(decision, ActivityScheduled):
                worker_items.append(self.activity_request(decision, started, execution_id))
            elif isinstance(decision, TimerCreated):
                messages.append(self.timer_message(decision, execution_id))
            elif isinstance(decision, SubOrchestrationScheduled):
                messages.append(self.child_start(decision, started, execution_id))
            elif isinstance(decision, OrchestrationChained):
                request = StartRequested(
                    name=decision.name,
                    version=decision.version,
                    input=decision.input,
                    trace_context=self.trace_context(started, execution_id),
                )
                messages.append(Message(instance_id=decision.instance_id, execution_id=None, event=request))
            elif isinstance(decision, EventSent):
                event = EventRaised(name=decision.name, data=decision.data)
                messages.append(Message(instance_id=decision.instance_id, execution_id=None, event=event))
        return messages, worker_items

    def activity_request(
        self, decision: ActivityScheduled, started: OrchestrationStarted, execution_id: int
    ) -> ActivityRequest:
        return ActivityRequest(
            instance_id=self.item.instance_id,
            execution_id=execution_id,
            source_event_id=decision.event_id,
            name=decision.name,
            input=decision.input,
            queue=decision.queue,
            attempt=decision.attempt,
            orchestration_name=started.name,
            orchestration_version=started.version,
            trace_context=self.trace_context(started, execution_id),
        )

    def timer_message(self, decision: TimerCreated, execution_id: int) -> Message:
        fired = TimerFired(source_event_id=decision.event_id, fire_at=decision.fire_at)
        return Message(
            instance_id=self.item.instance_id, execution_id=execution_id, event=fired, visible_at=decision.fire_at
        )

    def child_start(
        self, decision: SubOrchestrationScheduled, started: OrchestrationStarted, execution_id: int
    ) -> Message:
        request = StartRequested(
            name=decision.name,
            version=decision.version,
            input=decision.input,
            parent_instance=self.item.instance_id,
            parent_id=decision.event_id,
            parent_execution_id=execution_id,
            trace_context=self.trace_context(started, execution_id),
        )
        return Message(instance_id=decision.instance_id, execution_id=None, event=request)

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
        messages, worker_items = self.dispatch_again(open_tasks(kept), started, execution_id)
        commit = replace(
            plan.commit,
            messages=[*plan.commit.messages, *messages],
            worker_items=[*plan.commit.worker_items, *worker_items],
        )
        return self.planned(commit, plan.result, plan.replayed)

    def refuse(self, error: PerdureError) -> TurnPlan:
        """Consume every message and change nothing (the instance stays as it is)."""
        for message in self.item.messages:
            self.drop(message, f"refused: {error}")
        assert self.item.state is not None
        return self.planned(TurnCommit(execution_id=self.item.state.execution_id, consumed=self.consumed))

    def dispatch_again(
        self, tasks: list[Decision], started: OrchestrationStarted, execution_id: int
    ) -> tuple[list[Message], list[ActivityRequest]]:
        """Queue writes that restart the tasks a failed run left open, for the new execution."""
        messages: list[Message] = []
        worker_items: list[ActivityRequest] = []
        for task in tasks:
            if isinstance(task, ActivityScheduled):
                worker_items.append(self.activity_request(task, started, execution_id))
            elif isinstance(task, TimerCreated):
                messages.append(self.timer_message(task, execution_id))
            elif isinstance(task, SubOrchestrationScheduled):
                if self.child_states.get(task.instance_id) is None:
                    messages.append(self.child_start(task, started, execution_id))  # purged: start it again
                else:  # the child rewinds itself, or answers again, to this execution
                    rewind = ExecutionRewound(reason="the parent was rewound", parent_execution_id=execution_id)
                    messages.append(Message(instance_id=task.instance_id, execution_id=None, event=rewind))
        return messages, worker_items

    def answer_again(self, request: ExecutionRewound) -> None:
        """A finished child tells a rewound parent's new execution how it ended."""
        state, history = self.item.state, self.item.history
        started = history[0] if history else None
        parent = _parent(started, [request]) if isinstance(started, OrchestrationStarted) else None
        if state is None or parent is None or request.parent_execution_id is None:
            return
        if state.status is OrchestrationStatus.COMPLETED:
            self.replies.append(_reply_to_parent(parent, output=state.output))
        elif state.error is not None:
            self.replies.append(_reply_to_parent(parent, error=state.error))


@dataclass(frozen=True, slots=True)
class _Parent:
    instance_id: str
    event_id: int
    execution_id: int | None


def _parent(started: HistoryEvent | None, events: Sequence[HistoryEvent]) -> _Parent | None:
    """Who awaits this instance: the parent from its start, at the parent's latest (rewound) execution."""
    if not isinstance(started, OrchestrationStarted | StartRequested):
        return None
    if started.parent_instance is None or started.parent_id is None:
        return None
    execution_id = started.parent_execution_id
    for event in events:
        if isinstance(event, ExecutionRewound) and event.parent_execution_id is not None:
            execution_id = event.parent_execution_id
    return _Parent(started.parent_instance, started.parent_id, execution_id)


def _reply_to_parent(parent: _Parent, *, output: Any = None, error: ErrorDetails | None = None) -> Message:
    """The child's completion, addressed to the parent execution that awaits it."""
    event: HistoryEvent
    if error is None:
        event = SubOrchestrationCompleted(source_event_id=parent.event_id, result=output)
    else:
        event = SubOrchestrationFailed(source_event_id=parent.event_id, error=error)
    return Message(instance_id=parent.instance_id, execution_id=parent.execution_id, event=event)


def _open_children(history: list[HistoryEvent]) -> list[str]:
    """Instance ids of children scheduled in ``history`` that have not reported back."""
    children = {e.event_id: e.instance_id for e in history if isinstance(e, SubOrchestrationScheduled)}
    for event in history:
        if isinstance(event, SubOrchestrationCompleted | SubOrchestrationFailed):
            children.pop(event.source_event_id, None)
    return list(children.values())


def _events(messages: list[QueuedMessage]) -> list[HistoryEvent]:
    events = [m.event for m in messages]
    assert all(e is not None for e in events), "corrupted messages are handled before replay"
    return events  # type: ignore[return-value]


def _kind(message: QueuedMessage) -> str:
    return type(message.event).__name__ if message.event is not None else "a corrupted message"
