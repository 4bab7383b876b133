"""The orchestration dispatcher: fetch an instance, run a turn, commit it atomically."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

from perdure.providers._base import LockLostError, OrchestrationItem, Provider
from perdure.runtime._dispatcher import Dispatcher
from perdure.runtime._options import RuntimeOptions
from perdure.runtime._registry import OrchestrationRegistry
from perdure.runtime._turn import Abandon, children_to_rewind, plan_turn

__all__ = ["OrchestrationDispatcher"]

_log = logging.getLogger("perdure.runtime")


class OrchestrationDispatcher(Dispatcher[OrchestrationItem]):
    """Runs turns. Each turn is fetch (peek-lock) → replay (pure) → one atomic ack."""

    kind = "orchestrator"

    def __init__(self, provider: Provider, registry: OrchestrationRegistry, options: RuntimeOptions) -> None:
        super().__init__(provider, options.orchestration_concurrency, options.idle_timeout)
        self.registry = registry
        self.options = options

    async def fetch(self) -> OrchestrationItem | None:
        return await self.provider.fetch_orchestration_item(self.options.lock_seconds)

    async def process(self, item: OrchestrationItem) -> None:
        try:
            # A rewind restarts the failed run's children: read their states here, so planning stays pure.
            children = {child: await self.provider.get_state(child) for child in children_to_rewind(item)}
            plan = plan_turn(item, self.registry, self.options, datetime.now(UTC), children)
        except Exception:
            # A bug or a misbehaving registry: put it back; the attempt count makes it poison eventually.
            attempts = max((m.dequeue_count for m in item.messages), default=1)
            _log.exception("turn of instance %r failed (attempt %d); putting it back", item.instance_id, attempts)
            await self.provider.abandon_orchestration_item(item, self.options.backoff(attempts))
            return
        if isinstance(plan, Abandon):
            _log.info("instance %r put back for %.1f s: %s", item.instance_id, plan.delay, plan.reason)
            await self.provider.abandon_orchestration_item(item, plan.delay)
            return
        for warning in plan.warnings:
            _log.warning("%s", warning)
        try:
            await self.provider.ack_orchestration_item(item, plan.commit)
        except LockLostError as exc:
            _log.warning("turn of instance %r discarded: %s", item.instance_id, exc)

    async def release(self, item: OrchestrationItem) -> None:
        await self.provider.abandon_orchestration_item(item)
