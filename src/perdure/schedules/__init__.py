"""Schedules: an orchestration started on a cron expression or an interval, built on perdure itself.

A schedule is an instance of the built-in orchestration ``perdure.Schedule`` (``_orchestration``),
which every runtime runs; the client creates it and talks to it with events. Its rules are pure
functions of time (``_spec``: due times; ``_machine``: overlap, catch-up and commands), so the
client (to validate and to read) and the runtime (to run) share them from this room, which sits
on the engine.
"""

from perdure.schedules._info import ScheduleInfo, schedule_info
from perdure.schedules._machine import COMMANDS, ScheduleState
from perdure.schedules._orchestration import (
    CONTROL_EVENT,
    SCHEDULE_ORCHESTRATION,
    SCHEDULE_PREFIX,
    SCHEDULE_VERSION,
    run_schedule,
    schedule_instance_id,
)
from perdure.schedules._spec import DEFAULT_CATCHUP_WINDOW, OVERLAP, Overlap, ScheduleSpec, duration

__all__ = [
    "COMMANDS",
    "CONTROL_EVENT",
    "DEFAULT_CATCHUP_WINDOW",
    "OVERLAP",
    "SCHEDULE_ORCHESTRATION",
    "SCHEDULE_PREFIX",
    "SCHEDULE_VERSION",
    "Overlap",
    "ScheduleInfo",
    "ScheduleSpec",
    "ScheduleState",
    "duration",
    "run_schedule",
    "schedule_info",
    "schedule_instance_id",
]
