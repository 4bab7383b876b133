"""What the operator tools print and send: inert text, and bounded views of big values."""

from __future__ import annotations

import json

import pytest

from perdure.tools._format import dumps, inert, inert_lines, table
from perdure.tools._preview import clip, json_text


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b]0;pwned\x07", r"\x1b]0;pwned\x07"),
        ("a\x9bb\x85c\x7f", r"a\x9bb\x85c\x7f"),
        ("one\ntwo\tthree\r", r"one\ntwo\tthree\r"),
        ("\x00", r"\x00"),
        ("abc\u202edef\u2066\u2028", r"abc\u202edef\u2066\u2028"),
    ],
)
def test_inert_escapes_what_a_terminal_would_obey(raw: str, shown: str) -> None:
    assert inert(raw) == shown
    assert inert(shown) == shown  # escaping twice changes nothing


def test_inert_leaves_printable_text_alone() -> None:
    text = r"Zoë 日本 🚀 \x1b [2J ~"
    assert inert(text) == text


def test_inert_lines_keeps_only_the_line_breaks() -> None:
    assert inert_lines("a\x1b[2J\nb\tc") == "a\\x1b[2J\nb\\tc"


def test_table_cells_are_escaped_before_they_are_measured() -> None:
    lines = table(["ID", "STATUS"], [["a\x1bb", "RUNNING"], ["long-id", "FAILED"]]).splitlines()
    assert lines[2] == r"a\x1bb   RUNNING"
    assert lines[3].index("FAILED") == lines[0].index("STATUS")


def test_dumps_writes_c1_and_bidi_characters_as_json_escapes() -> None:
    value = {"text": "\x1b[2J\x9b\u202e é"}
    text = dumps(value)
    assert "\x9b" not in text and "\u202e" not in text and "\x1b" not in text
    assert r"\u009b" in text and r"\u202e" in text and "é" in text
    assert json.loads(text) == value


def test_clip_says_what_was_left_out() -> None:
    assert clip("abcdef", 4) == {"text": "abcd", "truncated": True, "length": 6}
    assert clip("abc", 4) == {"text": "abc", "truncated": False, "length": 3}
    assert json_text({"a": [1, "é"]}) == '{"a": [1, "é"]}'
