"""``SqlProvider``: the half of a SQL provider that does not depend on the database.

Each public operation is a template method: it checks its arguments, calls one dialect hook
(an abstract ``_method`` a backend implements as one transaction, speaking only SQL and returning
stored rows), turns what comes back into records or errors, and then wakes this process's waiters.
So the contract's rules (what is refused, when a lock counts as lost, how a row that cannot be
decoded travels, who is woken after a commit) are written once, and SQLite and PostgreSQL differ
only in their hooks.
"""

from __future__ import annotations

import contextlib
import math
import uuid
from collections.abc import Coroutine, Mapping, Sequence
from dataclasses import replace
from typing import Any

from perdure._errors import InstanceAlreadyExistsError
from perdure._state import OrchestrationState, OrchestrationStatus
from perdure.engine import HistoryEvent, decode_event
from perdure.providers._base import (
    HistoryMark,
    InstanceFilter,
    LockLostError,
    Message,
    OrchestrationItem,
    Provider,
    QueueKind,
    TurnCommit,
    WorkerInfo,
    WorkItem,
)
from perdure.providers._codec import (
    decoded_history,
    held_activities,
    orchestration_item,
    state_from_row,
    work_item,
    worker_from_row,
)
from perdure.providers._handoff import FetchKey, Handed, Handoffs
from perdure.providers._signal import SignalBoard
from perdure.providers._sql_hooks import Committed, SqlHooks
from perdure.providers._turn_handoff import TurnHandoffs

__all__ = ["SqlProvider"]


class SqlProvider(SqlHooks, Provider):
    """The contract's rules, once; a backend subclasses it and implements the dialect hooks."""

    #: Longest a dispatcher sleeps without looking at the store (work written by other processes
    #: that no signal announced is noticed this late); a backend that cannot hear others sets it.
    _work_poll_seconds: float = math.inf
    #: The same for a client waiting on an instance's state.
    _state_poll_seconds: float = math.inf

    def __init__(self) -> None:
        self._signals = SignalBoard()
        self._handoffs: Handoffs[FetchKey, Handed] = Handoffs(self._put_back)
        self._turns = TurnHandoffs(self._signals.queues["orchestrator"], self._claim_instance, self._put_back_turn)

    # --- instances and history -----------------------------------------------------------------

    async def create_instance(self, start: Message) -> None:
        if start.new_instance is None:
            raise ValueError("create_instance needs a message with new_instance set")
        created, handed = await self._write_and_claim(self._insert_instance(start), start)
        if not created:
            self._written([], handed)
            raise InstanceAlreadyExistsError(f"an instance with id {start.instance_id!r} already exists")
        self._written([start], handed)

    async def restart_instance(self, start: Message) -> int:
        if start.new_instance is None:
            raise ValueError("restart_instance needs a message with new_instance set")
        execution_id = await self._replace_instance(start)
        self._signals.instance(start.instance_id)
        self._signals.due.forget()  # the old run's locks and timers are gone
        self._signals.work("orchestrator")
        return execution_id

    async def request_rewind(self, request: Message) -> bool:
        if request.execution_id is None or request.new_instance is not None:
            raise ValueError("a rewind request names the failed execution and creates no instance")
        if not await self._mark_rewinding(request):
            return False
        self._signals.instance(request.instance_id)
        self._signals.work("orchestrator")
        return True

    async def enqueue_messages(self, messages: Sequence[Message]) -> None:
        if messages:
            await self._insert_messages(list(messages))
            self._written(messages)

    async def get_state(self, instance_id: str) -> OrchestrationState | None:
        row = await self._select_state(instance_id)
        return None if row is None else state_from_row(row)

    async def get_history(self, instance_id: str, execution_id: int | None = None) -> list[HistoryEvent]:
        return [decode_event(text) for text in await self._select_history(instance_id, execution_id)]

    async def list_instances(self, where: InstanceFilter) -> list[OrchestrationState]:
        return [state_from_row(row) for row in await self._select_states(where)]

    async def purge_instances(self, instance_ids: Sequence[str]) -> int:
        return await self._delete_instances(list(instance_ids)) if instance_ids else 0

    # --- orchestrator queue --------------------------------------------------------------------

    async def fetch_orchestration_item(
        self, lock_seconds: float, *, worker_id: str | None = None, held: Mapping[str, HistoryMark] | None = None
    ) -> OrchestrationItem | None:
        held = held or {}
        item = self._turns.take((float(lock_seconds), worker_id), held)
        if item is None:
            token = uuid.uuid4().hex
            self._signals.fetching("orchestrator")
            fresh = self._signals.queues["orchestrator"].fresh
            if self._turns.kept.still_empty(fresh) and self._nothing_due(("orchestrator",)):
                return None
            locked = await self._lock_instance(lock_seconds, token, worker_id, held)
            if locked is None:
                if self._signals.queues["orchestrator"].fresh == fresh:
                    self._turns.kept.found_empty(fresh)
                return None
            item = orchestration_item(
                locked.instance_id, token, locked.messages, locked.state, locked.history, locked.history_from
            )
        await self._turns.fetched(item, lock_seconds)
        if self._turns.isolating:
            await self._handoffs.close()  # no activity is charged a delivery for the suspect either
        return await self._history_as_held(item, held.get(item.instance_id))

    async def _history_as_held(self, item: OrchestrationItem, mark: HistoryMark | None) -> OrchestrationItem:
        """``item`` with the history the contract promises for ``mark``, if the backend returned another part.

        A backend may return more than asked (the whole of a short history) or less (only the last
        event of a long one, not knowing what the caller holds). What is missing is read now, under
        the instance lock, which no other turn can append under; only a restart or a purge could
        change the history meanwhile, and they take the lock away, so the turn's ack writes nothing.
        """
        state, history = item.state, item.history
        if state is None or history is None:
            return item
        wanted = mark.event_id if mark is not None and mark.execution_id == state.execution_id else 1
        if wanted >= item.history_from:
            at = wanted - item.history_from
            if at < len(history) and history[at].event_id == wanted:
                return item if at == 0 else replace(item, history=history[at:], history_from=wanted)
            wanted = 1  # the mark's event is not stored: the whole history
            if item.history_from == 1:
                return item
        events, error = decoded_history(await self._select_history_from(item.instance_id, state.execution_id, wanted))
        if events is not None and wanted > 1 and (not events or events[0].event_id != wanted):
            return await self._history_as_held(item, None)
        return replace(item, history=events, history_error=error, history_from=wanted)

    async def ack_orchestration_item(self, item: OrchestrationItem, commit: TurnCommit) -> None:
        try:
            done = await self._commit_and_claim(item, commit)
        finally:
            self._turns.ended(item)
        if not done.committed:
            raise LockLostError(f"the lock on instance {item.instance_id!r} expired and was taken over")
        state = commit.state
        ended = (False, 0) if state is None else (state.status.is_terminal, state.execution_id)
        self._signals.instance(item.instance_id, ended, done.state)
        self._written(commit.messages)
        handed = len(done.claimed) == len(commit.activity_items)
        self._signals.work("activity", len(commit.activity_items), handed=handed)
        if len(commit.consumed) < len(item.messages) or (
            item.state is not None and item.state.status is OrchestrationStatus.SUSPENDED
        ):
            self._signals.work("orchestrator")  # messages it leaves queued may be fetchable now

    async def abandon_orchestration_item(
        self, item: OrchestrationItem, delay: float = 0.0, *, undo_delivery: bool = False
    ) -> None:
        try:
            await self._release_instance(item, delay, undo_delivery)
        finally:
            self._turns.ended(item)
        self._signals.due.forget()  # held back until the delay ends
        self._signals.work("orchestrator")

    async def _commit_and_claim(self, item: OrchestrationItem, commit: TurnCommit) -> Committed:
        """Commit the turn; with activity loops of this process idle, lock the work items it queues
        for them in the same commit (see ``_handoff``), and keep them for those loops."""
        key = self._handoffs.last_fetch
        count = min(len(commit.activity_items), self._spare_activity_loops())
        if key is None or count == 0 or not any(r.queue in key[0] for r in commit.activity_items):
            return await self._commit_turn_claiming(item, commit, None)
        token = uuid.uuid4().hex
        with self._handoffs.claiming(count):
            done = await self._commit_turn_claiming(item, commit, (key, token, count))
        await self._hand_over(key, [(row, token) for row in done.claimed])
        return done

    def _spare_activity_loops(self) -> int:
        """How many more work items may be locked for this process's activity loops: one for each
        idle loop that no statement under way locks one for, and none while a suspect's turn runs."""
        return 0 if self._turns.isolating else self._handoffs.spare(self._signals.queues["activity"].idle)

    async def _hand_over(self, key: FetchKey, handed: list[Handed]) -> None:
        """Keep ``handed`` for the activity loops' next fetches, or put it back if a suspect came out
        while it was being locked."""
        self._handoffs.give(key, handed)
        if handed and self._turns.isolating:
            await self._handoffs.close()

    async def _write_and_claim(self, write: Coroutine[Any, Any, bool], message: Message) -> tuple[bool, bool]:
        """Run ``write``, which queues ``message``; lock its instance for an idle orchestration loop
        of this process in the same commit if it is visible at once (see ``_turn_handoff``)."""
        if message.visible_at is not None:
            return await write, False
        return await self._turns.write_and_claim(write, message.instance_id)

    async def _put_back_turn(self, item: OrchestrationItem) -> None:
        """Release an instance handed to no fetch, taking back the delivery its lock counted."""
        with contextlib.suppress(Exception):
            await self._release_instance(item, 0.0, True)
        self._turns.ended(item)
        self._signals.work("orchestrator")

    async def _put_back(self, handed: Handed) -> None:
        """Release a handed work item no fetch took, taking back the delivery its lock counted; its
        lock expires anyway if this fails."""
        row, token = handed
        with contextlib.suppress(Exception):
            await self._count_work_deliveries([(row[0], token)], -1)
        with contextlib.suppress(Exception):
            await self._release_work_item(work_item(row[0], token, *row[1:]), 0.0)
        self._signals.work("activity")

    # --- worker queues -------------------------------------------------------------------------

    async def fetch_work_item(
        self, queues: Sequence[str], lock_seconds: float, *, worker_id: str | None = None
    ) -> WorkItem | None:
        key = (tuple(queues), float(lock_seconds), worker_id)
        handed = self._handoffs.take(key)
        if handed is not None:
            row, lock_token = handed
            return work_item(row[0], lock_token, *row[1:])
        token = uuid.uuid4().hex
        self._signals.fetching("activity")
        signal = self._signals.queues["activity"]
        fresh = signal.fresh
        if self._handoffs.still_empty(fresh) and self._nothing_due(("activity", *queues)):
            return None
        # One item for this loop, and one more for each idle loop (see ``_handoff``), in one statement.
        more = self._spare_activity_loops() if self._handoffs.backlog else 0
        with self._handoffs.claiming(more):
            rows = await self._lock_work_items(list(queues), lock_seconds, token, worker_id, 1 + more)
        self._handoffs.backlog = len(rows) > more
        if not rows:
            if signal.fresh == fresh:
                self._handoffs.found_empty(fresh)
            return None
        if len(rows) > 1:
            await self._hand_over(key, [(row, token) for row in rows[1:]])
            # Woken for the items handed; if the fetch took all it asked for, more may be queued, so
            # their fetch after those items asks the store.
            self._signals.work("activity", len(rows) - 1, handed=len(rows) <= more)
        return work_item(rows[0][0], token, *rows[0][1:])

    async def ack_work_item(self, item: WorkItem, completion: Message) -> None:
        if completion.new_instance is not None:
            raise ValueError("an activity completion cannot create an instance")
        completed, handed = await self._write_and_claim(self._complete_work_item(item, completion), completion)
        if not completed:
            self._written([], handed)
            raise _work_item_lost(item)
        self._written([completion], handed)

    async def abandon_work_item(self, item: WorkItem, delay: float = 0.0) -> None:
        if not await self._release_work_item(item, delay):
            raise _work_item_lost(item)
        self._signals.due.forget()  # visible again after the delay
        self._signals.work("activity")

    async def renew_work_item(self, item: WorkItem, lock_seconds: float) -> None:
        if not await self._renew_work_item(item, lock_seconds):
            raise _work_item_lost(item)

    async def charge_work_deliveries(self, items: Sequence[WorkItem], *, charged: bool) -> None:
        if items:
            await self._count_work_deliveries([(item.item_id, item.lock_token) for item in items], 1 if charged else -1)

    async def work_items_held(self, items: Sequence[WorkItem]) -> set[int]:
        if not items:
            return set()
        tokens = {item.item_id: item.lock_token for item in items}
        locks = await self._select_work_item_locks(list(tokens))
        return {item_id for item_id, token in locks if tokens[item_id] == token}

    # --- worker records ------------------------------------------------------------------------

    async def list_workers(self) -> list[WorkerInfo]:
        return [worker_from_row(row) for row in await self._select_workers()]

    async def activity_workers(self, instance_id: str, execution_id: int) -> dict[int, str]:
        return held_activities(await self._select_held_work_items(instance_id), execution_id)

    # --- waiting -------------------------------------------------------------------------------

    def _written(self, messages: Sequence[Message], handed: bool = False) -> None:
        """Wake dispatchers for messages this process queued (``handed``: and for an instance the
        write locked for a loop, its only message among them); a delayed one may be due before any
        answer about due times said."""
        if any(message.visible_at is not None for message in messages):
            self._signals.due.forget()
        if handed:
            self._signals.work("orchestrator", 1, handed=True)
            messages = messages[1:]
        self._signals.work("orchestrator", len(messages))

    def _nothing_due(self, key: tuple[str, ...]) -> bool:
        """Whether the store's kept answer says nothing of ``key``'s queues is due by the clock now."""
        known, due = self._signals.due.get(key)
        return known and (due is None or due > 0)

    async def wait_for_work(self, kind: QueueKind, timeout: float, queues: Sequence[str] = ()) -> None:
        self._watch()
        timeout = min(timeout, self._work_poll_seconds)
        if self._signals.missed_wake_up(kind):
            return  # fetch again at once
        with self._signals.queues[kind].waiter() as waiter:  # before the read, so no wake-up falls between
            key = (kind, *queues)
            known, due = self._signals.due.get(key)
            if not known:
                version = self._signals.due.version
                due = await self._seconds_until_due(kind, list(queues))
                self._signals.due.put(key, version, due)
            if due is not None:
                timeout = min(timeout, max(0.0, due))
            await waiter.wait(timeout)

    async def wait_for_state_change(
        self, instance_id: str, timeout: float, *, until_ended: int | None = None
    ) -> OrchestrationState | None:
        self._watch()
        row = await self._signals.wait_instance(instance_id, min(timeout, self._state_poll_seconds), until_ended)
        return None if row is None else state_from_row(row)


def _work_item_lost(item: WorkItem) -> LockLostError:
    return LockLostError(
        f"work item {item.item_id} is no longer held: its lock expired and it was taken over, or a turn cancelled it"
    )
