"""``ScheduleInfo``: a schedule as the client reads it from its orchestration instance."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from perdure._state import OrchestrationState, OrchestrationStatus
from perdure.schedules._machine import ScheduleState
from perdure.schedules._orchestration import SCHEDULE_PREFIX

__all__ = ["ScheduleInfo", "ScheduleStateName"]

ScheduleStateName = Literal["active", "paused", "ended", "deleted", "failed"]


@dataclass(frozen=True, kw_only=True, slots=True)
class ScheduleInfo:
    """A schedule: its spec, whether it fires, and what it has done so far.

    Commands (pause, resume, trigger, delete) take effect at the schedule's next turn, normally
    within milliseconds when a worker runs; until then this reads as before.

    Attributes:
        schedule_id: The schedule's id.
        instance_id: The id of the orchestration instance that runs it (``schedule:<id>``).
        name: The orchestration each run starts.
        input: The input of each run.
        cron: Its cron expression, or ``None``.
        every: Its interval, or ``None``.
        timezone: The time zone of its cron expression.
        overlap: ``"skip"``, ``"buffer_one"`` or ``"allow"``.
        start_at: No due time before this.
        end_at: No due time after this.
        catchup_window: How late a due time may still fire.
        state: ``"active"``, ``"paused"``, ``"ended"`` (no due time left), ``"deleted"``, or
            ``"failed"`` (its orchestration instance failed or was terminated: see its history).
        note: The note given with the pause.
        next_fire_at: The next due time not yet handled (``None`` when none is left).
        running: The instance id of the run it follows while that runs (``skip``, ``buffer_one``).
        buffered: The instance id of the run a ``buffer_one`` schedule starts when that one ends.
        fires: Runs started so far.
        skipped: Due times and triggers that started nothing because a run still ran.
        missed: Due times later than ``catchup_window`` allowed (the store had no worker then).
        last_run_id: The instance id of the latest run started.
        last_fire_at: The due time of that run (a triggered run's: when the trigger came).
        last_error: How the latest followed run failed, if it did.
        created_at: When the schedule was created.
        updated_at: When its instance last changed.
    """

    schedule_id: str
    instance_id: str
    name: str
    input: Any
    cron: str | None
    every: timedelta | None
    timezone: str
    overlap: str
    start_at: datetime | None
    end_at: datetime | None
    catchup_window: timedelta
    state: ScheduleStateName
    note: str | None
    next_fire_at: datetime | None
    running: str | None
    buffered: str | None
    fires: int
    skipped: int
    missed: int
    last_run_id: str | None
    last_fire_at: datetime | None
    last_error: str | None
    created_at: datetime
    updated_at: datetime


def schedule_info(instance: OrchestrationState) -> ScheduleInfo:
    """The schedule an instance of the schedule orchestration runs.

    Read from its custom status (what its latest turn published) or, before its first turn, from
    its input.
    """
    published = instance.custom_status if isinstance(instance.custom_status, dict) else None
    data = published or instance.input
    state = ScheduleState.from_json(data)
    spec = state.spec
    name: ScheduleStateName = data.get("state") or "active"
    if instance.status in (OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED):
        name = "failed"
    return ScheduleInfo(
        schedule_id=instance.instance_id.removeprefix(SCHEDULE_PREFIX),
        instance_id=instance.instance_id,
        name=spec.name,
        input=spec.input,
        cron=spec.cron,
        every=spec.every,
        timezone=spec.timezone,
        overlap=spec.overlap,
        start_at=spec.start_at,
        end_at=spec.end_at,
        catchup_window=spec.catchup_window,
        state=name,
        note=state.note,
        next_fire_at=state.next_due,
        running=data.get("running"),
        buffered=None if state.buffered is None else state.buffered.instance_id,
        fires=state.fires,
        skipped=state.skipped,
        missed=state.missed,
        last_run_id=state.last_run_id,
        last_fire_at=state.last_due,
        last_error=state.last_error,
        created_at=spec.created_at,
        updated_at=instance.updated_at,
    )
