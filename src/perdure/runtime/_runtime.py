"""``Runtime``: registries + dispatchers + lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

from perdure._tracing import Tracer
from perdure.providers._base import Provider
from perdure.runtime._metrics import Metrics
from perdure.runtime._options import RuntimeOptions
from perdure.runtime._orchestration_dispatcher import OrchestrationDispatcher
from perdure.runtime._registry import Registry
from perdure.runtime._watchdog import Running, Watchdog
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

    Attributes:
        metrics: This runtime's counters, histograms and queue depths (``metrics.snapshot()``),
            also exported through OpenTelemetry when a meter provider is configured.
    """

    def __init__(self, provider: Provider, registry: Registry, options: RuntimeOptions | None = None) -> None:
        self.provider = provider
        self.registry = registry
        self.options = options or RuntimeOptions()
        self.metrics = Metrics(self.options.meter_provider)
        self._dispatchers: list[OrchestrationDispatcher | WorkDispatcher] = []
        self._sampler: asyncio.Task[None] | None = None
        self._watchdog: Watchdog | None = None

    @property
    def running(self) -> bool:
        """Whether the dispatchers are running."""
        return bool(self._dispatchers)

    async def start(self) -> None:
        """Start the dispatchers (orchestrations and/or activities, as the options say)."""
        if self._dispatchers:
            raise RuntimeError("the runtime is already running")
        options = self.options
        tracer = Tracer.create(options.tracer_provider)
        if options.turn_logging():
            turn_log = logging.getLogger("perdure.turn")
            if turn_log.level == logging.NOTSET:
                turn_log.setLevel(logging.DEBUG)  # the switch is the opt-in; let the records through
        running = Running()
        if options.run_orchestrations:
            self._dispatchers.append(
                OrchestrationDispatcher(
                    self.provider, self.registry.orchestrations, options, self.metrics, tracer, running
                )
            )
        if options.run_activities:
            self._dispatchers.append(
                WorkDispatcher(self.provider, self.registry.activities, options, self.metrics, tracer, running)
            )
        if options.blocked_loop_warning > 0:
            self._watchdog = Watchdog(running, options.blocked_loop_warning)
            self._watchdog.start()
        for dispatcher in self._dispatchers:
            dispatcher.start()
        if options.queue_depth_interval > 0:
            self._sampler = asyncio.create_task(self._sample_queue_depths(), name="perdure-queue-depths")
        _log.info(
            "runtime started: %d orchestrations, %d activities registered; tracing %s, turn logging %s",
            len(self.registry.orchestrations.names()),
            len(self.registry.activities.names()),
            "on" if tracer is not None else "off",
            "on" if options.turn_logging() else "off",
        )

    async def _sample_queue_depths(self) -> None:
        while True:
            try:
                await self.metrics.sample_queue_depths(self.provider)
            except Exception:
                _log.debug("sampling the queue depths failed", exc_info=True)
            await asyncio.sleep(self.options.queue_depth_interval)

    async def shutdown(self, timeout: float = 10.0) -> None:
        """Stop fetching, let work in progress finish for up to ``timeout`` seconds, then stop.

        Work still running after ``timeout`` is cancelled and released, so another runtime
        picks it up; nothing is lost.
        """
        dispatchers, self._dispatchers = self._dispatchers, []
        sampler, self._sampler = self._sampler, None
        if sampler is not None:
            sampler.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await sampler
        await asyncio.gather(*(dispatcher.stop(timeout) for dispatcher in dispatchers))
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:  # last: a shutdown held up by blocking code is still reported
            watchdog.stop()

    async def __aenter__(self) -> Runtime:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.shutdown()
