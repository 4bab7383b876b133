"""Durable tasks: what orchestration code awaits.

A task is completed only by the replay engine, from a history event. Awaiting a finished task
returns at once; awaiting an unfinished one hands the task to the engine, which resumes the
coroutine when the task finishes.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from typing import Any, Generic, TypeVar

from perdure._errors import TaskCancelledError

T = TypeVar("T")

__all__ = ["DurableTask", "WhenAllTask", "WhenAnyTask"]


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
