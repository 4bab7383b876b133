"""``ActivityContext``: what an activity knows about the call it serves."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from perdure import _json

__all__ = ["ActivityContext"]

_logger = logging.getLogger("perdure.activity")


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
    _record_heartbeat: Callable[[Any], None] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self) -> None:
        extra = {"instance_id": self.instance_id, "execution_id": self.execution_id, "activity": self.name}
        object.__setattr__(self, "logger", logging.LoggerAdapter(_logger, extra))

    def heartbeat(self, details: Any = None) -> None:
        """Report progress; if the worker dies, the next run of this attempt finds ``details`` in
        :attr:`heartbeat_details` and can resume from there.

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
        if self._record_heartbeat is not None:
            self._record_heartbeat(details)
