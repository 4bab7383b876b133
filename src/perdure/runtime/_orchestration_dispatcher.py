"""The orchestration dispatcher: fetch an instance, run a turn, commit it atomically."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime

from perdure._state import OrchestrationState, OrchestrationStatus
from perdure._tracing import Tracer, execution_parent, execution_trace_context
from perdure.engine._replay import describe
from perdure.engine.events import (
    TERMINAL_EVENTS,
    HistoryEvent,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestrationStarted,
    OrchestrationTerminated,
)
from perdure.providers._base import LockLostError, OrchestrationItem, Provider
from perdure.runtime._dispatcher import Dispatcher
from perdure.runtime._liveness import Liveness
from perdure.runtime._metrics import Metrics
from perdure.runtime._options import RuntimeOptions
from perdure.runtime._registry import OrchestrationRegistry
from perdure.runtime._rewind import children_to_rewind
from perdure.runtime._turn import Abandon, TurnPlan, plan_turn

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
        *,
        liveness: Liveness | None = None,
    ) -> None:
        super().__init__(provider, options.orchestration_concurrency, options.idle_timeout)
        self.registry = registry
        self.options = options
        self.metrics = metrics or Metrics()
        self.tracer = tracer
        self.log_turns = options.turn_logging()
        self.liveness = liveness

    async def fetch(self) -> OrchestrationItem | None:
        if self.liveness is None:
            return await self.provider.fetch_orchestration_item(self.options.lock_seconds)
        # Held for as long as this worker's beats come, whatever the turn does to the loop.
        return await self.provider.fetch_orchestration_item(self.liveness.timeout, worker_id=self.liveness.worker_id)

    async def process(self, item: OrchestrationItem) -> None:
        began = time.perf_counter()
        ids = {"instance_id": item.instance_id, "execution_id": item.state.execution_id if item.state else None}
        try:
            # A rewind restarts the failed run's children: read their states here, so planning stays pure.
            children = {child: await self._child_to_rewind(child) for child in children_to_rewind(item)}
            plan = plan_turn(
                item, self.registry, self.options, datetime.now(UTC), children, tracing=self.tracer is not None
            )
        except Exception:
            # A bug or a misbehaving registry: put it back; the attempt count makes it poison eventually.
            attempts = max((m.dequeue_count for m in item.messages), default=1)
            _log.exception(
                "turn of instance %r failed (attempt %d); putting it back", item.instance_id, attempts, extra=ids
            )
            self.metrics.count("turns", "abandoned")
            await self.provider.abandon_orchestration_item(item, self.options.backoff(attempts))
            return
        if isinstance(plan, Abandon):
            _log.info("instance %r put back for %.1f s: %s", item.instance_id, plan.delay, plan.reason, extra=ids)
            self.metrics.count("turns", "abandoned")
            await self.provider.abandon_orchestration_item(item, plan.delay)
            return
        commit = plan.commit
        ids["execution_id"] = commit.execution_id
        for warning in plan.warnings:
            _log.warning("%s", warning, extra=ids)
        for note in plan.notes:
            _log.debug("%s", note, extra=ids)
        if self.log_turns:
            self._log_turn(item, plan)
        try:
            await self.provider.ack_orchestration_item(item, commit)
        except LockLostError as exc:
            _log.warning("turn of instance %r discarded: %s", item.instance_id, exc, extra=ids)
            self.metrics.count("turns", "discarded")
            return
        self.metrics.count("turns", "committed")
        self.metrics.record("turn.duration", time.perf_counter() - began)
        terminal = commit.history[-1] if commit.history else None
        if isinstance(terminal, TERMINAL_EVENTS):
            self._ended(item, plan, terminal)

    async def _child_to_rewind(self, instance_id: str) -> OrchestrationState | None:
        """A child's state for a rewind; ``None`` when it must be started again (purged, or never ran)."""
        state = await self.provider.get_state(instance_id)
        failed = state is not None and state.status is OrchestrationStatus.FAILED
        if failed and not await self.provider.get_history(instance_id):
            return None  # it failed before it ran: only the parent knows how to start it
        return state

    async def release(self, item: OrchestrationItem) -> None:
        await self.provider.abandon_orchestration_item(item)

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
        parent, start, rewound = execution_parent(item.instance_id, execution_id, started, history)
        attributes: dict[str, str | int | bool] = {
            "perdure.type": "orchestration",
            "perdure.name": started.name,
            "perdure.version": started.version,
            "perdure.instance_id": item.instance_id,
            "perdure.execution_id": execution_id,
            "perdure.status": status,
        }
        if rewound:
            attributes["perdure.rewound"] = True
        if started.parent_instance is not None:
            attributes["perdure.parent_instance_id"] = started.parent_instance
        error = None
        if isinstance(terminal, OrchestrationFailed):
            error = f"{terminal.error.type}: {terminal.error.message}"
        try:
            self.tracer.emit_execution(
                f"orchestration:{started.name}",
                execution_trace_context(item.instance_id, execution_id, started),
                parent,
                start,
                terminal.timestamp,
                attributes,
                error,
            )
        except Exception:  # tracing must never break a committed turn
            _log.exception("emitting the span of instance %r failed", item.instance_id)

    def _log_turn(self, item: OrchestrationItem, plan: TurnPlan) -> None:
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
