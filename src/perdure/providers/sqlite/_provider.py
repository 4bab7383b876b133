"""``SqliteProvider``: the embedded default, on the standard library's ``sqlite3``.

Statements run on the event loop's thread, one short transaction per call: with WAL and
``synchronous=NORMAL`` a call takes a fraction of a millisecond, much less than handing it to
a thread would cost. One connection serves the process, so SQLite's single writer is never
contended inside it. Contention with other processes ("database is locked") is retried here,
sleeping on the loop, and never reaches users.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import sqlite3
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from perdure._errors import ProviderError
from perdure.providers._base import (
    HistoryMark,
    InstanceFilter,
    Message,
    OrchestrationItem,
    QueueKind,
    TurnCommit,
    WorkerInfo,
    WorkerLiveness,
    WorkItem,
)
from perdure.providers._clock import TimeSource
from perdure.providers._sql_hooks import Claim, Committed, LockedInstance, WorkRow
from perdure.providers._sql_provider import SqlProvider
from perdure.providers.sqlite import _statements as tx
from perdure.providers.sqlite._connection import BUSY_GIVE_UP_SECONDS, connect, data_version, waiting_out_locks
from perdure.providers.sqlite._group_commit import GroupCommit
from perdure.providers.sqlite._liveness import OnLoop, SqliteWorkerLiveness

__all__ = ["SqliteProvider"]

T = TypeVar("T")


class SqliteProvider(SqlProvider):
    """Stores everything in one SQLite file (WAL mode), or in memory.

    Open it with :meth:`open`. Several processes may share one file: each fetch and ack is a
    short ``BEGIN IMMEDIATE`` transaction, and instance locks keep turns of one instance apart.
    Work enqueued by this process wakes its dispatchers at once; work enqueued by another
    process is noticed within ``poll_interval``.
    """

    def __init__(
        self,
        connection: sqlite3.Connection,
        poll_interval: float,
        path: str = ":memory:",
        synchronous: str = "NORMAL",
        clock: TimeSource | None = None,
    ) -> None:
        super().__init__()
        if clock is not None:
            self.clock = clock
        self._db = connection
        self._path = path
        self._synchronous = synchronous
        self._poll_interval = poll_interval
        self._writes = GroupCommit(connection, BUSY_GIVE_UP_SECONDS)
        self._watcher: asyncio.Task[None] | None = None
        # Per dispatcher loop (its task): the orchestrator signal's ``fresh`` count at its last fetch.
        self._fetched_at: weakref.WeakKeyDictionary[asyncio.Task[Any], int] = weakref.WeakKeyDictionary()
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | Path = ":memory:",
        *,
        create: bool = True,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        poll_interval: float = 0.05,
        clock: TimeSource | None = None,
    ) -> SqliteProvider:
        """Open the database at ``path``, creating it if needed (unless ``create`` is false).

        Args:
            path: A file path, or ``":memory:"`` for a private in-memory database (tests).
            create: Create the file and its tables if they are missing (the default). ``False``
                opens an existing perdure store only, and creates nothing: what tools that read
                or manage a store use, so that a mistyped path is an error rather than an empty store.
            synchronous: ``"NORMAL"`` (default) survives any process crash; ``"FULL"`` also
                survives power loss and OS crashes, at the cost of an fsync per commit.
            poll_interval: How often idle dispatchers look for work written by other processes.
            clock: Where the store's times come from (an object whose ``now()`` returns seconds
                since the epoch); the process clock by default. ``perdure.testing.TestEnvironment``
                passes a virtual clock. Every process sharing the file must agree with it.

        Raises:
            StoreNotFoundError: without ``create``, if there is no such file or it holds no perdure store.
            ProviderError: if the file cannot be opened or is not a SQLite database.
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        connection = await connect(str(path), synchronous, create=create)
        return cls(connection, poll_interval, str(path), synchronous, clock)

    # --- plumbing ----------------------------------------------------------------------------------

    async def _write(self, function: Callable[..., T], *args: Any) -> T:
        """Run a write operation in the next group commit (see ``_group_commit``)."""
        if self._closed:
            raise ProviderError("the SQLite provider is closed")
        return await self._writes.run(function, *args)

    async def _read(self, function: Callable[..., T], *args: Any) -> T:
        """Run a read; while another process holds a lock SQLite needs, wait and retry."""
        if self._closed:
            raise ProviderError("the SQLite provider is closed")
        return await waiting_out_locks(function, self._db, *args)

    def _watch(self) -> None:
        """Start (once) the watcher that notices commits made by other processes."""
        if self._watcher is None and not self._closed:
            # The baseline is read now, before the caller sleeps: read when the task first ran, it
            # would hide a commit made in between, and that waiter would sleep its whole timeout.
            seen = data_version(self._db)
            self._watcher = asyncio.create_task(self._watch_other_processes(seen), name="perdure-sqlite-watcher")

    async def _watch_other_processes(self, seen: int) -> None:
        # PRAGMA data_version changes when another connection commits: then every waiter looks again.
        while not self._closed:
            await asyncio.sleep(self._poll_interval)
            with contextlib.suppress(ProviderError):
                version = await self._read(data_version)
                if version != seen:
                    seen = version
                    self._signals.everything()

    # --- dialect hooks -----------------------------------------------------------------------------

    async def _insert_instance(self, start: Message) -> bool:
        return await self._write(tx.insert_instance, self.clock, start)

    async def _replace_instance(self, start: Message) -> int:
        return await self._write(tx.replace_instance, self.clock, start)

    async def _mark_rewinding(self, request: Message) -> bool:
        return await self._write(tx.mark_rewinding, self.clock, request)

    async def _insert_messages(self, messages: list[Message]) -> None:
        await self._write(tx.insert_messages, self.clock, messages)

    async def _select_state(self, instance_id: str) -> Sequence[Any] | None:
        return await self._read(tx.select_state, instance_id)

    async def _select_history(self, instance_id: str, execution_id: int | None) -> list[str]:
        return await self._read(tx.select_history, instance_id, execution_id)

    async def _select_history_from(self, instance_id: str, execution_id: int, event_id: int) -> list[str]:
        return await self._read(tx.select_history_from, instance_id, execution_id, event_id)

    async def _select_states(self, where: InstanceFilter) -> list[Sequence[Any]]:
        return await self._read(tx.select_states, where)

    async def _delete_instances(self, instance_ids: list[str]) -> int:
        return await self._write(tx.delete_instances, instance_ids)

    async def _lock_instance(
        self, lock_seconds: float, token: str, worker_id: str | None, held: Mapping[str, HistoryMark]
    ) -> LockedInstance | None:
        # A loop's fetch with no new work signalled since its last one (as right after its turn)
        # mostly finds nothing: a plain read tells, without the write lock and a place in the next
        # group commit. What arrives after the read is signalled. After a signal: the lock at once.
        fresh, task = self._signals.queues["orchestrator"].fresh, asyncio.current_task()
        unsignalled = task is not None and self._fetched_at.get(task) == fresh
        if task is not None:
            self._fetched_at[task] = fresh
        if unsignalled and not await self._read(tx.orchestration_ready, self.clock):
            return None
        return await self._write(tx.lock_instance, self.clock, lock_seconds, token, worker_id, held)

    async def _claim_instance(
        self, instance_id: str, key: tuple[float, str | None], token: str, held: Mapping[str, HistoryMark]
    ) -> LockedInstance | None:
        lock_seconds, worker_id = key
        return await self._write(tx.lock_instance, self.clock, lock_seconds, token, worker_id, held, instance_id)

    async def _commit_turn(self, item: OrchestrationItem, commit: TurnCommit) -> bool:
        return (await self._write(tx.commit_turn, self.clock, item, commit))[0]

    async def _commit_turn_claiming(
        self, item: OrchestrationItem, commit: TurnCommit, claim: Claim | None
    ) -> Committed:
        committed, claimed, row = await self._write(tx.commit_turn, self.clock, item, commit, claim)
        return Committed(committed, claimed, row)

    async def _release_instance(self, item: OrchestrationItem, delay: float, undo_delivery: bool) -> None:
        await self._write(tx.release_instance, self.clock, item, delay, undo_delivery)

    async def _lock_work_items(
        self, queues: list[str], lock_seconds: float, token: str, worker_id: str | None, count: int
    ) -> list[WorkRow]:
        return await self._write(tx.lock_work_items, self.clock, queues, lock_seconds, token, worker_id, count)

    async def _complete_work_item(self, item: WorkItem, completion: Message) -> bool:
        return await self._write(tx.complete_work_item, self.clock, item, completion)

    async def _release_work_item(self, item: WorkItem, delay: float) -> bool:
        return await self._write(tx.update_work_item, self.clock, "release_work_item", item, delay)

    async def _renew_work_item(self, item: WorkItem, lock_seconds: float) -> bool:
        return await self._write(tx.update_work_item, self.clock, "renew_work_item", item, lock_seconds)

    async def _count_work_deliveries(self, held: list[tuple[int, str]], change: int) -> None:
        await self._write(tx.count_work_deliveries, held, change)

    async def _select_work_item_locks(self, item_ids: list[int]) -> list[tuple[int, str | None]]:
        return await self._read(tx.select_work_item_locks, item_ids)

    async def _select_held_work_items(self, instance_id: str) -> list[Sequence[Any]]:
        return await self._read(tx.select_held_work_items, self.clock, instance_id)

    async def _select_workers(self) -> list[Sequence[Any]]:
        return await self._read(tx.select_workers, self.clock)

    async def _seconds_until_due(self, kind: QueueKind, queues: list[str]) -> float | None:
        return await self._read(tx.earliest_due, self.clock, kind, queues)

    # --- a test environment's virtual clock (``perdure.testing``) ----------------------------------

    async def _waiting_until(self) -> float | None:
        """``None`` if anything runs or could run now, else when the next thing is due (``math.inf``: never)."""
        return await self._read(tx.waiting_until, self.clock)

    async def _move_clock(self, advance: Callable[[float], None], until: float) -> float:
        """If everything waits, move the clock (by ``advance``) to the next due time, not past ``until``.

        Atomic with the check (nothing that arrives meanwhile is overtaken); wakes every waiter.
        Returns by how many seconds the clock moved.
        """
        seconds = await self._write(tx.move_clock, self.clock, advance, until)
        if seconds:
            self._signals.everything()
        return seconds

    # --- the rest of the contract ------------------------------------------------------------------

    async def queue_depths(self) -> dict[str, int]:
        return await self._read(tx.queue_depths, self.clock)

    def worker_liveness(self, worker: WorkerInfo, timeout: float) -> WorkerLiveness | None:
        # A private in-memory database lives and dies with this one connection: no other
        # connection can reach it, and no other process could take its work over anyway.
        if self._path in ("", ":memory:"):
            return None
        return SqliteWorkerLiveness(self._path, self._synchronous, worker, timeout, self._on_loop(), self.clock)

    def _on_loop(self) -> OnLoop | None:
        """How another thread runs a write of this connection on the current event loop, if there is one."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return None

        def submit(function: Callable[..., Any], *args: Any) -> concurrent.futures.Future[Any]:
            return asyncio.run_coroutine_threadsafe(self._write(function, *args), loop)

        return submit

    async def close(self) -> None:
        if self._closed:
            return
        await self._handoffs.close()
        await self._turns.kept.close()
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        self._writes.fail_all(ProviderError("the SQLite provider is closed"))
        self._db.close()
