"""``ActivityContext``: what an activity knows about the call it serves."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

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
        logger: A logger whose records carry the instance and execution ids.
    """

    instance_id: str
    execution_id: int
    name: str
    attempt: int
    orchestration_name: str
    orchestration_version: str
    logger: logging.LoggerAdapter[logging.Logger] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        extra = {"instance_id": self.instance_id, "execution_id": self.execution_id, "activity": self.name}
        object.__setattr__(self, "logger", logging.LoggerAdapter(_logger, extra))
