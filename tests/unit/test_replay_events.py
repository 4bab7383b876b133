"""External events and terminate requests in the engine: buffered events reach the timeout form of
the wait, a terminate that comes with the start wins over it, and event names match case-insensitively."""

from __future__ import annotations

import contextlib
from typing import Any

from engine_harness import Driver, replay

from perdure import OrchestrationContext, OrchestrationStatus
from perdure.engine.events import EventRaised, EventSent, OrchestrationTerminated

Ctx = OrchestrationContext


def kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_the_timeout_form_of_the_wait_takes_an_event_raised_before_it() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        await ctx.create_timer(0.2)
        return await ctx.wait_for_event("e", timeout=2)

    driver = Driver(orch).start().raise_event("e", "early")
    driver.turn()  # the event is recorded while the code sleeps on its timer
    (timer_id,) = driver.outstanding
    result = driver.complete(timer_id).turn()
    assert (result.status, result.output) == (OrchestrationStatus.COMPLETED, "early")


def test_the_timeout_form_of_the_wait_keeps_arrival_order_of_buffered_events() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        await ctx.create_timer(1)
        return [await ctx.wait_for_event("e", timeout=5) for _ in range(3)]

    driver = Driver(orch).start().raise_event("e", 1).raise_event("e", 2)
    driver.turn()
    (timer_id,) = driver.outstanding
    driver.complete(timer_id).turn()  # 1 and 2 were buffered: both waits finish at once
    result = driver.turn(EventRaised(name="e", data=3))
    assert result.output == [1, 2, 3]


def test_a_terminate_queued_behind_the_start_wins_and_the_code_never_runs() -> None:
    ran: list[str] = []

    async def orch(ctx: Ctx, _: Any) -> Any:
        ran.append("started")
        return await ctx.call_activity("work")

    driver = Driver(orch, activities={"work": lambda _, __: None}, verify=False).start()  # replays below
    result = driver.raise_event("e").terminate("cancelled before it ran").turn()
    assert kinds(driver.history) == ["OrchestrationStarted", "OrchestrationTerminated"]
    assert isinstance(result.terminal_event, OrchestrationTerminated)
    assert result.terminal_event.reason == "cancelled before it ran"
    assert result.status is OrchestrationStatus.TERMINATED
    assert result.decisions == [] and ran == []
    assert sorted(result.consumed) == [0, 1, 2] and result.dropped == [(1, "the execution has already ended")]
    # The stored history replays soundly, although replaying runs the code up to its first decision.
    again = replay(orch, driver.history)
    assert (again.status, again.new_events) == (OrchestrationStatus.TERMINATED, [])


def test_a_terminate_after_the_start_of_a_running_instance_still_comes_in_arrival_order() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        return [await ctx.wait_for_event("e"), await ctx.wait_for_event("e")]

    driver = Driver(orch).start()
    driver.turn()
    result = driver.raise_event("e", 1).terminate().turn()
    assert kinds(result.new_events) == ["EventRaised", "OrchestrationTerminated"]


def test_event_names_match_case_insensitively_and_history_keeps_the_case_given() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        first = await ctx.wait_for_event("approval")  # raised before: buffered
        await ctx.create_timer(1)
        second = await ctx.wait_for_event("APPROVAL", timeout=10)  # raised while it waits
        return [first, second]

    driver = Driver(orch).start().raise_event("Approval", 1)
    driver.turn()
    (timer_id,) = driver.outstanding
    driver.complete(timer_id).turn()
    result = driver.turn(EventRaised(name="aPPROVAL", data=2))
    assert result.output == [1, 2]
    assert [e.name for e in driver.history if isinstance(e, EventRaised)] == ["Approval", "aPPROVAL"]


def test_a_timed_out_wait_is_withdrawn_whatever_the_case_of_its_name() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        with contextlib.suppress(TimeoutError):
            await ctx.wait_for_event("Ping", timeout=1)
        return [await ctx.wait_for_event("ping")]

    driver = Driver(orch).start()
    driver.turn()
    (timer_id,) = driver.outstanding
    driver.complete(timer_id).turn()
    result = driver.turn(EventRaised(name="PING", data="pong"))
    assert result.output == ["pong"]


def test_replay_compares_sent_event_names_case_insensitively() -> None:
    def sender(name: str) -> Any:
        async def orch(ctx: Ctx, _: Any) -> str:
            ctx.send_event("other", name, "data")
            return await ctx.call_activity("echo", "done")

        return orch

    echo = {"echo": lambda _call, value: value}
    driver = Driver(sender("Approval"), activities=echo).start()
    driver.run()
    assert [e.name for e in driver.history if isinstance(e, EventSent)] == ["Approval"]
    again = replay(sender("approval"), driver.history)
    assert (again.status, again.output, again.new_events) == (OrchestrationStatus.COMPLETED, "done", [])
    diverged = replay(sender("Rejection"), driver.history)
    assert diverged.status is OrchestrationStatus.FAILED
