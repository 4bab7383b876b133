"""PostgreSQL: the hot statements of the queues read a few index entries however long the queue or history.

One orchestration fanning out thousands of activities calls them thousands of times; each must cost
the same whether 10 or 20,000 items are queued. The work fetch used to sort every visible item on
every call ("queue = ANY (...)" keeps the planner from walking the index in order). The counts come
from ``pg_stat_get_xact_tuples_returned``: the rows and index entries the current transaction read.
Each schema is fresh and never analysed, as a new store is.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

pytest.importorskip("psycopg")

import psycopg
from tests.conftest import POSTGRES_URL

from perdure.providers._sql import load_queries
from perdure.providers.postgres._migrate import apply_migrations

pytestmark = pytest.mark.postgres

_QUERIES = load_queries("perdure.providers.postgres")
_ROWS = 2000  # far more than any of these statements may read


@pytest.fixture
async def conn() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    """A connection to a fresh, migrated and never analysed schema (as a new store is), dropped afterwards."""
    schema = f"test_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as admin:
        await apply_migrations(admin, schema)
        await admin.execute(f'SET search_path TO "{schema}"')
        try:
            yield admin
        finally:
            await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


async def _rows_read(conn: psycopg.AsyncConnection[Any], table: str) -> tuple[int, int]:
    """Rows this transaction has read from ``table``: by sequential scans, and index entries."""
    cursor = await conn.execute(
        "SELECT pg_stat_get_xact_tuples_returned(%(t)s::regclass),"
        " (SELECT sum(pg_stat_get_xact_tuples_returned(indexrelid)) FROM pg_index WHERE indrelid = %(t)s::regclass)",
        {"t": table},
    )
    row = await cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1])


async def _queue_items(conn: psycopg.AsyncConnection[Any]) -> None:
    await conn.execute(
        "INSERT INTO worker_queue (queue, instance_id, request, visible_at)"
        " SELECT CASE WHEN n %% 2 = 0 THEN 'default' ELSE 'gpu' END, 'fan', 'r' || n, now() - interval '1 minute'"
        " FROM generate_series(1, %s) AS n",
        (_ROWS,),
    )


@pytest.mark.parametrize(
    ("query", "queues"),
    [("fetch_work_item", {"queue": "gpu"}), ("fetch_work_item_of_queues", {"queues": ["default", "gpu"]})],
)
@pytest.mark.parametrize("count", [1, 4])
async def test_a_work_fetch_reads_the_head_of_each_queue_not_every_item(
    conn: psycopg.AsyncConnection[Any], query: str, queues: dict[str, Any], count: int
) -> None:
    await _queue_items(conn)
    params = {**queues, "lock_token": "t", "lock_seconds": 30.0, "worker_id": None, "count": count}
    async with conn.transaction(force_rollback=True):
        cursor = await conn.execute(_QUERIES[query].encode(), params)
        fetched = await cursor.fetchone()
        assert fetched is not None and fetched[1][0] == "r1", "the oldest item first"
        assert len(fetched[0]) == count, "as many as asked for"
        seq_read, index_read = await _rows_read(conn, "worker_queue")
    assert seq_read == 0
    bound = 10 + 2 * count
    assert index_read <= bound, f"the fetch read {index_read} index entries of {_ROWS} items"


async def test_the_wait_for_work_reads_the_head_of_each_queue(conn: psycopg.AsyncConnection[Any]) -> None:
    await _queue_items(conn)
    async with conn.transaction(force_rollback=True):
        cursor = await conn.execute(_QUERIES["earliest_worker_due"].encode(), {"queues": ["default", "gpu", "none"]})
        due = await cursor.fetchone()
        assert due is not None and 50 < -due[0] < 600, "due for about a minute already"
        seq_read, index_read = await _rows_read(conn, "worker_queue")
    assert seq_read == 0
    assert index_read <= 10, f"the due time read {index_read} index entries of {_ROWS} items"


async def test_an_orchestration_fetch_reads_the_last_event_of_a_long_history_not_all_of_them(
    conn: psycopg.AsyncConnection[Any],
) -> None:
    await conn.execute(
        "INSERT INTO instances (instance_id, name, status, execution_id, created_at, updated_at)"
        " VALUES ('fan', 'FanOut', 'RUNNING', 1, now(), now())"
    )
    await conn.execute(
        "INSERT INTO history (instance_id, execution_id, event_id, event)"
        " SELECT 'fan', 1, n, 'e' || n FROM generate_series(1, %s) AS n",
        (_ROWS,),
    )
    await conn.execute(
        "INSERT INTO orchestrator_queue (instance_id, execution_id, kind, event, visible_at)"
        " VALUES ('fan', 1, 'message', 'm', now())"
    )
    async with conn.transaction(force_rollback=True):
        cursor = await conn.execute("SELECT o_history, o_history_from FROM fetch_orchestration_item(30, 't', NULL, 32)")
        fetched = await cursor.fetchone()
        assert fetched == ([f"e{_ROWS}"], _ROWS), "a long history comes back as its last event"
        seq_read, index_read = await _rows_read(conn, "history")
    assert seq_read == 0
    assert index_read <= 10, f"the fetch read {index_read} index entries of a history of {_ROWS} events"
