"""A schedule's spec: what it starts, when it is due, and its due times as a pure function of time.

Nothing here reads a clock: every function takes the moment it reasons about, so the built-in
schedule orchestration (which takes it from ``ctx.now()``) replays exactly, and tests inject any
time they like, a DST change included.

How due times are counted:

- ``every``: absolute intervals. The first due time is ``start_at`` if given, else one interval
  after the schedule was created; then one every ``every``, whatever the time zone does.
- ``cron``: wall-clock times in ``timezone`` (a five-field expression, or ``@hourly`` and friends).
  A local time that a DST change skips (02:30 on a spring-forward night) fires when the same wall
  time would have come under the offset in force before the change, i.e. shifted forward by the
  gap (03:30); a local time that happens twice (01:30 on a fall-back night) fires once, at its
  first occurrence.
- No due time comes before ``start_at`` or after ``end_at``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterError, croniter

from perdure._json import check_json
from perdure._validate import MAX_NAME_LENGTH, check_aware, check_choice, check_name

__all__ = [
    "DEFAULT_CATCHUP_WINDOW",
    "MIN_EVERY",
    "OVERLAP",
    "SCHEDULE_ORCHESTRATION",
    "Overlap",
    "ScheduleSpec",
    "check_schedule_id",
    "duration",
    "parse_time",
    "time_text",
]

Overlap = Literal["skip", "buffer_one", "allow"]
OVERLAP: tuple[Overlap, ...] = ("skip", "buffer_one", "allow")
"""What a due time does while the schedule's previous run still runs."""

MIN_EVERY = timedelta(seconds=1)
"""The shortest interval of an ``every`` schedule."""

DEFAULT_CATCHUP_WINDOW = timedelta(days=365)
"""How late a due time may still fire when nobody told otherwise (Temporal's default too)."""

SCHEDULE_ORCHESTRATION = "perdure.Schedule"
"""The reserved name of the built-in schedule orchestration."""

_ID_ROOM = 48  # characters a run id adds to its schedule id ("@" + a due time + a trigger suffix)
_MAX_CRON_STEPS = 10_000  # candidates tried before a cron is taken to fire no more


def check_schedule_id(value: Any) -> str:
    """Return ``schedule_id`` if it is a valid schedule id: a name short enough for the run ids made from it.

    Raises:
        TypeError: if it is not a string.
        ValueError: if it is not a valid name, is too long, or holds ``@`` (which separates it from
            the due time in its runs' instance ids).
    """
    schedule_id = check_name(value, "schedule id")
    if len(schedule_id) > MAX_NAME_LENGTH - _ID_ROOM:
        raise ValueError(f"the schedule id must be at most {MAX_NAME_LENGTH - _ID_ROOM} characters")
    if "@" in schedule_id:
        raise ValueError(
            f"the schedule id must not contain '@' (it separates the due time in run ids): {schedule_id!r}"
        )
    return schedule_id


def time_text(moment: datetime) -> str:
    """``moment`` as UTC ISO text (``2026-11-29T14:00:00Z``), microseconds only when there are some."""
    text = moment.astimezone(UTC).replace(tzinfo=None).isoformat()
    return f"{text}Z"


def parse_time(text: str | None) -> datetime | None:
    """The aware UTC datetime :func:`time_text` wrote (``None`` stays ``None``)."""
    if text is None:
        return None
    return datetime.fromisoformat(text.removesuffix("Z")).replace(tzinfo=UTC)


@dataclass(frozen=True, kw_only=True, slots=True)
class ScheduleSpec:
    """What a schedule starts and when: validated once, at ``create_schedule``.

    Attributes:
        schedule_id: The schedule's id.
        name: The orchestration each run starts.
        input: The input of each run (a JSON value).
        cron: A five-field cron expression (or ``@daily`` …), or ``None`` with ``every``.
        every: The interval of an interval schedule, or ``None`` with ``cron``.
        timezone: The IANA time zone the cron expression's wall-clock times are in.
        overlap: What a due time does while the previous run still runs (``skip``,
            ``buffer_one`` or ``allow``).
        start_at: No due time before this moment (the first one of an ``every`` schedule).
        end_at: No due time after this moment; the schedule ends after its last one.
        catchup_window: How late a due time may still fire (after downtime); later ones are missed.
        created_at: When the schedule was created: an ``every`` schedule without ``start_at``
            counts its intervals from here, and nothing is due before it.
    """

    schedule_id: str
    name: str
    input: Any = None
    cron: str | None = None
    every: timedelta | None = None
    timezone: str = "UTC"
    overlap: Overlap = "skip"
    start_at: datetime | None = None
    end_at: datetime | None = None
    catchup_window: timedelta = DEFAULT_CATCHUP_WINDOW
    created_at: datetime

    def __post_init__(self) -> None:
        check_schedule_id(self.schedule_id)
        check_name(self.name, "orchestration name")
        if self.name == SCHEDULE_ORCHESTRATION:
            raise ValueError(f"{self.name!r} is the schedules' own orchestration: schedule one of yours")
        check_json(self.input, f"input of orchestration {self.name!r}")
        if (self.cron is None) == (self.every is None):
            raise ValueError("a schedule needs exactly one of cron= and every=")
        if self.cron is not None:
            _check_cron(self.cron)
        if self.every is not None and self.every < MIN_EVERY:
            raise ValueError(f"every must be at least {MIN_EVERY.total_seconds():g} second, got {self.every}")
        _zone(self.timezone)
        check_choice(self.overlap, OVERLAP, "overlap")
        for moment, what in ((self.start_at, "start_at"), (self.end_at, "end_at"), (self.created_at, "created_at")):
            check_aware(moment, what)
        if self.start_at is not None and self.end_at is not None and self.end_at <= self.start_at:
            raise ValueError(f"end_at ({self.end_at}) must come after start_at ({self.start_at})")
        if not isinstance(self.catchup_window, timedelta):
            raise TypeError(f"catchup_window takes seconds or a timedelta, not {type(self.catchup_window).__name__}")
        if self.catchup_window <= timedelta(0):
            raise ValueError(f"catchup_window must be positive, got {self.catchup_window}")

    def first_due(self) -> datetime | None:
        """The schedule's first due time (``None``: it never fires, its ``end_at`` comes first)."""
        start = self.created_at if self.start_at is None else max(self.start_at, self.created_at)
        return self.next_due(start - timedelta(microseconds=1))

    def next_due(self, after: datetime) -> datetime | None:
        """The first due time strictly after ``after`` (``None``: none is left before ``end_at``)."""
        if self.every is not None:
            first = self.start_at if self.start_at is not None else self.created_at + self.every
            if after < first:
                return self._bounded(first)
            return self._bounded(first + self.every * ((after - first) // self.every + 1))
        if self.start_at is not None and after < self.start_at:
            after = self.start_at - timedelta(microseconds=1)
        return self._bounded(_next_wall_time(self.cron or "", ZoneInfo(self.timezone), after))

    def _bounded(self, due: datetime | None) -> datetime | None:
        if due is None or (self.end_at is not None and due > self.end_at):
            return None
        return due.astimezone(UTC)

    def to_json(self) -> dict[str, Any]:
        """The spec as a JSON object (what the schedule orchestration carries from run to run)."""
        return {
            "schedule_id": self.schedule_id,
            "name": self.name,
            "input": self.input,
            "cron": self.cron,
            "every": None if self.every is None else self.every.total_seconds(),
            "timezone": self.timezone,
            "overlap": self.overlap,
            "start_at": None if self.start_at is None else time_text(self.start_at),
            "end_at": None if self.end_at is None else time_text(self.end_at),
            "catchup_window": self.catchup_window.total_seconds(),
            "created_at": time_text(self.created_at),
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScheduleSpec:
        """The spec :meth:`to_json` wrote."""
        created = parse_time(data["created_at"])
        assert created is not None
        return cls(
            schedule_id=data["schedule_id"],
            name=data["name"],
            input=data.get("input"),
            cron=data.get("cron"),
            every=None if data.get("every") is None else timedelta(seconds=data["every"]),
            timezone=data.get("timezone", "UTC"),
            overlap=data.get("overlap", "skip"),
            start_at=parse_time(data.get("start_at")),
            end_at=parse_time(data.get("end_at")),
            catchup_window=timedelta(seconds=data["catchup_window"]),
            created_at=created,
        )


def duration(value: Any, what: str) -> timedelta | None:
    """``value`` (seconds, a ``timedelta`` or ``None``) as a ``timedelta``; ``what`` names it in errors."""
    if value is None or isinstance(value, timedelta):
        return value
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{what} takes seconds or a timedelta, not {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number of seconds, got {value!r}")
    try:
        return timedelta(seconds=value)
    except OverflowError:
        raise ValueError(f"{what} is too long: {value!r} seconds") from None


def _check_cron(expression: Any) -> None:
    if not isinstance(expression, str):
        raise TypeError(f"cron must be a string, got {type(expression).__name__}")
    fields = expression.split()
    named = len(fields) == 1 and fields[0].startswith("@")
    if not named and len(fields) != 5:
        raise ValueError(
            f"cron must have five fields (minute hour day-of-month month day-of-week) or be like '@daily', "
            f"got {len(fields)} in {expression!r}"
        )
    if not croniter.is_valid(expression):
        raise ValueError(f"{expression!r} is not a valid cron expression")


def _zone(name: Any) -> ZoneInfo:
    if not isinstance(name, str):
        raise TypeError(f"timezone must be an IANA time zone name, got {type(name).__name__}")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}: give an IANA name such as 'Europe/Paris' or 'UTC'") from None


def _next_wall_time(expression: str, zone: ZoneInfo, after: datetime) -> datetime | None:
    """The first moment strictly after ``after`` whose wall-clock time in ``zone`` matches ``expression``.

    Matching runs on naive wall-clock times, so a DST change never shifts which local times match;
    each match is then placed in time with ``fold=0`` (see the module docstring).
    """
    after = after.astimezone(UTC)  # compared in UTC: aware times in one zone compare by wall time
    local = after.astimezone(zone).replace(tzinfo=None)
    try:
        candidates = croniter(expression, local)
        for _ in range(_MAX_CRON_STEPS):
            wall: datetime = candidates.get_next(datetime)
            due = wall.replace(tzinfo=zone)
            if due > after:  # a match in a repeated hour can lie before ``after``
                return due
    except CroniterError:  # a cron that matches no date any more (Feb 30)
        return None
    return None
