"""``SqliteProvider``: the embedded default, on the standard library's ``sqlite3``.

Statements run on the event loop's thread, one short transaction per call: with WAL and
``synchronous=NORMAL`` a call takes a fraction of a millisecond, much less than handing it to
a thread would cost. One connection serves the process, so SQLite's single writer is never
contended inside it. Contention with other processes ("database is locked") is retried here,
sleeping on the loop, and never reaches users.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, Literal, TypeVar

from perdure import _json
from perdure._errors import HistoryFormatError, InstanceAlreadyExistsError, ProviderError
from perdure._state import OrchestrationState
from perdure.engine._history import HistoryEvent, StartRequested, decode_event, encode_event
from perdure.providers._base import (
    InstanceFilter,
    LockLostError,
    Message,
    OrchestrationItem,
    Provider,
    QueueKind,
    TurnCommit,
    WorkItem,
)
from perdure.providers._codec import (
    decode_request,
    encode_error,
    encode_request,
    encode_value,
    orchestration_item,
    queued_message,
    state_from_row,
    to_epoch,
)
from perdure.providers._signal import SignalBoard
from perdure.providers._sql import load_queries, read_sql
from perdure.providers.sqlite._group_commit import GroupCommit, is_busy

__all__ = ["SqliteProvider"]

T = TypeVar("T")
_Q = load_queries("perdure.providers.sqlite")
_BUSY_GIVE_UP_SECONDS = 300.0


class SqliteProvider(Provider):
    """Stores everything in one SQLite file (WAL mode), or in memory.

    Open it with :meth:`open`. Several processes may share one file: each fetch and ack is a
    short ``BEGIN IMMEDIATE`` transaction, and instance locks keep turns of one instance apart.
    Work enqueued by this process wakes its dispatchers at once; work enqueued by another
    process is noticed within ``poll_interval``.
    """

    def __init__(self, connection: sqlite3.Connection, poll_interval: float) -> None:
        self._db = connection
        self._poll_interval = poll_interval
        self._writes = GroupCommit(connection, _BUSY_GIVE_UP_SECONDS)
        self._signals = SignalBoard()
        self._watcher: asyncio.Task[None] | None = None
        self._closed = False

    @classmethod
    async def open(
        cls,
        path: str | Path = ":memory:",
        *,
        synchronous: Literal["NORMAL", "FULL"] = "NORMAL",
        poll_interval: float = 0.05,
    ) -> SqliteProvider:
        """Open (and create if needed) the database at ``path``.

        Args:
            path: A file path, or ``":memory:"`` for a private in-memory database (tests).
            synchronous: ``"NORMAL"`` (default) survives any process crash; ``"FULL"`` also
                survives power loss and OS crashes, at the cost of an fsync per commit.
            poll_interval: How often idle dispatchers look for work written by other processes.
        """
        if synchronous not in ("NORMAL", "FULL"):
            raise ValueError("synchronous must be 'NORMAL' or 'FULL'")
        # Other processes may be opening or writing the same file: wait out their locks here too.
        connection = await _waiting_out_locks(_connect, str(path), synchronous)
        return cls(connection, poll_interval)

    # --- plumbing ----------------------------------------------------------------------------------

    async def _write(self, function: Callable[..., T], *args: Any) -> T:
        """Run a write operation in the next group commit (see ``_group_commit``)."""
        if self._closed:
            raise ProviderError("the SQLite provider is closed")
        return await self._writes.run(function, *args)

    async def _run(self, function: Callable[..., T], *args: Any) -> T:
        """Run a read; while another process holds a lock SQLite needs, wait and retry."""
        if self._closed:
            raise ProviderError("the SQLite provider is closed")
        return await _waiting_out_locks(function, self._db, *args)

    def _watch(self) -> None:
        """Start (once) the watcher that notices commits made by other processes."""
        if self._watcher is None and not self._closed:
            # The baseline is read now, before the caller sleeps: read when the task first ran, it
            # would hide a commit made in between, and that waiter would sleep its whole timeout.
            seen = _data_version(self._db)
            self._watcher = asyncio.create_task(self._watch_other_processes(seen), name="perdure-sqlite-watcher")

    async def _watch_other_processes(self, seen: int) -> None:
        # PRAGMA data_version changes when another connection commits: then every waiter looks again.
        while not self._closed:
            await asyncio.sleep(self._poll_interval)
            with contextlib.suppress(ProviderError):
                version = await self._run(_data_version)
                if version != seen:
                    seen = version
                    self._signals.everything()

    # --- instances and history ---------------------------------------------------------------------

    async def create_instance(self, start: Message) -> None:
        await self._write(_create_instance, start)
        self._signals.work("orchestrator")

    async def enqueue_messages(self, messages: Sequence[Message]) -> None:
        if messages:
            await self._write(_enqueue_messages_tx, list(messages))
            self._signals.work("orchestrator", len(messages))

    async def get_state(self, instance_id: str) -> OrchestrationState | None:
        return await self._run(_get_state, instance_id)

    async def get_history(self, instance_id: str, execution_id: int | None = None) -> list[HistoryEvent]:
        return await self._run(_get_history, instance_id, execution_id)

    async def list_instances(self, where: InstanceFilter) -> list[OrchestrationState]:
        return await self._run(_list_instances, where)

    async def purge_instances(self, instance_ids: Sequence[str]) -> int:
        return await self._write(_purge_instances, list(instance_ids))

    # --- orchestrator queue --------------------------------------------------------------------------

    async def fetch_orchestration_item(self, lock_seconds: float) -> OrchestrationItem | None:
        return await self._write(_fetch_orchestration_item, lock_seconds)

    async def ack_orchestration_item(self, item: OrchestrationItem, commit: TurnCommit) -> None:
        await self._write(_ack_orchestration_item, item, commit)
        self._signals.instance(item.instance_id)
        self._signals.work("orchestrator", len(commit.messages))
        self._signals.work("worker", len(commit.worker_items))

    async def abandon_orchestration_item(self, item: OrchestrationItem, delay: float = 0.0) -> None:
        await self._write(_abandon_orchestration_item, item, delay)
        self._signals.work("orchestrator")

    # --- worker queues ---------------------------------------------------------------------------------

    async def fetch_work_item(self, queues: Sequence[str], lock_seconds: float) -> WorkItem | None:
        return await self._write(_fetch_work_item, list(queues), lock_seconds)

    async def ack_work_item(self, item: WorkItem, completion: Message) -> None:
        await self._write(_ack_work_item, item, completion)
        self._signals.work("orchestrator")

    async def abandon_work_item(self, item: WorkItem, delay: float = 0.0) -> None:
        await self._write(_update_work_item, "release_work_item", item, time.time() + delay)
        self._signals.work("worker")

    async def renew_work_item(self, item: WorkItem, lock_seconds: float) -> None:
        await self._write(_update_work_item, "renew_work_item", item, time.time() + lock_seconds)

    # --- observability ---------------------------------------------------------------------------------

    async def queue_depths(self) -> dict[str, int]:
        return await self._run(_queue_depths, time.time())

    # --- waiting ---------------------------------------------------------------------------------------

    async def wait_for_work(self, kind: QueueKind, timeout: float, queues: Sequence[str] = ()) -> None:
        self._watch()
        with self._signals.queues[kind].waiter() as waiter:  # before the read, so no wake-up falls between
            due = await self._run(_earliest_due, kind, list(queues))
            if due is not None:
                timeout = min(timeout, max(0.0, due - time.time()))
            await waiter.wait(timeout)

    async def wait_for_state_change(self, instance_id: str, timeout: float) -> None:
        self._watch()
        await self._signals.wait_instance(instance_id, timeout)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
        self._writes.fail_all(ProviderError("the SQLite provider is closed"))
        self._db.close()


# --- the statements: each runs inside a group commit (writes) or on its own (reads) ---------------------


async def _waiting_out_locks(function: Callable[..., T], *args: Any) -> T:
    """Call ``function(*args)``; while another connection holds a lock it needs, sleep on the loop and retry."""
    deadline = time.monotonic() + _BUSY_GIVE_UP_SECONDS
    pause = 0.001
    while True:
        try:
            return function(*args)
        except sqlite3.OperationalError as exc:
            if not is_busy(exc):
                raise ProviderError(f"SQLite failed: {exc}") from exc
            if time.monotonic() > deadline:
                raise ProviderError(f"the SQLite database stayed locked for {_BUSY_GIVE_UP_SECONDS:.0f} s") from exc
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)


def _connect(path: str, synchronous: str) -> sqlite3.Connection:
    connection = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=0)
    try:
        _prepare(connection, path, synchronous)
    except BaseException:
        connection.close()
        raise
    return connection


def _prepare(connection: sqlite3.Connection, path: str, synchronous: str) -> None:
    mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode not in ("wal", "memory"):  # readers must never block the writer: that needs WAL
        raise ProviderError(f"SQLite could not switch {path!r} to WAL mode (it stays in {mode!r} mode)")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("PRAGMA busy_timeout=0")  # never block the loop: _run retries asynchronously
    connection.executescript(read_sql("perdure.providers.sqlite", "schema.sql"))


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write operation: a savepoint inside a group commit, else its own BEGIN IMMEDIATE."""
    if db.in_transaction:
        db.execute("SAVEPOINT operation")
        try:
            yield db
        except BaseException:
            db.execute("ROLLBACK TO operation")
            db.execute("RELEASE operation")
            raise
        db.execute("RELEASE operation")
        return
    # Taken at once (IMMEDIATE), so the transaction cannot meet a lock halfway and deadlock.
    db.execute("BEGIN IMMEDIATE")
    try:
        yield db
        db.execute("COMMIT")
    except BaseException:
        if db.in_transaction:  # a failed COMMIT leaves it open: close it, so a retry starts clean
            db.execute("ROLLBACK")
        raise


def _message_row(message: Message, now: float) -> dict[str, Any]:
    return {
        "instance_id": message.instance_id,
        "execution_id": message.execution_id,
        "kind": type(message.event).__name__,
        "event": encode_event(message.event),
        "visible_at": now if message.visible_at is None else to_epoch(message.visible_at),
    }


def _enqueue_messages(db: sqlite3.Connection, messages: Sequence[Message], now: float) -> None:
    for message in messages:
        event = message.event
        if isinstance(event, StartRequested):
            db.execute(
                _Q["insert_instance"],
                {
                    "instance_id": message.instance_id,
                    "name": event.name,
                    "input": encode_value(event.input),
                    "parent_instance_id": event.parent_instance,
                    "now": now,
                },
            )
    db.executemany(_Q["insert_message"], [_message_row(m, now) for m in messages])


def _enqueue_messages_tx(db: sqlite3.Connection, messages: Sequence[Message]) -> None:
    with _transaction(db):
        _enqueue_messages(db, messages, time.time())


def _create_instance(db: sqlite3.Connection, start: Message) -> None:
    assert isinstance(start.event, StartRequested)
    now = time.time()
    with _transaction(db):
        row = {
            "instance_id": start.instance_id,
            "name": start.event.name,
            "input": encode_value(start.event.input),
            "parent_instance_id": None,
            "now": now,
        }
        if db.execute(_Q["insert_instance"], row).rowcount == 0:
            raise InstanceAlreadyExistsError(f"an instance with id {start.instance_id!r} already exists")
        db.execute(_Q["insert_message"], _message_row(start, now))


def _get_state(db: sqlite3.Connection, instance_id: str) -> OrchestrationState | None:
    row = db.execute(_Q["select_state"], {"instance_id": instance_id}).fetchone()
    return None if row is None else state_from_row(row)


def _get_history(db: sqlite3.Connection, instance_id: str, execution_id: int | None) -> list[HistoryEvent]:
    if execution_id is None:
        rows = db.execute(_Q["select_current_history"], {"instance_id": instance_id}).fetchall()
    else:
        rows = db.execute(_Q["select_history"], {"instance_id": instance_id, "execution_id": execution_id}).fetchall()
    return [decode_event(text) for (text,) in rows]


def _list_instances(db: sqlite3.Connection, where: InstanceFilter) -> list[OrchestrationState]:
    clauses: list[str] = []
    params: dict[str, Any] = {"limit": where.limit}
    if where.status:
        names = [s.value for s in where.status]
        clauses.append(f"status IN ({', '.join(f':s{i}' for i in range(len(names)))})")
        params.update({f"s{i}": name for i, name in enumerate(names)})
    if where.name is not None:
        clauses.append("name = :name")
        params["name"] = where.name
    if where.created_after is not None:
        clauses.append("created_at > :created_after")
        params["created_after"] = to_epoch(where.created_after)
    if where.created_before is not None:
        clauses.append("created_at < :created_before")
        params["created_before"] = to_epoch(where.created_before)
    if where.instance_id_prefix:
        # A range on the primary key, so a prefix search uses the index.
        clauses.append("instance_id >= :prefix AND instance_id < :prefix_end")
        params["prefix"] = where.instance_id_prefix
        params["prefix_end"] = where.instance_id_prefix + "\U0010ffff"
    if where.parent_instance_id is not None:
        clauses.append("parent_instance_id = :parent")
        params["parent"] = where.parent_instance_id
    if where.after is not None:
        clauses.append("instance_id > :after")
        params["after"] = where.after
    sql = _Q["select_state"].split(" WHERE ")[0]
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    sql += " ORDER BY instance_id LIMIT :limit"
    return [state_from_row(row) for row in db.execute(sql, params)]


def _purge_instances(db: sqlite3.Connection, instance_ids: list[str]) -> int:
    purged = 0
    with _transaction(db):
        for instance_id in instance_ids:
            key = {"instance_id": instance_id}
            if db.execute(_Q["purge_instance"], key).rowcount:
                purged += 1
                for query in ("purge_history", "purge_messages", "purge_work_items", "purge_lock"):
                    db.execute(_Q[query], key)
    return purged


def _fetch_orchestration_item(db: sqlite3.Connection, lock_seconds: float) -> OrchestrationItem | None:
    now = time.time()
    with _transaction(db):
        row = db.execute(_Q["next_orchestration_instance"], {"now": now}).fetchone()
        if row is None:
            return None
        instance_id = row[0]
        token = uuid.uuid4().hex
        db.execute(
            _Q["lock_instance"], {"instance_id": instance_id, "lock_token": token, "locked_until": now + lock_seconds}
        )
        key = {"instance_id": instance_id, "now": now}
        message_rows = sorted(db.execute(_Q["take_visible_messages"], key).fetchall())
        state_row = db.execute(_Q["select_state"], key).fetchone()
        state = None if state_row is None else state_from_row(state_row)
        history_rows = (
            []
            if state is None
            else db.execute(
                _Q["select_history"], {"instance_id": instance_id, "execution_id": state.execution_id}
            ).fetchall()
        )
    messages = [queued_message(*r) for r in message_rows]
    return orchestration_item(instance_id, token, messages, state, [text for (text,) in history_rows])


def _release_lock(db: sqlite3.Connection, item: OrchestrationItem) -> None:
    """Delete our lock; if it is not there any more, another worker took the instance over."""
    released = db.execute(_Q["delete_lock"], {"instance_id": item.instance_id, "lock_token": item.lock_token})
    if released.rowcount == 0:
        raise LockLostError(f"the lock on instance {item.instance_id!r} expired and was taken over")


def _ack_orchestration_item(db: sqlite3.Connection, item: OrchestrationItem, commit: TurnCommit) -> None:
    now = time.time()
    instance_id = item.instance_id
    with _transaction(db):
        _release_lock(db, item)  # first: a lost lock rolls the whole turn back
        db.executemany(
            _Q["insert_history"],
            [
                {
                    "instance_id": instance_id,
                    "execution_id": commit.execution_id,
                    "event_id": e.event_id,
                    "event": encode_event(e),
                }
                for e in commit.history
            ],
        )
        db.executemany(
            _Q["insert_work_item"],
            [
                {"queue": r.queue, "instance_id": r.instance_id, "request": encode_request(r), "now": now}
                for r in commit.worker_items
            ],
        )
        _enqueue_messages(db, commit.messages, now)
        if commit.state is not None:
            s = commit.state
            db.execute(
                _Q["update_instance"],
                {
                    "instance_id": instance_id,
                    "name": s.name,
                    "version": s.version,
                    "status": s.status.value,
                    "execution_id": s.execution_id,
                    "input": encode_value(s.input),
                    "output": encode_value(s.output),
                    "error": encode_error(s.error),
                    "custom_status": encode_value(s.custom_status),
                    "parent_instance_id": s.parent_instance_id,
                    "now": now,
                },
            )
        db.executemany(_Q["delete_message"], [{"message_id": m} for m in commit.consumed])
        db.execute(_Q["reset_dequeue"], {"instance_id": instance_id})


def _abandon_orchestration_item(db: sqlite3.Connection, item: OrchestrationItem, delay: float) -> None:
    key = {"instance_id": item.instance_id, "lock_token": item.lock_token, "locked_until": time.time() + delay}
    with _transaction(db):
        # A delay holds the whole instance back, not just these messages: what arrives meanwhile
        # must not overtake them.
        db.execute(_Q["hold_instance" if delay > 0 else "delete_lock"], key)


def _fetch_work_item(db: sqlite3.Connection, queues: list[str], lock_seconds: float) -> WorkItem | None:
    now = time.time()
    with _transaction(db):
        row = db.execute(_Q["next_work_item"], {"queues": _json.dumps(queues), "now": now}).fetchone()
        if row is None:
            return None
        item_id, text, dequeue_count = row
        token = uuid.uuid4().hex
        db.execute(_Q["lock_work_item"], {"item_id": item_id, "lock_token": token, "locked_until": now + lock_seconds})
    try:
        return WorkItem(item_id=item_id, lock_token=token, request=decode_request(text), dequeue_count=dequeue_count)
    except HistoryFormatError as exc:
        return WorkItem(item_id=item_id, lock_token=token, request=None, dequeue_count=dequeue_count, error=str(exc))


def _ack_work_item(db: sqlite3.Connection, item: WorkItem, completion: Message) -> None:
    now = time.time()
    with _transaction(db):
        if db.execute(_Q["delete_work_item"], {"item_id": item.item_id, "lock_token": item.lock_token}).rowcount == 0:
            raise LockLostError(f"the lock on work item {item.item_id} expired and was taken over")
        _enqueue_messages(db, [completion], now)


def _update_work_item(db: sqlite3.Connection, query: str, item: WorkItem, until: float) -> None:
    params = {"item_id": item.item_id, "lock_token": item.lock_token, "visible_at": until, "locked_until": until}
    with _transaction(db):
        if db.execute(_Q[query], params).rowcount == 0:
            raise LockLostError(f"the lock on work item {item.item_id} expired and was taken over")


def _data_version(db: sqlite3.Connection) -> int:
    return int(db.execute("PRAGMA data_version").fetchone()[0])


def _queue_depths(db: sqlite3.Connection, now: float) -> dict[str, int]:
    depths = {"orchestrator": int(db.execute(_Q["orchestrator_queue_depth"], {"now": now}).fetchone()[0])}
    for queue, count in db.execute(_Q["worker_queue_depths"], {"now": now}):
        depths[f"worker:{queue}"] = int(count)
    return depths


def _earliest_due(db: sqlite3.Connection, kind: QueueKind, queues: list[str]) -> float | None:
    if kind == "orchestrator":
        row = db.execute(_Q["earliest_orchestrator_due"]).fetchone()
    else:
        row = db.execute(_Q["earliest_worker_due"], {"queues": _json.dumps(queues)}).fetchone()
    return None if row is None else row[0]
