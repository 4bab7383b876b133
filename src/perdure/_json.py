"""JSON, the wire format of every input, output and event payload.

Values are checked where users hand them over, so that a bad value fails the call that gave it
and never reaches the store.
"""

from __future__ import annotations

import json
from typing import Any

from perdure._errors import SerializationError

__all__ = ["MAX_PAYLOAD_BYTES", "check_json", "dumps", "loads"]

MAX_PAYLOAD_BYTES = 4 * 1024 * 1024
"""The largest encoded payload accepted (4 MiB): larger values belong in blob storage, not in history."""

_encoder = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))
_decoder = json.JSONDecoder()


def dumps(value: Any) -> str:
    """Encode ``value`` compactly; raises ``TypeError``/``ValueError`` like :func:`json.dumps`."""
    return _encoder.encode(value)


def loads(text: str) -> Any:
    """Decode JSON text."""
    return _decoder.decode(text)


def check_json(value: Any, what: str) -> None:
    """Refuse ``value`` unless it is a JSON value within the size limit.

    Args:
        value: The value a user gave (an input, output or event payload).
        what: Names the value in the error message, e.g. ``"input of activity 'Greet'"``.

    Raises:
        SerializationError: naming ``what`` and why it was refused.
    """
    if value is None or (type(value) in (str, int, bool) and (type(value) is not str or len(value) < 65536)):
        return
    try:
        text = dumps(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"the {what} is not a JSON value: {exc}") from exc
    size = len(text) if text.isascii() else len(text.encode())
    if size > MAX_PAYLOAD_BYTES:
        raise SerializationError(f"the {what} is {size:,} bytes as JSON; the limit is {MAX_PAYLOAD_BYTES:,} bytes")
