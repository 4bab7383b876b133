"""The payload check: it refuses exactly what a store could not keep or a reader could not read back."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest

from perdure import ErrorDetails, SerializationError
from perdure._json import MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH, check_json, dumps, loads
from perdure.engine import decode_event, encode_event
from perdure.engine.events import ActivityCompleted, ActivityScheduled
from perdure.providers._base import ActivityRequest
from perdure.providers._codec import decode_request, encode_request
from perdure.tools import _format


def nested(depth: int, leaf: Any = 0, *, key: str = "k") -> Any:
    """A value ``depth`` containers deep, alternating objects and lists."""
    value = leaf
    for level in range(depth):
        value = [value] if level % 2 else {key: value}
    return value


def test_the_limits_are_100_levels_and_4_mib() -> None:
    # Documented in docs/management.md; a change there is a change here.
    assert (MAX_PAYLOAD_DEPTH, MAX_PAYLOAD_BYTES) == (100, 4 * 1024 * 1024)


@pytest.mark.parametrize(
    "value",
    [
        nested(MAX_PAYLOAD_DEPTH),
        nested(MAX_PAYLOAD_DEPTH - 4, [[[[]]]] * 1000),
        [nested(MAX_PAYLOAD_DEPTH - 1)] * 50 + [[[0]] * 50],  # many brackets, none too deep
        nested(MAX_PAYLOAD_DEPTH, '"\\[{' * 300, key='\\"[[{'),  # brackets and escapes in strings do not count
        ["[" * 5000, {"{" * 200: "]" * 200}],
        "𝄞 é \U0001f600",
        10**4299,  # 4,300 digits
        -(10**4299),
        "9" * 10_000,  # digits in a string are no integer
        [1.5e308, -0.0, 1e-320],
        "x" * (MAX_PAYLOAD_BYTES - 2),
    ],
    ids=[
        "deepest",
        "deepest-ending-in-lists",
        "wide",
        "brackets-in-strings",
        "bracket-text",
        "non-ascii",
        "longest-int",
        "longest-negative-int",
        "digit-text",
        "floats",
        "largest",
    ],
)
def test_accepted_values_round_trip(value: Any) -> None:
    check_json(value, "value")
    assert loads(dumps(value)) == value


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (nested(MAX_PAYLOAD_DEPTH + 1), f"nested more than {MAX_PAYLOAD_DEPTH} levels deep"),
        (nested(MAX_PAYLOAD_DEPTH + 1, key="[]"), f"nested more than {MAX_PAYLOAD_DEPTH} levels deep"),
        ([0, [1, nested(MAX_PAYLOAD_DEPTH)]], f"nested more than {MAX_PAYLOAD_DEPTH} levels deep"),
        (nested(100_000), f"nested more than {MAX_PAYLOAD_DEPTH} levels deep"),
        ("\ud800", "lone surrogate '\\ud800'"),
        ({"ok": ["a\udfffb"]}, "lone surrogate '\\udfff'"),
        ({"\udc00": 1}, "lone surrogate '\\udc00'"),
        ("\ud83d", "lone surrogate"),  # half of a pair
        (10**4300, "4300 digits"),
        (float("nan"), "not a JSON value"),
        (float("inf"), "not a JSON value"),
        ({1, 2}, "not a JSON value"),
        ("x" * (MAX_PAYLOAD_BYTES - 1), "the limit is 4,194,304 bytes"),
        ("é" * (MAX_PAYLOAD_BYTES // 2), "the limit is 4,194,304 bytes"),  # bytes, not characters
    ],
    ids=[
        "one-too-deep",
        "one-too-deep-bracket-keys",
        "too-deep-inside",
        "far-too-deep",
        "lone-surrogate",
        "lone-surrogate-inside",
        "lone-surrogate-key",
        "half-pair",
        "int-4301-digits",
        "nan",
        "infinity",
        "set",
        "too-large",
        "too-large-in-utf8",
    ],
)
def test_refused_values_name_the_value_and_the_reason(value: Any, reason: str) -> None:
    with pytest.raises(SerializationError) as refused:
        check_json(value, "result of activity 'A'")
    assert str(refused.value).startswith("the result of activity 'A' cannot be stored: ")
    assert reason in str(refused.value)


def test_an_int_too_long_for_other_readers_is_refused_even_where_the_limit_was_raised() -> None:
    previous = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        dumps(10**4300)  # this process could write it…
        with pytest.raises(SerializationError, match="an integer of more than 4,300 digits"):
            check_json([1, {"n": 10**4300}], "value")  # …but a reader with the default limit could not read it
    finally:
        sys.set_int_max_str_digits(previous)


def test_dumps_refuses_lone_surrogates_the_stores_could_not_encode() -> None:
    with pytest.raises(ValueError, match="lone surrogate"):
        dumps({"event": "\ud800"})
    assert dumps("\U0001f600") == '"\U0001f600"'


def test_error_details_escape_lone_surrogates_so_a_failure_can_be_stored() -> None:
    try:
        raise ValueError("bad \ud800 value")
    except ValueError as exc:
        details = ErrorDetails.from_exception(exc)
    assert details.message == "bad \\ud800 value"
    assert details.traceback is not None and "\\ud800" in details.traceback
    dumps([details.type, details.message, details.traceback])


@contextmanager
def _stack_headroom(frames: int) -> Iterator[Callable[[Callable[[], Any]], Any]]:
    """Run a function with only ``frames`` Python frames left before the recursion limit."""
    previous = sys.getrecursionlimit()

    def call(function: Callable[[], Any]) -> Any:
        depth = len(_frames())
        sys.setrecursionlimit(depth + frames)
        try:
            return function()
        finally:
            sys.setrecursionlimit(previous)

    yield call


def _frames() -> list[Any]:
    frame, frames = sys._getframe(), []
    while frame is not None:
        frames.append(frame)
        frame = frame.f_back  # type: ignore[assignment]
    return frames


def test_the_deepest_payload_is_read_back_through_every_envelope_with_stack_to_spare() -> None:
    deepest = nested(MAX_PAYLOAD_DEPTH)
    request = ActivityRequest(
        instance_id="i",
        execution_id=1,
        source_event_id=1,
        name="A",
        input=deepest,
        queue="default",
        attempt=1,
        orchestration_name="O",
        orchestration_version="1.0.0",
    )
    scheduled = ActivityScheduled(name="A", input=deepest, queue="default", attempt=1)
    completed = ActivityCompleted(source_event_id=1, result=deepest)
    with _stack_headroom(400) as call:
        assert call(lambda: decode_request(encode_request(request))) == request
        assert call(lambda: decode_event(encode_event(scheduled))) == scheduled
        assert call(lambda: decode_event(encode_event(completed))) == completed
        assert call(lambda: loads(_format.dumps({"input": deepest}))) == {"input": deepest}
