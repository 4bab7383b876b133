"""The stored form of history events: JSON objects ``{"v": FORMAT_VERSION, "type": ..., <fields>}``.

Decoding is strict: an unknown type, a missing, extra or mistyped field, or another format version
raises :class:`~perdure.HistoryFormatError`, so a corrupted row is reported instead of replayed
wrongly. The event types themselves live in :mod:`perdure.engine.events`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from perdure import _json
from perdure._errors import ErrorDetails, HistoryFormatError
from perdure.engine.events import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CustomStatusUpdated,
    EventRaised,
    EventSent,
    ExecutionRewound,
    HistoryEvent,
    OrchestrationChained,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestrationResumed,
    OrchestrationStarted,
    OrchestrationSuspended,
    OrchestrationTerminated,
    Patched,
    StartRequested,
    SubOrchestrationCompleted,
    SubOrchestrationFailed,
    SubOrchestrationScheduled,
    TaskCancelled,
    TerminateRequested,
    TimerCreated,
    TimerFired,
)

FORMAT_VERSION = 1
"""Version of the stored event format; bumped when an event's shape changes incompatibly."""

EVENT_TYPES: dict[str, type[HistoryEvent]] = {
    cls.__name__: cls
    for cls in (
        OrchestrationStarted,
        OrchestrationCompleted,
        OrchestrationFailed,
        OrchestrationContinuedAsNew,
        OrchestrationTerminated,
        OrchestrationSuspended,
        OrchestrationResumed,
        ExecutionRewound,
        CustomStatusUpdated,
        Patched,
        ActivityScheduled,
        ActivityCompleted,
        ActivityFailed,
        TimerCreated,
        TimerFired,
        EventRaised,
        EventSent,
        SubOrchestrationScheduled,
        SubOrchestrationCompleted,
        SubOrchestrationFailed,
        OrchestrationChained,
        TaskCancelled,
        StartRequested,
        TerminateRequested,
    )
}


# --- JSON codec --------------------------------------------------------------------------------

_Encoder = Callable[[Any], Any]
_Decoder = Callable[[Any], Any]


def error_to_dict(value: ErrorDetails) -> dict[str, Any]:
    """The JSON object of an error: in history events and in an instance's error column alike."""
    return {"type": value.type, "message": value.message, "traceback": value.traceback}


def error_from_dict(raw: Any) -> ErrorDetails:
    """The inverse of :func:`error_to_dict`; raises ``ValueError`` for anything else."""
    if not isinstance(raw, dict) or set(raw) != {"type", "message", "traceback"}:
        raise ValueError("expected an error object with type, message and traceback")
    if not isinstance(raw["type"], str) or not isinstance(raw["message"], str):
        raise ValueError("error type and message must be strings")
    if raw["traceback"] is not None and not isinstance(raw["traceback"], str):
        raise ValueError("error traceback must be a string or null")
    return ErrorDetails(type=raw["type"], message=raw["message"], traceback=raw["traceback"])


def _decode_datetime(raw: Any) -> datetime:
    if not isinstance(raw, str):
        raise ValueError("expected an ISO 8601 timestamp")
    value = datetime.fromisoformat(raw)
    if value.tzinfo is None:
        raise ValueError("timestamp has no time zone")
    return value


def _decode_optional_datetime(raw: Any) -> datetime | None:
    return None if raw is None else _decode_datetime(raw)


def _decode_seconds(raw: Any) -> float | None:
    if raw is None:
        return None
    if type(raw) not in (int, float) or not 0 < raw < float("inf"):
        raise ValueError("expected a positive number of seconds or null")
    return float(raw)


def _checked(kind: type, optional: bool) -> _Decoder:
    def decode(raw: Any) -> Any:
        if raw is None and optional:
            return None
        # bool is an int subclass; an int field must not accept true/false.
        if type(raw) is not kind:
            raise ValueError(f"expected {kind.__name__}{' or null' if optional else ''}")
        return raw

    return decode


def _identity(raw: Any) -> Any:
    return raw


def _isoformat(value: datetime) -> str:
    return value.isoformat()


def _optional_isoformat(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


_CODECS: dict[str, tuple[_Encoder, _Decoder]] = {
    "int": (_identity, _checked(int, False)),
    "int | None": (_identity, _checked(int, True)),
    "str": (_identity, _checked(str, False)),
    "str | None": (_identity, _checked(str, True)),
    "bool": (_identity, _checked(bool, False)),
    "Any": (_identity, _identity),
    "float | None": (_identity, _decode_seconds),
    "datetime": (_isoformat, _decode_datetime),
    "datetime | None": (_optional_isoformat, _decode_optional_datetime),
    "ErrorDetails": (error_to_dict, error_from_dict),
}

# Per event type: (field name, encoder, decoder), computed once from the dataclass fields.
_FIELDS: dict[type[HistoryEvent], list[tuple[str, _Encoder, _Decoder]]] = {
    cls: [(f.name, *_CODECS[str(f.type)]) for f in dataclasses.fields(cls)] for cls in EVENT_TYPES.values()
}
# Per event type: every key its JSON object may hold.
_KEYS: dict[type[HistoryEvent], frozenset[str]] = {
    cls: frozenset({"v", "type", *(name for name, _, _ in fields)}) for cls, fields in _FIELDS.items()
}
_REQUIRED: dict[type[HistoryEvent], frozenset[str]] = {
    cls: frozenset(
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    for cls in EVENT_TYPES.values()
}


# Optional fields added after format 1 was fixed: written only when set, so histories that do not use
# them (untraced, no activity time limits) are byte-for-byte what they were, and decoding still
# rejects anything unknown.
_OMITTED_WHEN_NONE = frozenset({"trace_context", "start_to_close", "deadline", "heartbeat_timeout"})


def event_to_dict(event: HistoryEvent) -> dict[str, Any]:
    """The JSON object of ``event`` (with the format version and type name)."""
    out: dict[str, Any] = {"v": FORMAT_VERSION, "type": type(event).__name__}
    for name, encode, _ in _FIELDS[type(event)]:
        value = getattr(event, name)
        if value is None and name in _OMITTED_WHEN_NONE:
            continue
        out[name] = encode(value)
    return out


def encode_event(event: HistoryEvent) -> str:
    """Encode ``event`` as JSON text."""
    return _json.dumps(event_to_dict(event))


def event_from_dict(raw: Any) -> HistoryEvent:
    """Decode one event object; raises :class:`HistoryFormatError` if it is not a valid event."""
    if not isinstance(raw, dict):
        raise HistoryFormatError(f"a history event must be a JSON object, got {type(raw).__name__}")
    version = raw.get("v")
    if version != FORMAT_VERSION:
        raise HistoryFormatError(
            f"history event format version {version!r} is not supported (expected {FORMAT_VERSION})"
        )
    type_name = raw.get("type")
    cls = EVENT_TYPES.get(type_name) if isinstance(type_name, str) else None
    if cls is None:
        raise HistoryFormatError(f"unknown history event type {type_name!r}")
    fields = _FIELDS[cls]
    extra = raw.keys() - _KEYS[cls]
    if extra:
        raise HistoryFormatError(f"{type_name} has unknown fields: {', '.join(sorted(extra))}")
    missing = _REQUIRED[cls] - raw.keys()
    if missing:
        raise HistoryFormatError(f"{type_name} is missing fields: {', '.join(sorted(missing))}")
    kwargs: dict[str, Any] = {}
    for name, _, decode in fields:
        if name in raw:
            try:
                kwargs[name] = decode(raw[name])
            except ValueError as exc:
                raise HistoryFormatError(f"{type_name}.{name} is invalid: {exc}") from None
    return cls(**kwargs)


def decode_event(text: str | bytes) -> HistoryEvent:
    """Decode JSON text made by :func:`encode_event`; raises :class:`HistoryFormatError` if invalid."""
    try:
        raw = json.loads(text)
    except (ValueError, UnicodeDecodeError) as exc:
        raise HistoryFormatError(f"a history event is not valid JSON: {exc}") from None
    return event_from_dict(raw)
