"""Activity time limits in the engine: recorded on ``ActivityScheduled``, time-outs replayed as failures."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

import pytest
from engine_harness import T0, Driver, replay

from perdure import ActivityFailedError, ErrorDetails, OrchestrationContext, OrchestrationStatus, RetryPolicy
from perdure.engine.events import ActivityCompleted, ActivityFailed, ActivityScheduled, HistoryEvent, TimerCreated

Ctx = OrchestrationContext
TIMED_OUT = ErrorDetails(type="ActivityTimeoutError", message="activity 'Hang' exceeded its start_to_close of 1 s")


def scheduled(history: list[HistoryEvent]) -> list[ActivityScheduled]:
    return [e for e in history if isinstance(e, ActivityScheduled)]


def test_the_limits_are_recorded_on_every_attempt() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_activity(
            "Hang",
            start_to_close=timedelta(milliseconds=1500),
            schedule_to_close=3600,
            heartbeat_timeout=10,
            retry=RetryPolicy(max_attempts=3, initial_interval=1),
        )

    driver = Driver(orch).start()
    driver.turn()
    for _ in range(2):
        [attempt] = [e for e in driver.history[-1:] if isinstance(e, ActivityScheduled)]
        driver.turn(ActivityFailed(source_event_id=attempt.event_id, error=TIMED_OUT))
        [timer] = [e for e in driver.history[-1:] if isinstance(e, TimerCreated)]
        driver.complete(timer.event_id).turn()
    attempts = scheduled(driver.history)
    assert [a.attempt for a in attempts] == [1, 2, 3]
    started = driver.history[0].timestamp
    for attempt in attempts:
        assert (attempt.start_to_close, attempt.heartbeat_timeout) == (1.5, 10.0)
        assert attempt.deadline == started + timedelta(hours=1)  # one deadline for the whole call


def test_a_timed_out_attempt_is_a_failed_attempt_that_the_policy_retries() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_activity("Hang", start_to_close=1, retry=RetryPolicy(max_attempts=2, initial_interval=0))

    driver = Driver(orch).start()
    driver.turn()
    driver.turn(ActivityFailed(source_event_id=2, error=TIMED_OUT))
    # The abandoned attempt reports after all: a routine drop, not non-determinism.
    late = driver.turn(ActivityCompleted(source_event_id=2, result="too late"))
    assert (late.dropped, late.new_events, late.status) == (
        [(0, "duplicate completion of event 2")],
        [],
        OrchestrationStatus.RUNNING,
    )
    driver.complete(4).turn()  # the backoff timer
    result = driver.turn(ActivityCompleted(source_event_id=6, result="second time lucky"))
    assert result.output == "second time lucky"
    # Replayed from its stored history, the run decides nothing new and ends the same way.
    again = replay(orch, driver.history)
    assert (again.new_events, again.output) == ([], "second time lucky")


def test_without_retries_the_orchestration_sees_activity_failed_error_of_the_timeout_type() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        try:
            await ctx.call_activity("Hang", start_to_close=1)
        except ActivityFailedError as exc:
            return [exc.details.type, exc.details.is_type("ActivityTimeoutError"), str(exc)]

    driver = Driver(orch).start()
    driver.turn()
    result = driver.turn(ActivityFailed(source_event_id=2, error=TIMED_OUT))
    assert result.output == [
        "ActivityTimeoutError",
        True,
        "activity 'Hang' failed: ActivityTimeoutError: activity 'Hang' exceeded its start_to_close of 1 s",
    ]


@pytest.mark.parametrize(("interval", "attempts"), [(60, 1), (2, 4)])
def test_schedule_to_close_allows_no_retry_that_could_not_start_before_it(interval: float, attempts: int) -> None:
    """Each turn of the driver is one second later; the deadline is 10 s after the first scheduling."""

    async def orch(ctx: Ctx, _: Any) -> Any:
        policy = RetryPolicy(max_attempts=10, initial_interval=interval, backoff_coefficient=1)
        try:
            return await ctx.call_activity("Flaky", schedule_to_close=10, retry=policy)
        except ActivityFailedError as exc:
            return exc.details.message

    driver = Driver(orch, tick=timedelta(seconds=1)).start()
    driver.turn()
    while driver.status is OrchestrationStatus.RUNNING:
        last = driver.history[-1]
        if isinstance(last, ActivityScheduled):
            driver.turn(ActivityFailed(source_event_id=last.event_id, error=ErrorDetails(type="E", message="flaky")))
        else:
            driver.tick = timedelta(seconds=interval)  # the timer fires when due
            driver.complete(last.event_id).turn()
            driver.tick = timedelta(seconds=1)
    assert driver.result.output == "flaky"  # the last failure, not a made-up one
    assert len(scheduled(driver.history)) == attempts


def test_limits_are_not_compared_on_replay() -> None:
    """Changing a limit in code is not non-determinism: the recorded attempt keeps the recorded limits."""

    def with_limit(seconds: float) -> Any:
        async def orch(ctx: Ctx, _: Any) -> Any:
            return await ctx.call_activity("Hang", start_to_close=seconds)

        return orch

    driver = Driver(with_limit(5)).start()
    driver.turn()
    result = replay(with_limit(50), driver.history, [ActivityCompleted(source_event_id=2, result=1)])
    assert (result.status, result.output) == (OrchestrationStatus.COMPLETED, 1)


@pytest.mark.parametrize(
    ("limits", "error", "message"),
    [
        ({"start_to_close": "5"}, TypeError, "start_to_close takes seconds or a timedelta, not str"),
        ({"heartbeat_timeout": True}, TypeError, "heartbeat_timeout takes seconds or a timedelta, not bool"),
        ({"start_to_close": 0}, ValueError, "start_to_close must be a positive, finite duration, got 0"),
        ({"schedule_to_close": -1.0}, ValueError, "schedule_to_close must be a positive, finite duration"),
        ({"heartbeat_timeout": math.nan}, ValueError, "heartbeat_timeout must be a positive, finite duration"),
        ({"start_to_close": math.inf}, ValueError, "start_to_close must be a positive, finite duration"),
        ({"schedule_to_close": timedelta(0)}, ValueError, "schedule_to_close must be a positive, finite duration"),
        ({"start_to_close": 10**400}, ValueError, "start_to_close must be a positive, finite duration"),
        ({"schedule_to_close": 1e12}, ValueError, "schedule_to_close (1000000000000.0) reaches outside the years"),
    ],
)
def test_bad_limits_are_refused_at_the_call(limits: dict[str, Any], error: type[Exception], message: str) -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        try:
            ctx.call_activity("Hang", **limits)
        except error as exc:
            return str(exc)
        return "accepted"

    result = Driver(orch, start=T0).start().turn()
    assert message in result.output, result.output
    assert not scheduled(result.new_events)
