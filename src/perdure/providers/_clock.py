"""This process's clock for durable times: the wall clock, with its jumps smoothed out.

Durable times (a timer's due time, when a message becomes visible, when a lock expires on
SQLite) must be wall-clock times, because they keep their meaning across restarts. But the wall
clock jumps when NTP steps it or an operator sets it. Read raw, a jump back by a minute would
delay every timer due in that minute by a minute, and a jump forward would expire every lock at
once, so that a running activity is taken over and runs a second time.

:meth:`Clock.now` follows the wall clock but never jumps with it: measured against a clock that
never jumps, it never runs backwards, never slower than :data:`MIN_RATE` and never faster than
:data:`MAX_RATE` times real time. A jump is absorbed gradually (a jump back by J seconds in 10 J,
forward in 2 J), so within this process a short timer fires on time and a lock renewed every
third of its duration stays valid. Another process that starts after a jump reads the new wall
clock at once; until the first has absorbed the jump the two disagree (see ``docs/providers.md``).

:class:`TimeSource` is the seam: every durable time of a SQLite store and every turn's time is read
from the provider's ``clock`` (``Provider.clock``, :data:`PROCESS_CLOCK` unless a test environment gives a
virtual clock, ``perdure.testing``), never from a global.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Protocol

__all__ = ["CLOCK", "MAX_RATE", "MIN_RATE", "PROCESS_CLOCK", "Clock", "TimeSource", "now"]

MIN_RATE = 0.9
"""The slowest the clock runs while it absorbs a jump back: a timer is at most 11 % late."""
MAX_RATE = 1.5
"""The fastest it runs while it absorbs a jump forward: a lock renewed every third of its
duration, the work dispatcher's rhythm, never expires in between."""


def _wall() -> float:
    return time.time()  # looked up at each call, so that tests can move it


def _since_boot() -> float:
    return time.clock_gettime(time.CLOCK_BOOTTIME)


# Real time, counting time the machine was suspended (Linux): else waking from a suspend would read
# as a jump of the wall clock. Elsewhere the monotonic clock is the best there is.
_ELAPSED: Callable[[], float] = _since_boot if hasattr(time, "CLOCK_BOOTTIME") else time.monotonic


class TimeSource(Protocol):
    """Where durable times come from: seconds since the epoch. Safe to call from any thread."""

    def now(self) -> float:
        """The current time, in seconds since the epoch."""
        ...


class Clock:
    """Seconds since the epoch, from ``wall`` but rate-limited against ``monotonic``."""

    def __init__(
        self,
        wall: Callable[[], float] = _wall,
        monotonic: Callable[[], float] = _ELAPSED,
        *,
        min_rate: float = MIN_RATE,
        max_rate: float = MAX_RATE,
    ) -> None:
        if not 0 <= min_rate <= 1 <= max_rate:
            raise ValueError("need 0 <= min_rate <= 1 <= max_rate")
        self._wall = wall
        self._monotonic = monotonic
        self._min_rate = min_rate
        self._max_rate = max_rate
        self._lock = threading.Lock()
        self._last: tuple[float, float] | None = None  # (the last reading, the monotonic time of it)

    def now(self) -> float:
        """The current time, in seconds since the epoch."""
        with self._lock:
            wall, mono = self._wall(), self._monotonic()
            if self._last is None:
                reading = wall
            else:
                last, then = self._last
                elapsed = max(0.0, mono - then)
                reading = min(max(wall, last + elapsed * self._min_rate), last + elapsed * self._max_rate)
            self._last = (reading, mono)
            return reading


CLOCK = Clock()
"""The clock every part of this process reads."""


def now() -> float:
    """:meth:`Clock.now` of :data:`CLOCK` (read at each call, so that tests can replace it)."""
    return CLOCK.now()


class _ProcessClock:
    """:data:`CLOCK` as a :class:`TimeSource`, looked up at each call (so that tests can replace it)."""

    def now(self) -> float:
        return CLOCK.now()


PROCESS_CLOCK: TimeSource = _ProcessClock()
"""The default ``Provider.clock``: this process's clock; costs what calling :func:`now` costs."""
