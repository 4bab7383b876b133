"""The records of worker liveness: who runs, what it serves, and the heartbeats it stores.

Part of the provider contract (re-exported by ``perdure.providers``); a provider that keeps worker
records returns a :class:`WorkerLiveness` from ``Provider.worker_liveness``.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

__all__ = ["Heartbeat", "WorkerInfo", "WorkerLiveness"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Heartbeat:
    """The latest heartbeat of a running activity, for its work item's row.

    Attributes:
        item_id: The work item.
        lock_token: Its lock token: a heartbeat for an item locked by someone else since is dropped.
        details: A JSON value to store; ``None`` keeps the details stored before and records only the time.
    """

    item_id: int
    lock_token: str
    details: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkerInfo:
    """A worker process's record: who it is and what it serves.

    Attributes:
        worker_id: Unique for each runtime started.
        host: The host name.
        pid: The process id.
        orchestrations: The orchestrations it runs, as ``name@version``.
        activities: The activities it runs.
        queues: The activity queues it serves.
        started_at: When it started.
        last_seen: When the store last heard from it.
        alive: Whether it was heard from within its timeout (read from the store's clock).
    """

    worker_id: str
    host: str
    pid: int
    orchestrations: tuple[str, ...] = ()
    activities: tuple[str, ...] = ()
    queues: tuple[str, ...] = ()
    started_at: datetime
    last_seen: datetime
    alive: bool = True

    def serves(self, name: str, version: str | None = None) -> bool:
        """Whether it runs orchestration ``name`` (at ``version``, if given)."""
        if version is not None:
            return f"{name}@{version}" in self.orchestrations
        return any(entry.rpartition("@")[0] == name for entry in self.orchestrations)


class WorkerLiveness(abc.ABC):
    """One worker's record, kept alive from a thread of its own, never from the event loop.

    Made by :meth:`Provider.worker_liveness`, its methods block and never wait for the event loop
    (they use a connection of their own, at least while the loop is busy). The worker calls
    :meth:`beat` from one thread every quarter of its timeout or so: while beats come, every lock
    fetched with its ``worker_id`` stays valid whatever its event loop does; when they stop (the
    process died), the locks expire ``timeout`` seconds after the last beat and other workers take
    the work over.
    """

    @abc.abstractmethod
    def beat(self, heartbeats: Sequence[Heartbeat] = ()) -> None:
        """Write the record (creating it if missing) as seen now, extend every lock the worker holds to
        ``timeout`` seconds from now, and store ``heartbeats``, in one transaction.

        Raises:
            ProviderError: if the store could not be reached; the next beat tries again.
        """

    @abc.abstractmethod
    def close(self, *, remove: bool = True) -> None:
        """Delete the record (``remove``, a clean shutdown) and close the connection."""
