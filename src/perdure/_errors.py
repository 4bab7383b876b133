"""Errors raised by perdure.

Every error derives from one root, so ``except PerdureError`` catches all of them::

    PerdureError
    ├── TaskFailedError                 a durable task failed; carries ErrorDetails
    │   ├── ActivityFailedError         raised at ``await ctx.call_activity(...)``
    │   └── SubOrchestrationFailedError raised at ``await ctx.call_sub_orchestration(...)``
    ├── TaskCancelledError              raised where the orchestration awaits a task it cancelled
    ├── NonDeterminismError             replay diverged from the recorded history
    │   └── NonDeterministicCallError   orchestration code called time.time(), random, uuid4 …
    ├── NonDurableAwaitError            an orchestration awaited something that is not a durable task
    ├── InstanceNotFoundError
    │   └── ScheduleNotFoundError       no schedule has this id (or it was deleted)
    ├── InstanceAlreadyExistsError
    │   └── ScheduleAlreadyExistsError  a schedule with this id exists and has not ended
    ├── InvalidInstanceStateError       e.g. rewind of a running instance
    ├── UnregisteredOrchestrationError  no worker has ``name@version``
    ├── UnregisteredActivityError
    ├── RegistrationError               a bad or duplicate registration
    ├── PoisonMessageError              a message kept failing its turn or activity
    ├── SerializationError              a value is not JSON, or is too large
    ├── HistoryFormatError              a stored event or message cannot be decoded
    └── ProviderError                   the store failed in a way retries could not hide
"""

from __future__ import annotations

import builtins
import traceback as _traceback
from dataclasses import dataclass

__all__ = [
    "ACTIVITY_TIMEOUT",
    "ActivityFailedError",
    "ErrorDetails",
    "HistoryFormatError",
    "InstanceAlreadyExistsError",
    "InstanceNotFoundError",
    "InvalidInstanceStateError",
    "NonDeterminismError",
    "NonDeterministicCallError",
    "NonDurableAwaitError",
    "PerdureError",
    "PoisonMessageError",
    "ProviderError",
    "RegistrationError",
    "ScheduleAlreadyExistsError",
    "ScheduleNotFoundError",
    "SerializationError",
    "SubOrchestrationFailedError",
    "TaskCancelledError",
    "TaskFailedError",
    "UnregisteredActivityError",
    "UnregisteredOrchestrationError",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class ErrorDetails:
    """A failure as data: what is stored in history and shown to users.

    Attributes:
        type: The qualified name of the exception type, e.g. ``"ValueError"``.
        message: ``str(exception)``.
        traceback: The formatted traceback, or ``None`` when there was none.
    """

    type: str
    message: str
    traceback: str | None = None

    @classmethod
    def from_exception(cls, exc: BaseException) -> ErrorDetails:
        """Describe ``exc``, keeping its traceback text (lone surrogates escaped, so that it can be stored)."""
        tb = "".join(_traceback.format_exception(exc)) if exc.__traceback__ is not None else None
        return cls(
            type=_storable(type_name(exc)), message=_storable(str(exc)), traceback=None if tb is None else _storable(tb)
        )

    def is_type(self, candidate: builtins.type[BaseException] | str) -> bool:
        """Whether this failure was raised as ``candidate`` (a type or a type name)."""
        name = candidate if isinstance(candidate, str) else type_name_of_class(candidate)
        return self.type == name or self.type.rsplit(".", 1)[-1] == name


def _storable(text: str) -> str:
    """``text`` with any lone surrogate written as an escape: the stores keep UTF-8, which has none."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode()


def type_name_of_class(cls: type[BaseException]) -> str:
    return cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"


def type_name(exc: BaseException) -> str:
    return type_name_of_class(type(exc))


class PerdureError(Exception):
    """The root of every error perdure raises."""


class TaskFailedError(PerdureError):
    """A durable task failed; ``details`` says how it failed where it ran."""

    def __init__(self, message: str, details: ErrorDetails) -> None:
        super().__init__(message)
        self.details = details


class ActivityFailedError(TaskFailedError):
    """An activity failed (after its retries). Raised where the orchestration awaits it."""


class SubOrchestrationFailedError(TaskFailedError):
    """A child orchestration failed or was terminated. Raised where the parent awaits it."""


class TaskCancelledError(PerdureError):
    """The durable task was cancelled with ``task.cancel()``. Raised where the orchestration awaits it."""


ACTIVITY_TIMEOUT = "ActivityTimeoutError"
"""The ``ErrorDetails.type`` of an activity attempt that ran out of time (a limit of ``call_activity``)."""


class NonDeterminismError(PerdureError):
    """The orchestration code did something other than what its history recorded."""


class NonDeterministicCallError(NonDeterminismError):
    """Orchestration code called something that answers differently on every replay (``time.time()``,
    ``datetime.now()``, ``random``, ``uuid.uuid4()`` …); the message names the deterministic alternative."""


class NonDurableAwaitError(PerdureError):
    """An orchestration awaited something that is not a durable task (e.g. ``asyncio.sleep``)."""


class InstanceNotFoundError(PerdureError):
    """No instance has this id."""


class InstanceAlreadyExistsError(PerdureError):
    """An instance with this id exists already."""


class ScheduleNotFoundError(InstanceNotFoundError):
    """No schedule has this id, or it was deleted."""


class ScheduleAlreadyExistsError(InstanceAlreadyExistsError):
    """A schedule with this id exists and has neither ended nor been deleted."""


class InvalidInstanceStateError(PerdureError):
    """The operation makes no sense in the instance's current status."""


class UnregisteredOrchestrationError(PerdureError):
    """No registered orchestration matches the requested ``name@version``."""


class UnregisteredActivityError(PerdureError):
    """No worker registers an activity of this name."""


class RegistrationError(PerdureError):
    """A registration was refused: a bad name, a bad version or a duplicate."""


class PoisonMessageError(PerdureError):
    """A message or work item kept failing (or crashing its worker); its instance fails instead of looping."""


class SerializationError(PerdureError):
    """A value cannot be stored: not JSON-serializable, or larger than the limit."""


class HistoryFormatError(PerdureError):
    """A stored history event or queue message is unknown or corrupted."""


class ProviderError(PerdureError):
    """The store failed and retrying inside the provider could not hide it."""


# Stored error types read "perdure.X", the public name, not the private module.
for _cls in (
    ErrorDetails,
    *(c for c in list(globals().values()) if isinstance(c, type) and issubclass(c, PerdureError)),
):
    _cls.__module__ = "perdure"
