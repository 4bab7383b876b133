"""A worker's record on SQLite, renewed from the worker's liveness thread.

A beat goes through the provider's own connection, on the event loop, when the loop runs it
promptly: a commit by this process's connection is invisible to its ``data_version`` watcher,
whereas one by another connection would wake every waiter of the process at each beat. When the
loop does not answer in time (it is blocked), the beat goes through a second connection to the
file, which the thread opens: the record, and with it every lock, never depends on the loop.
"""

from __future__ import annotations

import concurrent.futures
import sqlite3
from collections.abc import Callable, Sequence
from typing import Any

from perdure._errors import ProviderError
from perdure.providers._base import Heartbeat, WorkerInfo, WorkerLiveness
from perdure.providers._clock import TimeSource
from perdure.providers.sqlite import _statements as tx

__all__ = ["OnLoop", "SqliteWorkerLiveness"]

OnLoop = Callable[..., "concurrent.futures.Future[Any]"]
"""Runs ``function(db, *args)`` as a write of the provider's connection, from any thread."""


class SqliteWorkerLiveness(WorkerLiveness):
    """Beats for one worker on one SQLite file."""

    def __init__(
        self,
        path: str,
        synchronous: str,
        worker: WorkerInfo,
        timeout: float,
        on_loop: OnLoop | None,
        clock: TimeSource,
    ) -> None:
        self._path = path
        self._clock = clock
        self._synchronous = synchronous
        self._worker = worker
        self._timeout = timeout
        self._on_loop = on_loop
        self._patience = timeout / 8  # beats come every timeout / 4: waiting this long still leaves plenty
        self._db: sqlite3.Connection | None = None

    def beat(self, heartbeats: Sequence[Heartbeat] = ()) -> None:
        self._run("renew", tx.beat_worker, self._clock, self._worker, self._timeout, list(heartbeats))

    def close(self, *, remove: bool = True) -> None:
        try:
            if remove:
                self._run("remove", tx.delete_worker, self._worker.worker_id)
        finally:
            if self._db is not None:
                self._db.close()
                self._db = None

    def _run(self, what: str, function: Callable[..., None], *args: Any) -> None:
        if self._ran_on_loop(function, *args):
            return
        try:
            function(self._connection(), *args)
        except sqlite3.Error as exc:
            raise ProviderError(f"SQLite failed to {what} worker {self._worker.worker_id}: {exc}") from exc

    def _ran_on_loop(self, function: Callable[..., None], *args: Any) -> bool:
        """Whether the event loop ran the write in time; ``False`` when it is blocked or gone."""
        if self._on_loop is None:
            return False
        try:
            future = self._on_loop(function, *args)
        except RuntimeError:  # the loop is closed
            return False
        try:
            future.result(timeout=self._patience)
        except TimeoutError:
            future.cancel()  # the loop is blocked: go around it
            return False
        except Exception:  # the provider is closing, or the write failed: our own connection may do better
            return False
        return True

    def _connection(self) -> sqlite3.Connection:
        if self._db is None:
            # Waiting for the write lock is fine here (this thread does nothing else), but not for
            # long: a beat that cannot get in soon is better retried at the next one.
            busy = max(0.1, min(self._timeout / 2, 5.0))
            db = sqlite3.connect(self._path, timeout=busy, isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA synchronous={self._synchronous}")
            self._db = db
        return self._db
