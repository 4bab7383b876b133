"""Row encoding shared by the SQL providers: JSON payloads, error details, times and state rows."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from perdure import _json
from perdure._errors import ErrorDetails, HistoryFormatError
from perdure._state import OrchestrationState, OrchestrationStatus
from perdure.providers._base import ActivityRequest

__all__ = [
    "decode_error",
    "decode_request",
    "decode_value",
    "encode_error",
    "encode_request",
    "encode_value",
    "from_epoch",
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
    return _json.dumps({"type": error.type, "message": error.message, "traceback": error.traceback})


def decode_error(text: str | None) -> ErrorDetails | None:
    """The inverse of :func:`encode_error`."""
    if text is None:
        return None
    raw = _json.loads(text)
    return ErrorDetails(type=raw["type"], message=raw["message"], traceback=raw.get("traceback"))


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
