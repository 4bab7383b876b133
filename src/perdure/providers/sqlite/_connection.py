"""The SQLite connection: opening a file, transactions, and waiting out other processes' locks."""

from __future__ import annotations

import asyncio
import contextlib
import os
import sqlite3
import time
import urllib.parse
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

from perdure._errors import ProviderError
from perdure.providers._base import StoreNotFoundError
from perdure.providers._sql import load_queries, read_sql
from perdure.providers.sqlite._group_commit import is_busy, provider_error

__all__ = ["BUSY_GIVE_UP_SECONDS", "Q", "connect", "data_version", "transaction", "waiting_out_locks"]

T = TypeVar("T")
Q = load_queries("perdure.providers.sqlite")
"""The named queries of ``queries.sql``."""
BUSY_GIVE_UP_SECONDS = 300.0
"""How long a call waits for another process's lock before it raises :class:`ProviderError`."""
_FILE_VERSION = 3  # PRAGMA user_version once the file's stored rows are in today's form
_TABLES = ("history", "instances", "orchestrator_queue")  # a file with these holds a perdure store


async def waiting_out_locks(function: Callable[..., T], *args: Any) -> T:
    """Call ``function(*args)``; while another connection holds a lock it needs, sleep on the loop and retry."""
    deadline = time.monotonic() + BUSY_GIVE_UP_SECONDS
    pause = 0.001
    while True:
        try:
            return function(*args)
        except sqlite3.Error as exc:
            if not is_busy(exc):
                raise provider_error(exc) from exc
            if time.monotonic() > deadline:
                raise ProviderError(f"the SQLite database stayed locked for {BUSY_GIVE_UP_SECONDS:.0f} s") from exc
        await asyncio.sleep(pause)
        pause = min(pause * 2, 0.05)


async def connect(path: str, synchronous: str, *, create: bool = True) -> sqlite3.Connection:
    """Open ``path`` and bring older files up to date; create the file and its schema if needed,
    or, without ``create``, raise :class:`StoreNotFoundError` unless it holds a perdure store."""
    # Other processes may be opening or writing the same file: wait out their locks here too.
    return await waiting_out_locks(_connect, path, synchronous, create)


def _connect(path: str, synchronous: str, create: bool) -> sqlite3.Connection:
    if not create and (path in ("", ":memory:") or not os.path.isfile(path)):
        what = "a new in-memory database is empty" if path in ("", ":memory:") else "no such file"
        raise StoreNotFoundError(f"no perdure store at {path!r}: {what}")
    # Without create, mode=rw opens only an existing file: one deleted meanwhile is not made anew.
    target = path if create else f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=rw"
    connection = sqlite3.connect(target, uri=not create, isolation_level=None, check_same_thread=False, timeout=0)
    try:
        # Checked before anything is written: another application's database is left as it is.
        if not create and not _holds_perdure_tables(connection):
            raise StoreNotFoundError(f"no perdure store at {path!r}: the file holds no perdure tables")
        _prepare(connection, path, synchronous)
    except sqlite3.DatabaseError as exc:
        connection.close()
        if isinstance(exc, sqlite3.OperationalError):
            raise  # busy: waited out by the caller; anything else it reports
        if not create:
            raise StoreNotFoundError(f"no perdure store at {path!r}: {exc}") from exc
        raise ProviderError(f"SQLite cannot use {path!r}: {exc}") from exc
    except BaseException:
        connection.close()
        raise
    return connection


def _holds_perdure_tables(connection: sqlite3.Connection) -> bool:
    marks = ", ".join("?" * len(_TABLES))
    query = f"SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ({marks})"
    return bool(connection.execute(query, _TABLES).fetchone()[0] == len(_TABLES))


def _prepare(connection: sqlite3.Connection, path: str, synchronous: str) -> None:
    mode = connection.execute("PRAGMA journal_mode=WAL").fetchone()[0]
    if mode not in ("wal", "memory"):  # readers must never block the writer: that needs WAL
        raise ProviderError(f"SQLite could not switch {path!r} to WAL mode (it stays in {mode!r} mode)")
    connection.execute(f"PRAGMA synchronous={synchronous}")
    connection.execute("PRAGMA busy_timeout=0")  # never block the loop: callers retry asynchronously
    connection.executescript(read_sql("perdure.providers.sqlite", "schema.sql"))
    if _file_version(connection) < _FILE_VERSION:
        with transaction(connection):
            _upgrade(connection, _file_version(connection))  # read again: another process may have done it


def _has_column(connection: sqlite3.Connection, table: str, column: str) -> bool:
    return any(row[1] == column for row in connection.execute(f"PRAGMA table_info({table})"))


def _file_version(connection: sqlite3.Connection) -> int:
    return int(connection.execute("PRAGMA user_version").fetchone()[0])


def _upgrade(connection: sqlite3.Connection, version: int) -> None:
    """Bring a file written by an earlier version (or a new one, version 0) to today's form."""
    if version < 1:
        connection.execute(Q["mark_control_messages"])
    if version < 2:
        # A new file has the columns already (schema.sql); a file from before worker records gains them.
        if not _has_column(connection, "worker_queue", "worker_id"):
            for statement in Q["add_worker_columns"].split(";"):
                connection.execute(statement)
        for statement in Q["worker_indexes"].split(";"):
            connection.execute(statement)
    if version < 3 and not _has_column(connection, "instances", "waiting_for"):
        connection.execute(Q["add_waiting_for"])  # a new file has it already (schema.sql)
    connection.execute(f"PRAGMA user_version={_FILE_VERSION}")


@contextlib.contextmanager
def transaction(db: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
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


def data_version(db: sqlite3.Connection) -> int:
    """Changes whenever another connection commits to the file."""
    return int(db.execute("PRAGMA data_version").fetchone()[0])
