"""Group commit on a real SQLite file: shared transactions, per-operation rollback, lock waits."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest

from perdure.providers.sqlite._connection import transaction
from perdure.providers.sqlite._group_commit import GroupCommit


def connect(path: Path) -> sqlite3.Connection:
    db = sqlite3.connect(path, isolation_level=None, timeout=0)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("CREATE TABLE IF NOT EXISTS t (v TEXT PRIMARY KEY)")
    return db


def insert(db: sqlite3.Connection, value: str) -> str:
    with transaction(db):
        db.execute("INSERT INTO t (v) VALUES (?)", (value,))
        if value.startswith("bad"):
            raise ValueError(value)
    return value


def rows(db: sqlite3.Connection) -> list[str]:
    return [v for (v,) in db.execute("SELECT v FROM t ORDER BY v")]


async def test_operations_ready_together_share_one_commit_and_fail_alone(tmp_path: Path) -> None:
    db = connect(tmp_path / "g.db")
    commits: list[str] = []
    db.set_trace_callback(lambda sql: commits.append(sql) if sql == "COMMIT" else None)
    group = GroupCommit(db, give_up_seconds=5)
    results = await asyncio.gather(
        group.run(insert, "a"), group.run(insert, "bad-1"), group.run(insert, "b"), return_exceptions=True
    )
    assert results[0] == "a"
    assert isinstance(results[1], ValueError)
    assert results[2] == "b"
    assert commits == ["COMMIT"]  # three operations, one transaction
    assert rows(connect(tmp_path / "g.db")) == ["a", "b"]  # the failed one rolled back alone, durably


async def test_a_batch_waits_while_another_connection_holds_the_write_lock(tmp_path: Path) -> None:
    db = connect(tmp_path / "g.db")
    other = connect(tmp_path / "g.db")
    other.execute("BEGIN IMMEDIATE")
    group = GroupCommit(db, give_up_seconds=5)
    pending = asyncio.gather(group.run(insert, "x"), group.run(insert, "y"))
    await asyncio.sleep(0.05)
    assert not pending.done(), "it must wait, not fail, while the lock is held"
    other.execute("COMMIT")
    assert await asyncio.wait_for(pending, 5) == ["x", "y"]
    assert rows(other) == ["x", "y"]


async def test_a_lock_held_too_long_fails_the_batch_with_a_provider_error(tmp_path: Path) -> None:
    from perdure import ProviderError

    db = connect(tmp_path / "g.db")
    other = connect(tmp_path / "g.db")
    other.execute("BEGIN IMMEDIATE")
    group = GroupCommit(db, give_up_seconds=0.1)
    with pytest.raises(ProviderError, match="stayed locked"):
        await asyncio.wait_for(group.run(insert, "x"), 5)
    other.execute("ROLLBACK")
    assert await group.run(insert, "later") == "later"  # it recovers once the lock is free


async def test_closing_fails_queued_writes_instead_of_leaving_them_hanging(tmp_path: Path) -> None:
    from perdure import ProviderError, SqliteProvider
    from perdure.engine.events import StartRequested
    from perdure.providers import Message, NewInstance

    provider = await SqliteProvider.open(tmp_path / "p.db")
    start = Message(
        instance_id="i", execution_id=None, event=StartRequested(name="o"), new_instance=NewInstance(name="o")
    )
    queued = asyncio.ensure_future(provider.create_instance(start))
    await asyncio.sleep(0)  # queued, not yet flushed
    await provider.close()
    with pytest.raises(ProviderError, match="closed"):
        await queued
