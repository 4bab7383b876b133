"""A runtime's worker record, kept alive by a thread so that a blocked event loop never costs its locks.

Every lock the runtime fetches carries its worker id, and the provider extends all of them at each
beat. The beats come from a daemon thread through the provider's :class:`WorkerLiveness` (which
never waits for the event loop), every quarter of ``worker_timeout``: an ``async def`` activity that blocks
the loop, or a long turn, holds its locks for as long as the process lives, and a dead process's
locks expire ``worker_timeout`` after its last beat. The same beats carry the latest heartbeat of
each running activity, so ``ActivityContext.heartbeat`` costs a dictionary write.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from perdure.providers._base import Heartbeat, WorkerInfo, WorkerLiveness, WorkItem
from perdure.runtime._options import RuntimeOptions
from perdure.runtime._registry import Registry

__all__ = ["Liveness", "describe_worker"]

_log = logging.getLogger("perdure.runtime")


def describe_worker(registry: Registry, options: RuntimeOptions) -> WorkerInfo:
    """The record of a new runtime: a fresh id, this process, and what the options let it serve."""
    now = datetime.now(UTC)
    orchestrations = registry.orchestrations
    serves_activities = options.run_activities
    return WorkerInfo(
        worker_id=uuid.uuid4().hex,
        host=socket.gethostname(),
        pid=os.getpid(),
        orchestrations=tuple(
            f"{name}@{version}" for name in orchestrations.names() for version in orchestrations.versions(name)
        )
        if options.run_orchestrations
        else (),
        activities=tuple(registry.activities.names()) if serves_activities else (),
        queues=tuple(options.activity_queues) if serves_activities else (),
        started_at=now,
        last_seen=now,
    )


class Liveness:
    """One runtime's beats, from a daemon thread, and the heartbeats they will store next."""

    def __init__(
        self, handle: WorkerLiveness, worker: WorkerInfo, timeout: float, seal: Callable[[Any], Any] | None = None
    ) -> None:
        self.worker = worker
        self._seal = seal  # encodes heartbeat details with the payload codec, on this thread
        self.timeout = timeout
        """Seconds after the last beat at which this worker's locks expire."""
        self._handle = handle
        self._interval = timeout / 4  # three beats may fail or come late before the locks expire
        self._pending: dict[int, Heartbeat] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first_beat: Future[None] = Future()
        self._failing = False
        self._thread = threading.Thread(target=self._run, name=f"perdure-liveness-{worker.worker_id[:8]}", daemon=True)

    @property
    def worker_id(self) -> str:
        """The id every lock of this runtime carries."""
        return self.worker.worker_id

    async def start(self) -> None:
        """Start beating; returns after the first beat (which registers the worker) was tried."""
        self._thread.start()
        await asyncio.wrap_future(self._first_beat)

    async def stop(self) -> None:
        """Stop beating and delete the record: a clean shutdown."""
        self._stop.set()
        await asyncio.to_thread(self._thread.join)

    def heartbeat(self, item: WorkItem, details: Any) -> None:
        """Keep an activity's latest heartbeat for the next beat; callable from any thread."""
        beat = Heartbeat(item_id=item.item_id, lock_token=item.lock_token, details=details)
        with self._lock:
            unsaved = self._pending.get(item.item_id)
            if details is None and unsaved is not None and unsaved.lock_token == item.lock_token:
                beat = unsaved  # a bare heartbeat keeps the details not stored yet
            self._pending[item.item_id] = beat

    def _sealed(self, beat: Heartbeat) -> Heartbeat:
        if self._seal is None or beat.details is None:
            return beat
        return replace(beat, details=self._seal(beat.details))

    def _run(self) -> None:
        self._beat()
        self._first_beat.set_result(None)
        while not self._stop.wait(self._interval):
            self._beat()
        try:
            self._handle.close(remove=True)
        except Exception as exc:
            _log.warning("worker %s could not delete its record: %s", self.worker_id, exc)

    def _beat(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, {}
        try:
            self._handle.beat([self._sealed(beat) for beat in pending.values()])
        except Exception as exc:
            with self._lock:
                for item_id, beat in pending.items():  # stored at the next beat, unless a newer one came
                    self._pending.setdefault(item_id, beat)
            if not self._failing:
                _log.warning(
                    "worker %s could not renew its record (%s); its locks expire %g s after the last renewal",
                    self.worker_id,
                    exc,
                    self.timeout,
                )
            self._failing = True
            return
        if self._failing:
            _log.info("worker %s renews its record again", self.worker_id)
        self._failing = False
