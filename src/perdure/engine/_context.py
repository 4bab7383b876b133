"""``OrchestrationContext``: the only door from orchestration code to the replay engine."""

from __future__ import annotations

import hashlib
import logging
import math
import random
import uuid
from collections.abc import MutableMapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, NoReturn, Protocol

from perdure._errors import ActivityFailedError, SubOrchestrationFailedError, TaskFailedError
from perdure._payloads import Payloads
from perdure._validate import MAX_NAME_LENGTH, check_instance_id, check_name, check_version
from perdure.engine._retry import RetryPolicy
from perdure.engine._tasks import (
    DurableTask,
    EventWait,
    EventWithTimeout,
    RetryTask,
    ScheduledTask,
    WhenAllTask,
    WhenAnyTask,
)
from perdure.engine.events import (
    ActivityScheduled,
    CustomStatusUpdated,
    Decision,
    EventSent,
    HistoryEvent,
    OrchestrationChained,
    Patched,
    SubOrchestrationScheduled,
    TimerCreated,
)

if TYPE_CHECKING:
    from perdure.engine.events import OrchestrationStarted

__all__ = ["ContinueAsNew", "OrchestrationContext"]

_GUID_NAMESPACE = uuid.UUID("9b0d5a52-8a8e-4c55-9d6e-5f0e0a4d7c11")
_logger = logging.getLogger("perdure.orchestration")


class _Engine(Protocol):
    """What the context needs from the engine (implemented by ``perdure.engine._replay``)."""

    replaying: bool
    current_time: datetime
    payloads: Payloads

    def schedule(self, decision: Decision, task: DurableTask[Any] | None) -> None: ...

    def wait_event(self, name: str, task: DurableTask[Any]) -> None: ...

    def withdraw_wait(self, name: str, task: DurableTask[Any]) -> None: ...

    def next_recorded(self) -> HistoryEvent | None: ...


class ContinueAsNew(BaseException):
    """Raised by ``ctx.continue_as_new`` to end the execution; a BaseException so ``except Exception`` lets it pass."""

    def __init__(self, input: Any, version: str | None) -> None:
        super().__init__("continue_as_new")
        self.input = input
        self.version = version


class _ReplaySafeLogger(logging.LoggerAdapter[logging.Logger]):
    """Logs only when the code runs for the first time, never while it is replayed."""

    def __init__(self, ctx: OrchestrationContext) -> None:
        super().__init__(_logger, {})
        self._ctx = ctx

    def isEnabledFor(self, level: int) -> bool:
        return not self._ctx.is_replaying and super().isEnabledFor(level)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        extra = dict(kwargs.get("extra") or {})
        extra.setdefault("instance_id", self._ctx.instance_id)
        extra.setdefault("execution_id", self._ctx.execution_id)
        kwargs["extra"] = extra
        return msg, kwargs


class OrchestrationContext:
    """Handed to every orchestration function; everything durable goes through it.

    Orchestration code must be deterministic: take time from :meth:`now`, ids from
    :meth:`new_guid`, and do all I/O in activities. Scheduling methods return durable tasks to
    ``await`` (alone, or combined with :meth:`when_all` / :meth:`when_any`).

    Names, instance ids and versions are checked where they are given, as the client checks them:
    a bad one raises ``TypeError`` or ``ValueError`` (a bad version :class:`~perdure.RegistrationError`)
    from the call, and nothing is scheduled.
    """

    def __init__(
        self, engine: _Engine, started: OrchestrationStarted, *, instance_id: str, execution_id: int, input: Any = None
    ) -> None:
        self._engine = engine
        self._guid_counter = 0
        self._child_counter = 0
        self._random: random.Random | None = None
        self._patches: dict[str, bool] = {}
        self.instance_id = instance_id
        """The instance id."""
        self.execution_id = execution_id
        """The current execution (1, 2, … after continue-as-new or rewind)."""
        self.name = started.name
        """The orchestration name."""
        self.version = started.version
        """The pinned version of this execution."""
        self.parent_instance_id = started.parent_instance
        """The parent's instance id, or ``None`` for a root instance."""
        self.input = input
        """The input of this execution (decoded to the orchestration's parameter annotation)."""
        self.logger: logging.LoggerAdapter[logging.Logger] = _ReplaySafeLogger(self)
        """A logger that is silent while the code is being replayed."""

    @property
    def is_replaying(self) -> bool:
        """True while the code re-executes steps already recorded in history."""
        return self._engine.replaying

    def now(self) -> datetime:
        """The current time, deterministic: when the event being processed was recorded (UTC)."""
        return self._engine.current_time

    def new_guid(self) -> uuid.UUID:
        """A UUID that is the same on every replay (derived from instance, execution and a counter)."""
        self._guid_counter += 1
        return uuid.uuid5(_GUID_NAMESPACE, f"{self.instance_id}\x1f{self.execution_id}\x1f{self._guid_counter}")

    def random(self) -> random.Random:
        """A ``random.Random`` that gives the same numbers on every replay (seeded from instance and execution).

        Every call returns the same generator, so each draw follows the previous one, as in a
        first run. Not for secrets: anyone who knows the instance id can repeat the numbers.
        """
        if self._random is None:
            seed = hashlib.sha256(f"{self.instance_id}\x1f{self.execution_id}".encode()).digest()
            self._random = random.Random(int.from_bytes(seed, "big"))
        return self._random

    def patched(self, change_id: str) -> bool:
        """Whether to take the new branch of a code change, so old histories keep replaying without a new version.

        A new execution that reaches this call records a ``Patched`` marker and gets ``True``.
        Replaying a history made before the change, where no marker stands at this point, gives
        ``False``: run the old code in that branch. Asked again in the same execution, the answer
        stays the same. When no execution that took the old branch is left, replace the call by
        :meth:`deprecate_patch`. See docs/versioning.md for the whole lifecycle.
        """
        check_name(change_id, "change id")
        known = self._patches.get(change_id)
        if known is None:
            recorded = self._engine.next_recorded()
            # No stored event here means the code runs anew (or past what history holds).
            known = recorded is None or (isinstance(recorded, Patched) and recorded.change_id == change_id)
            self._patches[change_id] = known
            if known:
                self._engine.schedule(Patched(change_id=change_id), None)
        return known

    def deprecate_patch(self, change_id: str) -> None:
        """The cleanup step of :meth:`patched`: the old branch is gone, the marker is still recorded.

        Histories with the marker, and workers still running the code with ``patched``, keep
        replaying; remove this call once no execution with the marker is left.
        """
        self.patched(change_id)

    # --- scheduling ---

    def call_activity(
        self,
        name: str,
        input: Any = None,
        *,
        retry: RetryPolicy | None = None,
        queue: str | None = None,
        start_to_close: float | timedelta | None = None,
        schedule_to_close: float | timedelta | None = None,
        heartbeat_timeout: float | timedelta | None = None,
        result_type: Any = None,
    ) -> DurableTask[Any]:
        """Schedule the activity ``name``; the task fails with :class:`ActivityFailedError` if it fails.

        An attempt that outruns a time limit fails with the error type ``"ActivityTimeoutError"``,
        like an attempt that raised: the retry policy decides whether another follows. The limits
        hold across crashes (see the activity limits page of the documentation).

        Args:
            name: The registered activity name.
            input: The activity's input: a JSON value, dataclass, pydantic model, datetime… (docs/payloads.md).
            retry: Retry the activity on failure, waiting on durable timers between attempts.
            queue: The worker queue to run on (default ``"default"``).
            start_to_close: How long one attempt may run once a worker started it (seconds or ``timedelta``).
            schedule_to_close: How long the whole call may take from now: time in the queue, every
                attempt and the waits between them. When it runs out, the attempt in progress fails
                and no other follows; a retry that could not start before it is not made.
            heartbeat_timeout: How long a running attempt may go without a heartbeat before its worker fails it.
            result_type: Decode the result to this type (default: the activity's return annotation, if registered here).

        Raises:
            TypeError: if a limit is not seconds or a ``timedelta``.
            ValueError: for a bad name, or a limit that is not positive and finite.
            SerializationError: if ``input`` cannot be stored (naming where inside it, and why).
        """
        check_name(name, "activity name")
        input = self._engine.payloads.to_json(input, f"input of activity {name!r}")
        queue = "default" if queue is None else queue
        check_name(queue, "queue name")
        per_attempt = _limit(start_to_close, "start_to_close")
        heartbeat = _limit(heartbeat_timeout, "heartbeat_timeout")
        total = _limit(schedule_to_close, "schedule_to_close")
        deadline = None if total is None else _after(self.now(), total, "schedule_to_close")
        what = f"activity {name!r}"

        def attempt(number: int) -> DurableTask[Any]:
            task = ScheduledTask(self._engine, ActivityFailedError, what, result_type)
            decision = ActivityScheduled(
                name=name,
                input=input,
                queue=queue,
                attempt=number,
                start_to_close=per_attempt,
                deadline=deadline,
                heartbeat_timeout=heartbeat,
            )
            self._engine.schedule(decision, task)
            return task

        return attempt(1) if retry is None else RetryTask(self, retry, attempt, what, deadline)

    def create_timer(self, fire_at: float | timedelta | datetime) -> DurableTask[None]:
        """A durable timer: a delay in seconds, a ``timedelta``, or an aware ``datetime``.

        A moment in the past, or a negative delay, fires at once.

        Raises:
            TypeError: if ``fire_at`` is none of these.
            ValueError: for a naive datetime, or a delay that is NaN, infinite, or reaches past the year 9999.
        """
        if isinstance(fire_at, datetime):
            if fire_at.tzinfo is None:
                raise ValueError("create_timer needs an aware datetime (with tzinfo), not a naive one")
            due = fire_at
        elif isinstance(fire_at, timedelta | int | float) and not isinstance(fire_at, bool):
            due = _after(self.now(), fire_at, "the delay of create_timer")
        else:
            raise TypeError(f"create_timer takes seconds, a timedelta or a datetime, not {type(fire_at).__name__}")
        task: DurableTask[None] = ScheduledTask(self._engine, TaskFailedError, "timer")
        self._engine.schedule(TimerCreated(fire_at=max(due, self.now())), task)
        return task

    def wait_for_event(
        self, name: str, timeout: float | timedelta | None = None, *, result_type: Any = None
    ) -> DurableTask[Any]:
        """Wait for the external event ``name``; the task's result is the event's data (as ``result_type``).

        An event raised before anyone waits for it is kept, and delivered to the first wait of
        that name (events of one name are delivered in arrival order). Names match
        case-insensitively, as in the Durable Task family: ``"Approval"`` satisfies ``"approval"``.

        With ``timeout`` (seconds or a ``timedelta``), the task fails with ``TimeoutError`` if no
        event came in time, and the wait is withdrawn: a later event stays for the next wait.
        Prefer this to racing a plain wait against a timer with ``when_any``, whose losing wait
        would still take the next event of that name.

        Raises:
            TypeError: if ``timeout`` is not ``None``, a number of seconds or a ``timedelta``.
            ValueError: for a bad name, or a ``timeout`` that is negative, NaN, infinite, or reaches
                past the year 9999.
        """
        check_name(name, "event name")
        due = None
        if timeout is not None:
            if isinstance(timeout, bool) or not isinstance(timeout, timedelta | int | float):
                raise TypeError(f"wait_for_event takes seconds or a timedelta as timeout, not {type(timeout).__name__}")
            due = _after(self.now(), timeout, "the timeout of wait_for_event")
            if due < self.now():
                raise ValueError(f"the timeout of wait_for_event must not be negative, got {timeout!r}")
        task = EventWait(self._engine, name, self.now(), result_type)
        self._engine.wait_event(name, task)
        if due is None:
            return task
        timer = self.create_timer(due)
        task._timeout = (due, timer)
        return EventWithTimeout(self._engine, name, task, timer)

    def call_sub_orchestration(
        self,
        name: str,
        input: Any = None,
        *,
        instance_id: str | None = None,
        version: str | None = None,
        retry: RetryPolicy | None = None,
        result_type: Any = None,
    ) -> DurableTask[Any]:
        """Start a child orchestration and get a task for its output.

        The task fails with :class:`SubOrchestrationFailedError` if the child fails or is
        terminated. Without ``instance_id`` a deterministic id is derived from this instance.
        Without ``version`` the child's version policy chooses. The output is decoded to
        ``result_type`` (default: the child's return annotation, if registered here).
        """
        check_name(name, "orchestration name")
        if instance_id is not None:
            check_instance_id(instance_id)
        check_version(version)
        input = self._engine.payloads.to_json(input, f"input of sub-orchestration {name!r}")

        def attempt(number: int) -> DurableTask[Any]:
            child_id = instance_id if instance_id is not None and number == 1 else None
            if child_id is None:
                child_id = self._next_child_id() if instance_id is None else self._retry_id(instance_id, number)
            what = f"sub-orchestration {name!r} ({child_id})"
            task = ScheduledTask(self._engine, SubOrchestrationFailedError, what, result_type)
            decision = SubOrchestrationScheduled(name=name, version=version, instance_id=child_id, input=input)
            self._engine.schedule(decision, task)
            return task

        return attempt(1) if retry is None else RetryTask(self, retry, attempt, f"sub-orchestration {name!r}")

    def start_orchestration(
        self, name: str, input: Any = None, *, instance_id: str | None = None, version: str | None = None
    ) -> str:
        """Start a detached orchestration (fire-and-forget) and return its instance id."""
        check_name(name, "orchestration name")
        if instance_id is not None:
            check_instance_id(instance_id)
        check_version(version)
        input = self._engine.payloads.to_json(input, f"input of orchestration {name!r}")
        if instance_id is None:  # derived last: a refused call must not use up a child number
            instance_id = self._next_child_id()
        self._engine.schedule(
            OrchestrationChained(name=name, version=version, instance_id=instance_id, input=input), None
        )
        return instance_id

    def send_event(self, instance_id: str, name: str, data: Any = None) -> None:
        """Raise the event ``name`` with ``data`` on another instance."""
        check_instance_id(instance_id)
        check_name(name, "event name")
        data = self._engine.payloads.to_json(data, f"data of event {name!r}")
        self._engine.schedule(EventSent(instance_id=instance_id, name=name, data=data), None)

    def set_custom_status(self, value: Any) -> None:
        """Publish a value that clients see as ``OrchestrationState.custom_status`` (as its JSON form)."""
        value = self._engine.payloads.to_json(value, "custom status")
        self._engine.schedule(CustomStatusUpdated(value=value), None)

    def continue_as_new(self, input: Any = None, *, version: str | None = None) -> NoReturn:
        """End this execution now and start a new one with ``input`` (and maybe another version).

        It does not return. Events raised but not yet awaited carry over to the new execution.
        """
        check_version(version)
        input = self._engine.payloads.to_json(input, "input of continue_as_new")
        raise ContinueAsNew(input, version)

    @staticmethod
    def when_all(tasks: Sequence[DurableTask[Any]]) -> DurableTask[list[Any]]:
        """A task that finishes with every result, in order; it fails as soon as one task fails."""
        return WhenAllTask(_check_tasks(tasks))

    @staticmethod
    def when_any(tasks: Sequence[DurableTask[Any]]) -> DurableTask[DurableTask[Any]]:
        """A task that finishes with the first of ``tasks`` to finish (the task itself, not its result)."""
        return WhenAnyTask(_check_tasks(tasks))

    def _retry_id(self, instance_id: str, attempt: int) -> str:
        """The id of a retry of the child ``instance_id``; a later execution (a rewind walked the
        first one's attempts back) gets ids of its own, as the earlier attempts still exist."""
        if self.execution_id == 1:
            return _derived_id(f"{instance_id}:{attempt}")
        return _derived_id(f"{instance_id}:{self.execution_id}:{attempt}")

    def _next_child_id(self) -> str:
        self._child_counter += 1
        return _derived_id(f"{self.instance_id}:{self.execution_id}:{self._child_counter}")


def _after(now: datetime, delay: float | timedelta, what: str) -> datetime:
    """The moment ``delay`` (seconds or a ``timedelta``) after ``now``; ``what`` names it in errors."""
    if isinstance(delay, float) and not math.isfinite(delay):
        raise ValueError(f"{what} must be a finite number of seconds, got {delay!r}")
    try:
        return now + (delay if isinstance(delay, timedelta) else timedelta(seconds=delay))
    except OverflowError:  # from timedelta() or from the addition
        raise ValueError(f"{what} ({delay!r}) reaches outside the years 1 to 9999") from None


def _derived_id(candidate: str) -> str:
    """``candidate`` if it is short enough to be an instance id, else its head and a hash of all of it.

    Ids made from a long parent id plus a suffix would pass the limit, and the client could not
    address the child; the hash keeps them distinct and the same on every replay.
    """
    if len(candidate) <= MAX_NAME_LENGTH:
        return candidate
    digest = hashlib.sha256(candidate.encode()).hexdigest()[:32]
    return f"{candidate[: MAX_NAME_LENGTH - len(digest) - 1]}~{digest}"


def _limit(value: float | timedelta | None, what: str) -> float | None:
    """A time limit of ``call_activity`` in seconds (``None``: no limit)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, timedelta | int | float):
        raise TypeError(f"{what} takes seconds or a timedelta, not {type(value).__name__}")
    try:
        seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    except OverflowError:  # an int too large for a float
        seconds = math.inf
    if not 0 < seconds < math.inf:
        raise ValueError(f"{what} must be a positive, finite duration, got {value!r}")
    return seconds


def _check_tasks(tasks: Sequence[DurableTask[Any]]) -> Sequence[DurableTask[Any]]:
    for task in tasks:
        if not isinstance(task, DurableTask):
            raise TypeError(f"when_all/when_any take durable tasks, got {type(task).__name__}")
    return tasks
