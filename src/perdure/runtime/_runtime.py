"""``Runtime``: registries + dispatchers + lifecycle."""

from __future__ import annotations

import asyncio
import logging
from types import TracebackType

from perdure.providers._base import Provider
from perdure.runtime._options import RuntimeOptions
from perdure.runtime._orchestration_dispatcher import OrchestrationDispatcher
from perdure.runtime._registry import Registry
from perdure.runtime._work_dispatcher import WorkDispatcher

__all__ = ["Runtime"]

_log = logging.getLogger("perdure.runtime")


class Runtime:
    """Runs orchestrations and activities from a provider's queues.

    Use it as an async context manager, or call :meth:`start` and :meth:`shutdown`::

        async with Runtime(provider, registry, RuntimeOptions()) as runtime:
            ...

    Any number of runtimes (in one process or many) may share one provider's store: instance
    locks keep turns of an instance apart, and peek-locks hand each activity to one worker.
    """

    def __init__(self, provider: Provider, registry: Registry, options: RuntimeOptions | None = None) -> None:
        self.provider = provider
        self.registry = registry
        self.options = options or RuntimeOptions()
        self._dispatchers: list[OrchestrationDispatcher | WorkDispatcher] = []

    @property
    def running(self) -> bool:
        """Whether the dispatchers are running."""
        return bool(self._dispatchers)

    async def start(self) -> None:
        """Start the dispatchers (orchestrations and/or activities, as the options say)."""
        if self._dispatchers:
            raise RuntimeError("the runtime is already running")
        if self.options.run_orchestrations:
            self._dispatchers.append(OrchestrationDispatcher(self.provider, self.registry.orchestrations, self.options))
        if self.options.run_activities:
            self._dispatchers.append(WorkDispatcher(self.provider, self.registry.activities, self.options))
        for dispatcher in self._dispatchers:
            dispatcher.start()
        _log.info(
            "runtime started: %d orchestrations, %d activities registered",
            len(self.registry.orchestrations.names()),
            len(self.registry.activities.names()),
        )

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop fetching, let work in progress finish for up to ``timeout`` seconds, then stop.

        Work still running after ``timeout`` is cancelled and released, so another runtime
        picks it up; nothing is lost.
        """
        dispatchers, self._dispatchers = self._dispatchers, []
        await asyncio.gather(*(dispatcher.stop(timeout) for dispatcher in dispatchers))

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()
