"""The execution cache: running executions kept in memory between turns, checked against the store every time.

A turn normally replays an execution's whole history, so a long orchestration costs time
quadratic in its length. After a committed turn that leaves the execution running, the
dispatcher keeps its engine state (:class:`~perdure.engine._replay.LiveExecution`: the suspended
coroutine and its task table) with the history as the store now holds it. The next fetch of that
instance tells the provider which event the worker holds last (:class:`HistoryMark`), the provider
returns the history from that event on, and :meth:`ExecutionCache.take` decides:

- the store holds exactly what the entry saw (same instance row, same execution, same last event,
  nothing after it): the turn resumes the kept state with its new messages only;
- the store holds more, or something else (another worker ran a turn, a restart, a purge and a new
  instance under the same id, a rewind or continue-as-new started another execution): the kept
  state is closed and the turn replays from the store, as without a cache. The history events
  the entry holds are reused when the store's history continues them, and read otherwise.

An entry is taken out of the cache for the length of a turn and put back only after that turn is
committed as planned, so a turn that fails, is put back, loses its lock or meets non-determinism
leaves nothing behind. Entries beyond ``cache_size`` (least recently used first) and entries idle
for ``cache_idle_timeout`` are closed, and so is everything at shutdown.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime

from perdure._errors import HistoryFormatError
from perdure._payloads import Payloads, UnreadablePayloadError
from perdure.engine import HistoryEvent, encode_event
from perdure.engine._payload_fields import open_event
from perdure.engine._replay import LiveExecution
from perdure.providers._base import HistoryMark, OrchestrationItem, Provider
from perdure.runtime._turn import TurnPlan

__all__ = ["CachedExecution", "ExecutionCache", "Taken"]


@dataclass(slots=True)
class CachedExecution:
    """One kept execution.

    Attributes:
        live: The engine state after its last turn.
        history: Its whole history as the store holds it after that turn (the events of the turns
            this worker ran are kept as the engine returned them, encoded by the payload codec if
            there is one: they are compared with the store's as replay compares decisions).
        created_at: The instance row's creation time: a purged and re-created instance differs.
        used_at: When its last turn ended (``time.monotonic``), for the idle expiry.
    """

    live: LiveExecution
    history: list[HistoryEvent]
    created_at: datetime
    used_at: float

    @property
    def mark(self) -> HistoryMark:
        """What the entry holds, as the fetch is told: its execution, and its last event's id."""
        return HistoryMark(execution_id=self.live.execution_id, event_id=len(self.history))


@dataclass(frozen=True, slots=True)
class Taken:
    """What the cache makes of a fetched item.

    Attributes:
        item: The item with its whole history, or ``None`` when the store returned only part of it
            and the entry cannot complete it: the whole history must be read.
        live: The kept state to resume, when the store holds exactly what it was built from.
        outcome: ``"hit"``, ``"miss"`` (nothing kept) or ``"stale"`` (kept, but the store moved on).
    """

    item: OrchestrationItem | None
    live: LiveExecution | None
    outcome: str


class ExecutionCache:
    """Kept executions by instance id, least recently used first; bounded in number and idle time."""

    def __init__(
        self,
        size: int,
        idle_timeout: float,
        clock: Callable[[], float] = time.monotonic,
        payloads: Payloads | None = None,
    ) -> None:
        self.size = size
        self.payloads = payloads or Payloads()
        self.idle_timeout = idle_timeout
        self._clock = clock
        self._entries: OrderedDict[str, CachedExecution] = OrderedDict()
        self._marks: dict[str, HistoryMark] = {}

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def marks(self) -> Mapping[str, HistoryMark]:
        """What this worker holds, by instance id: the ``held`` of its fetches."""
        return self._marks

    def take(self, item: OrchestrationItem) -> Taken:
        """Take the instance's entry out and match it with ``item`` as fetched (see the module docstring)."""
        entry = self._entries.pop(item.instance_id, None)
        self._marks.pop(item.instance_id, None)
        if entry is None:
            return Taken(item if item.history_from == 1 else None, None, "miss")
        history = _continued(entry, item, self.payloads)
        current = history is not None and history is entry.history
        if not current:
            entry.live.close()
        if history is None:
            return Taken(item if item.history_from == 1 else None, None, "stale")
        whole = item if history is item.history else replace(item, history=history, history_from=1)
        return Taken(whole, entry.live if current else None, "hit" if current else "stale")

    async def take_whole(
        self, item: OrchestrationItem, provider: Provider
    ) -> tuple[OrchestrationItem, LiveExecution | None, str]:
        """:meth:`take`, then the item with its whole history (read from ``provider`` when the store
        returned the history after an event this worker no longer holds), the kept state to
        resume, and the outcome."""
        taken = self.take(item)
        if taken.item is not None:
            return taken.item, taken.live, taken.outcome
        assert item.state is not None
        try:
            history = await provider.get_history(item.instance_id, item.state.execution_id)
        except HistoryFormatError as exc:
            return replace(item, history=None, history_error=str(exc), history_from=1), None, taken.outcome
        return replace(item, history=history, history_from=1), None, taken.outcome

    def keep_turn(self, item: OrchestrationItem, plan: TurnPlan) -> tuple[LiveExecution | None, int]:
        """Keep the state a committed turn left running, with the history as the store now holds it.

        Returns:
            The state kept (``None``: nothing was), and how many other entries that evicted.
        """
        live = plan.result.live if plan.result is not None else None
        if live is None or item.state is None or plan.rewound:
            return None, 0
        if live.execution_id != plan.commit.execution_id or not isinstance(plan.replayed, list):
            return None, 0
        return live, self.keep(item.instance_id, live, plan.replayed, plan.commit.history, item.state.created_at)

    def keep(
        self,
        instance_id: str,
        live: LiveExecution,
        history: list[HistoryEvent],
        new: Sequence[HistoryEvent],
        created_at: datetime,
    ) -> int:
        """Keep ``live`` after a committed turn that appended ``new`` to ``history`` (the list is extended).

        Returns:
            How many other entries it evicted (over ``size``, least recently used first).
        """
        history.extend(new)
        previous = self._entries.pop(instance_id, None)
        if previous is not None and previous.live is not live:
            previous.live.close()
        entry = CachedExecution(live, history, created_at, self._clock())
        self._entries[instance_id] = entry
        self._marks[instance_id] = entry.mark
        evicted = 0
        while len(self._entries) > self.size:
            self._close(next(iter(self._entries)))
            evicted += 1
        return evicted

    def expect(self, instance_id: str, live: LiveExecution) -> None:
        """Announce, before its turn's ack, the entry ``live`` will be if the ack succeeds.

        Another loop of this process may fetch the instance as soon as the ack releases it, before
        the entry is kept: with the mark already there, its fetch reads only the tail. The entry,
        not the mark, is what a turn trusts, so a mark whose ack then fails costs a read, no more.
        """
        self._marks[instance_id] = HistoryMark(execution_id=live.execution_id, event_id=live.next_event_id - 1)

    def forget(self, instance_id: str) -> None:
        """Withdraw what :meth:`expect` announced, the turn not being kept after all."""
        if instance_id not in self._entries:
            self._marks.pop(instance_id, None)

    def expire(self) -> int:
        """Close the entries idle for longer than ``idle_timeout``; how many."""
        limit = self._clock() - self.idle_timeout
        expired = 0
        while self._entries:
            instance_id, entry = next(iter(self._entries.items()))
            if entry.used_at > limit:
                break
            self._close(instance_id)
            expired += 1
        return expired

    def clear(self) -> None:
        """Close every entry (at shutdown)."""
        while self._entries:
            self._close(next(iter(self._entries)))

    def _close(self, instance_id: str) -> None:
        entry = self._entries.pop(instance_id)
        self._marks.pop(instance_id, None)
        entry.live.close()


def _continued(entry: CachedExecution, item: OrchestrationItem, payloads: Payloads) -> list[HistoryEvent] | None:
    """The whole stored history of ``item`` if it continues what ``entry`` saw (``entry.history``
    itself when it is exactly that), else ``None``: the entry says nothing about it.

    Within one instance row (its creation time) and one execution, history is append-only: if
    the first event returned is the one the entry holds at that position, and the last one too
    when nothing follows, everything before them is the same as well.
    """
    state, tail, start = item.state, item.history, item.history_from
    held = entry.history
    if state is None or not tail or state.created_at != entry.created_at:
        return None
    if state.execution_id != entry.live.execution_id or start > len(held):
        return None
    if any(e.event_id != start + i for i, e in enumerate(tail)) or not _same(tail[0], held[start - 1], payloads):
        return None
    if start + len(tail) - 1 == len(held):  # nothing stored after what the entry saw
        return held if _same(tail[-1], held[-1], payloads) else None
    return tail if start == 1 else [*held[: start - 1], *tail]


def _same(stored: HistoryEvent, held: HistoryEvent, payloads: Payloads) -> bool:
    """Whether ``held`` is the event the store holds as ``stored``.

    Compared as the store keeps them, and under a payload codec also decoded, as replay matches
    decisions: an encryption codec (Fernet) never encodes the same value twice alike, so one
    event encoded twice differs in stored form only. A payload this process cannot decode makes
    them differ: the turn then replays from the store, which says why it cannot read it.
    """
    if stored == held or encode_event(stored) == encode_event(held):
        return True
    if payloads.codec is None:
        return False
    try:
        return encode_event(open_event(stored, payloads)) == encode_event(open_event(held, payloads))
    except UnreadablePayloadError:
        return False
