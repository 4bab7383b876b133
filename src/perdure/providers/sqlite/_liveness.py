"""A worker's record on SQLite, renewed from the worker's liveness thread on a connection of its own.

The provider's main connection belongs to the event loop; the thread must keep beating while the
loop is blocked, so it opens the file again. Its writes are short and its busy handler may block:
it blocks only the liveness thread.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from perdure._errors import ProviderError
from perdure.providers._base import Heartbeat, WorkerInfo, WorkerLiveness
from perdure.providers.sqlite import _statements as tx

__all__ = ["SqliteWorkerLiveness"]


class SqliteWorkerLiveness(WorkerLiveness):
    """Beats for one worker on one SQLite file; the connection opens at the first beat."""

    def __init__(self, path: str, synchronous: str, worker: WorkerInfo, timeout: float) -> None:
        self._path = path
        self._synchronous = synchronous
        self._worker = worker
        self._timeout = timeout
        self._db: sqlite3.Connection | None = None

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            # Waiting for the write lock is fine here (this thread does nothing else), but not for
            # long: a beat that cannot get in soon is better retried at the next one.
            busy = max(0.1, min(self._timeout / 2, 5.0))
            db = sqlite3.connect(self._path, timeout=busy, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            self._db = db
        return self._db

    def beat(self, heartbeats: Sequence[Heartbeat] = ()) -> None:
        try:
            tx.beat_worker(self._connection(), self._worker, self._timeout, heartbeats)
        except sqlite3.Error as exc:
            raise ProviderError(f"SQLite failed to renew worker {self._worker.worker_id}: {exc}") from exc

    def close(self, *, remove: bool = True) -> None:
        try:
            if remove:
                tx.delete_worker(self._connection(), self._worker.worker_id)
        except sqlite3.Error as exc:
            raise ProviderError(f"SQLite failed to remove worker {self._worker.worker_id}: {exc}") from exc
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None
