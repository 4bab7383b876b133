"""``ActivityContext``: what an activity knows about the call it serves."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perdure import _json

__all__ = ["ActivityContext", "AttemptSignals"]

_logger = logging.getLogger("perdure.activity")


class AttemptSignals:
    """What the worker and a running attempt tell each other; safe to use from the activity's thread."""

    __slots__ = ("last_heartbeat", "stopped")

    def __init__(self) -> None:
        # Plain attributes: each is written by one side and read by the other, and a single
        # assignment needs no lock.
        self.stopped = False
        """Whether the attempt is abandoned (cancelled, or out of time): the activity should stop."""
        self.last_heartbeat = time.monotonic()
        """When the activity last showed it is alive (``time.monotonic()``): its start, or its last heartbeat."""

    def stop(self) -> None:
        self.stopped = True

    def beat(self) -> None:
        self.last_heartbeat = time.monotonic()


@dataclass(frozen=True, kw_only=True, slots=True)
class ActivityContext:
    """Handed to every activity function as its first argument.

    Activities run at least once: a crash after the activity finished but before its result was
    stored runs it again. Use ``instance_id`` + ``execution_id`` + the input as an idempotency key.

    Attributes:
        instance_id: The orchestration instance that scheduled the activity.
        execution_id: Its execution.
        name: The activity name.
        attempt: 1 for the first attempt, 2… for retries by a ``RetryPolicy``.
        orchestration_name: The scheduling orchestration's name.
        orchestration_version: Its pinned version.
        heartbeat_details: The last details an earlier run of this attempt reported with
            :meth:`heartbeat` before its worker died, or ``None``: where to resume.
        logger: A logger whose records carry the instance and execution ids.
    """

    instance_id: str
    execution_id: int
    name: str
    attempt: int
    orchestration_name: str
    orchestration_version: str
    heartbeat_details: Any = None
    logger: logging.LoggerAdapter[logging.Logger] = field(init=False, repr=False, compare=False)
    _signals: AttemptSignals = field(init=False, repr=False, compare=False)
    _record_heartbeat: Callable[[Any], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        extra = {"instance_id": self.instance_id, "execution_id": self.execution_id, "activity": self.name}
        object.__setattr__(self, "logger", logging.LoggerAdapter(_logger, extra))
        object.__setattr__(self, "_signals", AttemptSignals())

    def is_cancelled(self) -> bool:
        """Whether this attempt should stop now.

        It turns true when the orchestration cancelled the task, when its execution ended (it
        completed, failed, was terminated or continued as new), or when the attempt ran out of
        time. What the activity returns after that is dropped. A plain ``def`` activity, which
        cannot be interrupted, should check it between steps and return; an ``async def`` one is
        interrupted with ``asyncio.CancelledError`` as well.
        """
        return self._signals.stopped

    def heartbeat(self, details: Any = None) -> None:
        """Report progress, which also resets ``heartbeat_timeout``; if the worker dies, the next run
        of this attempt finds ``details`` in :attr:`heartbeat_details` and can resume from there.

        Cheap enough to call in a tight loop, from the activity's thread or the event loop: it
        keeps only the latest details in memory, and the runtime stores them in the background
        (every quarter of ``RuntimeOptions.worker_timeout``), so the last few seconds of
        heartbeats may be lost in a crash.

        Args:
            details: A JSON value, e.g. how far the work got; ``None`` keeps the details reported
                before and records only that the activity is still making progress.

        Raises:
            SerializationError: if ``details`` is not a JSON value.
        """
        if details is not None:
            _json.check_json(details, f"heartbeat details of activity {self.name!r}")
            details = _json.loads(_json.dumps(details))  # a copy: the caller may go on changing it
        self._signals.beat()  # resets heartbeat_timeout
        if self._record_heartbeat is not None:
            self._record_heartbeat(details)
