"""The engine reports which external events an execution waits for after each turn, the same way
on replay: the name as the code gave it, since when, and the timeout with its timer."""

from __future__ import annotations

import contextlib
from datetime import timedelta
from typing import Any

from engine_harness import Driver, replay

from perdure import AwaitedEvent, OrchestrationContext, OrchestrationStatus
from perdure.engine.events import EventRaised, TimerCreated

Ctx = OrchestrationContext


def _timers(driver: Driver) -> list[TimerCreated]:
    return [e for e in driver.history if isinstance(e, TimerCreated)]


def test_open_waits_name_the_event_since_when_and_the_timeout_timer() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        approval = ctx.wait_for_event("Approved", timeout=timedelta(hours=2))
        await ctx.create_timer(60)
        comment = ctx.wait_for_event("comment")
        return [await approval, await comment]

    driver = Driver(orch).start()
    first = driver.turn()
    started_at = driver.now
    (timeout, sleep) = _timers(driver)
    assert first.waiting_for == [
        AwaitedEvent(
            name="Approved",
            since=started_at,
            timeout_at=started_at + timedelta(hours=2),
            timer_event_id=timeout.event_id,
        )
    ]
    second = driver.complete(sleep.event_id).turn()
    assert [w.name for w in second.waiting_for] == ["Approved", "comment"]
    assert second.waiting_for[1] == AwaitedEvent(name="comment", since=driver.now)
    assert second.waiting_for[0] == first.waiting_for[0], "replay reports the older wait unchanged"

    third = driver.turn(EventRaised(name="approved", data="yes"))  # names match case-insensitively
    assert [w.name for w in third.waiting_for] == ["comment"]
    done = driver.turn(EventRaised(name="comment", data="fine"))
    assert (done.status, done.output, done.waiting_for) == (OrchestrationStatus.COMPLETED, ["yes", "fine"], [])


def test_a_wait_that_timed_out_or_was_withdrawn_is_no_longer_reported() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        with contextlib.suppress(TimeoutError):
            await ctx.wait_for_event("approved", timeout=30)
        cancel = ctx.wait_for_event("cancel")
        winner = await ctx.when_any([cancel, ctx.create_timer(600)])
        if winner is not cancel:
            cancel.cancel()
        return await ctx.wait_for_event("last")

    driver = Driver(orch).start()
    assert [w.name for w in driver.turn().waiting_for] == ["approved"]
    (timeout,) = _timers(driver)
    after_timeout = driver.complete(timeout.event_id).turn()
    assert [(w.name, w.timeout_at) for w in after_timeout.waiting_for] == [("cancel", None)]
    (_, race) = _timers(driver)
    after_race = driver.complete(race.event_id).turn()
    assert [w.name for w in after_race.waiting_for] == ["last"], "the losing wait was withdrawn"


def test_an_ended_execution_waits_for_nothing_even_with_waits_left_open() -> None:
    async def orch(ctx: Ctx, _: Any) -> str:
        ctx.wait_for_event("never")  # not awaited: the engine warns, the instance completes
        return "done"

    result = Driver(orch).start().turn()
    assert result.status is OrchestrationStatus.COMPLETED
    assert result.waiting_for == []


def test_continue_as_new_leaves_the_waits_to_the_next_execution() -> None:
    async def orch(ctx: Ctx, n: int) -> Any:
        if n == 0:
            ctx.wait_for_event("old")
            ctx.continue_as_new(1)
        return await ctx.wait_for_event("new")

    driver = Driver(orch).start(0)
    assert driver.turn().waiting_for == []
    assert [w.name for w in driver.turn().waiting_for] == ["new"]


def test_a_replay_of_stored_history_reports_the_waits_with_their_recorded_times() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        await ctx.create_timer(5)
        return await ctx.wait_for_event("approved", timeout=60)

    driver = Driver(orch).start()
    driver.turn()
    (sleep,) = _timers(driver)
    waited = driver.complete(sleep.event_id).turn().waiting_for
    later = replay(orch, driver.history, now=driver.now + timedelta(days=1))
    assert later.waiting_for == waited
    assert waited[0].since == driver.now and waited[0].timeout_at == driver.now + timedelta(seconds=60)
