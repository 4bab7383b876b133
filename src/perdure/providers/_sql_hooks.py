"""``SqlHooks``: the dialect hooks a SQL backend implements, each one transaction.

``SqlProvider`` (the template in ``_sql_provider``) calls them; a backend speaks only SQL in them
and returns stored rows, which the template decodes.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

from perdure.providers._base import (
    HistoryMark,
    InstanceFilter,
    Message,
    OrchestrationItem,
    QueueKind,
    TurnCommit,
    WorkItem,
)
from perdure.providers._codec import MessageRow
from perdure.providers._handoff import FetchKey

__all__ = ["Claim", "Committed", "LockedInstance", "SqlHooks", "WorkRow"]

WorkRow = tuple[int, str, int, str | None, Any]
"""A locked work item as stored: item id, request text, delivery count, heartbeat details and time."""


class LockedInstance(NamedTuple):
    """What a backend read while locking an instance, undecoded."""

    instance_id: str
    messages: Sequence[MessageRow]
    """Its visible messages, in queue order, delivery counts already incremented."""
    state: Sequence[Any] | None
    """The ``select_state`` columns; ``None`` if the instance does not exist."""
    history: Sequence[str]
    """The current execution's events from ``history_from`` on, in order."""
    history_from: int = 1
    """The event id of the first event of ``history`` (1: the whole history)."""


Claim = tuple[FetchKey, str, int]
"""Work items a turn's commit locks for this process: what the fetch asks for, a lock token, at most how many."""


class Committed(NamedTuple):
    """What a turn's commit did."""

    committed: bool
    """``False`` if the lock was taken over; then nothing was written."""
    claimed: Sequence[WorkRow] = ()
    """The work items it locked for the ``Claim``."""
    state: Sequence[Any] | None = None
    """The instance's ``select_state`` columns as the commit left them, if the backend knows them."""


class SqlHooks(abc.ABC):
    """The database-specific half of a SQL provider."""

    def _watch(self) -> None:  # noqa: B027 - optional: only a backend that hears other processes needs it
        """Make sure commits by other processes will wake this process's waiters (called before each wait)."""

    @abc.abstractmethod
    async def _insert_instance(self, start: Message) -> bool:
        """Insert the instance row ``start.new_instance`` and queue ``start``, unless the instance exists.

        Returns:
            Whether the instance was created; ``False`` means nothing was written.
        """

    @abc.abstractmethod
    async def _replace_instance(self, start: Message) -> int:
        """Delete every row of the instance but its row, rewrite the row for its next execution
        from ``start.new_instance`` (PENDING; inserted at execution 1 if missing), and queue
        ``start`` addressed to that execution, so that no fetch of the old run can commit.

        Returns:
            The new execution id.
        """

    @abc.abstractmethod
    async def _mark_rewinding(self, request: Message) -> bool:
        """If the instance is FAILED in ``request.execution_id``: set it PENDING (nothing else) and queue ``request``.

        Returns:
            Whether it did; ``False`` means nothing was written.
        """

    @abc.abstractmethod
    async def _insert_messages(self, messages: list[Message]) -> None:
        """Queue ``messages``, first creating each missing instance one of them names in ``new_instance``."""

    @abc.abstractmethod
    async def _select_state(self, instance_id: str) -> Sequence[Any] | None:
        """The ``select_state`` columns of an instance, or ``None``."""

    @abc.abstractmethod
    async def _select_history(self, instance_id: str, execution_id: int | None) -> list[str]:
        """The stored events of one execution (the current one for ``None``), in order."""

    @abc.abstractmethod
    async def _select_history_from(self, instance_id: str, execution_id: int, event_id: int) -> list[str]:
        """The stored events of one execution whose ids are ``event_id`` or more, in order."""

    @abc.abstractmethod
    async def _select_states(self, where: InstanceFilter) -> list[Sequence[Any]]:
        """The ``select_state`` columns of the instances ``where`` asks for (see ``_sql.instance_query``)."""

    @abc.abstractmethod
    async def _delete_instances(self, instance_ids: list[str]) -> int:
        """Delete the finished ones of these instances with every row they own; how many were deleted."""

    @abc.abstractmethod
    async def _lock_instance(
        self, lock_seconds: float, token: str, worker_id: str | None, held: Mapping[str, HistoryMark]
    ) -> LockedInstance | None:
        """Lock the next fetchable instance with ``token`` (held by ``worker_id``, if given), count the
        delivery of its visible messages, read it.

        Its history should be what ``fetch_orchestration_item`` promises for ``held``; a backend that
        cannot look ``held`` up while it locks may return the whole history, or only its last event
        (``history_from`` says which), and the template reads what is missing."""

    @abc.abstractmethod
    async def _commit_turn(self, item: OrchestrationItem, commit: TurnCommit) -> bool:
        """Write ``commit`` and release the lock, if the lock is still ``item``'s.

        The work items of ``commit.cancelled_activities`` are deleted after the new ones are
        inserted (an activity may be scheduled and cancelled in one turn); ``_codec.activity_items``
        picks them from the instance's work items.

        Returns:
            ``False`` if the lock was taken over; then nothing was written.
        """

    async def _commit_turn_claiming(
        self, item: OrchestrationItem, commit: TurnCommit, claim: Claim | None
    ) -> Committed:
        """``_commit_turn``, and with ``claim`` lock in the same commit up to its count of the work items
        the turn queues in the fetch's queues, with its token, as that fetch would.

        The default claims nothing and does not know the instance's row after the commit."""
        return Committed(await self._commit_turn(item, commit))

    async def _claim_instance(
        self, instance_id: str, key: tuple[float, str | None], token: str, held: Mapping[str, HistoryMark]
    ) -> LockedInstance | None:
        """Lock this instance with ``token`` as ``_lock_instance`` would lock the next fetchable one
        (same rules; ``key``: lock duration and worker id), if a fetch could take it now and none
        of its work items is queued or running (more completions are coming then); run
        together with the write that queues its message, so that it sees that message (a backend
        that cannot share the commit claims nothing)."""
        return None

    @abc.abstractmethod
    async def _release_instance(self, item: OrchestrationItem, delay: float, undo_delivery: bool) -> None:
        """Release ``item``'s lock (if still held), or with a delay hold the instance until then (by the
        delay alone: no worker's beats extend the hold); with ``undo_delivery``, first take back the
        delivery count of its messages (if still held)."""

    @abc.abstractmethod
    async def _lock_work_items(
        self, queues: list[str], lock_seconds: float, token: str, worker_id: str | None, count: int
    ) -> list[WorkRow]:
        """Lock the oldest visible work items of ``queues``, at most ``count``, with ``token`` (held by
        ``worker_id``, if given) and count their deliveries; oldest first."""

    @abc.abstractmethod
    async def _complete_work_item(self, item: WorkItem, completion: Message) -> bool:
        """Delete the item and queue ``completion`` if the lock is still ``item``'s; else ``False``, writing nothing."""

    @abc.abstractmethod
    async def _release_work_item(self, item: WorkItem, delay: float) -> bool:
        """Unlock the item (no worker holds it any more), visible again after ``delay`` seconds; ``False``
        if the lock was taken over."""

    @abc.abstractmethod
    async def _renew_work_item(self, item: WorkItem, lock_seconds: float) -> bool:
        """Extend the item's lock; ``False`` if it was taken over."""

    @abc.abstractmethod
    async def _count_work_deliveries(self, held: list[tuple[int, str]], change: int) -> None:
        """Add ``change`` to the delivery count of each ``(item id, lock token)`` still locked with that
        token, never below zero."""

    @abc.abstractmethod
    async def _select_work_item_locks(self, item_ids: list[int]) -> list[tuple[int, str | None]]:
        """``(item id, lock token)`` of those of the items that still exist."""

    @abc.abstractmethod
    async def _select_workers(self) -> list[Sequence[Any]]:
        """The ``select_workers`` columns of every worker record, ``alive`` by the store's clock."""

    @abc.abstractmethod
    async def _select_held_work_items(self, instance_id: str) -> list[Sequence[Any]]:
        """The request text and holder (``worker_id``) of the instance's work items a worker holds, lock unexpired."""

    @abc.abstractmethod
    async def _seconds_until_due(self, kind: QueueKind, queues: list[str]) -> float | None:
        """Seconds until something in the queue becomes fetchable by the clock alone, or ``None``."""
