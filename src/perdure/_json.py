"""JSON, the wire format of every input, output and event payload.

Values are checked where users hand them over, so that a bad value fails the call that gave it
and never reaches the store. The check runs the encoding the stores run (:func:`dumps`), so the
two cannot disagree, and then refuses what a reader could not decode: values nested deeper than
:data:`MAX_PAYLOAD_DEPTH`, and integers longer than Python reads by default.
"""

from __future__ import annotations

import itertools
import json
import re
import sys
from typing import Any

from perdure._errors import SerializationError

__all__ = ["MAX_PAYLOAD_BYTES", "MAX_PAYLOAD_DEPTH", "check_json", "dumps", "lone_surrogate", "loads", "unreadable"]

MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""The largest encoded payload accepted (4 MiB): larger values belong in blob storage, not in history."""

MAX_PAYLOAD_DEPTH = 100
"""The deepest nesting of lists and objects accepted in a payload (``[[1]]`` is 2 deep).

Readers decode recursively, a Python frame or more per level, and a payload travels inside an
envelope (an event, a work item); 100 leaves them several hundred frames of Python's default
limit of 1,000, wherever the read happens.
"""

_MAX_INT_DIGITS = sys.int_info.default_max_str_digits
_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_decoder = json.JSONDecoder()
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_LONG_DIGITS = re.compile(f"[0-9]{{{_MAX_INT_DIGITS + 1}}}")
_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}


def dumps(value: Any) -> str:
    """Encode ``value`` compactly, as the stores keep it.

    Raises:
        TypeError: for a value that is not made of JSON types.
        ValueError: for NaN or infinity, an ``int`` too long to convert, a circular reference, or
            text with a lone surrogate (the stores keep UTF-8, which cannot encode one).
        RecursionError: for a value nested too deep to encode.
    """
    text = _encoder.encode(value)
    surrogate = lone_surrogate(text)
    if surrogate is not None:
        raise ValueError(f"text holds the lone surrogate {surrogate!r}, which UTF-8 cannot encode")
    return text


def lone_surrogate(text: str) -> str | None:
    """The first lone surrogate in ``text`` (a ``str`` can hold one, UTF-8 cannot), or ``None``."""
    if text.isascii():
        return None
    try:
        text.encode()  # faster than a search, and the very encoding the stores apply
    except UnicodeEncodeError as exc:
        return exc.object[exc.start]
    return None


def loads(text: str) -> Any:
    """Decode JSON text."""
    return _decoder.decode(text)


def check_json(value: Any, what: str) -> None:
    """Refuse ``value`` unless it is a JSON value that every store can keep and every reader read.

    Args:
        value: The value a user gave (an input, output or event payload).
        what: Names the value in the error message, e.g. ``"input of activity 'Greet'"``.

    Raises:
        SerializationError: naming ``what`` and why it was refused.
    """
    if value is None or type(value) is bool:
        return
    try:
        text = dumps(value)
    except RecursionError:
        raise SerializationError(f"the {what} cannot be stored: {_too_deep()}") from None
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"the {what} cannot be stored: it is not a JSON value: {exc}") from exc
    size = len(text) if text.isascii() else len(text.encode())
    if size > MAX_PAYLOAD_BYTES:
        raise SerializationError(
            f"the {what} cannot be stored: it is {size:,} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES:,} bytes"
        )
    problem = unreadable(text)
    if problem is not None:
        raise SerializationError(f"the {what} cannot be stored: {problem}")


def unreadable(text: str) -> str | None:
    """Why a reader could not decode the JSON ``text``, or ``None`` if every reader can."""
    # The encoder refuses such an int unless this process raised its limit; one written then would
    # not read back in a process that did not.
    limit = sys.get_int_max_str_digits()
    may_hold_long_int = (limit == 0 or limit > _MAX_INT_DIGITS) and _LONG_DIGITS.search(text) is not None
    # Counted with the brackets inside strings, which can only over-estimate: the exact scan, over
    # the text with its strings removed, runs only for values that might fail it.
    may_be_deep = text.count("[") + text.count("{") > MAX_PAYLOAD_DEPTH
    if not (may_be_deep or may_hold_long_int):
        return None
    bare = _STRING.sub('""', text)
    if may_hold_long_int and _LONG_DIGITS.search(bare):
        return f"it holds an integer of more than {_MAX_INT_DIGITS:,} digits"
    depth = max(itertools.accumulate(map(_STEP.__getitem__, _NOT_BRACKET.sub("", bare))), default=0)
    return _too_deep() if depth > MAX_PAYLOAD_DEPTH else None


def _too_deep() -> str:
    return f"it is nested more than {MAX_PAYLOAD_DEPTH} levels deep"
