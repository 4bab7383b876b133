"""A worker's record on PostgreSQL, renewed from the worker's liveness thread on a connection of its own.

The pool and the listener belong to the event loop; the thread must keep beating while the loop is
blocked, so it holds one synchronous connection. A beat that fails drops the connection and the
next beat connects again. Times are the database's, like every lock's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import psycopg
from psycopg import sql

from perdure._errors import ProviderError
from perdure.providers._base import Heartbeat, WorkerInfo, WorkerLiveness
from perdure.providers._codec import encode_value, worker_serves
from perdure.providers._sql import load_queries

__all__ = ["PostgresWorkerLiveness"]

_Q = {name: text.encode() for name, text in load_queries("perdure.providers.postgres").items()}


class PostgresWorkerLiveness(WorkerLiveness):
    """Beats for one worker in one schema; the connection opens at the first beat."""

    def __init__(self, conninfo: str, schema: str, worker: WorkerInfo, timeout: float) -> None:
        self._conninfo = conninfo
        self._schema = schema
        self._worker = worker
        self._timeout = timeout
        self._conn: psycopg.Connection[Any] | None = None

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed:
            # A beat must not hang past the point where it could still save the locks.
            wait = max(1.0, self._timeout / 2)
            conn = psycopg.connect(self._conninfo, autocommit=True, connect_timeout=max(2, round(wait)))
            conn.execute(
                sql.SQL("SET search_path TO {}; SET timezone TO 'UTC'; SET statement_timeout = {}").format(
                    sql.Identifier(self._schema), sql.Literal(int(wait * 1000))
                )
            )
            self._conn = conn
        return self._conn

    def beat(self, heartbeats: Sequence[Heartbeat] = ()) -> None:
        worker = self._worker
        params = {
            "worker_id": worker.worker_id,
            "host": worker.host,
            "pid": worker.pid,
            "serves": worker_serves(worker),
            "started_at": worker.started_at,
            "timeout": float(self._timeout),
            "items": [h.item_id for h in heartbeats],
            "tokens": [h.lock_token for h in heartbeats],
            "details": [encode_value(h.details) for h in heartbeats],
        }
        self._run(_Q["worker_beat"], params, "renew")

    def close(self, *, remove: bool = True) -> None:
        try:
            if remove:
                self._run(_Q["delete_worker"], {"worker_id": self._worker.worker_id}, "remove")
        finally:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def _run(self, query: bytes, params: dict[str, Any], what: str) -> None:
        try:
            self._connection().execute(query, params)
        except psycopg.Error as exc:
            if self._conn is not None:  # start afresh next time: the connection may be broken
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None
            raise ProviderError(f"PostgreSQL failed to {what} worker {self._worker.worker_id}: {exc}") from exc
