"""The orchestration dispatcher: fetch an instance, run a turn, commit it atomically."""

from __future__ import annotations

import contextlib
import logging
import time
from datetime import UTC, datetime
from typing import Any

from perdure._errors import HistoryFormatError, ProviderError
from perdure._payloads import UnreadablePayloadError
from perdure._state import OrchestrationState, OrchestrationStatus
from perdure._tracing import Tracer, execution_span
from perdure.engine._replay import LiveExecution, describe
from perdure.engine.events import (
    TERMINAL_EVENTS,
    HistoryEvent,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestrationStarted,
    OrchestrationTerminated,
)
from perdure.providers._base import DataRefusedError, InstanceUpdate, LockLostError, OrchestrationItem, Provider
from perdure.runtime._cache import ExecutionCache
from perdure.runtime._dispatcher import Dispatcher
from perdure.runtime._isolation import HeldWork, TurnGate, is_suspect
from perdure.runtime._liveness import Liveness
from perdure.runtime._metrics import Metrics
from perdure.runtime._options import RuntimeOptions
from perdure.runtime._registry import ActivityRegistry, OrchestrationRegistry, ResultTypes
from perdure.runtime._retained import never_ran
from perdure.runtime._rewind import children_to_rewind, earlier_executions
from perdure.runtime._turn import Abandon, TurnPlan, plan_failure, plan_turn
from perdure.runtime._watchdog import Running, Work

__all__ = ["OrchestrationDispatcher"]

_log = logging.getLogger("perdure.runtime")
_turn_log = logging.getLogger("perdure.turn")

_ENDED_AS = {
    OrchestrationFailed: "failed",
    OrchestrationTerminated: "terminated",
    OrchestrationContinuedAsNew: "continued_as_new",
}


class OrchestrationDispatcher(Dispatcher[OrchestrationItem]):
    """Runs turns. Each turn is fetch (peek-lock) → replay (pure) → one atomic ack."""

    kind = "orchestrator"

    def __init__(
        self,
        provider: Provider,
        registry: OrchestrationRegistry,
        options: RuntimeOptions,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
        running: Running | None = None,
        *,
        liveness: Liveness | None = None,
        activities: ActivityRegistry | None = None,
        held_work: HeldWork | None = None,
    ) -> None:
        super().__init__(provider, options.orchestration_concurrency, options.idle_timeout)
        self.running = running or Running()
        self.registry = registry
        self.payloads = options.payloads()
        self.types = ResultTypes(registry, activities)
        self.options = options
        self.metrics = metrics or Metrics()
        self.tracer = tracer
        self.log_turns = options.turn_logging()
        self._gate = TurnGate()
        self.held_work = held_work or HeldWork()  # the same runtime's activities in flight
        self.liveness = liveness
        self.cache = (
            ExecutionCache(options.cache_size, options.cache_idle_timeout, payloads=self.payloads)
            if options.cache_size
            else None
        )

    async def fetch(self) -> OrchestrationItem | None:
        await self._gate.admit()  # not while a suspect runs alone: nothing else may be in flight
        item = None
        extra: dict[str, Any] = {}
        if self.cache is not None:
            expired = self.cache.expire()
            if expired:
                self.metrics.count("cache", "expired", expired)
            extra["held"] = self.cache.marks  # the provider returns only what the cache lacks
        try:
            if self.liveness is None:
                item = await self.provider.fetch_orchestration_item(self.options.lock_seconds, **extra)
            else:  # held for as long as this worker's beats come, whatever the turn does to the loop
                liveness = self.liveness
                item = await self.provider.fetch_orchestration_item(
                    liveness.timeout, worker_id=liveness.worker_id, **extra
                )
        finally:
            if item is None:
                await self._gate.leave(alone=False)
        return item

    async def process(self, item: OrchestrationItem) -> None:
        alone = False
        try:
            if is_suspect(item):
                alone = await self._gate.isolate()
                if not alone:
                    # Another suspect runs alone and may take the process down: do not hold this one
                    # meanwhile, and do not count a delivery that ran nothing.
                    await self.provider.abandon_orchestration_item(item, self.options.backoff(1), undo_delivery=True)
                    return
                _log.info(
                    "instance %r runs alone: its messages were delivered before without a turn completing",
                    item.instance_id,
                    extra={"instance_id": item.instance_id},
                )
                await self._alone(item)
            else:
                await self._turn(item)
        finally:
            await self._gate.leave(alone)

    async def _alone(self, item: OrchestrationItem) -> None:
        """Run a suspect's turn with no activity of this runtime charged for it, should it kill the process."""
        held = await self.held_work.uncharge(self.provider)
        if held is None:
            # The activities in flight would pay if it crashed now: put it back unseen, and try again.
            await self.provider.abandon_orchestration_item(item, self.options.backoff(1), undo_delivery=True)
            return
        try:
            await self._turn(item)
        finally:
            await self.held_work.recharge(self.provider, held)

    async def _turn(self, item: OrchestrationItem) -> None:
        live: LiveExecution | None = None  # the state the cache kept, to resume
        plan: TurnPlan | Abandon | None = None
        kept: LiveExecution | None = None
        try:
            if self.cache is not None:
                try:
                    item, live, outcome = await self.cache.take_whole(item, self.provider)
                except ProviderError as exc:
                    _log.error("reading the history of instance %r failed: %s", item.instance_id, exc)
                    await self._put_back(item, self.options.backoff(1))
                    return
                self.metrics.count("cache", outcome)
            plan, committed = await self._plan_and_commit(item, live)
            if committed and isinstance(plan, TurnPlan) and self.cache is not None:
                kept, evicted = self.cache.keep_turn(item, plan)
                if evicted:
                    self.metrics.count("cache", "evicted", evicted)
        finally:
            if self.cache is not None and kept is None:
                self.cache.forget(item.instance_id)
            # What the cache or the engine built and is not kept now must not linger (nor run on later).
            fresh = plan.result.live if isinstance(plan, TurnPlan) and plan.result is not None else None
            for state in (live, fresh):
                if state is not None and state is not kept:
                    state.close()

    async def _plan_and_commit(
        self, item: OrchestrationItem, live: LiveExecution | None
    ) -> tuple[TurnPlan | Abandon | None, bool]:
        """Plan the turn and commit it, or put it back; the plan, and whether it was committed."""
        began = time.perf_counter()
        ids = {"instance_id": item.instance_id, "execution_id": item.state.execution_id if item.state else None}
        try:
            plan = await self._plan(item, live)
        except UnreadablePayloadError as exc:
            await self._cannot_read(item, exc, ids)
            return None, False
        except Exception:
            # A bug or a misbehaving registry: put it back; the attempt count makes it poison eventually.
            attempts = max((m.dequeue_count for m in item.messages), default=1)
            _log.exception(
                "turn of instance %r failed (attempt %d); putting it back", item.instance_id, attempts, extra=ids
            )
            self.metrics.count("turns", "abandoned")
            await self.provider.abandon_orchestration_item(item, self.options.backoff(attempts))
            return None, False
        if isinstance(plan, Abandon):
            _log.info("instance %r put back for %.1f s: %s", item.instance_id, plan.delay, plan.reason, extra=ids)
            self.metrics.count("turns", "abandoned")
            await self.provider.abandon_orchestration_item(item, plan.delay, undo_delivery=plan.undo_delivery)
            return plan, False
        committed = await self._record(item, plan, ids)
        if committed:
            self.metrics.record("turn.duration", time.perf_counter() - began)
        return plan, committed

    async def _record(self, item: OrchestrationItem, plan: TurnPlan, ids: dict[str, Any]) -> bool:
        """Log the plan and commit it; whether it was committed as planned."""
        commit = plan.commit
        ids["execution_id"] = commit.execution_id
        for error in plan.errors:
            _log.error("%s", error, extra=ids)
        for warning in plan.warnings:
            _log.warning("%s", warning, extra=ids)
        for note in plan.notes:
            _log.debug("%s", note, extra=ids)
        if self.log_turns:
            _log_turn(item, plan)
        live = plan.result.live if plan.result is not None else None
        if self.cache is not None and live is not None:
            self.cache.expect(item.instance_id, live)  # a fetch right after the ack reads only the tail
        try:
            return await self._commit(item, plan, ids)
        except DataRefusedError as exc:
            # Its data, not the store, is the problem: retrying would fail the same way.
            _log.error("the store refused the turn of instance %r: %s", item.instance_id, exc, extra=ids)
            await self._record_refusal(item, exc, ids)
        except ProviderError as exc:
            attempts = max((m.dequeue_count for m in item.messages), default=1)
            _log.error("the turn of instance %r could not be stored: %s", item.instance_id, exc, extra=ids)
            await self._put_back(item, self.options.backoff(attempts))
        return False

    async def _plan(self, item: OrchestrationItem, live: LiveExecution | None) -> TurnPlan | Abandon:
        # A rewind restarts the failed run's children, and a completion for an execution a rewind
        # continued is forwarded: read what that needs here, so planning stays pure.
        children = {child: await self._child_to_rewind(child) for child in children_to_rewind(item)}
        earlier = await self._earlier_histories(item)
        turn = Work(item.instance_id, item.state.execution_id if item.state else None)
        with self.running.doing(turn):  # the watchdog names it if orchestration code blocks the loop
            return plan_turn(
                item,
                self.registry,
                self.options,
                self._now(),
                children,
                earlier=earlier,
                tracing=self.tracer is not None,
                live=live,
                keep=self.cache is not None,
                payloads=self.payloads,
                types=self.types,
            )

    async def _cannot_read(self, item: OrchestrationItem, exc: UnreadablePayloadError, ids: dict[str, Any]) -> None:
        """Put back a turn whose payloads this process cannot decode (no codec, or not the key).

        Another process may have the right codec, and this one may be fixed: the delivery is not
        counted, so the instance never turns poison, and nothing is lost.
        """
        _log.error("turn of instance %r put back: %s", item.instance_id, exc, extra=ids)
        self.metrics.count("turns", "abandoned")
        await self.provider.abandon_orchestration_item(item, self.options.max_dispatch_backoff, undo_delivery=True)

    async def _commit(self, item: OrchestrationItem, plan: TurnPlan, ids: dict[str, Any]) -> bool:
        """Ack the turn and count it; ``False`` if it was discarded because the lock was lost."""
        commit = plan.commit
        try:
            await self.provider.ack_orchestration_item(item, commit)
        except LockLostError as exc:
            _log.warning("turn of instance %r discarded: %s", item.instance_id, exc, extra=ids)
            self.metrics.count("turns", "discarded")
            return False
        self.metrics.count("turns", "committed")
        if commit.state is not None and commit.state.status is OrchestrationStatus.FAILED:
            _log_failure(item.instance_id, commit.execution_id, commit.state)
        # A failed execution's history goes on after its terminal event with what it retained.
        terminal = next((e for e in commit.history if isinstance(e, TERMINAL_EVENTS)), None)
        if terminal is not None:
            self._ended(item, plan, terminal)
        return True

    async def _record_refusal(self, item: OrchestrationItem, exc: DataRefusedError, ids: dict[str, Any]) -> None:
        """Fail the instance whose turn the store refused, at once; if even that is refused, put it back."""
        error = DataRefusedError(f"the store refused to record a turn of this instance: {exc}")
        failure = plan_failure(item, self.registry, self.options, self._now(), error)
        for warning in failure.warnings:
            _log.warning("%s", warning, extra=ids)
        try:
            await self._commit(item, failure, ids)
            return
        except ProviderError as again:
            _log.error("recording the failure of instance %r failed too: %s", item.instance_id, again, extra=ids)
        attempts = max((m.dequeue_count for m in item.messages), default=1)
        await self._put_back(item, self.options.backoff(attempts))

    async def _put_back(self, item: OrchestrationItem, delay: float) -> None:
        """Abandon with a delay: the poison limit ends an instance that keeps failing this way."""
        self.metrics.count("turns", "abandoned")
        try:
            await self.provider.abandon_orchestration_item(item, delay)
        except ProviderError as exc:  # the lock expires in time anyway
            _log.warning("putting instance %r back failed: %s", item.instance_id, exc)

    def _now(self) -> datetime:
        """A turn's time: the store's clock (the process's, which a wall-clock jump does not move at once)."""
        return datetime.fromtimestamp(self.provider.clock.now(), UTC)

    async def _child_to_rewind(self, instance_id: str) -> OrchestrationState | None:
        """A child's state for a rewind; ``None`` when it must be started again (purged, or never ran)."""
        state = await self.provider.get_state(instance_id)
        failed = state is not None and state.status is OrchestrationStatus.FAILED
        if failed and never_ran(await self.provider.get_history(instance_id)):
            return None  # it failed before it ran: only the parent knows how to start it
        return state

    async def _earlier_histories(self, item: OrchestrationItem) -> dict[int, list[HistoryEvent]]:
        """The histories of earlier executions that completions of ``item`` are addressed to."""
        histories: dict[int, list[HistoryEvent]] = {}
        for execution_id in earlier_executions(item):
            with contextlib.suppress(HistoryFormatError):  # unreadable: what is addressed to it is stale
                histories[execution_id] = await self.provider.get_history(item.instance_id, execution_id)
        return histories

    async def release(self, item: OrchestrationItem) -> None:
        await self.provider.abandon_orchestration_item(item)

    async def stop(self, timeout: float) -> None:
        await super().stop(timeout)
        if self.cache is not None:
            self.cache.clear()  # their coroutines close now, not whenever they are collected

    def _ended(self, item: OrchestrationItem, plan: TurnPlan, terminal: HistoryEvent) -> None:
        """Count an execution that ended, and emit its span."""
        status = _ENDED_AS.get(type(terminal), "completed")
        self.metrics.count("orchestrations", status)
        if self.tracer is None:
            return
        commit = plan.commit
        history = list(commit.history) if plan.rewound else [*(item.history or []), *commit.history]
        started = history[0] if history else None
        if not isinstance(started, OrchestrationStarted):
            return
        execution_id = commit.execution_id
        span = execution_span(item.instance_id, execution_id, started, history)
        attributes = _span_attributes(item.instance_id, execution_id, started, status, span.rewound_from is not None)
        error = None
        if isinstance(terminal, OrchestrationFailed):
            error = f"{terminal.error.type}: {terminal.error.message}"
        try:
            self.tracer.emit_execution(f"orchestration:{started.name}", span, terminal.timestamp, attributes, error)
        except Exception:  # tracing must never break a committed turn
            _log.exception("emitting the span of instance %r failed", item.instance_id)


def _span_attributes(
    instance_id: str, execution_id: int, started: OrchestrationStarted, status: str, rewound: bool
) -> dict[str, str | int | bool]:
    """The attributes of an execution's span."""
    attributes: dict[str, str | int | bool] = {
        "perdure.type": "orchestration",
        "perdure.name": started.name,
        "perdure.version": started.version,
        "perdure.instance_id": instance_id,
        "perdure.execution_id": execution_id,
        "perdure.status": status,
    }
    if rewound:
        attributes["perdure.rewound"] = True
    if started.parent_instance is not None:
        attributes["perdure.parent_instance_id"] = started.parent_instance
    return attributes


def _log_turn(item: OrchestrationItem, plan: TurnPlan) -> None:
    """Log the whole turn: what was replayed, what was new, what was decided (``PERDURE_LOG=debug``)."""
    result = plan.result
    new = result.new_events if result is not None else list(plan.commit.history)
    decisions = result.decisions if result is not None else []
    lines = [
        f"turn of instance {item.instance_id!r} execution {plan.commit.execution_id}: "
        f"replayed {len(plan.replayed)} events, {len(new)} new, {len(decisions)} decisions"
        + (f", status {result.status.value}" if result is not None else "")
    ]
    for title, events in (("replayed", plan.replayed), ("new", new), ("decisions", decisions)):
        lines.append(f"  {title}:" if events else f"  {title}: none")
        lines.extend(f"    {describe(event)}" for event in events)
    _turn_log.debug(
        "\n".join(lines),
        extra={
            "instance_id": item.instance_id,
            "execution_id": plan.commit.execution_id,
            "event_ids": [e.event_id for e in new],
        },
    )


def _log_failure(instance_id: str, execution_id: int, state: InstanceUpdate) -> None:
    """Say that an instance failed, with what an alert needs as ``extra`` fields too."""
    error = state.error
    error_type, message = (error.type, error.message) if error is not None else ("unknown", "")
    what = state.name if state.version is None else f"{state.name}@{state.version}"  # None: it never started
    _log.warning(
        "instance %r of %s failed: %s: %s",
        instance_id,
        what,
        error_type,
        message,
        extra={
            "instance_id": instance_id,
            "execution_id": execution_id,
            "orchestration": state.name,
            "version": state.version,
            "error_type": error_type,
            "error_message": message,
        },
    )
