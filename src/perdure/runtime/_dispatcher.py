"""The loop both dispatchers share: N workers that fetch, process, and sleep while idle."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import logging
from typing import Any, Generic, TypeVar

from perdure.providers._base import Provider, QueueKind

__all__ = ["Dispatcher"]

Item = TypeVar("Item")
_log = logging.getLogger("perdure.runtime")


class Dispatcher(abc.ABC, Generic[Item]):
    """Runs ``concurrency`` loops of fetch → process; stops gracefully.

    Stopping first stops fetching, then waits for items in progress; items still running when
    the grace period ends are cancelled and released (``release``) so another worker retries them.
    """

    kind: QueueKind

    def __init__(self, provider: Provider, concurrency: int, idle_timeout: float) -> None:
        self.provider = provider
        self.concurrency = concurrency
        self.idle_timeout = idle_timeout
        self._stopping = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._idle: set[asyncio.Task[Any]] = set()  # the loops waiting for work now

    @abc.abstractmethod
    async def fetch(self) -> Item | None:
        """Fetch and lock one item, or return ``None`` when there is none."""

    @abc.abstractmethod
    async def process(self, item: Item) -> None:
        """Process and ack one item; must not raise for failures of the item itself."""

    @abc.abstractmethod
    async def release(self, item: Item) -> None:
        """Give back an item whose processing was cancelled by shutdown."""

    async def idle(self) -> None:
        """Sleep until work may be ready."""
        await self.provider.wait_for_work(self.kind, self.idle_timeout)

    def start(self) -> None:
        self._loops = [
            asyncio.create_task(self._loop(), name=f"perdure-{self.kind}-{n}") for n in range(self.concurrency)
        ]

    async def stop(self, timeout: float) -> None:
        self._stopping.set()
        loops = self._loops
        if not loops:
            return
        for task in self._idle:  # they hold nothing: wake them to end now rather than at their timeout
            task.cancel()
        _, pending = await asyncio.wait(loops, timeout=timeout)
        for task in pending:
            task.cancel()
        await asyncio.gather(*loops, return_exceptions=True)
        self._loops = []

    async def _loop(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        while not self._stopping.is_set():
            try:
                item = await self.fetch()
            except Exception:
                _log.exception("fetching from the %s queue failed; retrying", self.kind)
                await self._sleep_unless_stopping(1.0)
                continue
            if item is None:
                # Idle in this task, not in one of its own raced against the stop: a stop cancels
                # the idle loops (see ``stop``), and a wake-up reaches the loop with no hop between tasks.
                # A stop that came during the fetch found this loop busy: it ends here instead.
                if self._stopping.is_set():
                    return
                self._idle.add(task)
                try:
                    await self.idle()
                except asyncio.CancelledError:
                    if self._stopping.is_set():
                        return
                    raise
                except Exception:
                    pass  # the wait failed (the store was unreachable): fetch again, which reports it
                finally:
                    self._idle.discard(task)
                continue
            await self._process_guarded(item)

    async def _process_guarded(self, item: Item) -> None:
        try:
            await self.process(item)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await asyncio.shield(self.release(item))
            raise
        except Exception:
            _log.exception("processing a %s item failed unexpectedly", self.kind)
            with contextlib.suppress(Exception):
                await self.release(item)

    async def _sleep_unless_stopping(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)
