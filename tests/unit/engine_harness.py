"""A fake runtime for engine tests: drives ``replay`` the way the dispatcher does, in memory.

``Driver`` keeps one instance's history and message queue. Each ``turn()`` hands the queued
messages to the engine, appends what it returns, and removes exactly the consumed messages.
Scheduled work (activities, timers, children) is kept as *outstanding* until a test completes it,
explicitly (``complete``/``fire``) or in bulk with ``run()``, in scheduling order or in an order
chosen by a ``random.Random``. Activities are plain functions ``fn(ctx, input)``; children are run
to completion by a nested driver. After every turn the driver replays the whole history with no
new events and checks that the engine decides nothing new: the replay of a committed turn must
reproduce it exactly.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from perdure import ErrorDetails, OrchestrationStatus
from perdure.engine import ReplayOutcome
from perdure.engine import replay as engine_replay
from perdure.engine._replay import OrchestrationFunction
from perdure.engine.events import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    Decision,
    EventRaised,
    EventSent,
    HistoryEvent,
    OrchestrationChained,
    OrchestrationContinuedAsNew,
    OrchestrationResumed,
    OrchestrationStarted,
    OrchestrationSuspended,
    SubOrchestrationCompleted,
    SubOrchestrationFailed,
    SubOrchestrationScheduled,
    TaskCancelled,
    TerminateRequested,
    TimerCreated,
    TimerFired,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)

__all__ = ["T0", "ActivityCall", "Driver", "replay", "strip_timestamps"]


@dataclass(frozen=True)
class ActivityCall:
    """What a fake activity receives as its context (the fields of ``ActivityContext`` it needs)."""

    instance_id: str
    execution_id: int
    name: str
    attempt: int


Activity = Callable[[ActivityCall, Any], Any]


def replay(
    orchestration: OrchestrationFunction,
    history: list[HistoryEvent],
    new_events: Iterable[HistoryEvent] = (),
    *,
    instance_id: str = "inst",
    execution_id: int = 1,
    now: datetime | None = None,
) -> ReplayOutcome:
    """One engine replay over ``history`` (stamped with the last event's time unless ``now`` is given)."""
    if now is None:
        now = history[-1].timestamp if history else T0
    return engine_replay(
        orchestration,
        instance_id=instance_id,
        execution_id=execution_id,
        history=history,
        new_events=list(new_events),
        now=now,
    )


def strip_timestamps(events: Iterable[HistoryEvent]) -> list[HistoryEvent]:
    return [replace(e, timestamp=T0) for e in events]


class Driver:
    """One orchestration instance under a fake runtime."""

    def __init__(
        self,
        orchestration: OrchestrationFunction,
        *,
        activities: Mapping[str, Activity] | None = None,
        children: Mapping[str, OrchestrationFunction] | None = None,
        instance_id: str = "inst",
        name: str = "orch",
        version: str = "1.0.0",
        rng: random.Random | None = None,
        verify: bool = True,
        start: datetime = T0,
        tick: timedelta = timedelta(seconds=1),
    ) -> None:
        self.orchestration = orchestration
        self.activities = dict(activities or {})
        self.children = dict(children or {})
        self.instance_id = instance_id
        self.name = name
        self.version = version
        self.rng = rng
        self.verify = verify
        self.now = start
        self.tick = tick
        self.execution_id = 1
        self.history: list[HistoryEvent] = []
        self.queue: list[HistoryEvent] = []
        self.outstanding: dict[int, Decision] = {}  # scheduled tasks whose completion was not sent yet
        self.results: list[ReplayOutcome] = []
        self.executions: list[list[HistoryEvent]] = []  # histories of earlier executions
        self.sent: list[EventSent] = []
        self.chained: list[OrchestrationChained] = []
        self.child_drivers: dict[str, Driver] = {}
        self.parent: tuple[str, int] | None = None

    # --- messages ---

    def start(self, input: Any = None, *, version: str | None = None) -> Driver:
        parent_instance, parent_id = self.parent or (None, None)
        self.queue.append(
            OrchestrationStarted(
                name=self.name,
                version=version or self.version,
                input=input,
                parent_instance=parent_instance,
                parent_id=parent_id,
            )
        )
        return self

    def send(self, *events: HistoryEvent) -> Driver:
        self.queue.extend(events)
        return self

    def raise_event(self, name: str, data: Any = None) -> Driver:
        return self.send(EventRaised(name=name, data=data))

    def suspend(self, reason: str | None = None) -> Driver:
        return self.send(OrchestrationSuspended(reason=reason))

    def resume(self, reason: str | None = None) -> Driver:
        return self.send(OrchestrationResumed(reason=reason))

    def terminate(self, reason: str | None = None) -> Driver:
        return self.send(TerminateRequested(reason=reason))

    def complete(self, event_id: int) -> Driver:
        """Send the completion of outstanding task ``event_id`` (runs the activity or child)."""
        self.queue.append(self.completion_of(self.outstanding.pop(event_id)))
        return self

    def complete_all(self) -> Driver:
        for event_id in list(self.outstanding):
            self.complete(event_id)
        return self

    def completion_of(self, decision: Decision) -> HistoryEvent:
        if isinstance(decision, ActivityScheduled):
            call = ActivityCall(self.instance_id, self.execution_id, decision.name, decision.attempt)
            try:
                result = self.activities[decision.name](call, decision.input)
            except Exception as exc:
                return ActivityFailed(source_event_id=decision.event_id, error=ErrorDetails.from_exception(exc))
            return ActivityCompleted(source_event_id=decision.event_id, result=result)
        if isinstance(decision, TimerCreated):
            return TimerFired(source_event_id=decision.event_id, fire_at=decision.fire_at)
        assert isinstance(decision, SubOrchestrationScheduled)
        child = Driver(
            self.children[decision.name],
            activities=self.activities,
            children=self.children,
            instance_id=decision.instance_id,
            name=decision.name,
            version=decision.version or "1.0.0",
            rng=random.Random(self.rng.random()) if self.rng else None,
            verify=self.verify,
            start=self.now,
        )
        child.parent = (self.instance_id, decision.event_id)
        self.child_drivers[decision.instance_id] = child
        result = child.start(decision.input).run()
        if result.status is OrchestrationStatus.COMPLETED:
            return SubOrchestrationCompleted(source_event_id=decision.event_id, result=result.output)
        assert result.error is not None, result
        return SubOrchestrationFailed(source_event_id=decision.event_id, error=result.error)

    # --- turns ---

    def turn(self, *messages: HistoryEvent) -> ReplayOutcome:
        """Run one turn over the queue (plus ``messages``) and commit its outcome."""
        self.queue.extend(messages)
        self.now += self.tick
        result = engine_replay(
            self.orchestration,
            instance_id=self.instance_id,
            execution_id=self.execution_id,
            history=self.history,
            new_events=self.queue,
            now=self.now,
        )
        consumed = set(result.consumed)
        self.queue = [m for i, m in enumerate(self.queue) if i not in consumed]
        self.history.extend(result.new_events)
        self.results.append(result)
        for decision in result.decisions:
            if isinstance(decision, ActivityScheduled | TimerCreated | SubOrchestrationScheduled):
                self.outstanding[decision.event_id] = decision
            elif isinstance(decision, EventSent):
                self.sent.append(decision)
            elif isinstance(decision, OrchestrationChained):
                self.chained.append(decision)
            elif isinstance(decision, TaskCancelled):  # the runtime deletes its work (a timer may still fire)
                self.outstanding.pop(decision.source_event_id, None)
        if self.verify:
            self.check_replay(result)
        terminal = result.terminal_event
        if isinstance(terminal, OrchestrationContinuedAsNew):
            self.executions.append(self.history)
            self.history, self.outstanding = [], {}
            self.execution_id += 1
            self.version = terminal.version or self.version
            started = OrchestrationStarted(name=self.name, version=self.version, input=terminal.input)
            self.queue = [started, *result.carryover, *self.queue]
        return result

    def check_replay(self, result: ReplayOutcome) -> None:
        again = replay(self.orchestration, self.history, instance_id=self.instance_id, execution_id=self.execution_id)
        assert again.new_events == [], f"replaying a committed turn decided again: {again.new_events}"
        assert (again.status, again.output, again.error, again.custom_status, again.waiting_for) == (
            result.status,
            result.output,
            result.error,
            result.custom_status,
            result.waiting_for,
        )

    @property
    def result(self) -> ReplayOutcome:
        return self.results[-1]

    @property
    def status(self) -> OrchestrationStatus:
        return self.results[-1].status if self.results else OrchestrationStatus.PENDING

    def run(self, *, max_turns: int = 10_000) -> ReplayOutcome:
        """Turn until the instance ends or waits on something only the test can send (an event)."""
        for _ in range(max_turns):
            if self.queue:
                self.turn()
            if self.status.is_terminal or self.status is OrchestrationStatus.SUSPENDED:
                return self.result
            if not self.outstanding:
                if not self.queue:
                    return self.result
                continue
            pending = list(self.outstanding)
            if self.rng is not None:
                pending = self.rng.sample(pending, self.rng.randint(1, len(pending)))
            for event_id in pending:
                self.complete(event_id)
        raise AssertionError(f"the orchestration did not finish in {max_turns} turns")
