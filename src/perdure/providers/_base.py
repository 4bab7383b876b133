"""The provider contract: storage for history, instance state and the two queues.

A provider is a small async interface over plain records; no driver type crosses it. It keeps:

- **instances**: one row per instance with its current execution and state;
- **history**: the events of every execution, append-only;
- **the orchestrator queue**: messages addressed to an instance (starts, completions, timers with a
  future visibility time, events, operator requests);
- **worker queues**: activity work items, by queue name.

Both queues are peek-lock: a fetch locks what it returns until an ack (which deletes it) or an
abandon (which releases it, maybe with a delay), or until the lock expires and another worker may
take it over. An orchestration ack commits a whole turn in one transaction.

A worker process may keep a **worker record** (see :class:`WorkerLiveness`): locks fetched with
its ``worker_id`` then live as long as the record does, renewed by a thread of the worker rather
than by its event loop, and move to another worker soon after the process dies.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from perdure._errors import ErrorDetails, PerdureError
from perdure._state import OrchestrationState, OrchestrationStatus
from perdure.engine import HistoryEvent

__all__ = [
    "ActivityRequest",
    "Heartbeat",
    "InstanceFilter",
    "InstanceUpdate",
    "LockLostError",
    "Message",
    "NewInstance",
    "OrchestrationItem",
    "Provider",
    "QueueKind",
    "QueuedMessage",
    "TurnCommit",
    "WorkItem",
    "WorkerInfo",
    "WorkerLiveness",
]

QueueKind = Literal["orchestrator", "activity"]


class LockLostError(PerdureError):
    """The peek-lock expired and another worker took the item over; this worker's result is discarded."""


@dataclass(frozen=True, kw_only=True, slots=True)
class NewInstance:
    """The instance row a start message creates (PENDING, execution 1) when its instance does not exist.

    Attributes:
        name: The orchestration name.
        input: The orchestration's input (a JSON value).
        parent_instance_id: The instance that started it as a child, if any.
    """

    name: str
    input: Any = None
    parent_instance_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class Message:
    """A message for the orchestrator queue.

    A provider stores ``event`` without looking into it: what it must act on is said by the other fields.

    Attributes:
        instance_id: The instance it is addressed to.
        execution_id: The execution it belongs to; ``None`` for whichever execution is current.
        event: What it carries (becomes a history event when the turn consumes it).
        visible_at: When it may be dequeued (timers); ``None`` for at once.
        new_instance: Set on a start: the instance row to create if the instance does not exist
            yet (an existing instance is left as it is; the message is queued either way).
        control: Delivered even while the instance is SUSPENDED (suspend, resume, terminate);
            every other message waits until the instance is resumed.
    """

    instance_id: str
    execution_id: int | None
    event: HistoryEvent
    visible_at: datetime | None = None
    new_instance: NewInstance | None = None
    control: bool = False


@dataclass(frozen=True, kw_only=True, slots=True)
class QueuedMessage:
    """A dequeued message. ``event`` is ``None`` when the stored row could not be decoded (see ``error``)."""

    message_id: int
    instance_id: str
    execution_id: int | None
    event: HistoryEvent | None
    dequeue_count: int
    error: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationItem:
    """One locked instance with its visible messages and the current execution's history.

    ``history`` is ``None`` when a stored event could not be decoded (``history_error`` says why).
    """

    instance_id: str
    lock_token: str
    messages: list[QueuedMessage]
    state: OrchestrationState | None
    history: list[HistoryEvent] | None
    history_error: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ActivityRequest:
    """What a worker needs to run one activity attempt and report back.

    ``trace_context`` is the W3C ``traceparent`` of the scheduling execution's span (``None`` when
    untraced): the activity's span is its child, whichever process runs it.
    """

    instance_id: str
    execution_id: int
    source_event_id: int
    name: str
    input: Any
    queue: str
    attempt: int
    orchestration_name: str
    orchestration_version: str
    trace_context: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class WorkItem:
    """A locked activity work item. ``request`` is ``None`` when its row could not be decoded.

    ``heartbeat_details`` and ``heartbeat_at`` are what an earlier attempt at this item last
    reported with a heartbeat (see :class:`Heartbeat`), so a new attempt can resume from there;
    ``heartbeat_at`` is ``None`` if it never reported one.
    """

    item_id: int
    lock_token: str
    request: ActivityRequest | None
    dequeue_count: int
    error: str | None = None
    heartbeat_details: Any = None
    heartbeat_at: datetime | None = None


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


@dataclass(frozen=True, kw_only=True, slots=True)
class InstanceUpdate:
    """The instance state a turn leaves behind."""

    name: str
    version: str | None
    status: OrchestrationStatus
    execution_id: int
    input: Any = None
    output: Any = None
    error: ErrorDetails | None = None
    custom_status: Any = None
    parent_instance_id: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TurnCommit:
    """Everything one turn writes, committed atomically by :meth:`Provider.ack_orchestration_item`.

    Attributes:
        execution_id: The execution ``history`` is appended to.
        history: New history events, numbered after the stored ones.
        state: The new instance state (``None``: unchanged).
        activity_items: Activities to enqueue.
        messages: Orchestrator messages to enqueue (timers, children, events, replies to a parent).
            One with ``new_instance`` for an instance that does not exist creates it (PENDING).
        consumed: Ids of the dequeued messages to delete; the others stay queued.
    """

    execution_id: int
    history: Sequence[HistoryEvent] = ()
    state: InstanceUpdate | None = None
    activity_items: Sequence[ActivityRequest] = ()
    messages: Sequence[Message] = ()
    consumed: Sequence[int] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class InstanceFilter:
    """Which instances ``list_instances`` returns (every given condition must hold)."""

    status: Sequence[OrchestrationStatus] | None = None
    name: str | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    instance_id_prefix: str | None = None
    parent_instance_id: str | None = None
    limit: int = 100
    after: str | None = field(default=None)
    """Cursor: return instances after this one (the ``instance_id`` last seen), for paging."""


class Provider(abc.ABC):
    """Storage behind the runtime and the client. Every method is one transaction."""

    # --- instances and history -----------------------------------------------------------------

    @abc.abstractmethod
    async def create_instance(self, start: Message) -> None:
        """Create a PENDING instance from ``start.new_instance`` and enqueue ``start``, atomically.

        Raises:
            ValueError: if ``start.new_instance`` is not set.
            InstanceAlreadyExistsError: if the instance exists.
        """

    @abc.abstractmethod
    async def enqueue_messages(self, messages: Sequence[Message]) -> None:
        """Enqueue orchestrator messages; each with ``new_instance`` creates its instance if it is missing."""

    @abc.abstractmethod
    async def get_state(self, instance_id: str) -> OrchestrationState | None:
        """The instance's state, or ``None`` if it does not exist."""

    @abc.abstractmethod
    async def get_history(self, instance_id: str, execution_id: int | None = None) -> list[HistoryEvent]:
        """The history of one execution (the current one by default); empty if there is none."""

    @abc.abstractmethod
    async def list_instances(self, where: InstanceFilter) -> list[OrchestrationState]:
        """Instances matching ``where``, ordered by instance id."""

    @abc.abstractmethod
    async def purge_instances(self, instance_ids: Sequence[str]) -> int:
        """Delete the history, state, queued messages and work items of finished instances.

        Instances that are not COMPLETED, FAILED or TERMINATED (checked in the same transaction)
        or do not exist are left alone.

        Returns:
            How many instances were deleted.
        """

    # --- orchestrator queue ----------------------------------------------------------------------

    @abc.abstractmethod
    async def fetch_orchestration_item(
        self, lock_seconds: float, *, worker_id: str | None = None
    ) -> OrchestrationItem | None:
        """Lock one instance that has visible messages and return it, or ``None`` if there is none.

        A SUSPENDED instance is returned only when a ``control`` message of it is visible. With a
        ``worker_id`` (a provider with worker records), the lock is that worker's: its beats keep it.
        """

    @abc.abstractmethod
    async def ack_orchestration_item(self, item: OrchestrationItem, commit: TurnCommit) -> None:
        """Commit a turn and release the lock, atomically.

        Raises:
            LockLostError: if the lock expired and was taken over; nothing is written.
        """

    @abc.abstractmethod
    async def abandon_orchestration_item(self, item: OrchestrationItem, delay: float = 0.0) -> None:
        """Release the lock; the item's messages become visible again after ``delay`` seconds."""

    # --- worker queues ---------------------------------------------------------------------------

    @abc.abstractmethod
    async def fetch_work_item(
        self, queues: Sequence[str], lock_seconds: float, *, worker_id: str | None = None
    ) -> WorkItem | None:
        """Lock one visible work item from one of ``queues``, or return ``None``.

        With a ``worker_id``, the lock is that worker's: its beats keep it.
        """

    @abc.abstractmethod
    async def ack_work_item(self, item: WorkItem, completion: Message) -> None:
        """Delete the item and enqueue its completion, atomically.

        Raises:
            ValueError: if ``completion`` would create an instance (``new_instance`` is set).
            LockLostError: if the lock expired and was taken over; nothing is written.
        """

    @abc.abstractmethod
    async def abandon_work_item(self, item: WorkItem, delay: float = 0.0) -> None:
        """Release the item; it becomes visible again after ``delay`` seconds."""

    @abc.abstractmethod
    async def renew_work_item(self, item: WorkItem, lock_seconds: float) -> None:
        """Extend the item's lock (for long activities).

        Raises:
            LockLostError: if the lock was already taken over.
        """

    # --- observability ---------------------------------------------------------------------------

    async def queue_depths(self) -> dict[str, int]:
        """How many messages and work items are visible (due) now, by queue.

        Keys are ``"orchestrator"`` and ``"activity:<queue name>"``. Sampled for the queue-depth
        metric; a provider that cannot count cheaply may keep this default (no samples).
        """
        return {}

    # --- worker records ----------------------------------------------------------------------------

    def worker_liveness(self, worker: WorkerInfo, timeout: float) -> WorkerLiveness | None:
        """A handle on ``worker``'s record, or ``None`` if this provider keeps no worker records.

        Nothing is written until the first :meth:`WorkerLiveness.beat`. Without records (this
        default), locks expire on their own after ``lock_seconds`` and workers renew them.

        Args:
            worker: Who the worker is and what it serves (its times are set by the store).
            timeout: Seconds after its last beat at which the worker counts as dead.
        """
        return None

    async def list_workers(self) -> list[WorkerInfo]:
        """Every worker record, live or recently dead (``alive`` says which); empty without records."""
        return []

    # --- waiting ---------------------------------------------------------------------------------

    @abc.abstractmethod
    async def wait_for_work(self, kind: QueueKind, timeout: float, queues: Sequence[str] = ()) -> None:
        """Sleep until work may be ready in the ``kind`` queue (worker ``queues``), or ``timeout`` seconds pass.

        Returns early when this process enqueues work, when the earliest delayed message becomes
        due, or when the provider learns of work enqueued elsewhere.
        """

    @abc.abstractmethod
    async def wait_for_state_change(self, instance_id: str, timeout: float) -> None:
        """Sleep until the instance's state may have changed, or ``timeout`` seconds pass.

        It listens from its first step, before it first suspends: a caller may start it, read the
        state, then await it, and so miss no change made after the read.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
