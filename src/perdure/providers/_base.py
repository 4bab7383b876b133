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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from perdure._errors import ErrorDetails
from perdure._state import AwaitedEvent, OrchestrationState, OrchestrationStatus
from perdure.engine import HistoryEvent
from perdure.providers._clock import PROCESS_CLOCK, TimeSource
from perdure.providers._refusals import DataRefusedError, LockLostError, StoreNotFoundError
from perdure.providers._workers import Heartbeat, WorkerInfo, WorkerLiveness

__all__ = [
    "ActivityRequest",
    "DataRefusedError",
    "Heartbeat",
    "HistoryMark",
    "InstanceFilter",
    "InstanceUpdate",
    "LockLostError",
    "Message",
    "NewInstance",
    "OrchestrationItem",
    "Provider",
    "QueueKind",
    "QueuedMessage",
    "StoreNotFoundError",
    "TurnCommit",
    "WorkItem",
    "WorkerInfo",
    "WorkerLiveness",
]

QueueKind = Literal["orchestrator", "activity"]


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
class HistoryMark:
    """How much of an execution's history a caller already holds: its events up to ``event_id``.

    Attributes:
        execution_id: The execution.
        event_id: The id of the last event of it the caller holds (event ids run 1, 2, 3…).
    """

    execution_id: int
    event_id: int


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationItem:
    """One locked instance with its visible messages and the current execution's history.

    ``history`` is ``None`` when a stored event could not be decoded (``history_error`` says why).
    ``state_error`` says which columns of the instance row could not be decoded; ``state`` then
    holds what could (unreadable values are ``None``) and the turn fails the instance.

    ``history_from`` is the id of the first event in ``history``: ``1`` when it is the whole
    history, else the event id of the :class:`HistoryMark` the fetch was given for this instance
    (that event comes first, so the caller can check it is the one it holds, then every later one).
    """

    instance_id: str
    lock_token: str
    messages: list[QueuedMessage]
    state: OrchestrationState | None
    history: list[HistoryEvent] | None
    history_error: str | None = None
    state_error: str | None = None
    history_from: int = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class ActivityRequest:
    """What a worker needs to run one activity attempt and report back.

    ``trace_context`` is the W3C ``traceparent`` of the scheduling execution's span (``None`` when
    untraced): the activity's span is its child, whichever process runs it. The time limits are
    those of ``call_activity`` (``None``: no limit): the worker enforces them while it runs the
    attempt (``deadline`` is when ``schedule_to_close`` runs out).
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
    start_to_close: float | None = None
    deadline: datetime | None = None
    heartbeat_timeout: float | None = None


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
class InstanceUpdate:
    """The instance state a turn leaves behind.

    ``waiting_for`` is what the execution's code waits for (``OrchestrationState.waiting_for``),
    stored with the rest of the row and read back by ``get_state`` and ``list_instances``.
    """

    name: str
    version: str | None
    status: OrchestrationStatus
    execution_id: int
    input: Any = None
    output: Any = None
    error: ErrorDetails | None = None
    custom_status: Any = None
    parent_instance_id: str | None = None
    waiting_for: Sequence[AwaitedEvent] = ()


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
        cancelled_activities: Activities of this instance's execution ``execution_id``, by the id of
            the event that scheduled them (``ActivityRequest.source_event_id``), whose work items
            to delete, locked or not: the turn cancelled them, recorded their time-out, or ended
            the execution. The worker running one notices it is gone (:meth:`Provider.work_items_held`).
    """

    execution_id: int
    history: Sequence[HistoryEvent] = ()
    state: InstanceUpdate | None = None
    activity_items: Sequence[ActivityRequest] = ()
    messages: Sequence[Message] = ()
    consumed: Sequence[int] = ()
    cancelled_activities: Sequence[int] = ()


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

    clock: TimeSource = PROCESS_CLOCK
    """Where this store's times come from, and the runtime's with them (a turn's time, activity
    deadlines): the process clock, or a virtual one in a test environment (``perdure.testing``).
    PostgreSQL keeps its own times by the database's clock; the runtime still reads this one."""

    # --- instances and history -----------------------------------------------------------------

    @abc.abstractmethod
    async def create_instance(self, start: Message) -> None:
        """Create a PENDING instance from ``start.new_instance`` and enqueue ``start``, atomically.

        Raises:
            ValueError: if ``start.new_instance`` is not set.
            InstanceAlreadyExistsError: if the instance exists.
        """

    @abc.abstractmethod
    async def restart_instance(self, start: Message) -> int:
        """Replace the instance ``start`` names, whatever its status, with a new one, atomically.

        Deletes the instance's history, queued messages, work items and lock, writes the instance
        row from ``start.new_instance`` (PENDING) and queues ``start``. The new run is the next
        execution of the instance (1 if it did not exist), and ``start`` is addressed to it: a late
        answer to the old run (an activity that was running, a timer, a child) belongs to an
        execution that no longer exists and is dropped. A turn of the old run that is in progress
        loses its lock and writes nothing.

        Returns:
            The new execution id.

        Raises:
            ValueError: if ``start.new_instance`` is not set.
        """

    @abc.abstractmethod
    async def request_rewind(self, request: Message) -> bool:
        """Queue a rewind of a FAILED instance and mark it PENDING, atomically.

        ``request.execution_id`` is the failed execution. The instance keeps its error until the
        rewind is applied: a PENDING instance with an error is one whose rewind is waiting for a turn.

        Returns:
            ``False``, writing nothing, if the instance is not FAILED in that execution (any more).

        Raises:
            ValueError: if ``request.execution_id`` is not set, or ``new_instance`` is.
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
        self, lock_seconds: float, *, worker_id: str | None = None, held: Mapping[str, HistoryMark] | None = None
    ) -> OrchestrationItem | None:
        """Lock one instance that has visible messages and return it, or ``None`` if there is none.

        A SUSPENDED instance is returned only when a ``control`` message of it is visible. With a
        ``worker_id`` (a provider with worker records), the lock is that worker's: its beats keep it.

        ``held`` says, by instance id, which history the caller already holds (its execution
        cache). When the locked instance has a mark there, its current execution is the mark's and
        its stored history holds the mark's event, only the events from that one on are returned
        (``OrchestrationItem.history_from`` is the mark's event id); in every other case the whole
        history is (``history_from`` is 1). The caller checks that the first event returned is the
        one it holds: the provider does not know what it holds, only up to where. ``held`` is read
        during the call, possibly from another thread, and never kept.
        """

    @abc.abstractmethod
    async def ack_orchestration_item(self, item: OrchestrationItem, commit: TurnCommit) -> None:
        """Commit a turn and release the lock, atomically.

        Raises:
            LockLostError: if the lock expired and was taken over; nothing is written.
        """

    @abc.abstractmethod
    async def abandon_orchestration_item(
        self, item: OrchestrationItem, delay: float = 0.0, *, undo_delivery: bool = False
    ) -> None:
        """Release the lock; the item's messages become visible again after ``delay`` seconds.

        With ``undo_delivery``, the delivery the fetch counted is taken back too (if the lock is still
        the item's): the item was put back before any of its code ran, so the delivery says nothing
        about whether a message is poison.
        """

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
            LockLostError: if the lock expired and was taken over, or a turn deleted the item
                (``TurnCommit.cancelled_activities``); nothing is written.
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

    @abc.abstractmethod
    async def charge_work_deliveries(self, items: Sequence[WorkItem], *, charged: bool) -> None:
        """Take back (``charged=False``) or count again (``charged=True``) the delivery that fetched each item.

        Only items still held with their lock tokens change; a count never goes below zero. The
        runtime takes back the deliveries of the activities it runs while a suspect turn runs alone
        in its process, and counts them again once that turn is over: if the turn kills the
        process, the activities are redelivered (and run again) without the crash counting
        towards their poison limit.
        """

    async def work_items_held(self, items: Sequence[WorkItem]) -> set[int]:
        """The ids of ``items`` that are still locked with their lock tokens.

        An item that a turn deleted (see ``TurnCommit.cancelled_activities``) or that another
        worker took over is missing: the work dispatcher then stops its attempt. Called about
        twice a second while attempts run, for all of them at once, so it should be one cheap
        read. This default cannot tell and answers every item, so attempts are never stopped.
        """
        return {item.item_id for item in items}

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

    async def activity_workers(self, instance_id: str, execution_id: int) -> dict[int, str]:
        """Which worker runs each activity of ``instance_id``'s execution ``execution_id`` right now.

        Keyed by the id of the event that scheduled the activity (``ActivityRequest.source_event_id``),
        the ``worker_id`` of the worker (:meth:`list_workers`) whose lock on its work item has not
        expired. An activity waiting for a worker, or whose worker's lock expired, is missing. For
        operators; this default knows no workers and answers ``{}``.
        """
        return {}

    # --- waiting ---------------------------------------------------------------------------------

    @abc.abstractmethod
    async def wait_for_work(self, kind: QueueKind, timeout: float, queues: Sequence[str] = ()) -> None:
        """Sleep until work may be ready in the ``kind`` queue (worker ``queues``), or ``timeout`` seconds pass.

        Returns early when this process enqueues work, when the earliest delayed message becomes
        due, or when the provider learns of work enqueued elsewhere.
        """

    @abc.abstractmethod
    async def wait_for_state_change(
        self, instance_id: str, timeout: float, *, until_ended: int | None = None
    ) -> OrchestrationState | None:
        """Sleep until the instance's state may have changed, or ``timeout`` seconds pass.

        It listens from its first step, before it first suspends: a caller may start it, read the
        state, then await it, and so miss no change made after the read.

        With ``until_ended`` (an execution id), a provider may sleep on through changes it knows
        end no execution from ``until_ended`` on (turns this process committed that leave the
        instance running), so a caller waiting for the end reads the state once, not once a turn.

        Returns:
            ``None``, or the state as the change that woke it left it stored, if the provider knows it
            (a turn of this process that ended an execution): the caller need not read it then.
        """

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections and threads."""

    async def __aenter__(self) -> Provider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()
