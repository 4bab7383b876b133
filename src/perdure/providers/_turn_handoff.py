"""Eager orchestration dispatch: an instance whose message this process queues, locked in the same
commit for an idle orchestration loop of this process, and handed to its next fetch.

An activity's ack (or a start) queues a message while orchestration loops of this process wait
for work; otherwise the commit wakes a loop, and the loop fetches the instance it just wrote to:
one more round trip and commit before the turn starts. Instead, the write runs together with a
lock of that instance, exactly as the loop's next fetch would take it (same rules, suspension
included; the lock duration and worker id of the latest orchestration fetch; a history tail for
the execution cache it said it holds), and the item waits in ``Handoffs`` for that fetch.

A handed item is an ordinary locked instance, so peek-lock holds as for any fetch: one no loop
takes within ``expires`` seconds, or still kept when the provider closes, is released with its
delivery taken back. At most as many locks are taken as loops wait, so none waits for nothing;
none is tried for an instance this process holds or is claiming already, and the backend takes
none while work items of the instance are queued or running (a fan-out's completions keep coming,
and a fetch a little later takes them together in one turn).

While a fetch has returned a suspect (a message delivered before without a turn completing: the
runtime runs its turn alone, see ``runtime/_isolation``), nothing is handed, and what was kept or
being locked is put back before that fetch returns: should the suspect's turn take the process
down, no other instance is charged a delivery for it.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, TypeVar

from perdure.providers._base import HistoryMark, OrchestrationItem
from perdure.providers._codec import orchestration_item
from perdure.providers._handoff import Handoffs
from perdure.providers._signal import WorkSignal
from perdure.providers._sql_hooks import LockedInstance

__all__ = ["TurnHandoffs", "TurnKey"]

T = TypeVar("T")
TurnKey = tuple[float, str | None]
"""What an orchestration fetch asks for: its lock duration and worker id."""
Claim = Callable[[str, TurnKey, str, Mapping[str, HistoryMark]], Awaitable[LockedInstance | None]]
"""Lock one instance if a fetch could take it now: instance id, key, lock token, what the caller holds."""


class TurnHandoffs:
    """Instances locked for this process's next orchestration fetches."""

    def __init__(
        self,
        signal: WorkSignal,
        claim: Claim,
        release: Callable[[OrchestrationItem], Coroutine[Any, Any, None]],
        expires: float = 2.0,
    ) -> None:
        self.kept: Handoffs[TurnKey, OrchestrationItem] = Handoffs(release, expires)
        self._signal = signal
        self._claim = claim
        self._release = release
        self._held: Mapping[str, HistoryMark] = {}
        self._claiming = 0  # claims under way: each is meant for one of the idle loops
        self._settled = asyncio.Condition()  # notified when a claim ends
        self._suspects: dict[str, asyncio.TimerHandle] = {}  # lock tokens of suspects fetched, until their turn ends
        # Instances this process holds (lock token by instance id: kept, or fetched and not acked or
        # put back yet) or is claiming: a claim of one would find it locked, so none is sent.
        self._out: dict[str, str] = {}

    @property
    def isolating(self) -> bool:
        """Whether a fetched suspect's turn runs: nothing may be handed to any loop meanwhile."""
        return bool(self._suspects)

    def take(self, key: TurnKey, held: Mapping[str, HistoryMark]) -> OrchestrationItem | None:
        """A kept item for a fetch that asks for ``key`` and holds ``held``, if any."""
        self._held = held  # the cache's live marks: what a claim reads the history tail for
        return self.kept.take(key)

    async def write_and_claim(self, write: Coroutine[Any, Any, T], instance_id: str) -> tuple[T, bool]:
        """Run ``write`` (which queues a message for ``instance_id``); with an orchestration loop of
        this process idle and not yet spoken for, lock the instance for it in the same commit.

        Returns what ``write`` returned, and whether an item was kept for the next fetch.
        """
        key = self.kept.last_fetch
        if key is None or self._suspects or instance_id in self._out or self._signal.idle <= self._claiming:
            return await write, False
        token = uuid.uuid4().hex
        self._claiming += 1
        self._out[instance_id] = token
        handed = False
        try:
            # Started in this order in one loop iteration: the backend runs both in one commit, the
            # write first (a backend that cannot share the commit finds nothing, or locks later).
            written, locked = await asyncio.gather(
                write, self._claim(instance_id, key, token, self._held), return_exceptions=True
            )
            if isinstance(locked, LockedInstance):  # a failed claim locked nothing, or its lock expires
                item = orchestration_item(
                    locked.instance_id, token, locked.messages, locked.state, locked.history, locked.history_from
                )
                if self._suspects:
                    await self._release(item)  # a suspect came out meanwhile
                else:
                    self.kept.give(key, [item])
                    handed = True
        finally:
            self._claiming -= 1
            if not handed and self._out.get(instance_id) == token:
                del self._out[instance_id]
            async with self._settled:
                self._settled.notify_all()
        if isinstance(written, BaseException):
            if handed:
                self._signal.set(1, handed=True)  # the kept item still needs its loop
            raise written
        return written, handed

    async def fetched(self, item: OrchestrationItem, lock_seconds: float) -> None:
        """A fetch is about to return ``item``: if it is a suspect, hand nothing until its turn ends
        (or its lock would have expired), and put back what is kept or being locked first."""
        self._out[item.instance_id] = item.lock_token
        if not any(m.dequeue_count > 1 for m in item.messages):  # the runtime's ``is_suspect``
            return
        loop = asyncio.get_running_loop()
        self._suspects[item.lock_token] = loop.call_later(lock_seconds, self.ended, item)
        async with self._settled:
            await self._settled.wait_for(lambda: self._claiming == 0)
        await self.kept.close()

    def ended(self, item: OrchestrationItem) -> None:
        """The turn of a fetched ``item`` was acked or put back (or its lock expired)."""
        if self._out.get(item.instance_id) == item.lock_token:
            del self._out[item.instance_id]
        timer = self._suspects.pop(item.lock_token, None)
        if timer is not None:
            timer.cancel()
