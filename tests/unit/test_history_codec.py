"""The history JSON codec: every event round-trips, and decoding is strict."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from perdure import ErrorDetails, HistoryFormatError
from perdure.engine import FORMAT_VERSION, decode_event, encode_event
from perdure.engine._codec import EVENT_TYPES, event_from_dict, event_to_dict
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

TS = datetime(2026, 11, 22, 8, 30, 15, 123456, tzinfo=UTC)
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
ERROR = ErrorDetails(type="ValueError", message="bad ✗", traceback="Traceback (most recent call last):\n  ...")
PAYLOAD: Any = {"text": "héllo", "n": 3, "f": 1.5, "list": [1, None, True], "nested": {"a": []}}

EXAMPLES: list[HistoryEvent] = [
    OrchestrationStarted(event_id=1, timestamp=TS, name="o", version="1.2.3", input=PAYLOAD),
    OrchestrationStarted(
        event_id=1, timestamp=TS, name="o", version="1.0.0", parent_instance="p", parent_id=7, parent_execution_id=2
    ),
    OrchestrationStarted(event_id=1, timestamp=TS, name="o", version="1.0.0", trace_context=TRACEPARENT),
    OrchestrationCompleted(event_id=9, timestamp=TS, output=PAYLOAD),
    OrchestrationFailed(event_id=9, timestamp=TS, error=ERROR),
    OrchestrationFailed(event_id=9, timestamp=TS, error=ErrorDetails(type="X", message="")),
    OrchestrationContinuedAsNew(event_id=9, timestamp=TS, input=[1, 2], version="2.0.0"),
    OrchestrationContinuedAsNew(event_id=9, timestamp=TS),
    OrchestrationTerminated(event_id=9, timestamp=TS, reason="stop"),
    OrchestrationSuspended(event_id=3, timestamp=TS, reason=None),
    OrchestrationResumed(event_id=4, timestamp=TS, reason="go"),
    ExecutionRewound(event_id=5, timestamp=TS, reason="retry", parent_execution_id=1),
    CustomStatusUpdated(event_id=2, timestamp=TS, value={"progress": 0.5}),
    Patched(event_id=2, timestamp=TS, change_id="use-new-pricing"),
    ActivityScheduled(event_id=2, timestamp=TS, name="A", input=PAYLOAD, queue="gpu", attempt=3),
    ActivityScheduled(
        event_id=2, timestamp=TS, name="A", start_to_close=1.5, deadline=TS + timedelta(hours=1), heartbeat_timeout=10.0
    ),
    ActivityCompleted(event_id=3, timestamp=TS, source_event_id=2, result="ok"),
    ActivityFailed(event_id=3, timestamp=TS, source_event_id=2, error=ERROR),
    TimerCreated(event_id=2, timestamp=TS, fire_at=TS + timedelta(days=3)),
    TimerFired(event_id=3, timestamp=TS, source_event_id=2, fire_at=TS + timedelta(days=3)),
    TimerFired(
        event_id=3,
        timestamp=TS,
        source_event_id=2,
        fire_at=datetime(2026, 1, 1, 9, tzinfo=timezone(timedelta(hours=2))),
    ),
    EventRaised(event_id=4, timestamp=TS, name="approval", data=PAYLOAD),
    EventSent(event_id=4, timestamp=TS, instance_id="other", name="ping", data=None),
    SubOrchestrationScheduled(event_id=2, timestamp=TS, name="C", version="1.0.0", instance_id="c-1", input=[]),
    SubOrchestrationScheduled(event_id=2, timestamp=TS, name="C", instance_id="c-1"),
    SubOrchestrationCompleted(event_id=3, timestamp=TS, source_event_id=2, result=0),
    SubOrchestrationFailed(event_id=3, timestamp=TS, source_event_id=2, error=ERROR),
    OrchestrationChained(event_id=2, timestamp=TS, name="D", version=None, instance_id="d", input="x"),
    TaskCancelled(event_id=5, timestamp=TS, source_event_id=2),
    StartRequested(name="o", version=None, input=1, parent_instance="p", parent_id=2, parent_execution_id=1),
    StartRequested(name="o", trace_context=TRACEPARENT),
    TerminateRequested(reason="r", recursive=False),
]


def test_examples_cover_every_event_type() -> None:
    assert {type(e).__name__ for e in EXAMPLES} == set(EVENT_TYPES)


@pytest.mark.parametrize("event", EXAMPLES, ids=lambda e: type(e).__name__)
def test_round_trip(event: HistoryEvent) -> None:
    text = encode_event(event)
    decoded = decode_event(text)
    assert decoded == event
    assert type(decoded) is type(event)
    assert decode_event(text.encode()) == event  # bytes too
    raw = json.loads(text)
    assert raw["v"] == FORMAT_VERSION
    assert raw["type"] == type(event).__name__
    assert event_from_dict(event_to_dict(event)) == event


def test_encoding_is_compact_json_with_iso_timestamps() -> None:
    event = ActivityCompleted(event_id=3, timestamp=TS, source_event_id=2, result="é")
    assert encode_event(event) == (
        '{"v":1,"type":"ActivityCompleted","event_id":3,"timestamp":"2026-11-22T08:30:15.123456+00:00",'
        '"source_event_id":2,"result":"é"}'
    )


def test_optional_fields_may_be_left_out() -> None:
    event = decode_event('{"v":1,"type":"OrchestrationStarted","name":"o","version":"1.0.0"}')
    assert event == OrchestrationStarted(name="o", version="1.0.0")


def test_an_unset_trace_context_is_not_written() -> None:
    """Untraced histories encode exactly as before the field existed; a set one round-trips."""
    assert "trace_context" not in encode_event(OrchestrationStarted(name="o", version="1.0.0"))
    assert "trace_context" not in encode_event(StartRequested(name="o"))
    traced = event_to_dict(StartRequested(name="o", trace_context=TRACEPARENT))
    assert traced["trace_context"] == TRACEPARENT
    assert event_from_dict({**traced, "trace_context": None}) == StartRequested(name="o")


def test_unset_activity_limits_are_not_written() -> None:
    """Activities without time limits encode exactly as before the limits existed."""
    raw = event_to_dict(ActivityScheduled(name="A"))
    assert not {"start_to_close", "deadline", "heartbeat_timeout"} & raw.keys()
    assert event_from_dict({**raw, "start_to_close": 2}) == ActivityScheduled(name="A", start_to_close=2.0)


def valid() -> dict[str, Any]:
    return event_to_dict(ActivityScheduled(event_id=2, timestamp=TS, name="A", input=1))


def with_(**changes: Any) -> dict[str, Any]:
    raw = valid()
    raw.update(changes)
    return raw


def without(key: str) -> dict[str, Any]:
    raw = valid()
    del raw[key]
    return raw


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (with_(type="ActivityExploded"), "unknown history event type 'ActivityExploded'"),
        (with_(type=None), "unknown history event type None"),
        (with_(type="HistoryEvent"), "unknown history event type 'HistoryEvent'"),
        (without("type"), "unknown history event type None"),
        (without("name"), "ActivityScheduled is missing fields: name"),
        (with_(colour="red"), "ActivityScheduled has unknown fields: colour"),
        (with_(name=5), "ActivityScheduled.name is invalid: expected str"),
        (with_(name=None), "ActivityScheduled.name is invalid: expected str"),
        (with_(event_id="2"), "ActivityScheduled.event_id is invalid: expected int"),
        (with_(event_id=True), "ActivityScheduled.event_id is invalid: expected int"),
        (with_(attempt=False), "ActivityScheduled.attempt is invalid: expected int"),
        (with_(attempt=1.0), "ActivityScheduled.attempt is invalid: expected int"),
        (with_(timestamp="yesterday"), "ActivityScheduled.timestamp is invalid"),
        (with_(timestamp="2026-01-01T00:00:00"), "ActivityScheduled.timestamp is invalid: timestamp has no time zone"),
        (with_(timestamp=0), "ActivityScheduled.timestamp is invalid: expected an ISO 8601 timestamp"),
        (with_(v=2), "history event format version 2 is not supported (expected 1)"),
        (with_(v="1"), "history event format version '1' is not supported"),
        (without("v"), "history event format version None is not supported"),
        ([1, 2], "a history event must be a JSON object, got list"),
        ("text", "a history event must be a JSON object, got str"),
    ],
)
def test_strict_decoding(raw: Any, message: str) -> None:
    with pytest.raises(HistoryFormatError) as info:
        event_from_dict(raw)
    assert message in str(info.value)
    with pytest.raises(HistoryFormatError):
        decode_event(json.dumps(raw))


@pytest.mark.parametrize(
    ("event", "field", "value", "message"),
    [
        (OrchestrationStarted(name="o", version="1"), "parent_id", True, "expected int or null"),
        (OrchestrationStarted(name="o", version="1"), "parent_instance", 3, "expected str or null"),
        (TerminateRequested(), "recursive", 1, "expected bool"),
        (OrchestrationStarted(name="o", version="1"), "trace_context", 7, "expected str or null"),
        (ActivityFailed(source_event_id=1, error=ERROR), "error", "boom", "expected an error object"),
        (ActivityFailed(source_event_id=1, error=ERROR), "error", {"type": "X", "message": "m"}, "error object"),
        (
            ActivityFailed(source_event_id=1, error=ERROR),
            "error",
            {"type": "X", "message": "m", "traceback": None, "extra": 1},
            "error object",
        ),
        (ActivityFailed(source_event_id=1, error=ERROR), "error", {"type": 1, "message": "m", "traceback": None}, ""),
        (ActivityFailed(source_event_id=1, error=ERROR), "error", {"type": "X", "message": "m", "traceback": 5}, ""),
        (TimerCreated(fire_at=TS), "fire_at", None, "expected an ISO 8601 timestamp"),
        (ActivityScheduled(name="A"), "start_to_close", 0, "expected a positive number of seconds or null"),
        (ActivityScheduled(name="A"), "heartbeat_timeout", True, "expected a positive number of seconds"),
        (ActivityScheduled(name="A"), "heartbeat_timeout", "5", "expected a positive number of seconds"),
        (ActivityScheduled(name="A"), "deadline", "soon", "Invalid isoformat"),
        (TaskCancelled(source_event_id=1), "source_event_id", "1", "expected int"),
        (ActivityCompleted(source_event_id=1), "source_event_id", None, "expected int"),
    ],
)
def test_strict_field_types(event: HistoryEvent, field: str, value: Any, message: str) -> None:
    raw = event_to_dict(event)
    raw[field] = value
    with pytest.raises(HistoryFormatError, match=f"{type(event).__name__}.{field} is invalid") as info:
        event_from_dict(raw)
    assert message in str(info.value)


@pytest.mark.parametrize("text", ["", "{", "not json", '{"v":1,', b"\xff\xfe"])
def test_invalid_json(text: str | bytes) -> None:
    with pytest.raises(HistoryFormatError, match="not valid JSON"):
        decode_event(text)


def test_decoded_payloads_are_plain_json() -> None:
    event = ActivityScheduled(name="A", input=(1, (2, 3)))
    assert decode_event(encode_event(event)) == ActivityScheduled(name="A", input=[1, [2, 3]])


def test_encoding_refuses_what_json_cannot_hold() -> None:
    with pytest.raises(ValueError, match="Out of range float"):
        encode_event(ActivityCompleted(source_event_id=1, result=float("inf")))
