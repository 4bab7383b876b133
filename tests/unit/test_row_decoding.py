"""Decoding an instance row never fails the reader: a corrupted row reads as such (``providers/_codec.py``)."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime
from typing import Any

import pytest

from perdure import AwaitedEvent, OrchestrationStatus
from perdure.providers._codec import decode_state, orchestration_item

GOOD = (
    "order-1",
    "Order",
    "1.0.0",
    "RUNNING",
    2,
    '{"qty": 3}',
    None,
    None,
    '"halfway"',
    "parent-1",
    1_700_000_000.0,
    1_700_000_100.5,
    '[{"name": "approved", "since": "2026-03-01T12:00:00+00:00", "timeout_at": null, "timer_event_id": null}]',
)
COLUMNS = [
    "instance_id",
    "name",
    "version",
    "status",
    "execution_id",
    "input",
    "output",
    "error",
    "custom_status",
    "parent_instance_id",
    "created_at",
    "updated_at",
    "waiting_for",
]
# What a disk, an operator or a bug could leave in a column, and what no writer of perdure stores.
GARBAGE: list[Any] = [
    None,
    "",
    "{",
    "BOGUS",
    b"\xff\xfe",
    -1,
    True,
    float("nan"),
    float("inf"),
    1e300,
    "[" * 5000 + "]" * 5000,
    '{"type": 1}',
]


def row(**changes: Any) -> tuple[Any, ...]:
    values = dict(zip(COLUMNS, GOOD, strict=True))
    values.update(changes)
    return tuple(values[c] for c in COLUMNS)


def test_a_sound_row_decodes_in_full() -> None:
    state, problem = decode_state(row())
    assert problem is None
    assert state.status is OrchestrationStatus.RUNNING
    assert state.input == {"qty": 3} and state.custom_status == "halfway"
    assert state.created_at == datetime.fromtimestamp(1_700_000_000.0, UTC)
    assert state.waiting_for == (AwaitedEvent(name="approved", since=datetime(2026, 3, 1, 12, tzinfo=UTC)),)
    assert state.error is None


@pytest.mark.parametrize(
    ("column", "value", "default"),
    [
        ("input", "{not json", None),
        ("output", "[1,", None),
        ("error", '{"type": 1}', None),
        ("custom_status", "nope", None),
        ("status", "BOGUS", OrchestrationStatus.FAILED),
        ("execution_id", "two", 0),
        ("created_at", "yesterday", datetime.fromtimestamp(0, UTC)),
        ("updated_at", None, datetime.fromtimestamp(0, UTC)),  # PostgreSQL reads infinity as None
        ("name", b"\x00", ""),
        ("waiting_for", '[{"name": "approved"}]', ()),
        (
            "waiting_for",
            '[{"name": "a", "since": "2026-03-01T12:00:00", "timeout_at": null, "timer_event_id": null}]',
            (),
        ),
        ("waiting_for", '{"name": "approved"}', ()),
    ],
)
def test_a_corrupted_column_reads_as_its_default_and_the_error_names_it(column: str, value: Any, default: Any) -> None:
    state, problem = decode_state(row(**{column: value}))
    assert problem is not None and problem.startswith(f"column {column!r}: ")
    if column != "error":  # that one holds the description of the corruption
        assert getattr(state, column) == default
    assert state.error is not None and state.error.type == "perdure.HistoryFormatError"
    assert state.error.message == f"the stored instance row is corrupted: {problem}"
    others = [c for c in COLUMNS if c not in (column, "instance_id")]
    assert all(f"column {c!r}" not in problem for c in others)
    assert state.instance_id == "order-1" and state.parent_instance_id == "parent-1"


def test_no_garbage_in_any_column_makes_decoding_raise() -> None:
    for column, value in itertools.product(COLUMNS[1:], GARBAGE):
        state, problem = decode_state(row(**{column: value}))
        assert state.instance_id == "order-1"
        if problem is not None:
            assert len(problem) < 400, "a huge value is not echoed"


def test_every_corrupted_column_is_reported_at_once() -> None:
    _, problem = decode_state(row(input="{", status="??", created_at="then"))
    assert problem is not None
    assert [part.split(":")[0] for part in problem.split("; ")] == [
        "column 'status'",
        "column 'input'",
        "column 'created_at'",
    ]


def test_a_fetched_item_carries_what_its_row_could_not_decode() -> None:
    item = orchestration_item("order-1", "token", [], row(output="oops"), [])
    assert item.state is not None and item.state_error is not None
    assert item.state_error.startswith("column 'output'")
    sound = orchestration_item("order-1", "token", [], row(), [])
    assert sound.state_error is None
    # What the code waits for is worked out again by the turn: a corrupted list does not fail it.
    unread = orchestration_item("order-1", "token", [], row(waiting_for="{"), [])
    assert unread.state is not None and unread.state_error is None and unread.state.waiting_for == ()
