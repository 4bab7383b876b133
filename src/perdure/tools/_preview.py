"""Bounded views of values that may be megabytes long: what the dashboard sends to a browser.

An input, an output, a custom status or an error message can be as large as the store allows.
The dashboard's list polls every second or so, so it sends a summary of each instance with a
preview of each value; an instance's page sends each value cut at :data:`PAGE_CHARS`, and the whole
value only when asked for it (a download).

- a clip: ``{"text", "truncated", "length"}``, the first characters of a text, whether some were
  left out, and how many characters the whole text has;
- a summary: ``{"instance_id", "name", "version", "status", "execution_id", "parent_instance_id",
  "created_at", "updated_at", "input_preview", "output_preview", "custom_status_preview",
  "error_preview"}``, where the previews are clips of the values' compact JSON text (``null`` for
  ``None``) and ``error_preview`` is ``{"type", "text", "truncated", "length"}`` (a clip of the
  message) or ``null``.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from perdure import ErrorDetails, OrchestrationState
from perdure.engine.events import HistoryEvent
from perdure.tools import _format

__all__ = [
    "DETAIL_CHARS",
    "PAGE_CHARS",
    "PREVIEW_CHARS",
    "clip",
    "error_page_json",
    "history_page_json",
    "instance_summary",
    "json_text",
    "value_page_json",
]

PREVIEW_CHARS = 200
"""Characters of each value a list shows."""

PAGE_CHARS = 64 * 1024
"""Characters of each value an instance's page shows; the rest is a download away."""

DETAIL_CHARS = 1_000
"""Characters of each field of a history event an instance's page shows."""


def json_text(value: Any, *, indent: int | None = None) -> str:
    """The JSON text of a stored value (compact unless ``indent`` is given)."""
    return json.dumps(value, ensure_ascii=False, indent=indent, default=str)


def clip(text: str, limit: int) -> dict[str, Any]:
    """The first ``limit`` characters of ``text``: ``{"text", "truncated", "length"}``."""
    return {"text": text[:limit], "truncated": len(text) > limit, "length": len(text)}


def _preview(value: Any) -> dict[str, Any] | None:
    return None if value is None else clip(json_text(value), PREVIEW_CHARS)


def _error_preview(error: ErrorDetails | None) -> dict[str, Any] | None:
    return None if error is None else {"type": error.type, **clip(error.message, PREVIEW_CHARS)}


def instance_summary(state: OrchestrationState) -> dict[str, Any]:
    """What a list shows of an instance: who it is, where it stands, and previews of its values."""
    full = _format.instance_json(state)
    summary = {key: full[key] for key in _SUMMARY_KEYS}
    summary["input_preview"] = _preview(state.input)
    summary["output_preview"] = _preview(state.output)
    summary["custom_status_preview"] = _preview(state.custom_status)
    summary["error_preview"] = _error_preview(state.error)
    return summary


_SUMMARY_KEYS = (
    "instance_id",
    "name",
    "version",
    "status",
    "execution_id",
    "parent_instance_id",
    "created_at",
    "updated_at",
)


def value_page_json(value: Any) -> dict[str, Any] | None:
    """A value as an instance's page shows it: a clip of its indented JSON, or ``None`` for ``None``."""
    return None if value is None else clip(json_text(value, indent=2), PAGE_CHARS)


def error_page_json(error: ErrorDetails | None) -> dict[str, Any] | None:
    """An error as an instance's page shows it: ``{"type", "message": clip, "traceback": clip | null}``."""
    if error is None:
        return None
    traceback = None if error.traceback is None else clip(error.traceback, PAGE_CHARS)
    return {"type": error.type, "message": clip(error.message, PAGE_CHARS), "traceback": traceback}


def history_page_json(history: Sequence[HistoryEvent]) -> list[dict[str, Any]]:
    """A history as :func:`~perdure.tools._format.history_json` shapes it, each field cut at :data:`DETAIL_CHARS`.

    A cut field becomes a string: its first characters, then ``… (N characters)``. An error keeps
    its shape, with its message and traceback cut.
    """
    events = _format.history_json(history)
    for event in events:
        event["details"] = {key: _cut_detail(key, value) for key, value in event["details"].items()}
    return events


def _cut_detail(key: str, value: Any) -> Any:
    if key == "error" and isinstance(value, dict):
        return {**value, "message": _cut_text(value["message"]), "traceback": _cut_text(value["traceback"])}
    if value is None or isinstance(value, bool | int | float):
        return value
    text = value if isinstance(value, str) else json_text(value)
    return value if len(text) <= DETAIL_CHARS else _cut_text(text)


def _cut_text(text: str | None) -> str | None:
    if text is None or len(text) <= DETAIL_CHARS:
        return text
    return f"{text[:DETAIL_CHARS]}… ({len(text):,} characters)"
