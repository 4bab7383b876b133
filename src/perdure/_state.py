"""What users read about an instance: its status, state and descriptor."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from perdure._errors import ErrorDetails

__all__ = ["ACTIONS", "AwaitedEvent", "OrchestrationDescriptor", "OrchestrationState", "OrchestrationStatus"]

ACTIONS = ("terminate", "suspend", "resume", "rewind", "purge", "raise_event")
"""The management actions on an instance, by the names :attr:`OrchestrationStatus.allowed_actions` uses."""


class OrchestrationStatus(enum.Enum):
    """The lifecycle status of an instance."""

    PENDING = "PENDING"
    """Created; its first turn has not run yet."""
    RUNNING = "RUNNING"
    """Started and not finished (it may be waiting on activities, timers or events)."""
    SUSPENDED = "SUSPENDED"
    """Paused by an operator: runs no turns until resumed."""
    COMPLETED = "COMPLETED"
    FAILED = "FAILED"
    TERMINATED = "TERMINATED"

    @property
    def is_terminal(self) -> bool:
        """Whether the instance has finished (completed, failed or terminated)."""
        return self in _TERMINAL

    @property
    def allowed_actions(self) -> frozenset[str]:
        """The management actions (of :data:`ACTIONS`) that apply to an instance in this status.

        ``terminate`` and ``raise_event`` apply until the instance finishes; ``suspend`` to a
        PENDING or RUNNING instance; ``resume`` to a SUSPENDED one; ``rewind`` to a FAILED one;
        ``purge`` to a finished one. :class:`~perdure.Client` refuses a suspend, resume, rewind,
        purge or event the status does not allow, and a terminate it does not allow changes
        nothing. The dashboard offers only these.
        """
        return _ALLOWED_ACTIONS[self]


_TERMINAL = frozenset({OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED})
_UNFINISHED_ACTIONS = frozenset({"terminate", "raise_event"})
_ALLOWED_ACTIONS = {
    OrchestrationStatus.PENDING: _UNFINISHED_ACTIONS | {"suspend"},
    OrchestrationStatus.RUNNING: _UNFINISHED_ACTIONS | {"suspend"},
    OrchestrationStatus.SUSPENDED: _UNFINISHED_ACTIONS | {"resume"},
    OrchestrationStatus.COMPLETED: frozenset({"purge"}),
    OrchestrationStatus.FAILED: frozenset({"rewind", "purge"}),
    OrchestrationStatus.TERMINATED: frozenset({"purge"}),
}


@dataclass(frozen=True, kw_only=True, slots=True)
class AwaitedEvent:
    """An external event an instance's code is waiting for (``ctx.wait_for_event``), as of its last turn.

    Attributes:
        name: The event name, as the code gave it (names match case-insensitively).
        since: When the wait began: the time of the turn in which the code started waiting.
        timeout_at: When the wait gives up, if it was given a ``timeout``; ``None`` otherwise.
        timer_event_id: The history event (``TimerCreated``) of that timeout's timer, if any.
    """

    name: str
    since: datetime
    timeout_at: datetime | None = None
    timer_event_id: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationState:
    """A snapshot of one instance.

    Attributes:
        instance_id: The user-chosen id.
        name: The orchestration name.
        version: The pinned version (``None`` while the instance is still PENDING).
        status: The lifecycle status.
        execution_id: The current execution (1, 2, … after continue-as-new or rewind).
        input: The input of the current execution.
        output: The output, once COMPLETED.
        error: How it failed, once FAILED (or why it was terminated).
        custom_status: The last value given to ``ctx.set_custom_status``.
        parent_instance_id: The parent's instance id, for a child orchestration.
        created_at: When the instance was created.
        updated_at: When its state last changed.
        waiting_for: The external events its current execution waits for, as of its last turn, in
            the order the waits began; empty once it has finished (and before its first turn).
    """

    instance_id: str
    name: str
    version: str | None
    status: OrchestrationStatus
    execution_id: int
    input: Any = None
    output: Any = None
    error: ErrorDetails | None = None
    custom_status: Any = None
    parent_instance_id: str | None = None
    created_at: datetime
    updated_at: datetime
    waiting_for: tuple[AwaitedEvent, ...] = ()


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationDescriptor:
    """An instance's identity as its history records it (``OrchestrationStarted``).

    Attributes:
        name: The orchestration name.
        version: The pinned version.
        parent_instance: The parent's instance id, or ``None`` for a root instance.
        parent_id: The event id of ``SubOrchestrationScheduled`` in the parent's history.
    """

    name: str
    version: str
    parent_instance: str | None = None
    parent_id: int | None = None
