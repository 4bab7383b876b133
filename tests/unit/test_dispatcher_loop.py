"""The dispatcher loop: fetch → process, idle in the loop's own task, and a stop that ends idle loops at once."""

from __future__ import annotations

import asyncio
from typing import Any

from perdure.runtime._dispatcher import Dispatcher

_FOREVER = 3600.0  # longer than the test's time-out: a loop that waits this long fails the test


class _Scripted(Dispatcher[str]):
    """Fetches what the test puts in ``items`` (``None``: nothing); idles until woken or cancelled."""

    kind = "activity"

    def __init__(self, concurrency: int = 1) -> None:
        super().__init__(provider=None, concurrency=concurrency, idle_timeout=_FOREVER)  # type: ignore[arg-type]
        self.items: asyncio.Queue[str | None] = asyncio.Queue()
        self.processed: list[str] = []
        self.idles = 0
        self.idle_cancelled = 0
        self.wake = asyncio.Event()

    async def fetch(self) -> str | None:
        return await self.items.get()

    async def process(self, item: str) -> None:
        self.processed.append(item)

    async def release(self, item: str) -> None:
        raise AssertionError("nothing is in progress at a stop")

    async def idle(self) -> None:
        self.idles += 1
        try:
            await self.wake.wait()
        except asyncio.CancelledError:
            self.idle_cancelled += 1
            raise
        self.wake.clear()


async def _settle() -> None:
    for _ in range(5):
        await asyncio.sleep(0)


async def test_a_loop_processes_what_it_fetches_and_idles_after_an_empty_fetch() -> None:
    dispatcher = _Scripted()
    dispatcher.start()
    for item in ("a", "b", None):
        dispatcher.items.put_nowait(item)
    await _settle()
    assert dispatcher.processed == ["a", "b"]
    assert dispatcher.idles == 1
    dispatcher.items.put_nowait("c")
    dispatcher.items.put_nowait(None)
    dispatcher.wake.set()  # a wake-up: the loop fetches again, then idles again
    await _settle()
    assert dispatcher.processed == ["a", "b", "c"]
    assert dispatcher.idles == 2
    await dispatcher.stop(_FOREVER)


async def test_a_stop_cancels_idle_loops_instead_of_waiting_for_their_timeout() -> None:
    dispatcher = _Scripted(concurrency=3)
    dispatcher.start()
    for _ in range(3):
        dispatcher.items.put_nowait(None)
    await _settle()
    assert dispatcher.idles == 3
    await dispatcher.stop(_FOREVER)
    assert dispatcher.idle_cancelled == 3


async def test_a_loop_whose_fetch_ends_empty_after_a_stop_does_not_idle() -> None:
    dispatcher = _Scripted()
    dispatcher.start()
    await _settle()  # the loop waits in its fetch, not idle: the stop cannot cancel it
    stopping: asyncio.Task[Any] = asyncio.create_task(dispatcher.stop(_FOREVER))
    await _settle()
    dispatcher.items.put_nowait(None)
    await stopping
    assert dispatcher.idles == 0
