"""The work dispatcher: run activities and report their completions."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from perdure._errors import (
    ACTIVITY_TIMEOUT,
    ErrorDetails,
    PoisonMessageError,
    SerializationError,
    UnregisteredActivityError,
)
from perdure._payloads import UnreadablePayloadError
from perdure._tracing import Tracer
from perdure.engine.events import ActivityCompleted, ActivityFailed, HistoryEvent
from perdure.providers._base import ActivityRequest, LockLostError, Message, Provider, WorkItem
from perdure.runtime._activity import ActivityContext
from perdure.runtime._attempt import Attempt, Attempts, AttemptStopped
from perdure.runtime._dispatcher import Dispatcher
from perdure.runtime._isolation import HeldWork
from perdure.runtime._liveness import Liveness
from perdure.runtime._metrics import Metrics
from perdure.runtime._options import RuntimeOptions
from perdure.runtime._registry import ActivityRegistry, RegisteredActivity
from perdure.runtime._watchdog import Running, Work

__all__ = ["WorkDispatcher"]

_log = logging.getLogger("perdure.runtime")


class WorkDispatcher(Dispatcher[WorkItem]):
    """Runs activities: ``async def`` ones on the loop, plain ones in a thread pool.

    The ack deletes the work item and enqueues its completion in one transaction. The lock is
    held while an activity runs, so long activities are not taken over: by the runtime's worker
    record (``liveness``), or else by renewals from the loop.
    """

    kind = "activity"

    def __init__(
        self,
        provider: Provider,
        registry: ActivityRegistry,
        options: RuntimeOptions,
        metrics: Metrics | None = None,
        tracer: Tracer | None = None,
        running: Running | None = None,
        *,
        liveness: Liveness | None = None,
        held_work: HeldWork | None = None,
    ) -> None:
        super().__init__(provider, options.activity_concurrency, options.idle_timeout)
        self.running = running or Running()
        self.liveness = liveness
        self.held_work = held_work or HeldWork()  # paused while a turn of the same runtime runs alone
        self.registry = registry
        self.options = options
        self.metrics = metrics or Metrics()
        self.tracer = tracer
        self.queues = list(options.activity_queues)
        self.payloads = options.payloads()
        self._threads = ThreadPoolExecutor(
            max_workers=options.activity_concurrency, thread_name_prefix="perdure-activity"
        )
        self.attempts = Attempts(provider, self._threads)

    async def fetch(self) -> WorkItem | None:
        await self.held_work.fetching()  # not while a suspect turn runs alone
        item = None
        try:
            if self.liveness is None:
                item = await self.provider.fetch_work_item(self.queues, self.options.activity_lock_seconds)
            else:
                liveness = self.liveness
                item = await self.provider.fetch_work_item(self.queues, liveness.timeout, worker_id=liveness.worker_id)
        finally:
            await self.held_work.fetched(item)
        return item

    async def idle(self) -> None:
        await self.provider.wait_for_work("activity", self.idle_timeout, self.queues)

    async def release(self, item: WorkItem) -> None:
        with contextlib.suppress(LockLostError):
            await self.provider.abandon_work_item(item)

    async def stop(self, timeout: float) -> None:
        await super().stop(timeout)
        await self.attempts.close()
        self._threads.shutdown(wait=False, cancel_futures=True)

    async def process(self, item: WorkItem) -> None:
        try:
            await self._process(item)
        finally:
            self.held_work.done(item)

    async def _process(self, item: WorkItem) -> None:
        request = item.request
        if request is None:
            # Without a readable request nobody can be told; keep the row for inspection, out of the way.
            _log.error("work item %d is corrupted and set aside for an hour: %s", item.item_id, item.error)
            await self.provider.abandon_work_item(item, 3600.0)
            return
        outcome, attempt = await self._outcome(item, request)
        if outcome is not None:
            await self._report(item, request, outcome)
        if attempt is not None:
            await attempt.wind_down()  # this slot takes new work once the abandoned work has ended

    async def _report(self, item: WorkItem, request: ActivityRequest, outcome: HistoryEvent) -> None:
        completion = Message(instance_id=request.instance_id, execution_id=request.execution_id, event=outcome)
        try:
            await self.provider.ack_work_item(item, completion)
        except LockLostError as exc:
            if isinstance(outcome, ActivityFailed) and outcome.error.type == ACTIVITY_TIMEOUT:
                _log.debug("the time-out of activity %r for %r was recorded already", request.name, request.instance_id)
                return
            _log.warning(
                "result of activity %r for %r discarded: %s",
                request.name,
                request.instance_id,
                exc,
                extra=_ids(request),
            )
            return
        self.metrics.count("activities", "failed" if isinstance(outcome, ActivityFailed) else "completed")

    async def _outcome(self, item: WorkItem, request: ActivityRequest) -> tuple[HistoryEvent | None, Attempt | None]:
        """The completion event to report (``None``: the item was put back, or cancelled), and the attempt run."""
        source = request.source_event_id
        if item.dequeue_count > self.options.max_dispatch_attempts:
            error = PoisonMessageError(
                f"activity {request.name!r} was delivered {item.dequeue_count} times without finishing "
                "(its worker crashed or lost the lock each time)"
            )
            return ActivityFailed(source_event_id=source, error=ErrorDetails.from_exception(error)), None
        try:
            activity = self.registry.get(request.name)
        except UnregisteredActivityError as exc:
            if item.dequeue_count < self.options.max_dispatch_attempts:
                # Another worker may have it (rolling deploys): put it back for a while.
                await self.provider.abandon_work_item(item, self.options.backoff(item.dequeue_count))
                self.metrics.count("activities", "abandoned")
                return None, None
            return ActivityFailed(source_event_id=source, error=ErrorDetails.from_exception(exc)), None
        try:
            ctx, args = self._arguments(item, activity, request)
        except UnreadablePayloadError as exc:
            # This process has not the codec (or key) the input was stored with: another may.
            _log.error("activity %r of %r put back: %s", request.name, request.instance_id, exc, extra=_ids(request))
            await self.provider.abandon_work_item(item, self.options.max_dispatch_backoff)
            self.metrics.count("activities", "abandoned")
            return None, None
        except SerializationError as exc:  # the input does not fit the parameter's type: a failed attempt
            return self._failed(request, exc), None
        attempt = Attempt(request, ctx._signals, self.provider.clock)
        work = Work(ctx.instance_id, ctx.execution_id, ctx.name)
        attempt.on_task = lambda task: self.running.watch(task, work)  # named if it blocks the loop
        return await self._run(item, activity, args, attempt), attempt

    def _arguments(
        self, item: WorkItem, activity: RegisteredActivity, request: ActivityRequest
    ) -> tuple[ActivityContext, tuple[Any, ...]]:
        """The activity's context, and its arguments: the context, and the input decoded to its
        parameter's annotation. Raises ``SerializationError`` (``UnreadablePayloadError``: no key)."""
        what = f"heartbeat details of activity {request.name!r}"
        ctx = ActivityContext(
            instance_id=request.instance_id,
            execution_id=request.execution_id,
            name=request.name,
            attempt=request.attempt,
            orchestration_name=request.orchestration_name,
            orchestration_version=request.orchestration_version,
            heartbeat_details=self.payloads.open(item.heartbeat_details, what),
            _record_heartbeat=None if self.liveness is None else functools.partial(self.liveness.heartbeat, item),
        )
        if not activity.takes_input:
            return ctx, (ctx,)
        what = f"input of activity {request.name!r}"
        return ctx, (ctx, self.payloads.receive(request.input, activity.input_type, what))

    async def _run(
        self, item: WorkItem, activity: RegisteredActivity, args: tuple[Any, ...], attempt: Attempt
    ) -> HistoryEvent | None:
        """Run the attempt; what to report (``None`` if it was cancelled: nobody waits for it any more)."""
        request = attempt.request
        renewal = _Renewal(
            functools.partial(self._renew, item),
            None if self.liveness is not None else self.options.activity_lock_seconds / 3,
        )
        began = time.perf_counter()
        tracer = self.tracer
        with contextlib.ExitStack() as stack:
            span = None if tracer is None else stack.enter_context(self._span(tracer, request))
            try:
                result = await self.attempts.run(item, activity, args, attempt)
                # Converted, checked and encoded here: a result that cannot be stored fails the attempt.
                result = self.payloads.send(result, f"result of activity {request.name!r}")
            except Exception as exc:  # the activity's failure (or a result it cannot store) is reported, not raised
                if tracer is not None:
                    tracer.fail(span, exc)
                return self._failed(request, exc)
            finally:
                self.metrics.record("activity.duration", time.perf_counter() - began)
                await renewal.stop()
        return ActivityCompleted(source_event_id=request.source_event_id, result=result)

    def _failed(self, request: ActivityRequest, exc: Exception) -> HistoryEvent | None:
        """The report of an attempt that raised, timed out, or was cancelled (then nothing)."""
        if isinstance(exc, AttemptStopped) and exc.timeout is None:
            _log.info("activity %r of %r was cancelled; its attempt stopped", request.name, request.instance_id)
            self.metrics.count("activities", "cancelled")
            return None
        error = exc.timeout if isinstance(exc, AttemptStopped) else ErrorDetails.from_exception(exc)
        assert error is not None
        _log.info(
            "activity %r of %r failed: %s: %s",
            request.name,
            request.instance_id,
            error.type,
            error.message,
            extra=_ids(request),
        )
        return ActivityFailed(source_event_id=request.source_event_id, error=error)

    @staticmethod
    def _span(tracer: Tracer, request: ActivityRequest) -> contextlib.AbstractContextManager[Any]:
        return tracer.activity_span(
            f"activity:{request.name}",
            request.trace_context,
            {
                "perdure.type": "activity",
                "perdure.name": request.name,
                "perdure.instance_id": request.instance_id,
                "perdure.execution_id": request.execution_id,
                "perdure.event_id": request.source_event_id,
                "perdure.attempt": request.attempt,
                "perdure.queue": request.queue,
            },
        )

    async def _renew(self, item: WorkItem) -> None:
        """Renew the item's lock now and every third of the lock time (see ``_Renewal``)."""
        period = self.options.activity_lock_seconds / 3
        while True:
            try:
                await self.provider.renew_work_item(item, self.options.activity_lock_seconds)
            except LockLostError:
                _log.warning(
                    "lost the lock on work item %d while its activity runs", item.item_id, extra=_item_ids(item)
                )
                return
            except Exception:
                _log.exception("renewing the lock on work item %d failed", item.item_id, extra=_item_ids(item))
            await asyncio.sleep(period)


class _Renewal:
    """Renews a work item's lock while its activity runs, every ``period`` seconds (``None``: the
    worker's beats hold the lock, from a thread).

    The renewing task starts only when the first renewal is due: an activity that ends sooner, as
    most do, costs a timer instead of a task that must be started, cancelled and awaited.
    """

    def __init__(self, renew: Callable[[], Coroutine[Any, Any, None]], period: float | None) -> None:
        self._renew = renew
        self._task: asyncio.Task[None] | None = None
        self._timer = None if period is None else asyncio.get_running_loop().call_later(period, self._start)

    def _start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._renew())

    async def stop(self) -> None:
        """Renew no more (the activity ended)."""
        if self._timer is not None:
            self._timer.cancel()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def _ids(request: ActivityRequest) -> dict[str, Any]:
    """The ``extra`` of a log record about an activity."""
    return {
        "instance_id": request.instance_id,
        "execution_id": request.execution_id,
        "event_id": request.source_event_id,
        "activity": request.name,
    }


def _item_ids(item: WorkItem) -> dict[str, Any]:
    return _ids(item.request) if item.request is not None else {}
