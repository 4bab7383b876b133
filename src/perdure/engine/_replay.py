"""The replay engine: (orchestration, history, new events) in, one turn's outcome out.

It is pure and single-threaded: no I/O, no wall clock, no randomness, no asyncio event loop. It
drives the orchestration coroutine itself with ``send``/``throw`` (``_driver``); this module
matches the code's decisions and tasks against history.

How a turn runs:

1. The stored history is replayed event by event. ``OrchestrationStarted`` starts the coroutine;
   each completion resolves its task and resumes the coroutine until it blocks again. Decisions
   the code makes while replaying are queued and must match the next decision events recorded in
   history, in order: any difference is a :class:`NonDeterminismError`. Decisions made after the
   last stored event are new decisions and are appended.
2. The new events (the dequeued messages) are then applied the same way, but each is appended to
   history first, and decisions are appended as the code makes them. So history is the exact trace
   of the run: every decision follows the event that caused it, which is what step 1 relies on.

Decisions are history events (``ActivityScheduled``, ``TimerCreated``…); there is no separate
action type. The runtime acts on them after the turn is committed.

A replay asked to ``keep`` its state hands back the :class:`LiveExecution` (the suspended
coroutine and its tasks) when the execution goes on. :func:`resume` then applies only the next
turn's events to it, which gives exactly what a replay of the stored history would, as long as
that history is the one the state was built from (the runtime's execution cache checks it).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any, TypeVar

from perdure._errors import ErrorDetails, NonDeterminismError, PerdureError
from perdure._payloads import Payloads, PayloadTypes
from perdure._state import OrchestrationStatus
from perdure.engine._awaits import stuck_warnings, unawaited_warnings
from perdure.engine._context import OrchestrationContext
from perdure.engine._driver import CoroutineDriver, OrchestrationFunction
from perdure.engine._matching import application_order, same_decision
from perdure.engine._outcome import ReplayOutcome, StoredEnd, describe, failed_by_engine, stored_end
from perdure.engine._payload_fields import open_event, seal_event, started_input
from perdure.engine._task_table import TaskTable
from perdure.engine._tasks import DurableTask, ScheduledTask, resolved
from perdure.engine._waiting import open_event_waits
from perdure.engine.events import (
    TERMINAL_EVENTS,
    Completion,
    CustomStatusUpdated,
    Decision,
    EventRaised,
    ExecutionRewound,
    HistoryEvent,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestrationResumed,
    OrchestrationStarted,
    OrchestrationSuspended,
    OrchestrationTerminated,
    TaskCancelled,
    TerminateRequested,
)

__all__ = ["LiveExecution", "OrchestrationFunction", "ReplayOutcome", "describe", "replay", "resume"]

_E = TypeVar("_E", bound=HistoryEvent)

# Events an operator sends that act on a suspended instance; everything else waits for resume.
_CONTROL_EVENTS = (OrchestrationSuspended, OrchestrationResumed, OrchestrationTerminated, TerminateRequested)


def replay(
    orchestration: OrchestrationFunction,
    *,
    instance_id: str,
    execution_id: int,
    history: Sequence[HistoryEvent],
    new_events: Sequence[HistoryEvent],
    now: datetime,
    determinism_guards: bool = True,
    keep: bool = False,
    payloads: Payloads | None = None,
    types: PayloadTypes | None = None,
) -> ReplayOutcome:
    """Replay ``history``, apply ``new_events`` and return what the code decided.

    Args:
        orchestration: The orchestration function of the pinned name and version.
        instance_id: The instance id.
        execution_id: The execution the history belongs to.
        history: The stored history of this execution, in order.
        new_events: The dequeued messages' events, in queue order (``OrchestrationStarted`` first
            for a new execution).
        now: The turn time; new events are stamped with it, so ``ctx.now()`` is deterministic.
        determinism_guards: Refuse ``time.time()``, ``random`` and the like while the code runs (``_guards``).
        keep: Keep the execution's state for :func:`resume` (``ReplayOutcome.live``) if it goes on,
            instead of closing its coroutine.
        payloads: How payloads are converted and encoded (default: plain JSON, no codec). New
            decisions are returned encoded, encoded once the code has stopped (a codec may use the
            clock or randomness, as Fernet does, which the determinism guards refuse while the code
            runs); results and inputs reach the code decoded to the types its annotations (or
            ``result_type``) name.
        types: The result types of activities and orchestrations, for tasks without ``result_type``.

    Non-determinism and internal inconsistencies do not raise: the result fails the instance.

    Raises:
        UnreadablePayloadError: if a stored payload is encoded and ``payloads`` cannot decode it
            (no codec, or the wrong key): a problem of this process, not of the instance, so the
            turn must be retried elsewhere, not recorded.
    """
    engine = LiveExecution(orchestration, instance_id, execution_id, now, determinism_guards)
    if payloads is not None:
        engine.payloads = engine.code.payloads = engine.tasks.payloads = payloads
    engine.tasks.types = types
    return engine.run(history, new_events, keep)


def resume(live: LiveExecution, *, new_events: Sequence[HistoryEvent], now: datetime) -> ReplayOutcome:
    """Apply the next turn's ``new_events`` to an execution kept by an earlier turn, without replaying.

    ``live`` must come from the turn that recorded the last stored event of its execution (its
    ``ReplayOutcome.live``), and that turn must have been committed as it was; it is used up: the
    new outcome's ``live`` is the state to keep after this turn, if any. Everything else is as
    for :func:`replay`, whose result this equals.
    """
    return live.resume(new_events, now)


class LiveExecution:
    """An execution's engine state: its code's coroutine, its tasks, and what history says of them.

    Built by a replay; implements the ``_Engine`` protocol the context uses. An execution cache
    keeps one between turns (``replay(keep=True)``, then :func:`resume`); :meth:`close` ends it.
    """

    def __init__(
        self, orchestration: OrchestrationFunction, instance_id: str, execution_id: int, now: datetime, guarded: bool
    ):
        self.orchestration = orchestration
        self.instance_id = instance_id
        self.execution_id = execution_id
        self.now = now
        self.replaying = True
        self.current_time = now
        self.appended: list[HistoryEvent] = []
        self.next_event_id = 1
        self.last_stored_id = 0  # events after it are this turn's, and are not stored if the turn fails
        self.status = OrchestrationStatus.RUNNING
        self.finished = False  # a terminal event has been recorded
        self.terminate_pending = False  # a terminate came with the start: the code must not run first
        self.output: Any = None
        self.error: ErrorDetails | None = None
        self.custom_status: Any = None
        self.code = CoroutineDriver(guarded=guarded)
        self.applying: HistoryEvent | None = None  # the event being applied (while replaying: of history)
        self.warnings: list[str] = []
        # decisions the code made while replaying, not yet matched with recorded ones
        self.unmatched: deque[tuple[Decision, DurableTask[Any] | None]] = deque()
        self.payloads = _PLAIN_JSON
        self.tasks = TaskTable(self.payloads)
        self.history: Sequence[HistoryEvent] = ()

    def close(self) -> None:
        """Close the coroutine (its ``finally`` blocks run); the state cannot be resumed any more."""
        self.code.close()

    # --- driving the turn ---

    def run(self, history: Sequence[HistoryEvent], new_events: Sequence[HistoryEvent], keep: bool) -> ReplayOutcome:
        self.last_stored_id = history[-1].event_id if history else 0
        self.history = history
        try:
            for event in history:
                self.check_position(event)
                self.next_event_id = event.event_id + 1
                self.apply(event)
            self.replaying = False
            self.history = ()  # not needed any more: the code makes new decisions from here on
            # Decisions the code makes after the last stored event are new, as in the Durable Task
            # family: a committed turn records all its decisions, so this only happens to a history
            # cut short on purpose (a rewound execution) or to code that now does more before it
            # blocks. Only a decision that contradicts a recorded one is non-determinism.
            while self.unmatched:
                decision, task = self.unmatched.popleft()
                self.record(self.append(resolved(decision, task)), task)
        except PerdureError as exc:
            self.code.close()
            return failed_by_engine(exc, stored_end(history), len(new_events), self.now, self.applying)
        except BaseException:
            self.code.close()
            raise
        return self.apply_messages(new_events, lambda: stored_end(history), keep)

    def resume(self, new_events: Sequence[HistoryEvent], now: datetime) -> ReplayOutcome:
        if self.finished or not self.code.running or self.replaying:
            raise RuntimeError("only an execution kept after a turn that left it running can be resumed")
        stored = StoredEnd(self.next_event_id - 1, self.payloads.seal(self.custom_status), False)  # as stored
        self.now = self.current_time = now
        self.appended, self.warnings, self.applying = [], [], None
        self.last_stored_id = stored.last_event_id
        return self.apply_messages(new_events, lambda: stored, True)

    def apply_messages(
        self, new_events: Sequence[HistoryEvent], stored: Callable[[], StoredEnd], keep: bool
    ) -> ReplayOutcome:
        """Apply a turn's new events (after the stored history) and say what came of them."""
        consumed: list[int] = []
        dropped: list[tuple[int, str]] = []
        unapplied: list[int] = []
        carryover: list[EventRaised] = []
        try:
            held_back = False
            for index in self.application_order(new_events):
                event = new_events[index]
                if isinstance(self.last_terminal, OrchestrationContinuedAsNew):
                    break  # the rest stays queued for the next execution
                if self.finished:
                    consumed.append(index)
                    dropped.append((index, "the execution has already ended"))
                    unapplied.append(index)
                    continue
                if not isinstance(event, _CONTROL_EVENTS) and (
                    held_back or self.status is OrchestrationStatus.SUSPENDED
                ):
                    # Leave it queued; once one message is held back, later ones wait too, so order is kept.
                    held_back = True
                    continue
                reason = self.apply_new(event)
                consumed.append(index)
                if reason is not None:
                    dropped.append((index, reason))
            if isinstance(self.last_terminal, OrchestrationContinuedAsNew):
                carryover = self.tasks.unawaited_events()
            self.warnings += stuck_warnings(self.code.awaited, self.tasks.open.values(), self.tasks.waiters.values())
        except PerdureError as exc:
            self.code.close()
            return failed_by_engine(exc, stored(), len(new_events), self.now, self.applying)
        except BaseException:
            self.code.close()
            raise
        live = self if keep and not self.finished and self.code.running else None
        if live is None:
            self.code.close()
        return ReplayOutcome(
            new_events=[seal_event(event, self.payloads) for event in self.appended],
            consumed=consumed,
            status=self.status,
            output=self.payloads.seal(self.output),
            error=self.error,
            custom_status=self.payloads.seal(self.custom_status),
            waiting_for=open_event_waits(self.tasks.waiters.values(), self.finished),
            carryover=carryover,
            dropped=dropped,
            unapplied=unapplied,
            warnings=self.warnings,
            live=live,
        )

    def application_order(self, new_events: Sequence[HistoryEvent]) -> list[int]:
        """The order to apply the new events in (see :func:`~perdure.engine._matching.application_order`)."""
        order, self.terminate_pending = application_order(new_events)
        return order

    @property
    def last_terminal(self) -> HistoryEvent | None:
        last = self.appended[-1] if self.appended else None
        return last if isinstance(last, TERMINAL_EVENTS) else None

    def check_position(self, event: HistoryEvent) -> None:
        if event.event_id != self.next_event_id:
            raise NonDeterminismError(
                f"history is out of order: expected event {self.next_event_id}, found {describe(event)}"
            )

    def apply_new(self, event: HistoryEvent) -> str | None:
        """Append a new event and apply it; returns why it was dropped instead, if it was."""
        late = self.tasks.late_completion(event) if isinstance(event, Completion) else None
        if late is not None:
            return late
        if isinstance(event, TerminateRequested):
            event = OrchestrationTerminated(reason=event.reason)
        elif isinstance(event, OrchestrationSuspended) and self.status is OrchestrationStatus.SUSPENDED:
            return "the instance is already suspended"
        elif isinstance(event, OrchestrationResumed) and self.status is not OrchestrationStatus.SUSPENDED:
            return "the instance is not suspended"
        elif event.message_only:
            raise NonDeterminismError(f"{type(event).__name__} cannot be applied by the engine")
        self.apply(self.append(event))
        return None

    def append(self, event: _E) -> _E:
        event = replace(event, event_id=self.next_event_id, timestamp=self.now)
        self.next_event_id += 1
        self.appended.append(event)
        return event

    def apply(self, event: HistoryEvent) -> None:
        self.applying = event
        self.current_time = event.timestamp
        if isinstance(event, Decision):
            self.match_recorded(event)
            return
        if isinstance(event, OrchestrationTerminated):
            # A terminate may stop the code before it decides anything (one that came with the
            # start): on replay, what the code would have decided is not history's to match.
            self.unmatched.clear()
        self.check_unmatched(event)
        if isinstance(event, OrchestrationStarted):
            self.start(event)
        elif not self.code.started:
            raise NonDeterminismError(f"history does not begin with OrchestrationStarted: found {self.name(event)}")
        elif isinstance(event, Completion):
            self.tasks.complete(event, self.name)
        elif isinstance(event, EventRaised):
            self.tasks.deliver(event)
        elif isinstance(event, OrchestrationSuspended):
            self.status = OrchestrationStatus.SUSPENDED
        elif isinstance(event, OrchestrationResumed):
            self.status = OrchestrationStatus.RUNNING
        elif isinstance(event, OrchestrationTerminated):
            self.finish(OrchestrationStatus.TERMINATED)
            self.error = ErrorDetails(type="Terminated", message=event.reason or "terminated")
        elif not isinstance(event, ExecutionRewound):
            raise NonDeterminismError(f"unexpected {self.name(event)}")
        self.run_code()

    # --- decisions ---

    def schedule(self, decision: Decision, task: DurableTask[Any] | None) -> None:
        """Called by the context (and by the engine for terminal decisions)."""
        if self.finished or not self.code.running:
            raise RuntimeError(f"the orchestration has ended; it cannot schedule {type(decision).__name__} any more")
        if self.replaying:
            self.unmatched.append((decision, task))
        else:
            self.record(self.append(decision), task)

    def record(self, decision: Decision, task: DurableTask[Any] | None) -> None:
        if isinstance(decision, TaskCancelled):  # ``task`` is the cancelled one
            self.tasks.open.pop(decision.source_event_id, None)
            self.tasks.cancelled.add(decision.source_event_id)
        elif task is not None:
            self.tasks.scheduled[decision.event_id] = decision
            self.tasks.open[decision.event_id] = task
            if isinstance(task, ScheduledTask):
                task._event_id = decision.event_id
        if isinstance(decision, CustomStatusUpdated):
            self.custom_status = decision.value
        elif isinstance(decision, OrchestrationCompleted):
            self.finish(OrchestrationStatus.COMPLETED)
            self.output = decision.output
        elif isinstance(decision, OrchestrationFailed):
            self.finish(OrchestrationStatus.FAILED)
            self.error = decision.error
        elif isinstance(decision, OrchestrationContinuedAsNew):
            self.finish(OrchestrationStatus.RUNNING)
        if self.finished and not self.replaying:
            self.warnings += unawaited_warnings(self.tasks.open, self.tasks.scheduled, self.code.yielded, describe)

    def next_recorded(self) -> HistoryEvent | None:
        """Replaying, the stored event the next decision meets: a step's decisions follow the event resuming it."""
        at = self.applying.event_id + len(self.unmatched) if self.replaying and self.applying else len(self.history)
        return self.history[at] if at < len(self.history) else None

    def match_recorded(self, recorded: Decision) -> None:
        if not self.unmatched:
            raise NonDeterminismError(
                f"history recorded {describe(recorded)}, but the orchestration code no longer makes that decision"
                f"{self.code_position()}"
            )
        decision, task = self.unmatched.popleft()
        decision = resolved(decision, task)
        # Compared unencoded: an encryption codec never encodes the same value twice alike.
        stored = recorded if self.payloads.codec is None else open_event(recorded, self.payloads)
        if not same_decision(decision, stored):
            raise NonDeterminismError(
                f"the orchestration code made the decision {_told(decision, self.payloads)}, "
                f"but history recorded {describe(recorded)} at that position"
            )
        self.record(recorded, task)

    def check_unmatched(self, event: HistoryEvent | None) -> None:
        if self.unmatched:
            made = _told(self.unmatched[0][0], self.payloads)
            where = f"history recorded {describe(event)} there" if event else "history has no further decisions"
            raise NonDeterminismError(f"the orchestration code made the decision {made}, but {where}")

    def name(self, event: HistoryEvent) -> str:
        """``describe(event)`` for an error message. An event of this turn goes unnamed by id: when the
        turn fails, only ``OrchestrationFailed`` is recorded, under the id the event would have had."""
        if event.event_id <= self.last_stored_id:
            return describe(event)
        return f"{describe(replace(event, event_id=0))} (new in this turn)"

    def code_position(self) -> str:
        return " (the code has already finished)" if self.finished else ""

    def finish(self, status: OrchestrationStatus) -> None:
        self.finished = True
        self.status = status

    # --- completions and events (the task table's, but the context calls them here) ---

    def wait_event(self, name: str, task: DurableTask[Any]) -> None:
        self.tasks.wait_event(name, task)

    def withdraw_wait(self, name: str, task: DurableTask[Any]) -> None:
        self.tasks.withdraw_wait(name, task)

    # --- running the code ---

    def start(self, event: OrchestrationStarted) -> None:
        if self.code.started:
            raise NonDeterminismError(f"history starts the orchestration twice: {self.name(event)}")
        orchestration, value = started_input(self.orchestration, event, self.payloads)
        ctx = OrchestrationContext(
            self, event, instance_id=self.instance_id, execution_id=self.execution_id, input=value
        )
        self.code.start(orchestration, ctx, replace(event, input=value))

    def run_code(self) -> None:
        """Resume the code as long as the task it awaits has finished, and record how it ended, if it did."""
        if self.finished or self.terminate_pending:
            return
        ending = self.code.resume()
        if ending is not None:
            self.schedule(ending, None)


_PLAIN_JSON = Payloads()


def _told(decision: Decision, payloads: Payloads) -> str:
    """``describe(decision)`` for an error that is stored: its input encoded, as history has it."""
    return describe(seal_event(decision, payloads))
