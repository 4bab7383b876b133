"""The replay engine, driven turn by turn by the fake runtime in ``engine_harness``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from datetime import timedelta
from typing import Any

import pytest
from engine_harness import T0, ActivityCall, Driver, replay

from perdure import (
    ActivityFailedError,
    ErrorDetails,
    OrchestrationContext,
    OrchestrationStatus,
    SerializationError,
    SubOrchestrationFailedError,
)
from perdure.engine.events import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    CustomStatusUpdated,
    EventRaised,
    EventSent,
    OrchestrationChained,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestrationResumed,
    OrchestrationStarted,
    OrchestrationSuspended,
    OrchestrationTerminated,
    SubOrchestrationCompleted,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
)

Ctx = OrchestrationContext


def echo(_: ActivityCall, value: Any) -> Any:
    return value


def double(_: ActivityCall, value: int) -> int:
    return value * 2


def boom(_: ActivityCall, value: Any) -> Any:
    raise ValueError(f"boom {value}")


ACTIVITIES = {"echo": echo, "double": double, "boom": boom}


def kinds(events: list[Any]) -> list[str]:
    return [type(e).__name__ for e in events]


# --- activities ------------------------------------------------------------------------------


def test_sequential_activities_record_one_decision_per_turn() -> None:
    async def orch(ctx: Ctx, n: int) -> list[int]:
        return [await ctx.call_activity("double", i) for i in range(n)]

    driver = Driver(orch, activities=ACTIVITIES).start(3)
    first = driver.turn()
    assert kinds(first.new_events) == ["OrchestrationStarted", "ActivityScheduled"]
    assert first.status is OrchestrationStatus.RUNNING
    assert first.consumed == [0]
    scheduled = first.decisions[0]
    assert isinstance(scheduled, ActivityScheduled)
    assert (scheduled.event_id, scheduled.name, scheduled.input, scheduled.queue) == (2, "double", 0, "default")

    result = driver.run()
    assert result.status is OrchestrationStatus.COMPLETED
    assert result.output == [0, 2, 4]
    assert kinds(driver.history) == [
        "OrchestrationStarted",
        *["ActivityScheduled", "ActivityCompleted"] * 3,
        "OrchestrationCompleted",
    ]
    assert [e.event_id for e in driver.history] == list(range(1, 9))
    assert len(driver.results) == 4  # one turn per activity, plus the start


def test_event_ids_and_timestamps_of_a_turn() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_activity("echo", "x", queue="gpu")

    driver = Driver(orch, activities=ACTIVITIES).start()
    driver.turn()
    now = driver.now
    assert all(e.timestamp == now for e in driver.history)
    assert isinstance(driver.history[1], ActivityScheduled)
    assert driver.history[1].queue == "gpu"


def test_when_all_over_a_thousand_activities() -> None:
    async def orch(ctx: Ctx, n: int) -> int:
        results = await ctx.when_all([ctx.call_activity("double", i) for i in range(n)])
        return sum(results)

    driver = Driver(orch, activities=ACTIVITIES, verify=False).start(1000)
    first = driver.turn()
    assert len(first.decisions) == 1000
    assert [d.input for d in first.decisions] == list(range(1000))  # type: ignore[attr-defined]
    # Complete them in reverse order, half per turn.
    ids = sorted(driver.outstanding, reverse=True)
    for event_id in ids[:500]:
        driver.complete(event_id)
    assert driver.turn().status is OrchestrationStatus.RUNNING
    for event_id in ids[500:]:
        driver.complete(event_id)
    result = driver.turn()
    assert result.status is OrchestrationStatus.COMPLETED
    assert result.output == 2 * sum(range(1000))
    again = replay(orch, driver.history)
    assert again.new_events == []
    assert again.output == result.output


def test_when_all_results_keep_task_order_not_completion_order() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        return await ctx.when_all([ctx.call_activity("echo", "a"), ctx.call_activity("echo", "b")])

    driver = Driver(orch, activities=ACTIVITIES).start()
    driver.turn()
    driver.complete(3).turn()
    assert driver.complete(2).turn().output == ["a", "b"]


def test_when_all_fails_fast_with_the_first_failure() -> None:
    async def orch(ctx: Ctx, _: Any) -> str:
        try:
            await ctx.when_all([ctx.call_activity("echo", 1), ctx.call_activity("boom", 2)])
        except ActivityFailedError as exc:
            return exc.details.message
        return "no failure"

    driver = Driver(orch, activities=ACTIVITIES).start()
    driver.turn()
    result = driver.complete(3).turn()  # the failing one; the other is still running
    assert result.status is OrchestrationStatus.COMPLETED
    assert result.output == "boom 2"


def test_activity_failure_is_raised_at_the_await_and_can_be_caught() -> None:
    async def orch(ctx: Ctx, _: Any) -> dict[str, Any]:
        try:
            await ctx.call_activity("boom", 7)
        except ActivityFailedError as exc:
            return {"type": exc.details.type, "message": exc.details.message, "text": str(exc)}
        return {}

    result = Driver(orch, activities=ACTIVITIES).start().run()
    assert result.status is OrchestrationStatus.COMPLETED
    assert result.output == {
        "type": "ValueError",
        "message": "boom 7",
        "text": "activity 'boom' failed: ValueError: boom 7",
    }


def test_uncaught_activity_failure_fails_the_orchestration() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_activity("boom", 1)

    result = Driver(orch, activities=ACTIVITIES).start().run()
    assert result.status is OrchestrationStatus.FAILED
    assert result.error is not None
    assert result.error.type == "perdure.ActivityFailedError"
    assert result.error.message == "activity 'boom' failed: ValueError: boom 1"
    assert isinstance(result.terminal_event, OrchestrationFailed)


# --- timers and events -----------------------------------------------------------------------


def test_timer_fire_at_from_seconds_timedelta_and_datetime() -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        await ctx.when_all(
            [
                ctx.create_timer(5),
                ctx.create_timer(timedelta(minutes=1)),
                ctx.create_timer(T0 + timedelta(days=1)),
                ctx.create_timer(T0 - timedelta(days=1)),  # in the past: due now
            ]
        )

    driver = Driver(orch).start()
    first = driver.turn()
    now = driver.now
    assert [d.fire_at for d in first.decisions] == [  # type: ignore[attr-defined]
        now + timedelta(seconds=5),
        now + timedelta(minutes=1),
        T0 + timedelta(days=1),
        now,
    ]
    assert driver.run().status is OrchestrationStatus.COMPLETED


def test_timer_refuses_naive_datetime_and_other_types() -> None:
    async def naive(ctx: Ctx, _: Any) -> None:
        await ctx.create_timer(T0.replace(tzinfo=None))

    async def text(ctx: Ctx, _: Any) -> None:
        await ctx.create_timer("5")  # type: ignore[arg-type]

    failed = Driver(naive).start().run()
    assert failed.error is not None
    assert (failed.error.type, "naive" in failed.error.message) == ("ValueError", True)
    failed = Driver(text).start().run()
    assert failed.error is not None
    assert failed.error.type == "TypeError"


@pytest.mark.parametrize(
    "call",
    [
        lambda ctx: ctx.create_timer(float("nan")),
        lambda ctx: ctx.create_timer(float("inf")),
        lambda ctx: ctx.create_timer(float("-inf")),
        lambda ctx: ctx.create_timer(1e300),
        lambda ctx: ctx.create_timer(-(10**400)),
        lambda ctx: ctx.create_timer(timedelta.max),
        lambda ctx: ctx.wait_for_event("ping", timeout=float("nan")),
        lambda ctx: ctx.wait_for_event("ping", timeout=float("inf")),
        lambda ctx: ctx.wait_for_event("ping", timeout=-1),
        lambda ctx: ctx.wait_for_event("ping", timeout=timedelta(microseconds=-1)),
        lambda ctx: ctx.wait_for_event("ping", timeout=timedelta(days=4_000_000)),
    ],
    ids=[
        "timer-nan",
        "timer-inf",
        "timer-minus-inf",
        "timer-1e300",
        "timer-huge-int",
        "timer-timedelta-max",
        "timeout-nan",
        "timeout-inf",
        "timeout-negative",
        "timeout-negative-timedelta",
        "timeout-past-9999",
    ],
)
def test_a_timer_that_cannot_be_computed_raises_value_error_at_the_call(call: Any) -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        try:
            call(ctx)
        except ValueError as exc:
            refused = str(exc)
        else:
            return "accepted"
        # Nothing of the refused call is left behind: not a timer, not a wait that takes the event.
        return [refused, await ctx.wait_for_event("ping")]

    driver = Driver(orch).start()
    assert driver.turn().decisions == []
    result = driver.turn(EventRaised(name="ping", data="pong"))
    refused, event = result.output
    assert event == "pong"
    assert ("create_timer" in refused or "wait_for_event" in refused) and "convert" not in refused


def test_timer_and_timeout_bounds_that_stay_accepted() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        await ctx.create_timer(-5)  # in the past: due now
        try:
            return await ctx.wait_for_event("ping", timeout=0)
        except TimeoutError:
            return "timed out"

    assert Driver(orch).start().run().output == "timed out"


def test_wait_for_event_refuses_a_timeout_of_another_type() -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        await ctx.wait_for_event("ping", timeout="5")  # type: ignore[arg-type]

    failed = Driver(orch).start().run()
    assert failed.error is not None
    assert failed.error.type == "TypeError"


@pytest.mark.parametrize("first", ["timer", "event"])
def test_when_any_of_a_timer_and_an_event(first: str) -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        timer = ctx.create_timer(60)
        approval = ctx.wait_for_event("approval")
        winner = await ctx.when_any([timer, approval])
        if winner is approval:
            return ["approved", approval.result(), timer.done()]
        return ["timed out", timer.result(), approval.done()]

    driver = Driver(orch).start()
    driver.turn()
    (timer_id,) = driver.outstanding
    if first == "timer":
        driver.complete(timer_id)
        result = driver.turn()
        assert result.output == ["timed out", None, False]
        # The event that comes later is dropped: the execution has ended.
        late = driver.turn(EventRaised(name="approval", data="yes"))
        assert late.dropped == [(0, "the execution has already ended")]
        assert late.new_events == []
    else:
        result = driver.turn(EventRaised(name="approval", data={"by": "ann"}))
        assert result.output == ["approved", {"by": "ann"}, False]
        driver.complete(timer_id)
        late = driver.turn()
        assert late.dropped == [(0, "the execution has already ended")]
    assert result.status is OrchestrationStatus.COMPLETED


def test_events_raised_before_the_wait_are_kept_in_arrival_order() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        await ctx.create_timer(10)
        first = await ctx.wait_for_event("go")
        second = await ctx.wait_for_event("go")
        other = await ctx.wait_for_event("other")
        return [first, second, other]

    driver = Driver(orch).start()
    driver.turn()
    (timer_id,) = driver.outstanding
    early = driver.turn(EventRaised(name="go", data=1), EventRaised(name="other", data="o"))
    assert kinds(early.new_events) == ["EventRaised", "EventRaised"]  # recorded, nothing decided
    assert early.consumed == [0, 1]
    driver.raise_event("go", 2)
    driver.complete(timer_id)
    result = driver.turn()
    assert result.output == [1, 2, "o"]


def test_a_timed_out_wait_is_withdrawn_so_the_next_wait_gets_the_event() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        seen = []
        for _round in range(2):
            try:
                seen.append(await ctx.wait_for_event("ping", timeout=timedelta(seconds=30)))
            except TimeoutError as exc:
                seen.append(str(exc))
        return seen

    driver = Driver(orch).start()
    driver.turn()
    (timer_id,) = driver.outstanding
    driver.complete(timer_id)  # round 1 times out…
    driver.turn()
    result = driver.turn(EventRaised(name="ping", data="pong"))  # …so round 2 gets the event
    assert result.output == ["no event 'ping' arrived in time", "pong"]
    assert replay(orch, driver.history).new_events == []


def test_an_event_before_its_timeout_wins_and_the_timer_changes_nothing() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        value = await ctx.wait_for_event("ping", timeout=30)
        return [value, await ctx.wait_for_event("ping")]

    driver = Driver(orch).start()
    driver.turn()
    (timer_id,) = driver.outstanding
    driver.turn(EventRaised(name="ping", data=1))
    driver.complete(timer_id)
    driver.turn()
    result = driver.turn(EventRaised(name="ping", data=2))
    assert result.output == [1, 2]


def test_events_of_one_name_reach_waiters_in_order() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        return await ctx.when_all([ctx.wait_for_event("e"), ctx.wait_for_event("e")])

    driver = Driver(orch).start()
    driver.turn()
    result = driver.turn(EventRaised(name="e", data="first"), EventRaised(name="e", data="second"))
    assert result.output == ["first", "second"]


# --- children, detached starts, events to others --------------------------------------------


async def child_orch(ctx: Ctx, value: Any) -> Any:
    if value == "fail":
        raise RuntimeError("child gave up")
    return {"child": ctx.instance_id, "parent": ctx.parent_instance_id, "value": await ctx.call_activity("echo", value)}


def test_child_orchestration_success() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_sub_orchestration("Child", 5, version="2.0.0")

    driver = Driver(orch, activities=ACTIVITIES, children={"Child": child_orch}).start()
    first = driver.turn()
    (scheduled,) = first.decisions
    assert isinstance(scheduled, SubOrchestrationScheduled)
    assert (scheduled.name, scheduled.version, scheduled.input) == ("Child", "2.0.0", 5)
    assert scheduled.instance_id == "inst:1:1"  # derived deterministically
    result = driver.run()
    assert result.output == {"child": "inst:1:1", "parent": "inst", "value": 5}
    child = driver.child_drivers["inst:1:1"]
    started = child.history[0]
    assert isinstance(started, OrchestrationStarted)
    assert (started.parent_instance, started.parent_id, started.version) == ("inst", 2, "2.0.0")
    assert isinstance(driver.history[2], SubOrchestrationCompleted)


def test_child_orchestration_failure_raises_with_details() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        try:
            await ctx.call_sub_orchestration("Child", "fail", instance_id="kid")
        except SubOrchestrationFailedError as exc:
            return [str(exc), exc.details.type, exc.details.message, "child gave up" in (exc.details.traceback or "")]
        return None

    driver = Driver(orch, activities=ACTIVITIES, children={"Child": child_orch}).start()
    result = driver.run()
    assert result.output == [
        "sub-orchestration 'Child' (kid) failed: RuntimeError: child gave up",
        "RuntimeError",
        "child gave up",
        True,
    ]


def test_uncaught_child_failure_fails_the_parent() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_sub_orchestration("Child", "fail")

    result = Driver(orch, activities=ACTIVITIES, children={"Child": child_orch}).start().run()
    assert result.status is OrchestrationStatus.FAILED
    assert result.error is not None
    assert result.error.type == "perdure.SubOrchestrationFailedError"


def test_generated_child_ids_are_distinct_and_stable() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[str]:
        a = ctx.call_sub_orchestration("Child", 1)
        b = ctx.call_sub_orchestration("Child", 2)
        c = ctx.start_orchestration("Other")
        await ctx.when_all([a, b])
        return [c]

    driver = Driver(orch, activities=ACTIVITIES, children={"Child": child_orch}).start()
    first = driver.turn()
    ids = [d.instance_id for d in first.decisions]  # type: ignore[attr-defined]
    assert ids == ["inst:1:1", "inst:1:2", "inst:1:3"]
    assert driver.run().output == ["inst:1:3"]


def test_detached_start_returns_the_id_and_records_chained() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[str]:
        generated = ctx.start_orchestration("Report", {"day": 1})
        chosen = ctx.start_orchestration("Report", {"day": 2}, instance_id="report-2", version="1.2.0")
        return [generated, chosen]

    driver = Driver(orch).start()
    result = driver.turn()
    assert result.output == ["inst:1:1", "report-2"]
    assert kinds(result.new_events) == [
        "OrchestrationStarted",
        "OrchestrationChained",
        "OrchestrationChained",
        "OrchestrationCompleted",
    ]
    assert driver.chained == [
        OrchestrationChained(
            event_id=2, timestamp=driver.now, name="Report", version=None, instance_id="inst:1:1", input={"day": 1}
        ),
        OrchestrationChained(
            event_id=3, timestamp=driver.now, name="Report", version="1.2.0", instance_id="report-2", input={"day": 2}
        ),
    ]
    assert driver.outstanding == {}  # fire-and-forget: nothing to wait for


def test_send_event_records_event_sent() -> None:
    async def orch(ctx: Ctx, _: Any) -> str:
        ctx.send_event("other", "ping", {"n": 1})
        return "sent"

    driver = Driver(orch).start()
    result = driver.turn()
    assert result.output == "sent"
    assert driver.sent == [EventSent(event_id=2, timestamp=driver.now, instance_id="other", name="ping", data={"n": 1})]


# --- continue-as-new -------------------------------------------------------------------------


def test_continue_as_new_starts_a_new_execution_with_input_and_version() -> None:
    async def orch(ctx: Ctx, n: int) -> Any:
        if n < 2:
            await ctx.call_activity("echo", n)
            ctx.continue_as_new(n + 1, version="1.1.0" if n == 1 else None)
        return [n, ctx.execution_id, ctx.version]

    driver = Driver(orch, activities=ACTIVITIES).start(0)
    driver.turn()
    ended = driver.complete_all().turn()
    assert ended.status is OrchestrationStatus.RUNNING
    assert isinstance(ended.terminal_event, OrchestrationContinuedAsNew)
    assert (ended.terminal_event.input, ended.terminal_event.version) == (1, None)
    result = driver.run()
    assert result.output == [2, 3, "1.1.0"]
    assert len(driver.executions) == 2
    second = driver.executions[1]
    assert isinstance(second[-1], OrchestrationContinuedAsNew)
    assert (second[-1].input, second[-1].version) == (2, "1.1.0")


def test_continue_as_new_is_not_caught_by_except_exception() -> None:
    async def orch(ctx: Ctx, n: int) -> Any:
        if n == 0:
            try:
                ctx.continue_as_new(1)
            except Exception:
                return "caught"
        return "second"

    driver = Driver(orch).start(0)
    assert isinstance(driver.turn().terminal_event, OrchestrationContinuedAsNew)
    assert driver.turn().output == "second"


def test_continue_as_new_carries_over_unawaited_events_and_leaves_the_rest_queued() -> None:
    async def orch(ctx: Ctx, n: int) -> Any:
        if n == 0:
            await ctx.wait_for_event("go")
            ctx.continue_as_new(1)
        return [await ctx.wait_for_event("data"), await ctx.wait_for_event("data"), await ctx.wait_for_event("more")]

    driver = Driver(orch).start(0)
    driver.turn()
    result = driver.turn(
        EventRaised(name="data", data="a"),
        EventRaised(name="go"),
        EventRaised(name="more", data="m"),
    )
    assert isinstance(result.terminal_event, OrchestrationContinuedAsNew)
    assert result.consumed == [0, 1]  # "more" came after the end: it stays queued
    assert [(e.name, e.data) for e in result.carryover] == [("data", "a")]
    assert [getattr(m, "name", None) for m in driver.queue] == ["orch", "data", "more"]
    driver.raise_event("data", "b")
    final = driver.run()
    assert final.output == ["a", "b", "m"]


def test_continue_as_new_refuses_input_that_is_not_json() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        try:
            ctx.continue_as_new(1j)
        except SerializationError as exc:
            return str(exc)

    result = Driver(orch).start().turn()
    assert result.status is OrchestrationStatus.COMPLETED
    assert "input of continue_as_new" in result.output


# --- custom status, determinism helpers, logging ---------------------------------------------


def test_custom_status_is_recorded_and_reported() -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        ctx.set_custom_status({"step": 1})
        await ctx.create_timer(1)
        ctx.set_custom_status("done")

    driver = Driver(orch).start()
    first = driver.turn()
    assert first.custom_status == {"step": 1}
    assert CustomStatusUpdated(event_id=2, timestamp=driver.now, value={"step": 1}) in first.new_events
    final = driver.run()
    assert final.custom_status == "done"
    assert replay(orch, driver.history[:3]).custom_status == {"step": 1}


def test_custom_status_must_be_json() -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        ctx.set_custom_status(object())

    result = Driver(orch).start().turn()
    assert result.error is not None
    assert result.error.type == "perdure.SerializationError"
    assert "custom status" in result.error.message


def test_now_and_new_guid_are_identical_across_replays() -> None:
    seen: list[tuple[str, str, str, bool]] = []

    async def orch(ctx: Ctx, _: Any) -> list[str]:
        before = ctx.now()
        guid = ctx.new_guid()
        seen.append((before.isoformat(), str(guid), str(ctx.new_guid()), ctx.is_replaying))
        await ctx.create_timer(30)
        after = ctx.now()
        seen.append((after.isoformat(), str(ctx.new_guid()), "", ctx.is_replaying))
        return [before.isoformat(), after.isoformat(), str(guid)]

    driver = Driver(orch, tick=timedelta(minutes=5)).start()
    driver.run()
    output = driver.result.output
    assert output[0] == (T0 + timedelta(minutes=5)).isoformat()  # the start turn's time
    assert output[1] == (T0 + timedelta(minutes=10)).isoformat()  # when the timer fired
    assert uuid.UUID(output[2]).version == 5
    first_run = [s for s in seen if not s[3]]
    replays = [s for s in seen if s[3]]
    assert replays  # the harness replayed after every turn
    for entry in replays:
        assert entry[:3] == next(f[:3] for f in first_run if f[0] == entry[0])
    assert len({s[1] for s in first_run}) == 2  # distinct guids within a run

    other = Driver(orch, instance_id="another", tick=timedelta(minutes=5)).start()
    assert other.run().output[2] != output[2]


def test_logger_is_silent_while_replaying(caplog: pytest.LogCaptureFixture) -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        ctx.logger.info("step one")
        await ctx.create_timer(1)
        ctx.logger.info("step two")

    caplog.set_level(logging.INFO, logger="perdure.orchestration")
    driver = Driver(orch).start()
    driver.run()
    messages = [r.getMessage() for r in caplog.records if r.name == "perdure.orchestration"]
    # The harness replays after each turn; only the first execution of each line logged.
    assert messages == ["step one", "step two"]
    record = caplog.records[0]
    assert (record.instance_id, record.execution_id) == ("inst", 1)  # type: ignore[attr-defined]
    caplog.clear()
    replay(orch, driver.history)
    assert [r for r in caplog.records if r.name == "perdure.orchestration"] == []


# --- what orchestration code must not do -----------------------------------------------------


@pytest.mark.parametrize("delay", [1, 0])
def test_awaiting_asyncio_sleep_fails_with_non_durable_await(delay: float) -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        await asyncio.sleep(delay)

    result = Driver(orch).start().turn()
    assert result.status is OrchestrationStatus.FAILED
    assert result.error is not None
    assert result.error.type == "perdure.NonDurableAwaitError"
    assert "durable task" in result.error.message
    assert "ctx.create_timer" in result.error.message


def test_asyncio_works_again_after_a_turn_inside_a_running_loop() -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        await asyncio.sleep(0)

    async def main() -> str:
        result = Driver(orch).start().turn()
        await asyncio.sleep(0)  # the engine restored the running loop
        assert asyncio.get_running_loop() is not None
        return result.status.value

    assert asyncio.run(main()) == "FAILED"


def test_escaping_exception_fails_with_type_message_and_traceback() -> None:
    class BadThing(Exception):
        pass

    async def orch(ctx: Ctx, _: Any) -> None:
        await ctx.create_timer(1)
        raise BadThing("it broke")

    driver = Driver(orch).start()
    result = driver.run()
    assert result.status is OrchestrationStatus.FAILED
    assert result.error is not None
    assert result.error.type.endswith("BadThing")
    assert result.error.type.startswith(__name__)
    assert result.error.message == "it broke"
    assert result.error.traceback is not None
    assert "raise BadThing" in result.error.traceback
    assert isinstance(result.terminal_event, OrchestrationFailed)
    assert result.terminal_event.error == result.error


def test_cancelled_error_from_orchestration_code_fails_the_instance() -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        await ctx.create_timer(1)
        raise asyncio.CancelledError("not the dispatcher's")

    driver = Driver(orch).start()
    driver.turn()
    result = driver.complete_all().turn()  # returns instead of raising into the caller
    assert result.status is OrchestrationStatus.FAILED
    assert result.error is not None
    assert result.error.type == "asyncio.exceptions.CancelledError"
    assert result.error.message == "not the dispatcher's"


def test_sync_orchestration_function_fails_clearly() -> None:
    def orch(ctx: Ctx, _: Any) -> str:
        return "not a coroutine"

    result = Driver(orch).start().turn()  # type: ignore[arg-type]
    assert result.error is not None
    assert result.error.type == "TypeError"
    assert "must be an async function" in result.error.message


def test_output_not_json_fails_with_serialization_error() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        return {"when": object()}

    result = Driver(orch, name="Report").start().turn()
    assert result.status is OrchestrationStatus.FAILED
    assert result.error is not None
    assert result.error.type == "perdure.SerializationError"
    assert "output of orchestration 'Report'" in result.error.message


@pytest.mark.parametrize(
    "call",
    [
        lambda ctx: ctx.call_activity("echo", {1j, 2}),
        lambda ctx: ctx.call_sub_orchestration("Child", object()),
        lambda ctx: ctx.start_orchestration("Child", float("nan")),
        lambda ctx: ctx.send_event("other", "e", {"b": [object()]}),
    ],
    ids=["activity", "child", "detached", "send_event"],
)
def test_input_not_json_raises_serialization_error_at_the_call(call: Any) -> None:
    async def orch(ctx: Ctx, _: Any) -> str:
        try:
            call(ctx)
        except SerializationError as exc:
            return f"refused: {exc}"
        return "accepted"

    result = Driver(orch).start().turn()
    assert result.status is OrchestrationStatus.COMPLETED
    assert result.output.startswith("refused: the ")
    assert "is not a JSON value" in result.output
    assert result.decisions == [result.terminal_event]  # nothing was scheduled


def test_bad_names_are_refused_at_the_call() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[str]:
        refused = []
        for call in (
            lambda: ctx.call_activity(""),
            lambda: ctx.call_activity("a", queue=""),
            lambda: ctx.wait_for_event(""),
            lambda: ctx.send_event("", "e"),
            lambda: ctx.when_all([1]),  # type: ignore[list-item]
            lambda: ctx.when_any([]),
        ):
            try:
                call()
            except (ValueError, TypeError) as exc:
                refused.append(type(exc).__name__)
        return refused

    result = Driver(orch).start().turn()
    assert result.output == ["ValueError", "ValueError", "ValueError", "ValueError", "TypeError", "ValueError"]


# --- operator actions ------------------------------------------------------------------------


def test_suspend_holds_messages_back_until_resume() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        a = await ctx.call_activity("echo", "a")
        b = await ctx.wait_for_event("e")
        return [a, b]

    driver = Driver(orch, activities=ACTIVITIES).start()
    driver.turn()
    suspended = driver.turn(OrchestrationSuspended(reason="maintenance"))
    assert suspended.status is OrchestrationStatus.SUSPENDED
    assert kinds(suspended.new_events) == ["OrchestrationSuspended"]

    driver.complete_all().raise_event("e", "data")
    held = driver.turn()
    assert held.status is OrchestrationStatus.SUSPENDED
    assert held.consumed == []
    assert held.new_events == []
    assert len(driver.queue) == 2

    again = driver.turn(OrchestrationSuspended())
    assert again.dropped == [(2, "the instance is already suspended")]
    assert again.consumed == [2]

    resumed = driver.turn(OrchestrationResumed(reason="done"))
    # The resume is applied; the held-back messages stay queued behind it, in order.
    assert resumed.consumed == [2]
    assert resumed.status is OrchestrationStatus.RUNNING
    final = driver.turn()
    assert final.consumed == [0, 1]
    assert final.status is OrchestrationStatus.COMPLETED
    assert final.output == ["a", "data"]


def test_resume_of_a_running_instance_is_dropped() -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        await ctx.wait_for_event("e")

    driver = Driver(orch).start()
    driver.turn()
    result = driver.turn(OrchestrationResumed())
    assert result.dropped == [(0, "the instance is not suspended")]
    assert result.new_events == []


def test_replay_of_a_suspended_history_stays_suspended() -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        await ctx.wait_for_event("e")

    driver = Driver(orch).start()
    driver.turn()
    driver.turn(OrchestrationSuspended())
    assert replay(orch, driver.history).status is OrchestrationStatus.SUSPENDED


@pytest.mark.parametrize("suspended", [False, True])
def test_terminate(suspended: bool) -> None:
    finally_ran: list[bool] = []

    async def orch(ctx: Ctx, _: Any) -> None:
        try:
            await ctx.wait_for_event("never")
        finally:
            finally_ran.append(True)

    driver = Driver(orch).start()
    driver.turn()
    if suspended:
        driver.turn(OrchestrationSuspended())
    result = driver.terminate("operator said so").turn()
    assert result.status is OrchestrationStatus.TERMINATED
    assert result.error == ErrorDetails(type="Terminated", message="operator said so")
    assert isinstance(result.terminal_event, OrchestrationTerminated)
    assert result.terminal_event.reason == "operator said so"
    assert result.decisions == []
    assert finally_ran  # the coroutine was closed, nothing kept in memory
    later = driver.turn(EventRaised(name="never"))
    assert later.dropped == [(0, "the execution has already ended")]
    assert replay(orch, driver.history).status is OrchestrationStatus.TERMINATED


def test_duplicate_completions_are_dropped() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        return await ctx.when_all([ctx.call_activity("echo", 1), ctx.call_activity("echo", 2)])

    driver = Driver(orch, activities=ACTIVITIES).start()
    driver.turn()
    first = ActivityCompleted(source_event_id=2, result=1)
    result = driver.turn(first, ActivityCompleted(source_event_id=2, result="again"))
    assert result.consumed == [0, 1]
    assert result.dropped == [(1, "duplicate completion of event 2")]
    assert kinds(result.new_events) == ["ActivityCompleted"]
    result = driver.turn(ActivityFailed(source_event_id=2, error=ErrorDetails(type="X", message="late")))
    assert result.dropped == [(0, "duplicate completion of event 2")]
    final = driver.turn(ActivityCompleted(source_event_id=3, result=2))
    assert final.output == [1, 2]


def test_orchestration_without_input_parameter_gets_its_input_on_the_context() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        return [ctx.input, ctx.name, ctx.version, ctx.execution_id]

    assert Driver(orch, name="N", version="3.1.4").start({"k": 1}).turn().output == [{"k": 1}, "N", "3.1.4", 1]


def test_tasks_expose_done_result_and_exception() -> None:
    async def orch(ctx: Ctx, _: Any) -> list[Any]:
        ok = ctx.call_activity("echo", "v")
        bad = ctx.call_activity("boom", 1)
        states = [ok.done(), bad.done()]
        try:
            ok.result()
        except RuntimeError as exc:
            states.append(str(exc))
        await ctx.when_any([ctx.when_all([ok]), ctx.create_timer(999)])
        with contextlib.suppress(ActivityFailedError):
            await bad
        states += [ok.done(), ok.result(), ok.exception(), type(bad.exception()).__name__]
        return states

    driver = Driver(orch, activities=ACTIVITIES).start()
    driver.turn()
    driver.complete(2).turn()
    result = driver.complete(3).turn()
    assert result.output == [
        False,
        False,
        "the durable task has not finished yet",
        True,
        "v",
        None,
        "ActivityFailedError",
    ]


def test_new_turn_after_the_end_changes_nothing() -> None:
    async def orch(ctx: Ctx, _: Any) -> int:
        return 1

    driver = Driver(orch).start()
    assert isinstance(driver.turn().terminal_event, OrchestrationCompleted)
    result = driver.turn(ActivityCompleted(source_event_id=99))
    assert result.new_events == []
    assert result.status is OrchestrationStatus.COMPLETED
    assert result.output == 1


def test_timer_fired_event_is_recorded_with_its_fire_time() -> None:
    async def orch(ctx: Ctx, _: Any) -> None:
        await ctx.create_timer(2)

    driver = Driver(orch).start()
    (created,) = driver.turn().decisions
    assert isinstance(created, TimerCreated)
    driver.complete(created.event_id).turn()
    fired = driver.history[2]
    assert isinstance(fired, TimerFired)
    assert (fired.source_event_id, fired.fire_at) == (2, created.fire_at)
