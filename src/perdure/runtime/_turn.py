"""Planning one turn: from a fetched instance to the one commit that records it.

``plan_turn`` is pure: it filters the dequeued messages by the turn rules, resolves the pinned
version, runs the replay engine and records the outcome with the queue writes that carry out its
decisions (built by ``_outbox``). Turns that end an execution without running its code, and
rewinds, are planned in ``_turn_endings``. The dispatcher does the I/O around it (fetch, ack or
abandon).

Turn rules:
- a completion for an earlier execution that rewinds have continued is forwarded to the current
  one (``_rewind.forwarded``); any other message for an earlier execution (a stale completion) is
  dropped with a warning, and one for a later execution than the current one with an error naming
  both (docs/turns.md);
- a start for an instance that has already started is dropped with a warning (a child's parent is
  told the child id is taken);
- a rewind request to an instance that has not failed is dropped (a running child of a rewound
  parent is left alone);
- to a FAILED instance, messages that carry input are retained with the failed execution
  (``_retained``); other messages to a finished instance, or to an instance that does not exist,
  are dropped;
- a duplicate completion is dropped (by the engine);
- messages to a PENDING instance whose delayed start has not come wait for it (put back without
  counting a delivery), except a terminate, which ends it at once.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime

from perdure._errors import HistoryFormatError, PerdureError, PoisonMessageError, UnregisteredOrchestrationError
from perdure._payloads import Payloads, PayloadTypes
from perdure._state import OrchestrationState, OrchestrationStatus
from perdure.engine._replay import LiveExecution, OrchestrationFunction, ReplayOutcome, replay, resume
from perdure.engine.events import (
    TERMINAL_EVENTS,
    Completion,
    EventRaised,
    ExecutionRewound,
    HistoryEvent,
    OrchestrationContinuedAsNew,
    OrchestrationStarted,
    OrchestrationTerminated,
    StartRequested,
    TerminateRequested,
    TimerFired,
)
from perdure.providers._base import OrchestrationItem, QueuedMessage, TurnCommit
from perdure.runtime._options import RuntimeOptions
from perdure.runtime._outbox import decision_writes, end_writes, is_time_out, parent_of, reply_taken, stop_writes
from perdure.runtime._registry import OrchestrationRegistry, ResultTypes
from perdure.runtime._retained import never_ran, retainable, retained_events, split_retained
from perdure.runtime._rewind import (
    answer_again,
    carried_into_rewind,
    open_tasks,
    renumbering,
    reopened_task_writes,
    restart_request,
    rewind_requested,
    rewound_history,
)
from perdure.runtime._turn_endings import (
    Abandon,
    Input,
    TurnEndings,
    TurnPlan,
    ended_update,
    instance_update,
    message_ids,
)

__all__ = ["Abandon", "TurnPlan", "plan_failure", "plan_turn"]


def plan_turn(
    item: OrchestrationItem,
    registry: OrchestrationRegistry,
    options: RuntimeOptions,
    now: datetime,
    child_states: Mapping[str, OrchestrationState | None] | None = None,
    *,
    earlier: Mapping[int, list[HistoryEvent]] | None = None,
    tracing: bool = False,
    live: LiveExecution | None = None,
    keep: bool = False,
    payloads: Payloads | None = None,
    types: PayloadTypes | None = None,
) -> TurnPlan | Abandon:
    """Decide what one turn of ``item`` commits (or that it must be put back).

    ``child_states`` are the states of the children a rewind must restart (see
    :func:`perdure.runtime._rewind.children_to_rewind`), and ``earlier`` the histories of the
    earlier executions that completions of this turn are addressed to (see
    :func:`perdure.runtime._rewind.earlier_executions`), both read by the dispatcher beforehand so
    that planning stays pure. With ``tracing``, the execution's span context is handed to its
    activities and children even when its start carried none (it then heads its own trace); a
    start that carried one always passes it on, so a traced client's trace continues through
    workers that do not trace. ``payloads`` (default: ``options.payloads()``) and ``types`` (default:
    the orchestrations' return annotations) are how the engine converts, encodes and decodes values.

    ``live`` is the execution's state an execution cache kept after its last turn, which must have
    been built from ``item.history`` exactly (the cache checks it against the store): the turn
    then applies only its new messages to it. With ``keep``, the plan's ``result.live`` is the state
    to keep after this turn, if the execution goes on; whoever does not keep a state closes it.

    Raises:
        UnreadablePayloadError: if this process cannot decode the instance's payloads (see ``replay``).
    """
    rewinding = rewind_requested(item.state)
    if rewinding:
        # Planned as the FAILED instance it still is; a turn that does not rewind it leaves it FAILED.
        assert item.state is not None
        item = replace(item, state=replace(item.state, status=OrchestrationStatus.FAILED))
    planner = _Planner(item, registry, options, now, tracing)
    planner.child_states = child_states or {}
    planner.earlier = earlier or {}
    planner.live, planner.keep = live, keep
    planner.payloads = payloads or options.payloads()
    planner.types = types or ResultTypes(registry, None)
    plan = planner.plan()
    if rewinding and isinstance(plan, TurnPlan) and plan.commit.state is None:
        assert item.state is not None and item.state.error is not None
        failed = ended_update(item.state, None, OrchestrationStatus.FAILED, item.state.error)
        plan = replace(plan, commit=replace(plan.commit, state=failed))
    return plan


def plan_failure(
    item: OrchestrationItem,
    registry: OrchestrationRegistry,
    options: RuntimeOptions,
    now: datetime,
    error: PerdureError,
) -> TurnPlan:
    """What to record instead of a turn the store refused: the instance fails with ``error``.

    It fails without running its code, consuming its messages. An instance that is missing or
    whose execution has ended has nothing left to fail: its messages are dropped instead.
    """
    planner = _Planner(item, registry, options, now, False)
    state = item.state
    # A status that reads as finished may be a corrupted one: then the history says whether it ran on.
    if state is not None and (item.state_error or not state.status.is_terminal) and not _ended(state, item.history):
        # What the turn carried is what the store refused: keeping it would be refused again.
        return planner.fail_without_replay(error, retain=False)
    for message in item.messages:
        planner.drop(message, f"the store refused its turn: {error}")
    return planner.planned(
        TurnCommit(execution_id=0 if state is None else state.execution_id, consumed=planner.consumed)
    )


class _Planner(TurnEndings):
    """The turn rules applied to one item; collects what they drop and the answers they owe."""

    def plan(self) -> TurnPlan | Abandon:
        item, state = self.item, self.item.state
        if state is None:
            for message in item.messages:
                self.drop(message, "the instance does not exist")
            return self.planned(TurnCommit(execution_id=0, consumed=self.consumed))
        if item.state_error is not None and not _ended(state, item.history):
            # The row, not the code, is broken: fail this one instance (which rewrites a readable row).
            return self.fail_without_replay(
                HistoryFormatError(f"the stored instance row is corrupted: {item.state_error}")
            )
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
        return self.advance(state, item.messages, item.history)

    def finished(self, state: OrchestrationState) -> TurnPlan | Abandon:
        """A turn for an instance that has ended: rewind it, restart it, retain or drop what came."""
        item, history = self.item, self.item.history
        failed = state.status is OrchestrationStatus.FAILED
        rewind = next((m for m in item.messages if isinstance(m.event, ExecutionRewound)), None)
        restart = next((m for m in item.messages if isinstance(m.event, StartRequested)), None)
        if failed and history is None and rewind is not None:
            return self.refuse_rewind(
                rewind, HistoryFormatError(f"the stored history cannot be read: {item.history_error}")
            )
        if failed and history is not None and never_ran(history) and (rewind or restart):
            # It failed before it ever ran (e.g. its version was unknown): run it from its start now.
            start = restart or restart_request(state, history, rewind)  # type: ignore[arg-type]
            return self.restart(state, history, start)
        if failed and rewind is not None:
            return self.rewind(rewind)
        retained: list[HistoryEvent] = []
        for message in item.messages:
            event = self.addressed(message, state.execution_id) if failed and history is not None else None
            if retainable(event):
                assert event is not None
                self.consumed.append(message.message_id)
                retained.append(event)
                continue
            if isinstance(message.event, ExecutionRewound):
                self.reply(answer_again(state, history, message.event))  # a rewound parent waits for this child
            # A timer that lost a when_any, or an activity's second delivery: routine. A start is not.
            routine = message.event is not None and not isinstance(message.event, StartRequested)
            self.drop(message, f"the instance is {state.status.value}", expected=routine)
            if isinstance(message.event, StartRequested):
                self.reply(reply_taken(item.instance_id, message.event))  # else a parent would wait forever
        if retained:
            self.notes.append(f"kept {len(retained)} late message(s) with the failed execution {state.execution_id}")
        after = history[-1].event_id if history else 0
        commit = TurnCommit(
            execution_id=state.execution_id,
            history=retained_events(retained, after, self.now),
            messages=self.replies,
            consumed=self.consumed,
        )
        return self.planned(commit)

    def restart(
        self, state: OrchestrationState, history: list[HistoryEvent], start: QueuedMessage
    ) -> TurnPlan | Abandon:
        """Run an instance that never ran, in a new execution: from ``start``, then what it retained."""
        execution_id = state.execution_id + 1
        others: list[QueuedMessage] = []
        for message in self.item.messages:
            if isinstance(message.event, ExecutionRewound | StartRequested):
                if message.message_id != start.message_id:
                    self.drop(message, "the instance never ran: it starts afresh", expected=True)
            else:
                others.append(message)  # what came with the request goes after what it kept
        fresh = replace(state, status=OrchestrationStatus.PENDING, execution_id=execution_id)
        prior = [Input(None, e) for e in history if not isinstance(e, StartRequested)]
        return self.advance(fresh, [replace(start, execution_id=execution_id), *others], [], prior)

    def advance(
        self,
        state: OrchestrationState,
        messages: Sequence[QueuedMessage],
        history: list[HistoryEvent],
        prior: Sequence[Input] = (),
    ) -> TurnPlan | Abandon:
        """An ordinary turn: apply the messages to the current execution (starting it if needed).

        ``prior`` are events an instance that never ran retained; they go right after its start.
        """
        start, accepted = self.sort_messages(state, messages, history)
        if not history and start is None:
            if not accepted:
                return self.planned(TurnCommit(execution_id=state.execution_id, consumed=self.consumed))
            if state.status is OrchestrationStatus.PENDING:
                # Its start is delayed (start_at): a terminate ends it now, anything else waits for it.
                terminate = next((i for i in accepted if isinstance(i.event, TerminateRequested)), None)
                if terminate is not None:
                    return self.terminate_without_code(state, [], None, terminate)
                delay = self.options.max_dispatch_backoff
                return Abandon(delay, "its delayed start has not come yet", undo_delivery=True)
            # Messages that overtook the start of a new execution: let the start arrive first.
            return Abandon(self.options.backoff(1), "no start message yet for a new execution")

        if start is not None:
            assert isinstance(start.event, StartRequested)
            started = _pinned_start(self.registry, start.event)
            if isinstance(started, PerdureError):
                return self.cannot_run(state, history, started, None, [Input(start, start.event), *prior, *accepted])
            # What a continue-as-new handed over is addressed to this execution; it was raised before
            # what is addressed to whichever execution is current, though it was queued after it.
            accepted.sort(key=lambda i: i.message is not None and i.message.execution_id is None)
            inputs = [Input(start, started), *prior, *accepted]
        else:
            started = history[0]  # type: ignore[assignment]
            if not isinstance(started, OrchestrationStarted):
                return self.fail_without_replay(HistoryFormatError("history does not begin with OrchestrationStarted"))
            inputs = accepted

        function = self.registry.get(started.name, started.version)
        if function is None:
            error = UnregisteredOrchestrationError(
                f"orchestration {started.name}@{started.version} is not registered on any worker that tried it"
            )
            return self.cannot_run(state, history, error, started, inputs)
        return self.run(function, started, state.execution_id, inputs, history)

    def sort_messages(
        self, state: OrchestrationState, messages: Sequence[QueuedMessage], history: list[HistoryEvent]
    ) -> tuple[QueuedMessage | None, list[Input]]:
        """The start of a new execution (if one came) and the other inputs; drops what the rules drop."""
        start: QueuedMessage | None = None
        accepted: list[Input] = []
        for message in messages:
            event = self.addressed(message, state.execution_id)
            if message.execution_id is not None and message.execution_id > state.execution_id:
                # No turn addresses an execution before it exists: the store is damaged, or the id was
                # reused after a purge while a child of the purged instance still ran (docs/turns.md).
                newer = f"it is addressed to execution {message.execution_id}, after the current {state.execution_id}"
                self.drop(message, newer, error=True)
            elif event is None:
                why = f"it belongs to execution {message.execution_id}, not {state.execution_id}"
                # Time-outs outlive attempts, and timers the ended execution cancelled or left still fire.
                self.drop(message, why, expected=is_time_out(message.event) or isinstance(message.event, TimerFired))
            elif isinstance(event, StartRequested):
                # After continue-as-new only the start addressed to the new execution may begin it.
                stray = state.execution_id > 1 and message.execution_id is None
                if history or start is not None or stray:
                    self.drop(message, "the instance has already started")
                    self.reply(reply_taken(self.item.instance_id, event))
                else:
                    start = message
            elif isinstance(event, ExecutionRewound):
                self.drop(message, "the instance has not failed: there is nothing to rewind", expected=True)
            else:
                accepted.append(Input(message, event))
        return start, accepted

    def run(
        self,
        function: OrchestrationFunction,
        started: OrchestrationStarted,
        execution_id: int,
        inputs: list[Input],
        history: list[HistoryEvent],
        *,
        rewritten: bool = False,
    ) -> TurnPlan:
        """Run the engine; a ``rewritten`` history (a rewind's) is written in full."""
        result = self.engine(function, execution_id, [i.event for i in inputs], history, rewritten)
        if not history and result.new_events and isinstance(result.new_events[0], OrchestrationStarted):
            started = result.new_events[0]  # as recorded, time-stamped: a root trace id derives from it
        failed = result.status is OrchestrationStatus.FAILED
        kept = [i for i in result.unapplied if retainable(inputs[i].event)] if failed else []
        for index, why in result.dropped:
            if index not in kept:
                self.drop_input(inputs[index], why)
        self.warnings += (f"instance {self.item.instance_id!r}: {warning}" for warning in result.warnings)
        consumed = {*self.consumed, *message_ids(inputs[i] for i in result.consumed)}
        sender = self.sender(started, execution_id)
        outbox = decision_writes(result.decisions, sender)
        stopping = stop_writes(sender, history, result)
        terminal = result.terminal_event
        carried: list[HistoryEvent] = []
        if isinstance(terminal, OrchestrationContinuedAsNew):
            carried = _carried_over(result, inputs, consumed)
        recursive = isinstance(terminal, OrchestrationTerminated) and self.terminate_recursively(
            inputs, result.consumed
        )
        parent = parent_of(started)
        ending = end_writes(sender, result, history, parent, carried=carried, recursive=recursive)
        last = result.new_events[-1] if result.new_events else (history[-1] if history else None)
        recorded = [
            *result.new_events,
            *retained_events([inputs[i].event for i in kept], last.event_id if last else 0, self.now),
        ]
        commit = TurnCommit(
            execution_id=execution_id,
            history=[*history, *recorded] if rewritten else recorded,
            state=instance_update(started, result, execution_id),
            activity_items=outbox.activity_items,
            messages=[*self.replies, *outbox.messages, *stopping.messages, *ending],
            consumed=sorted(consumed),
            cancelled_activities=stopping.cancelled_activities,
        )
        return self.planned(commit, result, history, rewound=rewritten)

    def engine(
        self,
        function: OrchestrationFunction,
        execution_id: int,
        events: list[HistoryEvent],
        history: list[HistoryEvent],
        rewritten: bool,
    ) -> ReplayOutcome:
        """Resume the execution's kept state with ``events`` if it was built from ``history``, else replay."""
        live, self.live = self.live, None  # used once, or not at all
        if live is not None and not rewritten and _continues(live, function, execution_id, history):
            return resume(live, new_events=events, now=self.now)
        return replay(
            function,
            instance_id=self.item.instance_id,
            execution_id=execution_id,
            history=history,
            new_events=events,
            now=self.now,
            determinism_guards=self.options.determinism_guards,
            keep=self.keep and not rewritten,
            payloads=self.payloads,
            types=self.types,
        )

    # --- rewind ----------------------------------------------------------------------------------

    def rewind(self, request: QueuedMessage) -> TurnPlan | Abandon:
        """Continue a failed execution in a new one, from where it failed (see ``_rewind``).

        The new execution applies, after its ``ExecutionRewound``, what the failed one retained and
        what arrived with the request; then every task still open is dispatched again.
        """
        item, state = self.item, self.item.state
        assert state is not None and item.history
        run, retained = split_retained(item.history)
        started = run[0] if run else None
        assert isinstance(request.event, ExecutionRewound)
        marker = ExecutionRewound(reason=request.event.reason, parent_execution_id=request.event.parent_execution_id)
        if not isinstance(started, OrchestrationStarted):
            return self.refuse_rewind(request, HistoryFormatError("history does not begin with OrchestrationStarted"))
        kept, ids = rewound_history(run), renumbering(run)
        inputs = [Input(request, marker), *(Input(None, e) for e in carried_into_rewind(retained, ids))]
        for message in item.messages:
            event = self.addressed(message, state.execution_id) if message is not request else None
            carried = carried_into_rewind([event], ids) if retainable(event) else []  # type: ignore[list-item]
            inputs += [Input(message, e) for e in carried]
            if message is not request and not carried:
                self.drop(message, "it was addressed to the failed execution", expected=True)
        function = self.registry.get(started.name, started.version)
        if function is None:
            error = UnregisteredOrchestrationError(
                f"orchestration {started.name}@{started.version} is not registered on any worker that tried it"
            )
            return self.unregistered(error, lambda: self.failed_rewind(started, kept, inputs, error, refused=True))
        execution_id = state.execution_id + 1
        plan = self.run(function, started, execution_id, inputs, kept, rewritten=True)
        result = plan.result
        assert result is not None
        if 0 in result.unapplied:  # the engine failed the run before it applied the rewind
            assert result.error is not None
            return self.failed_rewind(started, kept, inputs, result.error, refused=False)
        if result.terminal_event is not None:
            return plan  # the code failed again at once: nothing to dispatch
        still_open = [t for t in open_tasks([*kept, *result.new_events]) if t.event_id <= len(kept)]
        reopened = reopened_task_writes(still_open, self.sender(started, execution_id), self.child_states)
        commit = replace(
            plan.commit,
            messages=[*plan.commit.messages, *reopened.messages],
            activity_items=[*plan.commit.activity_items, *reopened.activity_items],
        )
        return replace(plan, commit=commit)

    def terminate_recursively(self, inputs: list[Input], consumed: list[int]) -> bool:
        requests = [inputs[i].event for i in consumed]
        return any(isinstance(e, TerminateRequested) and e.recursive for e in requests)


def _continues(
    live: LiveExecution, function: OrchestrationFunction, execution_id: int, history: list[HistoryEvent]
) -> bool:
    """Whether ``live`` is the state a replay of ``history`` by ``function`` would build."""
    last = history[-1].event_id if history else 0
    return live.orchestration is function and live.execution_id == execution_id and live.next_event_id == last + 1


def _ended(state: OrchestrationState, history: Sequence[HistoryEvent] | None) -> bool:
    """Whether the execution has ended: its history says so (what a failed one retained may follow
    its terminal event), or it ended before it ever ran."""
    if history == [] or (history and never_ran(history)):
        return state.status.is_terminal
    return any(isinstance(e, TERMINAL_EVENTS) for e in history or ())


def _carried_over(result: ReplayOutcome, inputs: Sequence[Input], consumed: set[int]) -> list[HistoryEvent]:
    """What a continue-as-new hands to the next execution; the messages it takes join ``consumed``.

    Unawaited events first, then what arrived behind the continue-as-new, all in arrival order,
    addressed to the new execution so that they go before what is still queued for the instance.
    """
    used = set(result.consumed)
    left = [x for i, x in enumerate(inputs) if i not in used]
    consumed.update(message_ids(left))
    carried: list[HistoryEvent] = [EventRaised(name=e.name, data=e.data) for e in result.carryover]
    # A completion answers a task of the execution that ends here; everything else carries over.
    return carried + [x.event for x in left if not isinstance(x.event, Completion)]


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
