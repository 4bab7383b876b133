"""The blocked-loop watchdog: a thread that notices when the event loop stops turning.

Turns, ``async def`` activities and lock renewals share one event loop, so code that blocks it
(``time.sleep``, a synchronous HTTP call, a long computation in an ``async def``) stalls all of
them. Nothing on the loop can notice while it is blocked, so the loop writes a heartbeat and a
thread watches it. When the heartbeat is more than a threshold late, the thread logs one warning
naming what the loop was running (``Running`` knows which activity or turn each task runs), and
one more line when the loop turns again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["Running", "Watchdog", "Work"]

_log = logging.getLogger("perdure.watchdog")

BEAT = 0.25
"""Seconds between the loop's heartbeats."""


@dataclass(frozen=True, slots=True)
class Work:
    """Something the dispatchers run on the loop: an ``async def`` activity, or a turn (``activity=None``)."""

    instance_id: str
    execution_id: int | None
    activity: str | None = None

    def describe(self) -> str:
        if self.activity is None:
            return f"the turn of instance {self.instance_id!r}"
        return f"activity {self.activity!r} of instance {self.instance_id!r}"

    def extra(self) -> dict[str, Any]:
        """The ``extra`` of a log record about this work, as the dispatchers' records have it."""
        fields: dict[str, Any] = {"instance_id": self.instance_id, "execution_id": self.execution_id}
        if self.activity is not None:
            fields["activity"] = self.activity
        return fields


class Running:
    """Which work each task on the loop runs now.

    Written on the loop around each activity call and each turn's planning (a dict store and
    delete: cheap enough for every one), read by the watchdog thread while the loop is blocked.
    """

    def __init__(self) -> None:
        self._by_task: dict[asyncio.Task[Any] | None, Work] = {}

    @contextlib.contextmanager
    def doing(self, work: Work) -> Iterator[None]:
        """Mark the current task as running ``work`` for the duration of the block."""
        task = asyncio.current_task()
        self._by_task[task] = work
        try:
            yield
        finally:
            self._by_task.pop(task, None)

    def watch(self, task: asyncio.Task[Any], work: Work) -> None:
        """Mark ``task`` as running ``work`` until it is done (an activity in a task of its own)."""
        self._by_task[task] = work
        task.add_done_callback(lambda done: self._by_task.pop(done, None))

    def now_on(self, loop: asyncio.AbstractEventLoop) -> tuple[str, dict[str, Any]]:
        """What ``loop`` runs at this moment, and the log fields for it; safe from another thread."""
        task = asyncio.current_task(loop)
        if task is None:
            return "a callback outside any task", {}
        work = self._by_task.get(task)
        if work is not None:
            return work.describe(), work.extra()
        return f"task {task.get_name()!r} ({getattr(task.get_coro(), '__qualname__', '?')})", {}


class Watchdog:
    """Logs a warning when the loop it was started on is blocked for more than ``threshold`` seconds.

    ``start`` and ``stop`` are called on the loop. A warning is logged once per blocked stretch,
    and an INFO line when the loop turns again.
    """

    def __init__(self, running: Running, threshold: float) -> None:
        self.running = running
        self.threshold = threshold
        self._poll = min(0.1, threshold / 4)
        self._beat_at = time.monotonic()
        self._stopped = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Start beating on the running loop, and the thread that watches the beats."""
        self._loop = asyncio.get_running_loop()
        self._beat()
        # A daemon, so that a runtime never shut down cannot keep the process alive.
        self._thread = threading.Thread(target=self._watch, args=(self._loop,), name="perdure-watchdog", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the beats and the thread (it answers at once)."""
        self._stopped.set()
        if self._timer is not None:
            self._timer.cancel()
        if self._thread is not None:
            self._thread.join()

    def _beat(self) -> None:
        assert self._loop is not None
        self._beat_at = time.monotonic()
        self._timer = self._loop.call_later(BEAT, self._beat)

    def _watch(self, loop: asyncio.AbstractEventLoop) -> None:
        blocked_since: float | None = None  # the last beat before the stretch being reported
        what, extra = "", dict[str, Any]()
        while not self._stopped.wait(self._poll):
            if loop.is_closed():
                return  # the loop ended without stopping the runtime: there is nothing left to watch
            beat_at = self._beat_at
            if blocked_since is None:
                late = time.monotonic() - beat_at - BEAT
                if late > self.threshold and loop.is_running():
                    blocked_since = beat_at
                    what, extra = self.running.now_on(loop)
                    _log.warning(
                        "the event loop has been blocked for over %.1f s, running %s (blocking calls belong "
                        "in plain, non-async activities, which run in threads)",
                        late,
                        what,
                        extra=extra,
                    )
            elif beat_at != blocked_since:
                # The loop stopped somewhere between the two beats: count half a beat of it.
                _log.info(
                    "the event loop turns again after about %.1f s blocked, running %s",
                    beat_at - blocked_since - BEAT / 2,
                    what,
                    extra=extra,
                )
                blocked_since = None
