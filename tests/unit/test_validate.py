"""The one rule for names, ids and versions, at its boundaries."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from perdure import InvalidInstanceStateError, OrchestrationStatus, RegistrationError
from perdure._validate import (
    MAX_NAME_LENGTH,
    MAX_REASON_LENGTH,
    check_aware,
    check_execution_id,
    check_flag,
    check_instance_id,
    check_limit,
    check_name,
    check_purge_statuses,
    check_reason,
    check_statuses,
    check_text,
    check_timeout,
    check_version,
    parse_version,
)


def test_the_limit_is_256_characters() -> None:
    assert MAX_NAME_LENGTH == 256  # documented in docs/management.md; a change there is a change here


@pytest.mark.parametrize(
    "value",
    [
        "a",
        "x" * MAX_NAME_LENGTH,
        "é" * MAX_NAME_LENGTH,  # characters, not bytes
        "𝄞" * MAX_NAME_LENGTH,  # four bytes each in UTF-8
        " padded ",
        "order-42:1:3",
        "名前",
    ],
)
def test_valid_names_are_returned_unchanged(value: str) -> None:
    assert check_name(value, "event name") is value
    assert check_instance_id(value) is value


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", r"the event name must not be empty or only whitespace, got ''"),
        ("   ", r"the event name must not be empty or only whitespace, got '   '"),
        ("\t\n ", r"must not be empty or only whitespace"),
        ("\u3000", r"must not be empty or only whitespace"),  # ideographic space is whitespace too
        ("x" * (MAX_NAME_LENGTH + 1), r"the event name must be at most 256 characters, got 257"),
        ("a\x00b", r"the event name must not contain control characters, got '\\x00' at position 1"),
        ("line\nbreak", r"must not contain control characters, got '\\n' at position 4"),
        ("tab\t", r"must not contain control characters"),
        ("del\x7f", r"must not contain control characters"),
        ("c1\x85", r"must not contain control characters"),
        ("half\ud83d", r"the event name must not contain a lone surrogate, got '\\ud83d'"),
        ("\udfff", r"must not contain a lone surrogate"),
    ],
)
def test_invalid_names_raise_value_error(value: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_name(value, "event name")


@pytest.mark.parametrize("value", [None, 3, b"bytes", ["a"], 1.5])
def test_names_of_the_wrong_type_raise_type_error(value: Any) -> None:
    with pytest.raises(TypeError, match=f"the instance id must be a string, got {type(value).__name__}"):
        check_instance_id(value)


def test_a_huge_name_is_not_echoed_in_the_error() -> None:
    with pytest.raises(ValueError, match=r"at most 256 characters, got 20000000$") as refused:
        check_name("y" * 20_000_000, "orchestration name")
    assert len(str(refused.value)) < 100


def test_versions_are_semantic_and_bounded() -> None:
    check_version(None)
    longest = "1.0.0-" + "a" * (MAX_NAME_LENGTH - 6)
    assert len(longest) == MAX_NAME_LENGTH
    check_version(longest)
    assert parse_version(longest)[:3] == (1, 0, 0)
    with pytest.raises(RegistrationError, match="a version is at most 256 characters, got 257"):
        check_version(longest + "a")
    for bad in ("", "   ", "1.0.0\x00", "1.0.0\n", "1.0", 7):
        with pytest.raises(RegistrationError, match="is not a semantic version"):
            check_version(bad)


def test_reasons() -> None:
    check_reason(None)
    check_reason("r" * MAX_REASON_LENGTH)
    with pytest.raises(ValueError, match="at most 10,000 characters"):
        check_reason("r" * (MAX_REASON_LENGTH + 1))
    with pytest.raises(TypeError, match="got int"):
        check_reason(5)
    check_reason("é 𝄞")
    with pytest.raises(ValueError, match="the reason must not contain a lone surrogate"):
        check_reason("cancelled \ud800")


def test_the_clients_other_arguments() -> None:
    check_execution_id(None)
    check_execution_id(2)
    for bad_id in (True, "1", 1.0):
        with pytest.raises(TypeError, match="execution_id must be an int or None"):
            check_execution_id(bad_id)
    check_timeout(0)
    check_timeout(2.5)
    for bad_timeout in (-1, float("nan"), True, "5"):
        with pytest.raises(ValueError, match="timeout must be a number of seconds"):
            check_timeout(bad_timeout)
    check_flag(False, "recursive")
    with pytest.raises(TypeError, match="recursive must be a bool, got str"):
        check_flag("no", "recursive")
    assert check_limit(1) == 1 and check_limit(10_000) == 10_000
    for bad_limit in (0, 10_001, True, "5"):
        with pytest.raises(ValueError, match="limit must be an int from 1 to 10000"):
            check_limit(bad_limit)
    assert check_text(None, "name") is None and check_text("", "name") == ""
    with pytest.raises(TypeError, match="after must be a string, got int"):
        check_text(5, "after")
    moment = datetime(2026, 1, 1, tzinfo=UTC)
    assert check_aware(moment, "created_after") is moment and check_aware(None, "created_after") is None
    with pytest.raises(ValueError, match="created_before must be an aware datetime"):
        check_aware(datetime(2026, 1, 1), "created_before")


def test_statuses() -> None:
    running = OrchestrationStatus.RUNNING
    assert check_statuses(None) is None
    assert check_statuses(running) == [running]
    with pytest.raises(TypeError, match="status must be an OrchestrationStatus"):
        check_statuses(["RUNNING"])
    assert check_purge_statuses(None) == [
        OrchestrationStatus.COMPLETED,
        OrchestrationStatus.FAILED,
        OrchestrationStatus.TERMINATED,
    ]
    assert check_purge_statuses(OrchestrationStatus.FAILED) == [OrchestrationStatus.FAILED]
    with pytest.raises(InvalidInstanceStateError, match="only COMPLETED, FAILED and TERMINATED"):
        check_purge_statuses([OrchestrationStatus.FAILED, running])
