"""In-process wake-ups: a dispatcher or a waiting client sleeps until someone signals."""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
import weakref
from collections.abc import Hashable, Iterator, Sequence
from typing import Any

__all__ = ["DueTimes", "Signal", "SignalBoard", "Waiter", "WorkSignal"]


Ended = tuple[bool, int]
"""What a committed change did to an instance: whether an execution ended, and which execution."""


class Signal:
    """Wakes every current waiter when set; later waiters wait for the next ``set``.

    Each ``set`` may carry what the change did (``ended``), so a waiter can tell a change that
    cannot interest it from one it must look at; ``version`` counts the ``set`` calls.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()
        self.version = 0
        self.ended: Ended | None = None
        self.row: Sequence[Any] | None = None

    def set(self, ended: Ended | None = None, row: Sequence[Any] | None = None) -> None:
        """Wake everyone waiting now; ``ended`` says what the change did, and ``row`` what it left
        stored (the ``select_state`` columns), if known."""
        self.version += 1
        self.ended = ended
        self.row = row
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if woken by :meth:`set`."""
        if timeout <= 0:
            return False
        event = self._event
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await event.wait()
                return True
        return False


class WorkSignal:
    """Wakes as many idle dispatcher loops as there are new items, not all of them (no thundering herd)."""

    def __init__(self) -> None:
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self.version = 0
        """Counts the ``set`` calls, so a caller that was not waiting can tell it missed one."""
        self.fresh = 0
        """Counts the ``set`` calls that may have made an item fetchable (all but ``handed`` ones)."""

    def set(self, count: int | None = None, *, handed: bool = False) -> None:
        """Wake ``count`` waiters (all when ``None``); ``handed``: the new items are all locked for
        this process's loops already (see ``_handoff``), so no fetch can find them."""
        self.version += 1
        if not handed:
            self.fresh += 1
        woken = 0
        while self._waiters and (count is None or woken < count):
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                woken += 1

    @property
    def idle(self) -> int:
        """How many waiters wait now."""
        return sum(1 for waiter in self._waiters if not waiter.done())

    @contextlib.contextmanager
    def waiter(self) -> Iterator[Waiter]:
        """A waiter registered now, for the length of the block.

        Register before reading what decides how long to sleep: a ``set`` during the read then
        wakes the waiter at once instead of finding nobody to wake.
        """
        future = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        try:
            yield Waiter(future)
        finally:
            if not future.done():
                future.cancel()
            with contextlib.suppress(ValueError):
                self._waiters.remove(future)


class Waiter:
    """One registration with a :class:`WorkSignal`; remembers a wake-up that came before :meth:`wait`."""

    def __init__(self, future: asyncio.Future[None]) -> None:
        self._future = future

    async def wait(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds; True if woken (also by a wake-up since registration)."""
        if self._future.done():
            return True
        if timeout <= 0:
            return False
        # Awaited directly (not through ``wait_for``, which adds a future and a loop iteration per wake-up).
        try:
            async with asyncio.timeout(timeout):
                await self._future
            return True
        except TimeoutError:
            # Woken in the same iteration as the time-out: the wake-up counts (its ``set`` counted it).
            return self._future.done() and not self._future.cancelled()


class DueTimes:
    """What the store last said about when something becomes fetchable by the clock alone, per queue.

    An idle dispatcher asks the store how long it may sleep; its answer stays true until a write
    makes something due sooner. Work this process makes visible at once wakes a dispatcher by its
    signal and needs no new answer; what it delays (a timer, a put-back), and anything another
    process writes, makes every answer forgotten. Answers are kept ``max_age`` seconds at most.
    """

    def __init__(self, max_age: float = 1.0) -> None:
        self.max_age = max_age
        self.version = 0
        """Counts the times answers were forgotten: an answer read across one is not kept."""
        self._answers: dict[Hashable, tuple[float | None, float]] = {}

    def forget(self) -> None:
        """Something may be due sooner than any answer says."""
        self.version += 1
        self._answers.clear()

    def get(self, key: Hashable) -> tuple[bool, float | None]:
        """``(known, seconds until due or None for nothing due)`` for ``key``."""
        answer = self._answers.get(key)
        now = time.monotonic()
        if answer is None or now - answer[1] > self.max_age:
            return False, None
        due = answer[0]
        return True, None if due is None else due - now

    def put(self, key: Hashable, version: int, seconds: float | None) -> None:
        """Keep the answer read since ``version``, unless answers were forgotten meanwhile or it is "now"."""
        if version != self.version or (seconds is not None and seconds <= 0):
            return
        now = time.monotonic()
        self._answers[key] = (None if seconds is None else now + seconds, now)


class SignalBoard:
    """The signals of one provider: one per queue kind, and one per instance someone waits on."""

    def __init__(self) -> None:
        self.queues = {"orchestrator": WorkSignal(), "activity": WorkSignal()}
        self.due = DueTimes()
        # Per instance waited on: its signal, how many wait, and how many of them wait for any change
        # (not only for an end).
        self._instances: dict[str, tuple[Signal, int, int]] = {}
        # The queue signal's version when each dispatcher loop (a task) last began a fetch.
        self._fetch_began: dict[str, weakref.WeakKeyDictionary[asyncio.Task[Any], int]] = {
            kind: weakref.WeakKeyDictionary() for kind in self.queues
        }

    def fetching(self, kind: str) -> None:
        """The current task begins a fetch: a wake-up it misses before it waits is noticed."""
        task = asyncio.current_task()
        if task is not None:
            self._fetch_began[kind][task] = self.queues[kind].version

    def missed_wake_up(self, kind: str) -> bool:
        """Whether work was signalled since the current task's last fetch began (it was not waiting then)."""
        task = asyncio.current_task()
        began = None if task is None else self._fetch_began[kind].pop(task, None)
        return began is not None and began != self.queues[kind].version

    def work(self, kind: str, count: int = 1, *, handed: bool = False) -> None:
        """``count`` new items in the ``kind`` queue (``handed``: all of them locked for this process's loops)."""
        if count > 0:
            self.queues[kind].set(count, handed=handed)

    def instance(self, instance_id: str, ended: Ended | None = None, row: Sequence[Any] | None = None) -> None:
        """The instance's state changed; ``ended``: whether an execution ended and which, and ``row``:
        its ``select_state`` columns after the change, if known."""
        entry = self._instances.get(instance_id)
        if entry is None:
            return
        signal, _, any_change = entry
        if any_change or ended is None or ended[0]:
            signal.set(ended, row)
        # else every waiter waits for an end, and this change ended nothing: none is woken

    def everything(self) -> None:
        """Something changed that this process did not see (another process wrote)."""
        self.due.forget()
        for queue in self.queues.values():
            queue.set()
        for instance, _, _ in self._instances.values():
            instance.set()

    async def wait_instance(
        self, instance_id: str, timeout: float, until_ended: int | None = None
    ) -> Sequence[Any] | None:
        """Wait for a change of one instance.

        With ``until_ended``, a change known to end no execution from ``until_ended`` on does not
        end the wait (one that comes with another change before the waiter runs again does). The
        wait then returns the instance's row as the ending change left it, if that change came with
        it and no other change came since; otherwise ``None`` (read the state).
        """
        plain = 1 if until_ended is None else 0
        signal, waiters, any_change = self._instances.get(instance_id) or (Signal(), 0, 0)
        self._instances[instance_id] = (signal, waiters + 1, any_change + plain)
        deadline = asyncio.get_running_loop().time() + timeout
        try:
            seen = signal.version
            while await signal.wait(deadline - asyncio.get_running_loop().time()):
                ended = signal.ended
                if until_ended is None or signal.version != seen + 1 or ended is None:
                    return None
                if ended[0] and ended[1] >= until_ended:
                    return signal.row
                seen = signal.version  # a change that cannot interest the waiter: wait for the next
            return None
        finally:
            signal, waiters, any_change = self._instances[instance_id]
            if waiters == 1:
                del self._instances[instance_id]
            else:
                self._instances[instance_id] = (signal, waiters - 1, any_change - plain)
