"""``TestEnvironment``: a store, a runtime and a client for a test, on a clock that can skip ahead.

With ``time_skipping``, the store and the runtime read a :class:`VirtualClock` (real time plus an
offset that only grows) through ``Provider.clock``, the one place durable times come from. A task
of the environment looks at the store every few milliseconds; when everything waits (no message
an instance could take now, no turn in flight, no activity running or due), it moves the clock on
to the next due time — a timer, an event's timeout, a retry's delay — in the same transaction as the
check, so nothing that arrives meanwhile is overtaken. Time spent running code is real time.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import tempfile
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import TypeVar

from perdure.client import Client
from perdure.providers import SqliteProvider
from perdure.providers._clock import PROCESS_CLOCK, TimeSource
from perdure.runtime import Registry, Runtime, RuntimeOptions

__all__ = ["TestEnvironment", "VirtualClock"]

_Part = TypeVar("_Part")

_log = logging.getLogger("perdure.testing")

_LOOK_EVERY = 0.002
"""Seconds between two looks at the store for a moment when everything waits."""


class VirtualClock:
    """A clock that runs with real time and can be moved forward, never back.

    Args:
        base: The real clock it follows (the process clock).
    """

    def __init__(self, base: TimeSource = PROCESS_CLOCK) -> None:
        self._base = base
        self._offset = 0.0
        self._lock = threading.Lock()

    def now(self) -> float:
        """The virtual time, in seconds since the epoch."""
        return self._base.now() + self._offset

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward.

        Raises:
            ValueError: for a negative, infinite or NaN number of seconds.
        """
        if not 0 <= seconds < math.inf:
            raise ValueError(f"a clock moves forward by a finite number of seconds, not {seconds!r}")
        with self._lock:
            self._offset += seconds

    @property
    def skipped(self) -> float:
        """How many seconds it has been moved forward in all."""
        return self._offset


class TestEnvironment:
    """A fresh store, a running runtime and a client, for testing orchestrations.

    ::

        async with TestEnvironment(registry) as env:
            instance_id = await env.client.start_orchestration(None, "Renewal", order)
            state = await env.client.wait_for_orchestration(instance_id)  # its 30-day timer fired at once

    The store is a SQLite file in a temporary directory, deleted on exit. With ``time_skipping``
    (the default), time is virtual: whenever every instance waits — no message an instance could
    take now, no turn in flight, no activity running or due — the clock jumps to the next due
    timer (an event's timeout, a retry's delay, a start scheduled for later), so waiting 30 days
    takes no time. ``ctx.now()`` in orchestrations, and every time the store keeps, show the
    virtual time. With ``time_skipping=False`` the same code runs with real time.

    Args:
        registry: The orchestrations and activities under test.
        time_skipping: Use a virtual clock that skips to the next due time whenever everything waits.
        options: The runtime's options (default: ``RuntimeOptions()``).

    Attributes:
        time_skipping: Whether time is virtual.
    """

    __test__ = False  # a library class whose name starts with "Test": not a test class for pytest

    def __init__(
        self, registry: Registry, *, time_skipping: bool = True, options: RuntimeOptions | None = None
    ) -> None:
        self.registry = registry
        self.time_skipping = time_skipping
        self.options = options or RuntimeOptions()
        self._clock: VirtualClock | None = None
        self._auto_skip_held = 0
        self._directory: tempfile.TemporaryDirectory[str] | None = None
        self._provider: SqliteProvider | None = None
        self._runtime: Runtime | None = None
        self._client: Client | None = None
        self._skipper: asyncio.Task[None] | None = None

    @property
    def client(self) -> Client:
        """A :class:`~perdure.Client` of the environment's store."""
        return self._entered(self._client)

    @property
    def runtime(self) -> Runtime:
        """The running :class:`~perdure.Runtime`."""
        return self._entered(self._runtime)

    @property
    def provider(self) -> SqliteProvider:
        """The store: a :class:`~perdure.SqliteProvider` on a file of a temporary directory."""
        return self._entered(self._provider)

    @staticmethod
    def _entered(part: _Part | None) -> _Part:
        if part is None:
            raise RuntimeError(
                "the TestEnvironment is not running: use it as `async with TestEnvironment(...) as env:`"
            )
        return part

    async def __aenter__(self) -> TestEnvironment:
        if self._directory is not None:
            raise RuntimeError("this TestEnvironment is already in use")
        self._directory = tempfile.TemporaryDirectory(prefix="perdure-test-")
        self._clock = VirtualClock() if self.time_skipping else None
        try:
            path = Path(self._directory.name) / "perdure.db"
            self._provider = await SqliteProvider.open(path, clock=self._clock)
            self._runtime = Runtime(self._provider, self.registry, self.options)
            await self._runtime.start()
        except BaseException:
            await self._close()
            raise
        options = self.options
        self._client = Client(
            self._provider,
            payload_codec=options.payload_codec,
            data_converter=options.data_converter,
            max_payload_bytes=options.max_payload_bytes,
        )
        if self._clock is not None:
            self._skipper = asyncio.create_task(self._skip_while_waiting(), name="perdure-time-skipping")
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def _close(self) -> None:
        skipper, self._skipper = self._skipper, None
        if skipper is not None:
            skipper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await skipper
        self._client = None
        runtime, self._runtime = self._runtime, None
        provider, self._provider = self._provider, None
        try:
            if runtime is not None:
                await runtime.shutdown()
        finally:
            if provider is not None:
                await provider.close()
        directory, self._directory = self._directory, None
        if directory is not None:
            directory.cleanup()

    def now(self) -> datetime:
        """The environment's time (virtual with ``time_skipping``): what ``ctx.now()`` reads in a new turn."""
        clock = self._clock or PROCESS_CLOCK
        return datetime.fromtimestamp(clock.now(), UTC)

    async def sleep(self, duration: float | timedelta) -> None:
        """Let ``duration`` (seconds or a ``timedelta``) pass.

        With ``time_skipping``, it first lets what can run now run, until everything waits (so
        ``start_orchestration`` then ``sleep(timedelta(days=30))`` sees its 30-day timer fire).
        Then the virtual clock moves ``duration`` on, stopping at each time something falls due on
        the way until everything waits again, as if the time had passed; it returns once the clock
        is there and everything waits again. Automatic skipping is held meanwhile, so the clock
        stops where asked. Without ``time_skipping``, this sleeps.

        Raises:
            ValueError: for a negative duration.
        """
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        if not 0 <= seconds < math.inf:
            raise ValueError(f"sleep takes a finite, non-negative duration, not {duration!r}")
        clock = self._clock
        if clock is None:
            await asyncio.sleep(seconds)
            return
        with self.auto_time_skipping_disabled():
            await self._everything_waits()
            target = clock.now() + seconds
            while clock.now() < target:
                if not await self.provider._move_clock(clock.advance, target):
                    await asyncio.sleep(_LOOK_EVERY)
            await self._everything_waits()

    @contextlib.contextmanager
    def auto_time_skipping_disabled(self) -> Iterator[None]:
        """Within the block the clock moves only by :meth:`sleep` (and with real time).

        For a test that acts at a moment of its choosing while instances wait: raise an event
        before a timeout, look at an instance between two timers.
        """
        self._auto_skip_held += 1
        try:
            yield
        finally:
            self._auto_skip_held -= 1

    async def _everything_waits(self) -> None:
        while True:
            if await self.provider._waiting_until() is not None:
                return
            await asyncio.sleep(_LOOK_EVERY)

    async def _skip_while_waiting(self) -> None:
        clock = self._clock
        assert clock is not None
        while True:
            await asyncio.sleep(_LOOK_EVERY)
            if self._auto_skip_held:
                continue
            try:
                # A cheap read first; the move checks again in its own transaction.
                due = await self.provider._waiting_until()
                if due is not None and due < math.inf:
                    await self.provider._move_clock(clock.advance, math.inf)
            except Exception:  # the store failed for a moment: a test must not hang for it
                _log.exception("time skipping: looking at the store failed; looking again")
