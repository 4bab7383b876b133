"""Driving orchestration code: its coroutine is resumed with ``send``/``throw``, never by an event loop.

The driver knows nothing of history: it runs the code until it awaits a durable task that has not
finished, and reports how the code ended, if it did, as the terminal decision to record. While the
code runs, a stand-in is installed as asyncio's running loop, so that anything that would need a
real event loop fails clearly instead of hanging, and the determinism guard (``_guards``) is on.
"""

from __future__ import annotations

import asyncio
import inspect
import sys
from collections.abc import Callable, Coroutine
from typing import Any, NoReturn

from perdure._errors import ErrorDetails, NonDeterminismError, NonDurableAwaitError, SerializationError
from perdure._payloads import Payloads
from perdure.engine._context import ContinueAsNew, OrchestrationContext
from perdure.engine._guards import Guard
from perdure.engine._tasks import DurableTask
from perdure.engine.events import (
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestrationStarted,
)

__all__ = ["CoroutineDriver", "OrchestrationFunction"]

OrchestrationFunction = Callable[[OrchestrationContext, Any], Coroutine[Any, Any, Any]]
"""An orchestration as the engine calls it: ``fn(ctx, input)`` returning a coroutine."""

Ending = OrchestrationCompleted | OrchestrationFailed | OrchestrationContinuedAsNew


class CoroutineDriver:
    """The coroutine of one execution's code, from its start to its close at the end of the turn."""

    def __init__(self, *, guarded: bool = True) -> None:
        self.ctx: OrchestrationContext | None = None
        self.coro: Coroutine[Any, Any, Any] | None = None
        self.awaited: DurableTask[Any] | None = None
        self.throw_next: BaseException | None = None
        self.guarded = guarded
        self.guard: Guard | None = None
        self.yielded: set[DurableTask[Any]] = set()  # every task the code waited for
        self.payloads = _PLAIN_JSON  # converts the output

    @property
    def started(self) -> bool:
        """Whether the orchestration function has been called."""
        return self.ctx is not None

    @property
    def running(self) -> bool:
        """Whether the code may still make decisions: started, and not closed yet."""
        return self.coro is not None

    def start(
        self, orchestration: OrchestrationFunction, ctx: OrchestrationContext, event: OrchestrationStarted
    ) -> None:
        """Call the orchestration function; an error in that call fails the code when it first runs."""
        self.ctx = ctx
        try:
            coro = orchestration(ctx, event.input)
            if not inspect.iscoroutine(coro):
                raise TypeError(f"orchestration {event.name!r} must be an async function, it returned {coro!r}")
        except Exception as exc:
            coro = _raising(exc)  # fails the orchestration like any error in its code
        self.coro = coro
        if self.guarded:
            self.guard = Guard(coro)

    def resume(self) -> Ending | None:
        """Run the code as long as the task it awaits has finished; returns how it ended, if it did."""
        while self.coro is not None:
            if self.awaited is not None and not self.awaited.done():
                return None
            self.awaited = None
            error, self.throw_next = self.throw_next, None
            yielded, ending = self.step(error)
            if ending is not None:
                return ending
            if isinstance(yielded, DurableTask):
                self.awaited = yielded
                self.yielded.add(yielded)
            else:
                self.throw_next = NonDurableAwaitError(
                    f"an orchestration awaited {yielded!r}, which is not a durable task; orchestrations may only "
                    "await tasks from their context (use ctx.create_timer instead of asyncio.sleep, and "
                    "activities for I/O)"
                )
        return None

    def step(self, error: BaseException | None) -> tuple[Any, Ending | None]:
        """Run the code until it awaits something (returned first) or ends (returned second)."""
        assert self.coro is not None
        previous_loop = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(_NO_EVENT_LOOP)  # type: ignore[arg-type]
        refused = None
        if self.guard is not None:
            self.guard.on()
        try:
            return (self.coro.send(None) if error is None else self.coro.throw(error)), None
        except StopIteration as stop:
            return None, self.returned(stop.value)
        except ContinueAsNew as signal:
            return None, OrchestrationContinuedAsNew(input=signal.input, version=signal.version)
        except NonDeterminismError:
            raise
        except (Exception, asyncio.CancelledError) as exc:
            # CancelledError is no Exception; from orchestration code it must fail the instance,
            # not escape to the dispatcher, where it would read as the dispatcher being cancelled.
            return None, OrchestrationFailed(error=ErrorDetails.from_exception(exc))
        finally:
            if self.guard is not None:
                refused = self.guard.off()
            asyncio.events._set_running_loop(previous_loop)
            if refused is not None:
                raise refused  # a guarded call fails the turn even when the code caught it

    def returned(self, output: Any) -> Ending:
        try:
            output = self.payloads.to_json(output, f"output of orchestration {self.ctx.name if self.ctx else '?'!r}")
        except SerializationError as exc:
            return OrchestrationFailed(error=ErrorDetails.from_exception(exc))
        return OrchestrationCompleted(output=output)

    def close(self) -> None:
        """Close the coroutine: nothing of an orchestration stays in memory between turns."""
        coro, self.coro = self.coro, None
        if coro is None:
            return
        previous_loop = asyncio.events._get_running_loop()
        asyncio.events._set_running_loop(_NO_EVENT_LOOP)  # type: ignore[arg-type]
        try:
            coro.close()
        except BaseException:
            pass
        finally:
            asyncio.events._set_running_loop(previous_loop)


_PLAIN_JSON = Payloads()


async def _raising(exc: Exception) -> Any:
    raise exc


class _NoEventLoop:
    """Installed as the running loop while orchestration code runs, so asyncio calls fail clearly."""

    def create_task(self, coro: Any, **_: Any) -> NoReturn:
        if inspect.iscoroutine(coro):
            coro.close()  # refused: it must not linger, to be reported as never awaited
        raise _misuse("create_task")

    def __getattr__(self, name: str) -> Any:
        raise _misuse(name)


def _misuse(name: str) -> NonDurableAwaitError:
    caller = _asyncio_caller(sys._getframe(2))
    if caller is not None:
        return NonDurableAwaitError(f"{caller} cannot wait for durable tasks in orchestration code: {_INSTEAD[caller]}")
    return NonDurableAwaitError(
        f"orchestration code used the asyncio event loop (loop.{name}); orchestrations must only await "
        "durable tasks from their context: ctx.create_timer instead of asyncio.sleep, activities for I/O"
    )


_INSTEAD = {
    "asyncio.gather": "use await ctx.when_all([...]) instead",
    "asyncio.wait": "use ctx.when_all([...]) or ctx.when_any([...]) instead",
    "asyncio.as_completed": "use ctx.when_any([...]) instead",
    "asyncio.wait_for": "give wait_for_event a timeout, or race the task with ctx.when_any and ctx.create_timer",
}
_ASYNCIO_CODES = {getattr(asyncio, name.split(".")[1]).__code__: name for name in _INSTEAD}


def _asyncio_caller(frame: Any) -> str | None:
    """The asyncio combinator (``asyncio.gather``…) the loop is being used by, if any."""
    for _ in range(8):
        if frame is None:
            return None
        name = _ASYNCIO_CODES.get(frame.f_code)
        if name is not None:
            return name
        frame = frame.f_back
    return None


_NO_EVENT_LOOP = _NoEventLoop()
