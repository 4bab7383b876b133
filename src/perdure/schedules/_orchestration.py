"""The built-in schedule orchestration: one instance per schedule, run by every runtime.

A schedule is an ordinary perdure orchestration, so it inherits crash safety, history and the
dashboard: its next due time is a durable timer, commands from the client (pause, resume,
trigger, delete) are external events, runs start as children (``skip``, ``buffer_one``: their
outcome tells the schedule when the run is over) or as detached orchestrations (``allow``), and
each execution handles one wake-up and then continues as new, so its history stays a few events
long however long the schedule lives. It never continues as new while a child runs: the child
answers the execution that started it.

Only one turn of an instance runs at a time and a run's start is written in the same commit that
consumes the timer, so a due time fires once however many workers serve the store; a run's
instance id is made from its due time, so not even a re-created schedule starts it twice.
"""

from __future__ import annotations

from typing import Any

from perdure._errors import TaskFailedError
from perdure.engine import DurableTask, OrchestrationContext
from perdure.schedules._machine import Run, ScheduleState, after_run, apply_command, fire_due
from perdure.schedules._spec import SCHEDULE_ORCHESTRATION

__all__ = [
    "CONTROL_EVENT",
    "SCHEDULE_ORCHESTRATION",
    "SCHEDULE_PREFIX",
    "SCHEDULE_VERSION",
    "run_schedule",
    "schedule_instance_id",
]


SCHEDULE_VERSION = "1.0.0"

SCHEDULE_PREFIX = "schedule:"

CONTROL_EVENT = "perdure.schedule"
"""The event that carries the client's commands to a schedule."""


def schedule_instance_id(schedule_id: str) -> str:
    """The instance id of the orchestration that runs schedule ``schedule_id``."""
    return f"{SCHEDULE_PREFIX}{schedule_id}"


async def run_schedule(ctx: OrchestrationContext, data: dict[str, Any]) -> dict[str, Any]:
    """Wait for the next due time, a command or the followed run's end; act on it; continue as new."""
    state = ScheduleState.from_json(data)
    control: DurableTask[Any] | None = None
    child: DurableTask[Any] | None = None
    child_id: str | None = None
    while True:
        ctx.set_custom_status(state.to_json(running=child_id))
        if state.deleted or (state.finished and child is None):
            return state.to_json()
        control = control or ctx.wait_for_event(CONTROL_EVENT)
        timer = ctx.create_timer(state.next_due) if state.wants_timer(child is not None) and state.next_due else None
        waits = [task for task in (control, child, timer) if task is not None]
        winner = await ctx.when_any(waits)
        if timer is not None and winner is not timer:
            timer.cancel()  # its firing is dropped: no stray wake-up
        if winner is control:
            control = None
            state, runs = apply_command(state, ctx.now(), winner.result(), running=child is not None)
        elif winner is child:
            child, child_id = None, None
            state, runs = after_run(state, ctx.now(), _failure(winner))
        else:
            state, runs = fire_due(state, ctx.now(), running=child is not None)
        for run in runs:
            started = _start(ctx, state, run)
            if started is not None:
                child, child_id = started, run.instance_id
        if child is None and not state.finished:
            ctx.set_custom_status(state.to_json())  # readable at once, before the next execution runs
            ctx.continue_as_new(state.to_json())


def _start(ctx: OrchestrationContext, state: ScheduleState, run: Run) -> DurableTask[Any] | None:
    """Start ``run``: detached under ``allow``, else as a child whose end the schedule awaits."""
    spec = state.spec
    if spec.overlap == "allow":
        ctx.start_orchestration(spec.name, spec.input, instance_id=run.instance_id)
        return None
    return ctx.call_sub_orchestration(spec.name, spec.input, instance_id=run.instance_id)


def _failure(run: DurableTask[Any]) -> str | None:
    """How a followed run failed (it failed, was terminated, or its id was taken), or ``None``."""
    try:
        run.result()
    except TaskFailedError as exc:
        return str(exc)
    return None
