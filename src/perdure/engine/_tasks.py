"""Durable tasks: what orchestration code awaits.

A task is completed only by the replay engine, from a history event. Awaiting a finished task
returns at once; awaiting an unfinished one hands the task to the engine, which resumes the
coroutine when the task finishes. Besides the combinations (``when_all``, ``when_any``), this
module holds the tasks the context makes: one scheduled by a decision, an event wait (with or
without a timeout), and the retries of an activity or child.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import TYPE_CHECKING, Any, Generic, TypeVar

from perdure._errors import ErrorDetails, TaskCancelledError, TaskFailedError
from perdure.engine._retry import RetryPolicy
from perdure.engine.events import Decision, TaskCancelled

if TYPE_CHECKING:
    from perdure.engine._context import OrchestrationContext, _Engine

T = TypeVar("T")

__all__ = [
    "DurableTask",
    "EventWait",
    "EventWithTimeout",
    "RetryTask",
    "ScheduledTask",
    "WhenAllTask",
    "WhenAnyTask",
    "resolved",
]


class DurableTask(Generic[T]):
    """A unit of durable work (an activity, a timer, a child, an event wait, or a combination).

    Tasks are awaitable, can be combined with ``ctx.when_all`` and ``ctx.when_any``, and expose
    ``done()``, ``result()`` and ``cancel()``.
    """

    __slots__ = ("_done", "_error", "_listeners", "_value")

    def __init__(self) -> None:
        self._done = False
        self._value: Any = None
        self._error: BaseException | None = None
        self._listeners: list[Callable[[DurableTask[Any]], None]] | None = None

    def done(self) -> bool:
        """Whether the task has finished (successfully or not)."""
        return self._done

    def result(self) -> T:
        """The task's result; raises the task's error if it failed.

        Raises:
            RuntimeError: if the task has not finished yet.
        """
        if not self._done:
            raise RuntimeError("the durable task has not finished yet")
        if self._error is not None:
            raise self._error
        return self._value  # type: ignore[no-any-return]

    def exception(self) -> BaseException | None:
        """The error the task failed with, or ``None``."""
        if not self._done:
            raise RuntimeError("the durable task has not finished yet")
        return self._error

    def cancel(self) -> bool:
        """Cancel the task if it has not finished; awaiting it then raises :class:`~perdure.TaskCancelledError`.

        The cancellation is recorded in history (``TaskCancelled``), so replay makes it at the same
        point. A running activity is told (``asyncio.CancelledError`` in an ``async def`` one,
        ``ActivityContext.is_cancelled()`` in a plain one) and whatever it reports later is dropped;
        a child orchestration is terminated; a timer's firing is dropped; an event wait is
        withdrawn. ``when_all`` and ``when_any`` cancel the tasks in them that have not finished.

        Returns:
            ``False`` if the task had already finished (nothing changes), else ``True``.
        """
        if self._done:
            return False
        # Finished first, so that what the cancelling sets off cannot finish it another way; its
        # listeners hear of it last, after the cancellation has been decided.
        listeners, self._listeners = self._listeners, None
        self._done, self._error = True, TaskCancelledError(f"{self._describe()} was cancelled")
        self._cancel_work()
        for listener in listeners or ():
            listener(self)
        return True

    def __await__(self) -> Generator[DurableTask[T], None, T]:
        if not self._done:
            yield self
        return self.result()

    # --- engine side ---

    def _cancel_work(self) -> None:
        """Stop what the task stands for (overridden by the tasks that stand for something)."""

    def _describe(self) -> str:
        return "the task"

    def _add_listener(self, listener: Callable[[DurableTask[Any]], None]) -> None:
        """Call ``listener`` when the task finishes, or at once if it already has."""
        if self._done:
            listener(self)
            return
        if self._listeners is None:
            self._listeners = []
        self._listeners.append(listener)

    def _resolve(self, value: Any) -> None:
        self._finish(value, None)

    def _fail(self, error: BaseException) -> None:
        self._finish(None, error)

    def _finish(self, value: Any, error: BaseException | None) -> None:
        if self._done:
            return
        self._done, self._value, self._error = True, value, error
        if self._listeners:
            listeners, self._listeners = self._listeners, None
            for listener in listeners:
                listener(self)


class WhenAllTask(DurableTask[list[Any]]):
    """Finishes with all results in order once every task has finished; fails fast on the first failure."""

    __slots__ = ("_pending", "_tasks")

    def __init__(self, tasks: Sequence[DurableTask[Any]]) -> None:
        super().__init__()
        self._tasks = list(tasks)
        self._pending = 0
        for task in self._tasks:
            if task.done():
                if task._error is not None:
                    self._fail(task._error)
                    return
            else:
                self._pending += 1
                task._add_listener(self._child_done)
        if self._pending == 0:
            self._resolve([t._value for t in self._tasks])

    def _cancel_work(self) -> None:
        _cancel_all(self._tasks)

    def _describe(self) -> str:
        return "when_all"

    def _child_done(self, task: DurableTask[Any]) -> None:
        if self._done:
            return
        if task._error is not None:
            self._fail(task._error)
            return
        self._pending -= 1
        if self._pending == 0:
            self._resolve([t._value for t in self._tasks])


class WhenAnyTask(DurableTask[DurableTask[Any]]):
    """Finishes with the first task to finish (successfully or not); its result is that task."""

    __slots__ = ("_tasks",)

    def __init__(self, tasks: Sequence[DurableTask[Any]]) -> None:
        super().__init__()
        if not tasks:
            raise ValueError("when_any needs at least one task")
        self._tasks = list(tasks)
        for task in tasks:
            if task.done():
                self._resolve(task)
                return
        for task in tasks:
            task._add_listener(self._resolve)

    def _cancel_work(self) -> None:
        _cancel_all(self._tasks)

    def _describe(self) -> str:
        return "when_any"


def _cancel_all(tasks: Sequence[DurableTask[Any]]) -> None:
    for task in tasks:
        task.cancel()


# --- the tasks the context makes -------------------------------------------------------------


class ScheduledTask(DurableTask[Any]):
    """A task completed by one completion event; knows how to turn a failure into an exception.

    ``_event_id`` is the id of the decision that scheduled it, set by the engine when recorded.
    """

    __slots__ = ("_engine", "_error_type", "_event_id", "_what", "result_type")

    def __init__(self, engine: _Engine, error_type: type[TaskFailedError], what: str, result_type: Any = None) -> None:
        super().__init__()
        self._engine = engine
        self._error_type = error_type
        self._what = what
        self._event_id = 0
        self.result_type = result_type
        """The type its result is decoded to (``None``: the JSON value as stored)."""

    def _fail_with(self, details: ErrorDetails) -> None:
        self._fail(self._error_type(f"{self._what} failed: {details.type}: {details.message}", details))

    def _cancel_work(self) -> None:
        # While replaying, the event id may not be known yet: the engine fills it in (``resolved``).
        self._engine.schedule(TaskCancelled(source_event_id=self._event_id), self)

    def _describe(self) -> str:
        return self._what


class EventWait(DurableTask[Any]):
    """A wait for an external event; cancelling it withdraws the wait (no history event needed:
    a wait is not a decision, and replay withdraws it at the same point).

    ``_since`` is the turn time the wait began; ``_timeout`` when it gives up and the timer that
    ends it, if it has a timeout: what the engine reports of the waits still open (``_waiting``).
    """

    __slots__ = ("_engine", "_name", "_since", "_timeout", "result_type")

    def __init__(self, engine: _Engine, name: str, since: datetime, result_type: Any = None) -> None:
        super().__init__()
        self._engine, self._name, self._since = engine, name, since
        self._timeout: tuple[datetime, DurableTask[None]] | None = None
        self.result_type = result_type
        """The type the event's data is decoded to (``None``: the JSON value as stored)."""

    def _cancel_work(self) -> None:
        self._engine.withdraw_wait(self._name, self)

    def _describe(self) -> str:
        return f"the wait for event {self._name!r}"


class EventWithTimeout(DurableTask[Any]):
    """An event wait that gives up when its timer fires first, and then stops waiting for real."""

    __slots__ = ("_engine", "_name", "_timer", "_wait")

    def __init__(self, engine: _Engine, name: str, wait: DurableTask[Any], timer: DurableTask[None]) -> None:
        super().__init__()
        self._engine, self._name, self._wait, self._timer = engine, name, wait, timer
        wait._add_listener(self._event_came)
        timer._add_listener(self._timed_out)

    def _event_came(self, wait: DurableTask[Any]) -> None:
        self._resolve(wait._value)

    def _timed_out(self, _: DurableTask[Any]) -> None:
        if self._done:
            return
        self._engine.withdraw_wait(self._name, self._wait)
        self._fail(TimeoutError(f"no event {self._name!r} arrived in time"))

    def _cancel_work(self) -> None:
        self._wait.cancel()
        self._timer.cancel()

    def _describe(self) -> str:
        return f"the wait for event {self._name!r}"


class RetryTask(DurableTask[Any]):
    """Runs attempts of an activity or child until one succeeds or the policy gives up.

    Between attempts it waits on a durable timer. Every step is a decision made in response to a
    completion event, so replay repeats it exactly. With a ``deadline`` (an activity's
    ``schedule_to_close``), no retry is made that could not start before it.
    """

    __slots__ = ("_attempt", "_ctx", "_current", "_deadline", "_policy", "_start", "_what")

    def __init__(
        self,
        ctx: OrchestrationContext,
        policy: RetryPolicy,
        start: Callable[[int], DurableTask[Any]],
        what: str,
        deadline: datetime | None = None,
    ) -> None:
        super().__init__()
        self._ctx, self._policy, self._start, self._what, self._deadline = ctx, policy, start, what, deadline
        self._attempt = 1
        self._current = start(1)
        self._current._add_listener(self._attempt_done)

    def _attempt_done(self, task: DurableTask[Any]) -> None:
        if self._done:
            return  # cancelled
        error = task._error
        if error is None:
            self._resolve(task._value)
            return
        details = error.details if isinstance(error, TaskFailedError) else ErrorDetails.from_exception(error)
        if not self._policy.should_retry(self._attempt, details):
            self._fail(error)
            return
        delay = self._policy.delay_before(self._attempt + 1)
        if self._past_deadline(delay):
            self._fail(error)
            return
        self._attempt += 1
        self._current = self._ctx.create_timer(delay)
        self._current._add_listener(self._timer_fired)

    def _past_deadline(self, delay: float) -> bool:
        return self._deadline is not None and (self._deadline - self._ctx.now()).total_seconds() <= delay

    def _timer_fired(self, _: DurableTask[Any]) -> None:
        if self._done:
            return
        self._current = self._start(self._attempt)
        self._current._add_listener(self._attempt_done)

    def _cancel_work(self) -> None:
        self._current.cancel()

    def _describe(self) -> str:
        return self._what


def resolved(decision: Decision, task: DurableTask[Any] | None) -> Decision:
    """A cancellation made while replaying, naming its task's event: known once the task's own
    decision, which comes first, has been matched."""
    if isinstance(decision, TaskCancelled) and isinstance(task, ScheduledTask):
        return replace(decision, source_event_id=task._event_id)
    return decision
