"""The checks every entry applies to names, ids, versions and the client's other arguments.

One rule for instance ids and for orchestration, activity, event and queue names (see
``docs/management.md``, "Names and limits"): a ``str`` (else ``TypeError``) that is not empty, not
whitespace only, at most :data:`MAX_NAME_LENGTH` characters and free of control characters and of
lone surrogates, which UTF-8 cannot store (else ``ValueError``). The limit keeps a name and an id
together inside one PostgreSQL index entry even in four-byte UTF-8 (the stores index
``(name, instance_id)`` and ``(queue, …)``). Version tags are
semantic versions of at most :data:`MAX_NAME_LENGTH` characters; a bad one raises
:class:`~perdure.RegistrationError`, as it always has.

The client, the orchestration context and the registry all call these functions, so a name one of
them accepts is a name the others accept.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from perdure._errors import InvalidInstanceStateError, RegistrationError
from perdure._json import lone_surrogate
from perdure._state import OrchestrationStatus

__all__ = [
    "MAX_NAME_LENGTH",
    "MAX_REASON_LENGTH",
    "check_aware",
    "check_choice",
    "check_execution_id",
    "check_flag",
    "check_instance_id",
    "check_limit",
    "check_name",
    "check_purge_statuses",
    "check_reason",
    "check_statuses",
    "check_text",
    "check_timeout",
    "check_version",
    "parse_version",
]

MAX_NAME_LENGTH = 256
"""The most characters an instance id, a name or a version tag may have."""

MAX_REASON_LENGTH = 10_000
"""The most characters of a terminate, suspend, resume or rewind reason."""

_FINISHED = (OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED)
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
# Matched with fullmatch: "$" would let a trailing newline through.
_SEMVER = re.compile(r"(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)(?:-([0-9A-Za-z.-]+))?(?:\+[0-9A-Za-z.-]+)?")


def check_name(value: Any, what: str) -> str:
    """Return ``value`` if it is a valid name or id; ``what`` names it in the error (``"event name"``).

    Raises:
        TypeError: if ``value`` is not a ``str``.
        ValueError: if it is empty, whitespace only, too long, or holds a control character.
    """
    if not isinstance(value, str):
        raise TypeError(f"the {what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_NAME_LENGTH:
        # Never echo the value: it may be megabytes long.
        raise ValueError(f"the {what} must be at most {MAX_NAME_LENGTH} characters, got {len(value)}")
    if not value.strip():
        raise ValueError(f"the {what} must not be empty or only whitespace, got {value!r}")
    control = _CONTROL.search(value)
    if control is not None:
        raise ValueError(
            f"the {what} must not contain control characters, got {control.group()!r} at position {control.start()}"
        )
    _check_encodable(value, what)
    return value


def _check_encodable(text: str, what: str) -> None:
    """Refuse text with a lone surrogate: the stores keep UTF-8, which cannot encode one."""
    surrogate = lone_surrogate(text)
    if surrogate is not None:
        raise ValueError(f"the {what} must not contain a lone surrogate, got {surrogate!r}")


def check_instance_id(value: Any) -> str:
    """Return ``value`` if it is a valid instance id (the rule of :func:`check_name`)."""
    return check_name(value, "instance id")


def parse_version(version: Any) -> tuple[int, int, int, int, str]:
    """A sort key for a semantic version ``MAJOR.MINOR.PATCH[-pre][+build]``.

    A release sorts after its pre-releases.

    Raises:
        RegistrationError: if ``version`` is not a semantic version of at most
            :data:`MAX_NAME_LENGTH` characters.
    """
    if isinstance(version, str) and len(version) > MAX_NAME_LENGTH:
        raise RegistrationError(f"a version is at most {MAX_NAME_LENGTH} characters, got {len(version)}")
    match = _SEMVER.fullmatch(version) if isinstance(version, str) else None
    if match is None:
        raise RegistrationError(f"{version!r} is not a semantic version (MAJOR.MINOR.PATCH, e.g. '1.0.0')")
    major, minor, patch, pre = match.groups()
    return int(major), int(minor), int(patch), 0 if pre else 1, pre or ""


def check_version(version: Any) -> None:
    """Refuse a version that is neither ``None`` nor a valid version tag (see :func:`parse_version`)."""
    if version is not None:
        parse_version(version)


def check_reason(reason: Any) -> None:
    """Refuse a reason that history could not hold: anything but text of a bounded length, or ``None``."""
    if reason is not None and not isinstance(reason, str):
        raise TypeError(f"the reason must be a string or None, got {type(reason).__name__}")
    if reason is not None and len(reason) > MAX_REASON_LENGTH:
        raise ValueError(f"a reason is at most {MAX_REASON_LENGTH:,} characters")
    if reason is not None:
        _check_encodable(reason, "reason")


def check_execution_id(execution_id: Any) -> None:
    """Refuse an execution id that is neither ``None`` nor an ``int``."""
    if execution_id is not None and (isinstance(execution_id, bool) or not isinstance(execution_id, int)):
        raise TypeError(f"execution_id must be an int or None, got {type(execution_id).__name__}")


def check_timeout(timeout: Any) -> None:
    """Refuse a timeout that is not a number of seconds ``>= 0``."""
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or math.isnan(timeout) or timeout < 0:
        raise ValueError(f"timeout must be a number of seconds >= 0, got {timeout!r}")


def check_flag(value: Any, what: str) -> None:
    """Refuse anything but a ``bool`` (a truthy string would silently mean ``True``)."""
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, got {type(value).__name__}")


def check_choice(value: Any, choices: Sequence[str], what: str) -> None:
    """Refuse anything but one of ``choices`` (a misspelt option must not mean the default)."""
    if value not in choices:
        raise ValueError(f"{what} must be one of {', '.join(map(repr, choices))}, got {value!r}")


def check_limit(limit: Any) -> int:
    """Return ``limit`` if it is a page size from 1 to 10,000."""
    if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= 10_000:
        raise ValueError(f"limit must be an int from 1 to 10000, got {limit!r}")
    return limit


def check_text(value: Any, what: str) -> str | None:
    """Return ``value`` if it is a ``str`` or ``None`` (a filter, matched as given)."""
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be a string, got {type(value).__name__}")
    return value


def check_aware(moment: datetime | None, what: str) -> datetime | None:
    """Return ``moment`` if it is ``None`` or an aware datetime (a naive one has no place in time)."""
    if moment is not None and moment.tzinfo is None:
        raise ValueError(f"{what} must be an aware datetime")
    return moment


def check_statuses(status: Any) -> Sequence[OrchestrationStatus] | None:
    """``status`` (one status, a sequence of them, or ``None``) as a sequence, or ``None``."""
    statuses = [status] if isinstance(status, OrchestrationStatus) else status
    if statuses is not None and not all(isinstance(s, OrchestrationStatus) for s in statuses):
        raise TypeError("status must be an OrchestrationStatus or a sequence of them")
    return statuses


def check_purge_statuses(status: Any) -> list[OrchestrationStatus]:
    """``status`` (one, several, or ``None`` for all three terminal statuses) as a list of terminal statuses.

    Raises:
        InvalidInstanceStateError: if one of them is not a terminal status.
    """
    statuses = [status] if isinstance(status, OrchestrationStatus) else list(status or _FINISHED)
    if not all(isinstance(s, OrchestrationStatus) and "purge" in s.allowed_actions for s in statuses):
        raise InvalidInstanceStateError("only COMPLETED, FAILED and TERMINATED instances can be purged")
    return statuses
