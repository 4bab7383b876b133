"""The query parameters of the dashboard's API, checked before anything reaches the store.

Every reader raises :class:`BadParameter` with a short message for a value it refuses; the API
answers it with 400 and ``{"error": message}``. The values that are passed on to the client meet
the client's own rules (ids and names: ``perdure._validate``), so the client never refuses them
with an error the API would not expect.
"""

from __future__ import annotations

import argparse
from collections.abc import Collection
from datetime import datetime

from starlette.datastructures import QueryParams

from perdure import OrchestrationStatus
from perdure._validate import MAX_NAME_LENGTH, check_instance_id, check_name
from perdure.tools._commands import parse_moment, parse_status

__all__ = ["BadParameter", "choice", "instance_id", "moment", "number", "prefix", "statuses", "text"]


class BadParameter(ValueError):
    """A query parameter the API refuses (answered with 400)."""


def _shown(value: str) -> str:
    """A refused value for the message: quoted, and cut if long."""
    return repr(value if len(value) <= 40 else value[:40] + "…")


def instance_id(query: QueryParams, name: str = "id", *, required: bool = True) -> str | None:
    """An instance id (the client's rule), or ``None`` when it is absent and not ``required``."""
    value = query.get(name)
    if not value:
        if required:
            raise BadParameter(f"the parameter {name!r} is required")
        return None
    try:
        return check_instance_id(value)
    except ValueError as exc:
        raise BadParameter(f"{name}: {exc}") from None


def text(query: QueryParams, name: str) -> str | None:
    """A name filter (the rule of names), or ``None`` when absent."""
    value = query.get(name)
    if not value:
        return None
    try:
        return check_name(value, name)
    except ValueError as exc:
        raise BadParameter(f"{name}: {exc}") from None


def prefix(query: QueryParams, name: str = "prefix") -> str | None:
    """The start of an instance id: no control characters, at most as long as an id; ``None`` when absent."""
    value = query.get(name)
    if not value:
        return None
    if len(value) > MAX_NAME_LENGTH or any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in value):
        raise BadParameter(
            f"{name} must be at most {MAX_NAME_LENGTH} characters without control characters, got {_shown(value)}"
        )
    return value


def number(query: QueryParams, name: str, *, low: int, high: int) -> int | None:
    """A whole number from ``low`` to ``high``, or ``None`` when absent."""
    value = query.get(name)
    if not value:
        return None
    # int() alone would take " 7", "+7" and "1_000", and spend quadratic time on a huge one.
    if not (value.isascii() and value.isdigit() and len(value) <= 18) or not low <= int(value) <= high:
        raise BadParameter(f"{name} must be a whole number from {low} to {high}, got {_shown(value)}")
    return int(value)


def statuses(query: QueryParams, name: str = "status") -> list[OrchestrationStatus]:
    """Every ``status`` given (repeated, or separated by commas), case-insensitive."""
    try:
        return [parse_status(part) for value in query.getlist(name) for part in value.split(",") if part.strip()]
    except argparse.ArgumentTypeError as exc:
        raise BadParameter(str(exc)) from None


def moment(query: QueryParams, name: str) -> datetime | None:
    """An ISO 8601 time (naive means UTC) or an age (``30m``, ``12h``, ``7d``), or ``None`` when absent."""
    value = query.get(name)
    if not value:
        return None
    try:
        return parse_moment(value)
    except argparse.ArgumentTypeError as exc:
        raise BadParameter(f"{name}: {exc}") from None


def choice(query: QueryParams, name: str, choices: Collection[str]) -> str:
    """One of ``choices`` (required)."""
    value = query.get(name) or ""
    if value not in choices:
        raise BadParameter(f"{name} must be one of {', '.join(sorted(choices))}, got {_shown(value)}")
    return value
