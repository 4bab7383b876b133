"""Eager activity dispatch: work items a turn queues, locked in the turn's own commit for this
process's idle activity loops, and handed to them without another fetch.

A turn that schedules activities while this process has activity loops waiting would otherwise
commit, wake a loop, and let it fetch the item it just wrote: one more round trip and commit
before the activity starts. Instead, the commit that queues the items also locks up to as many
of them as loops are idle, exactly as those loops' fetch would (same queues, lock duration and
worker), and the provider keeps them here for the loops' next ``fetch_work_item``.

A work fetch that finds an item does the same for the loops idle meanwhile: it locks up to as
many more of its queues' items in the same statement, and keeps them here.

The store stays the only truth: a handed item is an ordinary locked work item. One that no loop
takes within ``expires`` seconds (the runtime stopped meanwhile) is put back, and so is every
item still here when the provider closes.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import weakref
from collections.abc import Callable, Coroutine, Hashable, Iterator
from typing import Any, Generic, TypeVar

__all__ = ["FetchKey", "Handoffs", "Handed"]

K = TypeVar("K", bound=Hashable)
H = TypeVar("H")

FetchKey = tuple[tuple[str, ...], float, str | None]
"""What a work fetch asks for: its queues, lock duration and worker id."""
Handed = tuple[Any, str]
"""A locked work item's stored row and its lock token."""


class Handoffs(Generic[K, H]):
    """Items locked for this process's next fetches of one kind, by what those fetches ask for
    (``K``: for work items a ``FetchKey``; ``H``: for work items ``Handed``)."""

    def __init__(self, release: Callable[[H], Coroutine[Any, Any, None]], expires: float = 2.0) -> None:
        self._release = release
        self._expires = expires
        self._items: dict[K, collections.deque[H]] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        self.last_fetch: K | None = None
        """What the latest fetch of this process asked for: what a claim locks items for."""
        self._claiming = 0  # items statements under way may lock for idle loops: those loops are spoken for
        self.backlog = True
        """Whether the latest fetch from the store took all it asked for, so more may be queued: only
        then does a fetch also lock items for idle loops. Otherwise those loops are left to the
        writes that queue items (a turn's commit locks what it queues for them, at no extra cost),
        and a fetch that most likely finds nothing more does not hold them back meanwhile."""
        # Per dispatcher loop (its task): the queue signal's ``fresh`` count when its last fetch from
        # the store found nothing, and whether it took a handed item since.
        self._found_empty: weakref.WeakKeyDictionary[asyncio.Task[Any], tuple[int, bool]] = weakref.WeakKeyDictionary()

    def give(self, key: K, items: list[H]) -> None:
        """Keep ``items``, locked as ``key`` asks, for the next fetches with that ``key``."""
        if not items:
            return
        queue = self._items.setdefault(key, collections.deque())
        queue.extend(items)
        loop = asyncio.get_running_loop()
        for handed in items:
            loop.call_later(self._expires, self._expire, key, handed)

    def spare(self, idle: int) -> int:
        """How many of ``idle`` waiting loops no statement under way locks an item for."""
        return max(0, idle - self._claiming)

    @contextlib.contextmanager
    def claiming(self, count: int) -> Iterator[None]:
        """For the block: a statement may lock ``count`` items for idle loops, which are spoken for."""
        self._claiming += count
        try:
            yield
        finally:
            self._claiming -= count

    def take(self, key: K) -> H | None:
        """A kept item for a fetch that asks for ``key``, if any."""
        self.last_fetch = key
        queue = self._items.get(key)
        if not queue:
            return None
        task = asyncio.current_task()
        entry = None if task is None else self._found_empty.get(task)
        if task is not None and entry is not None:
            self._found_empty[task] = (entry[0], True)
        return queue.popleft()

    def found_empty(self, fresh: int) -> None:
        """The current task's fetch from the store found nothing, and no item that a fetch could
        find was signalled while it ran (``fresh``: the signal's count then)."""
        task = asyncio.current_task()
        if task is not None:
            self._found_empty[task] = (fresh, False)

    def still_empty(self, fresh: int) -> bool:
        """Whether the current task's fetch, the first since it took a handed item, would find
        nothing: its fetch before that item found nothing, and nothing fetchable was signalled since.

        A loop that had nothing to fetch was handed an item and ran it; in the meantime nothing
        became fetchable that this process wrote or heard of, so fetching again would cost a round
        trip for nothing. Only that one fetch is skipped, and it counts as one that found nothing:
        the loop then waits as after an empty fetch, and its next fetch asks the store unless it is
        again the first after a handed item (a poll after a wait always asks).
        """
        task = asyncio.current_task()
        entry = None if task is None else self._found_empty.pop(task, None)
        if entry is None or not entry[1] or entry[0] != fresh:
            return False
        self.found_empty(fresh)  # as good as a fetch that found nothing
        return True

    async def close(self) -> None:
        """Put back every item still kept, and wait for that (the provider closes, or nothing
        may stay locked); later items are kept as before."""
        for queue in self._items.values():
            for handed in queue:
                self._put_back(handed)
        self._items.clear()
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)

    def _expire(self, key: K, handed: H) -> None:
        queue = self._items.get(key)
        if queue is not None and handed in queue:
            queue.remove(handed)
            self._put_back(handed)

    def _put_back(self, handed: H) -> None:
        task = asyncio.get_running_loop().create_task(self._release(handed))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
