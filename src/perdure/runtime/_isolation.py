"""Poison isolation: a turn that may have crashed its process runs alone in it.

A process that dies in the middle of a turn (an OOM kill, a crash in an extension, a turn that
never yields and is killed) leaves every instance it had fetched locked, and each of them is
delivered once more when its lock expires: their delivery counts grow together. Counted like that,
healthy instances that happened to share a process with a bad one would become poison too. So a
turn whose messages were delivered before without a turn completing, a **suspect**, runs alone in
its process: the dispatcher stops fetching, waits for the turns in flight to finish, runs the
suspect, then goes on. Another suspect fetched meanwhile is put back at once, its delivery taken
back. If the suspect kills the process again, only its own count grows, and after
``RuntimeOptions.max_dispatch_attempts`` deliveries it fails as poison, alone.

Activities cannot wait for a turn: one may run for hours. So while a suspect runs alone, the work
dispatcher of the same runtime fetches nothing, and the activities it is running keep running with
their deliveries taken back in the store (:class:`HeldWork`). If the suspect kills the process,
they are redelivered when their locks expire and run again (activities run at least once), without
that crash counting towards their poison limit; if it does not, their deliveries are counted again.
"""

from __future__ import annotations

import asyncio
import logging

from perdure._errors import ProviderError
from perdure.providers._base import OrchestrationItem, Provider, WorkItem

__all__ = ["HeldWork", "TurnGate", "is_suspect"]

_log = logging.getLogger("perdure.runtime")


def is_suspect(item: OrchestrationItem) -> bool:
    """Whether a message of ``item`` was delivered before without a turn completing."""
    return any(m.dequeue_count > 1 for m in item.messages)


class TurnGate:
    """Lets turns run side by side, except a suspect's, which runs alone.

    A dispatcher loop calls :meth:`admit` before it fetches and :meth:`leave` when it is done with
    what it fetched (or fetched nothing). Between the two, :meth:`isolate` makes its turn the only
    one: no loop fetches until it leaves. A second suspect fetched meanwhile is not held: it is
    put back without counting the delivery, so that a crash of the first does not charge it.
    """

    def __init__(self) -> None:
        self._busy = 0  # admitted loops, except the one running alone
        self._alone = False
        self._changed = asyncio.Condition()

    async def admit(self) -> None:
        """Wait until no turn runs alone, then count this loop in."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._alone)
            self._busy += 1

    async def isolate(self) -> bool:
        """Make this admitted loop's turn the only one: stop fetching, wait for the others to finish.

        Returns ``False`` at once, changing nothing, when another turn runs alone or waits to.
        If it is cancelled while waiting, the loop is admitted as before.
        """
        async with self._changed:
            if self._alone:
                return False
            self._alone = True
            self._busy -= 1
            try:
                await self._changed.wait_for(lambda: self._busy == 0)
            except BaseException:
                self._alone = False
                self._busy += 1
                self._changed.notify_all()
                raise
            return True

    async def leave(self, alone: bool) -> None:
        """Count this loop out; after a turn that ran alone, let the others fetch again."""
        async with self._changed:
            if alone:
                self._alone = False
            else:
                self._busy -= 1
            self._changed.notify_all()


class HeldWork:
    """The activity work items a runtime's work dispatcher holds, and a pause for a suspect's turn.

    The work dispatcher calls :meth:`fetching` before each fetch, :meth:`fetched` after it, and
    :meth:`done` once it has acked or released an item. A suspect's turn calls :meth:`uncharge`
    before it runs and :meth:`recharge` after.
    """

    def __init__(self) -> None:
        self._items: dict[int, WorkItem] = {}
        self._fetches = 0  # fetches in progress: what they return is held before the store knows it
        self._paused = False
        self._changed = asyncio.Condition()

    async def fetching(self) -> None:
        """Wait until no suspect runs alone, then count a fetch in."""
        async with self._changed:
            await self._changed.wait_for(lambda: not self._paused)
            self._fetches += 1

    async def fetched(self, item: WorkItem | None) -> None:
        """Count a fetch out, holding what it returned."""
        async with self._changed:
            self._fetches -= 1
            if item is not None:
                self._items[item.item_id] = item
            self._changed.notify_all()

    def done(self, item: WorkItem) -> None:
        """The item was acked or released: it is no longer this runtime's to answer for."""
        self._items.pop(item.item_id, None)

    async def uncharge(self, provider: Provider) -> list[WorkItem] | None:
        """Stop fetching, and take back the deliveries of the items held; ``None`` if the store refused.

        Returns the items whose deliveries were taken back, for :meth:`recharge`. On ``None`` fetching
        goes on and the suspect must not run now. (Should the store have taken them back after all,
        its answer lost with the connection, those items are undercounted by one, as below.)
        """
        try:
            async with self._changed:
                self._paused = True
                await self._changed.wait_for(lambda: self._fetches == 0)
                items = list(self._items.values())
            if items:
                await provider.charge_work_deliveries(items, charged=False)
        except ProviderError as exc:
            await self._resume()
            _log.warning("could not take back the deliveries of the activities in flight: %s", exc)
            return None
        except BaseException:  # cancelled while waiting: leave fetching as it was
            await self._resume()
            raise
        return items

    async def recharge(self, provider: Provider, items: list[WorkItem]) -> None:
        """After the suspect's turn (the process lives): count the deliveries again, and fetch again.

        If the store refuses, those items are undercounted by one delivery: an activity that does
        crash its process is then failed as poison one delivery later, which is harmless.
        """
        try:
            if items:
                await provider.charge_work_deliveries(items, charged=True)
        except ProviderError as exc:
            _log.warning("could not count the deliveries of the activities in flight again: %s", exc)
        finally:
            await self._resume()

    async def _resume(self) -> None:
        async with self._changed:
            self._paused = False
            self._changed.notify_all()
