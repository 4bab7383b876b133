"""Row encoding shared by the SQL providers: JSON payloads, error details, times and state rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from perdure import _json
from perdure._errors import ErrorDetails, HistoryFormatError
from perdure._state import OrchestrationState, OrchestrationStatus
from perdure.engine._codec import decode_event, error_from_dict, error_to_dict
from perdure.engine.events import HistoryEvent
from perdure.providers._base import ActivityRequest, OrchestrationItem, QueuedMessage

__all__ = [
    "decode_error",
    "decode_request",
    "decode_value",
    "encode_error",
    "encode_request",
    "encode_value",
    "from_epoch",
    "orchestration_item",
    "queued_message",
    "state_from_row",
    "to_epoch",
]

_REQUEST_FIELDS = {f.name for f in dataclasses.fields(ActivityRequest)}
# Optional fields, written only when set (rows from before they existed stay readable).
_OPTIONAL_REQUEST_FIELDS = {"trace_context"}


def to_epoch(value: datetime) -> float:
    """Seconds since the epoch."""
    return value.timestamp()


def from_epoch(value: float) -> datetime:
    """An aware UTC datetime."""
    return datetime.fromtimestamp(value, UTC)


def encode_value(value: Any) -> str | None:
    """A JSON payload column: SQL NULL for ``None``."""
    return None if value is None else _json.dumps(value)


def decode_value(text: str | None) -> Any:
    """The inverse of :func:`encode_value`."""
    return None if text is None else _json.loads(text)


def encode_error(error: ErrorDetails | None) -> str | None:
    """An error column."""
    if error is None:
        return None
    return _json.dumps(error_to_dict(error))


def decode_error(text: str | None) -> ErrorDetails | None:
    """The inverse of :func:`encode_error`."""
    if text is None:
        return None
    return error_from_dict(_json.loads(text))


def encode_request(request: ActivityRequest) -> str:
    """A worker queue row's payload."""
    raw = dataclasses.asdict(request)
    for name in _OPTIONAL_REQUEST_FIELDS:
        if raw[name] is None:
            del raw[name]
    return _json.dumps(raw)


def decode_request(text: str) -> ActivityRequest:
    """The inverse of :func:`encode_request`; raises :class:`HistoryFormatError` for a corrupted row."""
    try:
        raw = _json.loads(text)
        if not isinstance(raw, dict) or not _REQUEST_FIELDS - _OPTIONAL_REQUEST_FIELDS <= set(raw) <= _REQUEST_FIELDS:
            raise ValueError("unexpected fields")
        request = ActivityRequest(**raw)
        if not all(isinstance(getattr(request, f), int) for f in ("execution_id", "source_event_id", "attempt")):
            raise ValueError("ids must be integers")
        if request.trace_context is not None and not isinstance(request.trace_context, str):
            raise ValueError("trace_context must be a string")
    except (ValueError, TypeError) as exc:
        raise HistoryFormatError(f"a work item is corrupted ({exc}): {text[:200]!r}") from None
    return request


def state_from_row(row: Sequence[Any]) -> OrchestrationState:
    """An ``OrchestrationState`` from the columns of ``select_state`` (in that order)."""
    (
        instance_id,
        name,
        version,
        status,
        execution_id,
        input_,
        output,
        error,
        custom_status,
        parent,
        created,
        updated,
    ) = row
    return OrchestrationState(
        instance_id=instance_id,
        name=name,
        version=version,
        status=OrchestrationStatus(status),
        execution_id=execution_id,
        input=decode_value(input_),
        output=decode_value(output),
        error=decode_error(error),
        custom_status=decode_value(custom_status),
        parent_instance_id=parent,
        created_at=from_epoch(created) if isinstance(created, float | int) else created,
        updated_at=from_epoch(updated) if isinstance(updated, float | int) else updated,
    )


def queued_message(
    message_id: int, instance_id: str, execution_id: int | None, text: str, dequeue_count: int
) -> QueuedMessage:
    """A dequeued message; a row that cannot be decoded comes back with ``event=None`` and why."""
    try:
        event: HistoryEvent | None = decode_event(text)
        error = None
    except HistoryFormatError as exc:
        event, error = None, f"{exc} (stored text: {text[:200]!r})"
    return QueuedMessage(
        message_id=message_id,
        instance_id=instance_id,
        execution_id=execution_id,
        event=event,
        dequeue_count=dequeue_count,
        error=error,
    )


def orchestration_item(
    instance_id: str,
    lock_token: str,
    messages: list[QueuedMessage],
    state: OrchestrationState | None,
    history: Sequence[str],
) -> OrchestrationItem:
    """A fetched instance; a history that cannot be decoded comes back as ``None`` and why."""
    try:
        events: list[HistoryEvent] | None = [decode_event(text) for text in history]
        history_error = None
    except HistoryFormatError as exc:
        events, history_error = None, str(exc)
    return OrchestrationItem(
        instance_id=instance_id,
        lock_token=lock_token,
        messages=messages,
        state=state,
        history=events,
        history_error=history_error,
    )
