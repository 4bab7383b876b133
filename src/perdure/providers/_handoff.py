"""Eager activity dispatch: work items a turn queues, locked in the turn's own commit for this
process's idle activity loops, and handed to them without another fetch.

A turn that schedules activities while this process has activity loops waiting would otherwise
commit, wake a loop, and let it fetch the item it just wrote: one more round trip and commit
before the activity starts. Instead, the commit that queues the items also locks up to as many
of them as loops are idle, exactly as those loops' fetch would (same queues, lock duration and
worker), and the provider keeps them here for the loops' next ``fetch_work_item``.

The store stays the only truth: a handed item is an ordinary locked work item. One that no loop
takes within ``expires`` seconds (the runtime stopped meanwhile) is put back, and so is every
item still here when the provider closes.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import Callable, Coroutine
from typing import Any

__all__ = ["FetchKey", "Handoffs", "Handed"]

FetchKey = tuple[tuple[str, ...], float, str | None]
"""What a work fetch asks for: its queues, lock duration and worker id."""
Handed = tuple[Any, str]
"""A locked work item's stored row and its lock token."""


class Handoffs:
    """Work items locked for this process's next work fetches, by what those fetches ask for."""

    def __init__(self, release: Callable[[Handed], Coroutine[Any, Any, None]], expires: float = 2.0) -> None:
        self._release = release
        self._expires = expires
        self._items: dict[FetchKey, collections.deque[Handed]] = {}
        self._releasing: set[asyncio.Task[None]] = set()
        self.last_fetch: FetchKey | None = None
        """What the latest work fetch of this process asked for: what a claim locks items for."""

    def give(self, key: FetchKey, items: list[Handed]) -> None:
        """Keep ``items``, locked as ``key`` asks, for the next fetches with that ``key``."""
        if not items:
            return
        queue = self._items.setdefault(key, collections.deque())
        queue.extend(items)
        loop = asyncio.get_running_loop()
        for handed in items:
            loop.call_later(self._expires, self._expire, key, handed)

    def take(self, key: FetchKey) -> Handed | None:
        """A kept item for a fetch that asks for ``key``, if any."""
        self.last_fetch = key
        queue = self._items.get(key)
        return queue.popleft() if queue else None

    async def close(self) -> None:
        """Put back every item still kept (the provider closes)."""
        for queue in self._items.values():
            for handed in queue:
                self._put_back(handed)
        self._items.clear()
        if self._releasing:
            await asyncio.gather(*self._releasing, return_exceptions=True)

    def _expire(self, key: FetchKey, handed: Handed) -> None:
        queue = self._items.get(key)
        if queue is not None and handed in queue:
            queue.remove(handed)
            self._put_back(handed)

    def _put_back(self, handed: Handed) -> None:
        task = asyncio.get_running_loop().create_task(self._release(handed))
        self._releasing.add(task)
        task.add_done_callback(self._releasing.discard)
