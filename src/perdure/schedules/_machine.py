"""A schedule's state and how it moves: due times, run endings and commands, as pure functions.

The built-in schedule orchestration (``_orchestration``) holds a :class:`ScheduleState`, waits,
and hands what happened to one of these functions with the time of the turn; each returns the new
state and the runs to start. Keeping them pure keeps the orchestration short and lets tests drive
every rule with injected times.

Overlap rules, where a run "runs" from its start until its outcome comes back:

- ``allow``: every due time starts a run (the schedule does not follow them).
- ``skip``: a due time (or a trigger) while a run runs starts nothing and counts as skipped.
- ``buffer_one``: the first due time (or trigger) while a run runs is kept and starts as soon as
  that run ends; any more are skipped.

After downtime, a due time later than ``catchup_window`` counts as missed; the others fire in
order, under the overlap rule, at most :data:`MAX_STARTS_PER_TURN` per turn.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any

from perdure.schedules._spec import ScheduleSpec, parse_time, time_text

__all__ = [
    "COMMANDS",
    "MAX_STARTS_PER_TURN",
    "Run",
    "ScheduleState",
    "after_run",
    "apply_command",
    "fire_due",
    "run_for",
]

MAX_STARTS_PER_TURN = 100
"""The most runs one turn of a schedule starts; a longer catch-up goes on in the next turns."""

COMMANDS = ("pause", "resume", "trigger", "delete")


@dataclass(frozen=True, kw_only=True, slots=True)
class Run:
    """A run to start: its instance id and the due time it stands for (a trigger's: when it came)."""

    instance_id: str
    due: datetime

    def to_json(self) -> dict[str, Any]:
        return {"instance_id": self.instance_id, "due": time_text(self.due)}

    @classmethod
    def from_json(cls, data: dict[str, Any] | None) -> Run | None:
        if data is None:
            return None
        due = parse_time(data["due"])
        assert due is not None
        return cls(instance_id=data["instance_id"], due=due)


@dataclass(frozen=True, kw_only=True, slots=True)
class ScheduleState:
    """Everything a schedule carries from one execution of its orchestration to the next.

    Attributes:
        spec: What it starts and when.
        next_due: The next due time not yet handled; ``None`` once none is left (before ``end_at``).
        paused: Whether due times are passed over (a trigger still starts a run).
        note: The note given with the pause.
        deleted: Whether it was deleted (its orchestration ends).
        buffered: The run a ``buffer_one`` schedule starts when the running one ends.
        fires: How many runs it has started.
        skipped: Due times and triggers that started nothing because a run still ran.
        missed: Due times that came later than ``catchup_window`` allows (downtime).
        last_run_id: The instance id of the latest run it started.
        last_due: The due time of that run.
        last_error: How the latest run it followed (``skip``/``buffer_one``) failed, if it did.
    """

    spec: ScheduleSpec
    next_due: datetime | None
    paused: bool = False
    note: str | None = None
    deleted: bool = False
    buffered: Run | None = None
    fires: int = 0
    skipped: int = 0
    missed: int = 0
    last_run_id: str | None = None
    last_due: datetime | None = None
    last_error: str | None = None

    @property
    def finished(self) -> bool:
        """Nothing is left to start: deleted, or no due time left and nothing buffered."""
        return self.deleted or (self.next_due is None and self.buffered is None)

    def wants_timer(self, running: bool) -> bool:
        """Whether the orchestration should wake at :attr:`next_due`.

        Not while paused; while a run runs, only a ``buffer_one`` schedule with room in its
        buffer does (a ``skip`` one counts what it skipped when the run ends).
        """
        if self.paused or self.next_due is None:
            return False
        return not running or (self.spec.overlap == "buffer_one" and self.buffered is None)

    def label(self, running: str | None = None) -> str:
        """``deleted``, ``ended`` (nothing left to start, and no run followed any more), ``paused`` or ``active``."""
        if self.deleted:
            return "deleted"
        if self.finished and running is None:
            return "ended"
        return "paused" if self.paused else "active"

    def started(self, run: Run) -> ScheduleState:
        return replace(self, fires=self.fires + 1, last_run_id=run.instance_id, last_due=run.due, last_error=None)

    def to_json(self, running: str | None = None) -> dict[str, Any]:
        """The state as JSON: the orchestration's input, and (with ``running``) its custom status."""
        return {
            "spec": self.spec.to_json(),
            "state": self.label(running),
            "next_due": None if self.next_due is None else time_text(self.next_due),
            "paused": self.paused,
            "note": self.note,
            "deleted": self.deleted,
            "buffered": None if self.buffered is None else self.buffered.to_json(),
            "running": running,
            "fires": self.fires,
            "skipped": self.skipped,
            "missed": self.missed,
            "last_run_id": self.last_run_id,
            "last_due": None if self.last_due is None else time_text(self.last_due),
            "last_error": self.last_error,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ScheduleState:
        """The state :meth:`to_json` wrote."""
        return cls(
            spec=ScheduleSpec.from_json(data["spec"]),
            next_due=parse_time(data.get("next_due")),
            paused=bool(data.get("paused")),
            note=data.get("note"),
            deleted=bool(data.get("deleted")),
            buffered=Run.from_json(data.get("buffered")),
            fires=int(data.get("fires", 0)),
            skipped=int(data.get("skipped", 0)),
            missed=int(data.get("missed", 0)),
            last_run_id=data.get("last_run_id"),
            last_due=parse_time(data.get("last_due")),
            last_error=data.get("last_error"),
        )


def run_for(spec: ScheduleSpec, due: datetime) -> Run:
    """The run of due time ``due``: its id names the schedule and the due time, so it is the same
    on every replay and a second start of one due time is refused by the store."""
    return Run(instance_id=f"{spec.schedule_id}@{time_text(due)}", due=due)


def fire_due(state: ScheduleState, now: datetime, running: bool) -> tuple[ScheduleState, list[Run]]:
    """Handle every due time up to ``now`` (at most :data:`MAX_STARTS_PER_TURN` starts).

    ``running`` says whether a run the schedule follows still runs.
    """
    runs: list[Run] = []
    while not state.paused and state.next_due is not None and state.next_due <= now and len(runs) < MAX_STARTS_PER_TURN:
        due = state.next_due
        state = replace(state, next_due=state.spec.next_due(due))
        if now - due > state.spec.catchup_window:
            state = replace(state, missed=state.missed + 1)
        else:
            state, run = _offer(state, run_for(state.spec, due), running)
            if run is not None:
                runs.append(run)
                running = state.spec.overlap != "allow"
    return state, runs


def after_run(state: ScheduleState, now: datetime, error: str | None) -> tuple[ScheduleState, list[Run]]:
    """The run the schedule followed has ended (``error`` says how it failed, if it did).

    The buffered run starts now; due times that passed meanwhile are skipped (their run would have
    overlapped, and a ``buffer_one`` schedule's buffer was full).
    """
    state = replace(state, last_error=error)
    runs: list[Run] = []
    if state.buffered is not None and not state.paused:
        runs.append(state.buffered)
        state = state.started(state.buffered)
    state = replace(state, buffered=None)
    if state.paused:
        return state, runs
    while state.next_due is not None and state.next_due <= now:
        state = replace(state, next_due=state.spec.next_due(state.next_due), skipped=state.skipped + 1)
    return state, runs


def apply_command(state: ScheduleState, now: datetime, command: Any, running: bool) -> tuple[ScheduleState, list[Run]]:
    """A command sent by the client: ``{"command": "pause" | "resume" | "trigger" | "delete", "note": …}``.

    Anything else is ignored (an event the schedule does not understand changes nothing).
    """
    kind = command.get("command") if isinstance(command, dict) else None
    note = command.get("note") if isinstance(command, dict) else None
    if kind == "pause":
        dropped = 0 if state.buffered is None else 1
        return replace(state, paused=True, note=note, buffered=None, skipped=state.skipped + dropped), []
    if kind == "resume":
        # Due times that passed while paused are passed over: the next one is the first after now.
        next_due = state.next_due
        if next_due is not None and next_due <= now:
            next_due = state.spec.next_due(now)
        return replace(state, paused=False, note=None, next_due=next_due), []
    if kind == "trigger":
        run = Run(instance_id=f"{state.spec.schedule_id}@{time_text(now)}~{state.fires + state.skipped + 1}", due=now)
        state, started = _offer(state, run, running)
        return state, [] if started is None else [started]
    if kind == "delete":
        return replace(state, deleted=True, buffered=None), []
    return state, []


def _offer(state: ScheduleState, run: Run, running: bool) -> tuple[ScheduleState, Run | None]:
    """Start ``run`` if the overlap rule lets it start now; else buffer or skip it."""
    if not running or state.spec.overlap == "allow":
        return state.started(run), run
    if state.spec.overlap == "buffer_one" and state.buffered is None:
        return replace(state, buffered=run), None
    return replace(state, skipped=state.skipped + 1), None
