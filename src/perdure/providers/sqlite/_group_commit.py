"""Group commit: the writes that become ready in one event-loop iteration share one transaction.

A commit is the most expensive part of a small SQLite write (it appends the transaction to the
WAL), so under load committing several operations at once is much cheaper than one each. Each
operation still runs in its own savepoint, so one that fails (a lost lock, a duplicate id) rolls
back alone, and every caller learns its outcome only after the shared COMMIT: durability is the
same as committing one by one.

A write that fails for lack of disk space leaves the WAL file as large as it grew; once writes
succeed again, the WAL is checkpointed and truncated, so the space comes back at once.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from perdure._errors import ProviderError
from perdure.providers._base import DataRefusedError

__all__ = ["GroupCommit", "is_busy", "provider_error"]

T = TypeVar("T")
_Operation = tuple[Callable[..., Any], tuple[Any, ...], "asyncio.Future[Any]"]


def is_busy(exc: sqlite3.Error) -> bool:
    """Whether ``exc`` means another connection holds the lock (worth retrying)."""
    return isinstance(exc, sqlite3.OperationalError) and ("locked" in str(exc) or "busy" in str(exc))


def provider_error(exc: sqlite3.Error) -> ProviderError:
    """What a caller sees for a failed statement; ``exc`` becomes its ``__cause__``."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):  # a constraint, a value too big
        error: ProviderError = DataRefusedError(f"SQLite refused the call: {exc}")
    elif getattr(exc, "sqlite_errorname", "") == "SQLITE_FULL":
        error = ProviderError(f"SQLite could not write: the disk is full ({exc})")
    else:
        error = ProviderError(f"SQLite failed: {exc}")
    error.__cause__ = exc
    return error


class GroupCommit:
    """Queues write operations and runs each batch in one ``BEGIN IMMEDIATE`` … ``COMMIT``.

    An operation is ``function(db, *args)``; it may open its own transaction with
    ``_write(db)``, which becomes a savepoint inside the batch. While another process holds the
    write lock, the batch waits (on the loop, never blocking it) and tries again.
    """

    def __init__(self, db: sqlite3.Connection, give_up_seconds: float) -> None:
        self._db = db
        self._give_up_seconds = give_up_seconds
        self._pending: list[_Operation] = []
        self._flush_scheduled = False
        self._busy_since: float | None = None
        self._pause = 0.001
        self._write_failed = False  # since the last successful commit: then truncate the WAL

    async def run(self, function: Callable[..., T], *args: Any) -> T:
        """Run ``function(db, *args)`` in the next batch and return its result once committed."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        self._pending.append((function, args, future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def fail_all(self, error: Exception) -> None:
        """Fail every queued operation (the provider is closing)."""
        pending, self._pending = self._pending, []
        for _, _, future in pending:
            if not future.done():
                future.set_exception(error)

    def _flush(self) -> None:
        self._flush_scheduled = False
        batch = [op for op in self._pending if not op[2].cancelled()]
        self._pending = []
        if not batch:
            return
        try:
            outcomes = self._run_batch(batch)
        except sqlite3.Error as exc:
            if is_busy(exc):
                self._retry_later(batch, exc)
            else:
                self._write_failed = True
                self._settle([(future, None, provider_error(exc)) for _, _, future in batch])
            return
        except Exception as exc:  # e.g. the connection was closed: fail the batch, never the loop
            self._settle([(future, None, ProviderError(f"SQLite failed: {exc}")) for _, _, future in batch])
            return
        self._busy_since, self._pause = None, 0.001
        if self._write_failed:
            self._truncate_wal()
        self._settle(outcomes)

    def _run_batch(self, batch: list[_Operation]) -> list[tuple[asyncio.Future[Any], Any, BaseException | None]]:
        db = self._db
        if len(batch) == 1:  # alone: the operation's own transaction is enough (no savepoint needed)
            function, args, future = batch[0]
            return [self._run_one(function, args, future)]
        db.execute("BEGIN IMMEDIATE")
        try:
            # The operation's own failure rolled its savepoint back; the others commit.
            outcomes = [self._run_one(function, args, future) for function, args, future in batch]
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:
                db.execute("ROLLBACK")
            raise
        return outcomes

    def _run_one(
        self, function: Callable[..., Any], args: tuple[Any, ...], future: asyncio.Future[Any]
    ) -> tuple[asyncio.Future[Any], Any, BaseException | None]:
        try:
            return (future, function(self._db, *args), None)
        except sqlite3.Error as exc:
            if is_busy(exc):
                raise  # the whole batch waits and runs again
            if not isinstance(exc, sqlite3.IntegrityError | sqlite3.DataError):
                self._write_failed = True
            return (future, None, provider_error(exc))
        except Exception as exc:
            return (future, None, exc)

    def _truncate_wal(self) -> None:
        """Give back the space a failed write left in the WAL (it never shrinks by itself)."""
        try:
            busy = self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()[0]
        except sqlite3.Error:
            return  # still failing: try again after the next successful commit
        self._write_failed = bool(busy)  # another process was reading: try again later

    def _retry_later(self, batch: list[_Operation], exc: sqlite3.Error) -> None:
        now = time.monotonic()
        self._busy_since = self._busy_since or now
        if now - self._busy_since > self._give_up_seconds:
            error = ProviderError(f"the SQLite database stayed locked for {self._give_up_seconds:.0f} s")
            error.__cause__ = exc
            self._settle([(future, None, error) for _, _, future in batch])
            self._busy_since = None
            return
        self._pending[:0] = batch  # keep their order ahead of what came meanwhile
        if not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_later(self._pause, self._flush)
        self._pause = min(self._pause * 2, 0.05)

    @staticmethod
    def _settle(outcomes: list[tuple[asyncio.Future[Any], Any, BaseException | None]]) -> None:
        for future, value, error in outcomes:
            if future.done():
                continue
            if error is None:
                future.set_result(value)
            else:
                future.set_exception(error)
