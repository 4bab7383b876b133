"""History events: the append-only record of one execution, and the messages that feed it.

Every event is a frozen dataclass. ``event_id`` numbers the events of one execution 1, 2, 3…
and is 0 while the event travels as a queue message, before it is appended. Completions carry
``source_event_id``: the id of the event that scheduled them.

Events are stored as JSON objects ``{"v": FORMAT_VERSION, "type": ..., <fields>}``. Decoding is
strict: an unknown type, a missing, extra or mistyped field, or another format version raises
:class:`~perdure.HistoryFormatError`, so a corrupted row is reported instead of replayed wrongly.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar

from perdure import _json
from perdure._errors import ErrorDetails, HistoryFormatError

FORMAT_VERSION = 1
"""Version of the stored event format; bumped when an event's shape changes incompatibly."""

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, kw_only=True, slots=True)
class HistoryEvent:
    """Base of every event.

    Attributes:
        event_id: Position in the execution's history (1-based); 0 until appended.
        timestamp: When the event was recorded (UTC).
    """

    event_id: int = 0
    timestamp: datetime = _EPOCH

    #: Whether the event is a decision: something the orchestration code asked for.
    is_decision: ClassVar[bool] = False
    #: Whether the event exists only as a queue message and is never appended to history.
    message_only: ClassVar[bool] = False


@dataclass(frozen=True, kw_only=True, slots=True)
class Decision(HistoryEvent):
    """Base of the events that record a decision of the orchestration code."""

    is_decision: ClassVar[bool] = True


@dataclass(frozen=True, kw_only=True, slots=True)
class Completion(HistoryEvent):
    """Base of the events that complete a scheduled task."""

    source_event_id: int


# --- lifecycle ---------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationStarted(HistoryEvent):
    """Always event 1 of an execution. The version is resolved before it is written: it is the pin.

    Attributes:
        parent_instance: The parent's instance id, for a child orchestration.
        parent_id: The event id of ``SubOrchestrationScheduled`` in the parent's history.
        parent_execution_id: The parent's execution that awaits this child's completion.
        trace_context: The W3C ``traceparent`` of the span this execution's span is a child of
            (the client's span, or the parent orchestration's execution span); ``None`` when untraced.
    """

    name: str
    version: str
    input: Any = None
    parent_instance: str | None = None
    parent_id: int | None = None
    parent_execution_id: int | None = None
    trace_context: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationCompleted(Decision):
    """The orchestration returned ``output``."""

    output: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationFailed(Decision):
    """An exception escaped the orchestration (or the runtime failed it)."""

    error: ErrorDetails


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationContinuedAsNew(Decision):
    """The execution ended by continuing as a new execution with ``input`` (and maybe another version)."""

    input: Any = None
    version: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationTerminated(HistoryEvent):
    """An operator terminated the instance."""

    reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationSuspended(HistoryEvent):
    """An operator suspended the instance; it runs no turns until resumed."""

    reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationResumed(HistoryEvent):
    """An operator resumed a suspended instance."""

    reason: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ExecutionRewound(HistoryEvent):
    """A failed execution was rewound into this one (or, as a message, asks for that)."""

    reason: str | None = None
    parent_execution_id: int | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class CustomStatusUpdated(Decision):
    """The orchestration set its custom status."""

    value: Any = None


# --- activities --------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class ActivityScheduled(Decision):
    """An activity was scheduled on worker queue ``queue``; ``attempt`` counts retries (1-based)."""

    name: str
    input: Any = None
    queue: str = "default"
    attempt: int = 1


@dataclass(frozen=True, kw_only=True, slots=True)
class ActivityCompleted(Completion):
    """The activity returned ``result``."""

    result: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class ActivityFailed(Completion):
    """The activity raised."""

    error: ErrorDetails


# --- timers ------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class TimerCreated(Decision):
    """A durable timer due at ``fire_at``."""

    fire_at: datetime


@dataclass(frozen=True, kw_only=True, slots=True)
class TimerFired(Completion):
    """The timer created by ``source_event_id`` fired."""

    fire_at: datetime


# --- events between instances ------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class EventRaised(HistoryEvent):
    """An external event arrived."""

    name: str
    data: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class EventSent(Decision):
    """The orchestration sent an event to another instance."""

    instance_id: str
    name: str
    data: Any = None


# --- children ----------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class SubOrchestrationScheduled(Decision):
    """A child orchestration was started; ``version`` is ``None`` when the child's policy picks it."""

    name: str
    version: str | None = None
    instance_id: str
    input: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SubOrchestrationCompleted(Completion):
    """The child returned ``result``."""

    result: Any = None


@dataclass(frozen=True, kw_only=True, slots=True)
class SubOrchestrationFailed(Completion):
    """The child failed or was terminated."""

    error: ErrorDetails


@dataclass(frozen=True, kw_only=True, slots=True)
class OrchestrationChained(Decision):
    """A detached orchestration was started (fire-and-forget: no completion comes back)."""

    name: str
    version: str | None = None
    instance_id: str
    input: Any = None


# --- message-only events -----------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True, slots=True)
class StartRequested(HistoryEvent):
    """Asks to start an execution. The runtime resolves the version and records ``OrchestrationStarted``.

    ``trace_context`` (a W3C ``traceparent``) is copied into ``OrchestrationStarted``.
    """

    message_only: ClassVar[bool] = True

    name: str
    version: str | None = None
    input: Any = None
    parent_instance: str | None = None
    parent_id: int | None = None
    parent_execution_id: int | None = None
    trace_context: str | None = None


@dataclass(frozen=True, kw_only=True, slots=True)
class TerminateRequested(HistoryEvent):
    """Asks to terminate the instance (and, with ``recursive``, its unfinished children)."""

    message_only: ClassVar[bool] = True

    reason: str | None = None
    recursive: bool = True


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
        StartRequested,
        TerminateRequested,
    )
}

TERMINAL_EVENTS: tuple[type[HistoryEvent], ...] = (
    OrchestrationCompleted,
    OrchestrationFailed,
    OrchestrationTerminated,
    OrchestrationContinuedAsNew,
)
"""Events after which an execution records nothing more."""


# --- JSON codec --------------------------------------------------------------------------------

_Encoder = Callable[[Any], Any]
_Decoder = Callable[[Any], Any]


def _encode_error(value: ErrorDetails) -> dict[str, Any]:
    return {"type": value.type, "message": value.message, "traceback": value.traceback}


def _decode_error(raw: Any) -> ErrorDetails:
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


_CODECS: dict[str, tuple[_Encoder, _Decoder]] = {
    "int": (_identity, _checked(int, False)),
    "int | None": (_identity, _checked(int, True)),
    "str": (_identity, _checked(str, False)),
    "str | None": (_identity, _checked(str, True)),
    "bool": (_identity, _checked(bool, False)),
    "Any": (_identity, _identity),
    "datetime": (_isoformat, _decode_datetime),
    "ErrorDetails": (_encode_error, _decode_error),
}

# Per event type: (field name, encoder, decoder), computed once from the dataclass fields.
_FIELDS: dict[type[HistoryEvent], list[tuple[str, _Encoder, _Decoder]]] = {
    cls: [(f.name, *_CODECS[str(f.type)]) for f in dataclasses.fields(cls)] for cls in EVENT_TYPES.values()
}
_REQUIRED: dict[type[HistoryEvent], frozenset[str]] = {
    cls: frozenset(
        f.name
        for f in dataclasses.fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    )
    for cls in EVENT_TYPES.values()
}


# Optional fields added after format 1 was fixed: written only when set, so untraced histories are
# byte-for-byte what they were, and decoding still rejects anything unknown.
_OMITTED_WHEN_NONE = frozenset({"trace_context"})


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
    extra = raw.keys() - {"v", "type"} - {name for name, _, _ in fields}
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
