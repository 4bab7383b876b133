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
"""

from __future__ import annotations

import asyncio

from perdure.providers._base import OrchestrationItem

__all__ = ["TurnGate", "is_suspect"]


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
