"""``Runtime``: registries + dispatchers + lifecycle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from types import TracebackType

from perdure._tracing import Tracer
from perdure.providers._base import Provider
from perdure.runtime._isolation import HeldWork
from perdure.runtime._liveness import Liveness, describe_worker
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
    locks keep turns of an instance apart, and peek-locks hand each activity to one worker. A
    runtime keeps a worker record in the store, renewed by a thread of its own: its locks hold
    while its process lives, and move to other workers ``worker_timeout`` after it dies.

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
        self._liveness: Liveness | None = None

    @property
    def worker_id(self) -> str | None:
        """This runtime's id in the store's worker records while it runs (``None`` without records)."""
        return None if self._liveness is None else self._liveness.worker_id

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
        liveness = await self._start_liveness()
        held_work = HeldWork()  # a suspect turn pauses the activities' fetching and charges (_isolation)
        if options.run_orchestrations:
            self._dispatchers.append(
                OrchestrationDispatcher(
                    self.provider,
                    self.registry.orchestrations,
                    options,
                    self.metrics,
                    tracer,
                    running,
                    liveness=liveness,
                    activities=self.registry.activities,
                    held_work=held_work,
                )
            )
        if options.run_activities:
            self._dispatchers.append(
                WorkDispatcher(
                    self.provider,
                    self.registry.activities,
                    options,
                    self.metrics,
                    tracer,
                    running,
                    liveness=liveness,
                    held_work=held_work,
                )
            )
        if options.blocked_loop_warning > 0:
            self._watchdog = Watchdog(running, options.blocked_loop_warning)
            self._watchdog.start()
        for dispatcher in self._dispatchers:
            dispatcher.start()
        if options.queue_depth_interval > 0:
            self._sampler = asyncio.create_task(self._sample_queue_depths(), name="perdure-queue-depths")
        _log.info(
            "runtime started as worker %s: %d orchestrations, %d activities registered; tracing %s, turn logging %s",
            self.worker_id or "(no worker record)",
            len(self.registry.orchestrations.names()),
            len(self.registry.activities.names()),
            "on" if tracer is not None else "off",
            "on" if options.turn_logging() else "off",
        )

    async def _start_liveness(self) -> Liveness | None:
        worker = describe_worker(self.registry, self.options)
        handle = self.provider.worker_liveness(worker, self.options.worker_timeout)
        if handle is None:
            return None
        seal = self.options.payloads().seal if self.options.payload_codec is not None else None
        self._liveness = Liveness(handle, worker, self.options.worker_timeout, seal)
        await self._liveness.start()
        return self._liveness

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
        liveness, self._liveness = self._liveness, None
        if liveness is not None:
            await liveness.stop()
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
