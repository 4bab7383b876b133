"""Retry policy for activities and child orchestrations."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import timedelta

from perdure._errors import ErrorDetails

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RetryPolicy:
    """How often and how patiently to retry a failed task.

    Between attempts the orchestration waits on a durable timer, so a retry survives crashes and
    costs nothing while it waits.

    Attributes:
        max_attempts: Attempts in all, the first included (1 means no retry).
        initial_interval: Wait before the second attempt.
        backoff_coefficient: Each later wait is the previous one times this.
        max_interval: Upper bound of a single wait (``None``: unbounded).
        non_retryable_errors: Error types that fail at once, without retry: names (``"KeyError"``,
            ``"app.errors.Declined"``) or exception classes. A name matches an error whose
            qualified type name is that name, or whose last component is (``"Declined"`` matches
            ``app.errors.Declined``); a class matches by its qualified name. Only the exact type
            raised is compared, not its base classes. For a child orchestration, the type is that
            of the exception its code raised.
    """

    max_attempts: int = 3
    initial_interval: timedelta | float = 1.0
    backoff_coefficient: float = 2.0
    max_interval: timedelta | float | None = None
    non_retryable_errors: Sequence[str | type[BaseException]] = field(default=())

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int) or self.max_attempts < 1:
            raise ValueError(f"max_attempts must be an int >= 1, got {self.max_attempts!r}")
        if _seconds(self.initial_interval) < 0:
            raise ValueError("initial_interval must not be negative")
        if self.backoff_coefficient < 1:
            raise ValueError("backoff_coefficient must be >= 1")
        if self.max_interval is not None and _seconds(self.max_interval) < 0:
            raise ValueError("max_interval must not be negative")
        object.__setattr__(self, "non_retryable_errors", _error_types(self.non_retryable_errors))

    def delay_before(self, attempt: int) -> float:
        """Seconds to wait before ``attempt`` (2 for the first retry)."""
        delay = _seconds(self.initial_interval) * self.backoff_coefficient ** (attempt - 2)
        if self.max_interval is not None:
            delay = min(delay, _seconds(self.max_interval))
        return delay

    def should_retry(self, failed_attempt: int, error: ErrorDetails) -> bool:
        """Whether to try again after ``failed_attempt`` failed with ``error``."""
        if failed_attempt >= self.max_attempts:
            return False
        return not any(error.is_type(kind) for kind in self.non_retryable_errors)


def _error_types(kinds: Sequence[str | type[BaseException]]) -> tuple[str | type[BaseException], ...]:
    """``kinds`` as a tuple (so the policy stays hashable), each checked to be a name or an exception class."""
    if isinstance(kinds, str):  # one name is a sequence of one-letter names: refuse it rather than match "r"
        raise TypeError("non_retryable_errors must be a sequence of error types, not one string")
    for kind in kinds:
        if isinstance(kind, str):
            if not kind.strip():
                raise ValueError("non_retryable_errors must not hold an empty name")
        elif not (isinstance(kind, type) and issubclass(kind, BaseException)):
            raise TypeError(f"non_retryable_errors takes type names or exception classes, not {kind!r}")
    return tuple(kinds)


def _seconds(value: timedelta | float) -> float:
    return value.total_seconds() if isinstance(value, timedelta) else float(value)
