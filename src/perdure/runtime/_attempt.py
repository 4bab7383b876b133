"""One activity attempt under its time limits, stopped when it is cancelled.

The work dispatcher runs every attempt through :class:`Attempts`:

- **Cancellation.** A turn that cancels an activity, records its time-out or ends its execution
  deletes its work item. Twice a second, one read (``Provider.work_items_held``) checks the items
  of all running attempts; an attempt whose item is gone is stopped and reports nothing.
- **Time limits**, enforced here, where the attempt runs: ``start_to_close`` from the moment it
  starts, the ``schedule_to_close`` deadline, and ``heartbeat_timeout`` since the last heartbeat.
  An attempt past one is stopped and reported as failed, type ``ActivityTimeoutError``.
  ``start_to_close`` is also made durable when the attempt starts: its failure is queued to the
  instance, due a second after the limit runs out (a live worker reports first), so the attempt
  times out even if this process dies or its event loop is blocked. Whichever of that and the
  attempt's own report comes first is recorded; the other is dropped.
- **Stopping** sets ``ActivityContext.is_cancelled()`` and cancels an ``async def`` activity's
  task (``asyncio.CancelledError`` inside it). A plain ``def`` one keeps its thread until it
  returns. Either way the dispatcher's slot stays busy until the abandoned work has ended, so a
  worker never takes more work than it has room for.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import functools
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

from perdure._errors import ACTIVITY_TIMEOUT, ErrorDetails
from perdure.engine.events import ActivityFailed
from perdure.providers._base import ActivityRequest, Message, Provider, WorkItem
from perdure.providers._clock import PROCESS_CLOCK, TimeSource
from perdure.runtime._activity import AttemptSignals
from perdure.runtime._registry import RegisteredActivity

__all__ = ["Attempt", "AttemptStopped", "Attempts"]

_log = logging.getLogger("perdure.runtime")

WATCH_SECONDS = 0.5
"""How often the work items of running attempts are checked: a cancellation is noticed this late."""
_SLOW_TO_STOP_SECONDS = 5.0
_DURABLE_GRACE_SECONDS = 1.0  # the durable time-out of start_to_close comes this much after the worker's own


class AttemptStopped(Exception):
    """The attempt was stopped: ``timeout`` says how it ran out of time, ``None`` means it was cancelled."""

    def __init__(self, timeout: ErrorDetails | None) -> None:
        super().__init__(timeout.message if timeout else "cancelled")
        self.timeout = timeout


class Attempts:
    """The running attempts of one work dispatcher, and the watch over their work items."""

    def __init__(self, provider: Provider, threads: ThreadPoolExecutor, watch_seconds: float = WATCH_SECONDS) -> None:
        self._provider = provider
        self._threads = threads
        self._watch_seconds = watch_seconds
        self._running: dict[int, tuple[WorkItem, Attempt]] = {}
        self._watch: asyncio.Task[None] | None = None

    async def run(self, item: WorkItem, activity: RegisteredActivity, args: tuple[Any, ...], attempt: Attempt) -> Any:
        """Run ``attempt`` of ``item``'s activity; its result, its exception, or :class:`AttemptStopped`."""
        assert item.request is not None
        self._running[item.item_id] = (item, attempt)
        if self._watch is None or self._watch.done():
            self._watch = asyncio.create_task(self._watch_items(), name="perdure-attempt-watch")
        try:
            await self._promise_time_out(item.request)
            return await attempt.run(activity, args, self._threads)
        finally:
            del self._running[item.item_id]

    async def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch

    async def _watch_items(self) -> None:
        while self._running:
            await asyncio.sleep(self._watch_seconds)
            running = list(self._running.values())
            try:
                held = await self._provider.work_items_held([item for item, _ in running])
            except Exception as exc:  # a store that is down for a moment: look again next time
                _log.debug("checking the work items of running activities failed: %s", exc)
                continue
            for item, attempt in running:
                if item.item_id not in held:
                    attempt.cancel()

    async def _promise_time_out(self, request: ActivityRequest) -> None:
        """Queue the attempt's failure, due when ``start_to_close`` runs out (unless the deadline comes first)."""
        if request.start_to_close is None:
            return
        now = datetime.fromtimestamp(self._provider.clock.now(), UTC)
        due = now + timedelta(seconds=request.start_to_close + _DURABLE_GRACE_SECONDS)
        if request.deadline is not None and request.deadline <= due:
            return  # the turn queued the deadline's failure already
        failed = ActivityFailed(source_event_id=request.source_event_id, error=_start_to_close(request))
        message = Message(
            instance_id=request.instance_id, execution_id=request.execution_id, event=failed, visible_at=due
        )
        try:
            await self._provider.enqueue_messages([message])
        except Exception as exc:  # the limit still holds here, only not across a crash of this process
            _log.warning("could not record the start_to_close of activity %r: %s", request.name, exc)


class Attempt:
    """One attempt: its activity runs as a task of its own (or in a thread) while the limits are watched."""

    def __init__(self, request: ActivityRequest, signals: AttemptSignals, clock: TimeSource = PROCESS_CLOCK) -> None:
        self.request = request
        self.clock = clock
        """The store's clock, which the ``schedule_to_close`` deadline is a time of."""
        self.signals = signals
        self._started = time.monotonic()
        self._task: asyncio.Future[Any] | None = None  # an async def activity
        self._thread: Future[Any] | None = None  # a plain one
        self._work: asyncio.Future[Any] | None = None  # what is awaited: the task, or the thread's future
        self.on_task: Callable[[asyncio.Task[Any]], None] | None = None  # told of an async activity's task
        self._cancelled = False

    async def run(self, activity: RegisteredActivity, args: tuple[Any, ...], threads: ThreadPoolExecutor) -> Any:
        self._started = self.signals.last_heartbeat = time.monotonic()
        work = self._work = self._start(activity, args, threads)
        try:
            while not work.done():
                limit = self._next_limit()
                if limit is None:
                    return await self._finished(work)
                if limit[0] <= 0:
                    raise AttemptStopped(ErrorDetails(type=ACTIVITY_TIMEOUT, message=limit[1]))
                await asyncio.wait({work}, timeout=limit[0])
            return self._outcome(work)
        finally:
            if not work.done():  # out of time, or the dispatcher itself is being cancelled
                self.signals.stop()
                work.cancel()

    def cancel(self) -> None:
        """Stop the attempt because its work item is gone: what it does from now on is of no use."""
        self._cancelled = True
        self.signals.stop()
        if self._work is not None:
            self._work.cancel()

    async def _finished(self, work: asyncio.Future[Any]) -> Any:
        """Await ``work`` itself (the cheapest way, for the common attempt without limits)."""
        try:
            return await work
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if not work.cancelled() or (task is not None and task.cancelling()):
                raise  # the dispatcher is being cancelled
            return self._outcome(work)

    def _outcome(self, work: asyncio.Future[Any]) -> Any:
        if not work.cancelled():
            return work.result()
        if self._cancelled:
            raise AttemptStopped(None)
        # Cancelled by the activity itself: a failure like any other.
        raise RuntimeError(f"activity {self.request.name!r} was cancelled from within (asyncio.CancelledError)")

    async def wind_down(self) -> None:
        """Wait until abandoned work has really ended (a thread cannot be stopped), logging if that is slow."""
        if self._thread is not None:
            if self._thread.done():
                return
            ended: asyncio.Future[Any] = asyncio.wrap_future(self._thread)
        elif self._task is not None and not self._task.done():
            ended = self._task
        else:
            return
        done, _ = await asyncio.wait({ended}, timeout=_SLOW_TO_STOP_SECONDS)
        if not done:
            _log.warning(
                "activity %r of %r still runs %.0f s after it was abandoned; its slot stays busy until it ends",
                self.request.name,
                self.request.instance_id,
                _SLOW_TO_STOP_SECONDS,
                extra={"instance_id": self.request.instance_id, "activity": self.request.name},
            )
            await asyncio.wait({ended})
        if not ended.cancelled():
            ended.exception()  # retrieved: what an abandoned attempt raises is of no interest

    def _start(
        self, activity: RegisteredActivity, args: tuple[Any, ...], threads: ThreadPoolExecutor
    ) -> asyncio.Future[Any]:
        if self._cancelled:  # cancelled before it started
            raise AttemptStopped(None)
        if activity.is_async:
            name = f"perdure-activity {self.request.name!r} of {self.request.instance_id!r}"
            self._task = asyncio.get_running_loop().create_task(activity.function(*args), name=name)
            if self.on_task is not None:
                self.on_task(self._task)
            return self._task
        call = functools.partial(contextvars.copy_context().run, activity.function, *args)
        self._thread = threads.submit(call)
        return asyncio.wrap_future(self._thread)

    def _next_limit(self) -> tuple[float, str] | None:
        """Seconds until the first time limit runs out (maybe past: negative), and what it says; ``None``: no limit."""
        request, now = self.request, time.monotonic()
        limits: list[tuple[float, str]] = []
        if request.start_to_close is not None:
            limits.append((self._started + request.start_to_close - now, _start_to_close(request).message))
        if request.deadline is not None:
            left = request.deadline.timestamp() - self.clock.now()
            limits.append((left, f"activity {request.name!r} ran past its schedule_to_close deadline"))
        if request.heartbeat_timeout is not None:
            left = self.signals.last_heartbeat + request.heartbeat_timeout - now
            limits.append((left, f"activity {request.name!r} sent no heartbeat for {request.heartbeat_timeout:g} s"))
        return min(limits, default=None)


def _start_to_close(request: ActivityRequest) -> ErrorDetails:
    message = f"activity {request.name!r} exceeded its start_to_close of {request.start_to_close:g} s"
    return ErrorDetails(type=ACTIVITY_TIMEOUT, message=message)
