"""RetryPolicy: validation, backoff, and retries replayed through durable timers."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from engine_harness import ActivityCall, Driver, replay

from perdure import (
    ActivityFailedError,
    ErrorDetails,
    OrchestrationContext,
    OrchestrationStatus,
    RetryPolicy,
    SubOrchestrationFailedError,
)
from perdure.engine.events import (
    ActivityFailed,
    ActivityScheduled,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
)

Ctx = OrchestrationContext


class Transient(Exception):
    pass


def flaky(ctx: ActivityCall, succeed_at: int) -> str:
    """Fails until attempt ``succeed_at``."""
    if ctx.attempt < succeed_at:
        raise Transient(f"attempt {ctx.attempt}")
    return f"ok at {ctx.attempt}"


def fatal(ctx: ActivityCall, _: Any) -> None:
    raise KeyError("missing")


ACTIVITIES = {"flaky": flaky, "fatal": fatal}


# --- validation and backoff ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, "max_attempts must be an int >= 1"),
        ({"max_attempts": True}, "max_attempts must be an int >= 1"),
        ({"max_attempts": 2.0}, "max_attempts must be an int >= 1"),
        ({"initial_interval": -1}, "initial_interval must not be negative"),
        ({"initial_interval": timedelta(seconds=-1)}, "initial_interval must not be negative"),
        ({"backoff_coefficient": 0.5}, "backoff_coefficient must be >= 1"),
        ({"max_interval": -0.1}, "max_interval must not be negative"),
    ],
)
def test_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RetryPolicy(**kwargs)


@pytest.mark.parametrize(
    ("kinds", "error", "message"),
    [
        ("KeyError", TypeError, "not one string"),
        (["KeyError", 42], TypeError, "not 42"),
        ([dict], TypeError, "not <class 'dict'>"),
        (["  "], ValueError, "must not hold an empty name"),
    ],
)
def test_non_retryable_errors_are_names_or_exception_classes(kinds: Any, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        RetryPolicy(non_retryable_errors=kinds)


def test_non_retryable_errors_are_kept_as_a_tuple_so_the_policy_is_hashable() -> None:
    policy = RetryPolicy(non_retryable_errors=["KeyError", ValueError])
    assert policy.non_retryable_errors == ("KeyError", ValueError)
    assert hash(policy) == hash(RetryPolicy(non_retryable_errors=("KeyError", ValueError)))


def test_defaults() -> None:
    policy = RetryPolicy()
    assert (policy.max_attempts, policy.delay_before(2), policy.delay_before(3)) == (3, 1.0, 2.0)


def test_backoff_is_exponential_and_bounded_by_max_interval() -> None:
    policy = RetryPolicy(
        max_attempts=6, initial_interval=timedelta(seconds=2), backoff_coefficient=3, max_interval=timedelta(seconds=10)
    )
    assert [policy.delay_before(n) for n in range(2, 7)] == [2, 6, 10, 10, 10]
    assert [RetryPolicy(initial_interval=1.5).delay_before(n) for n in (2, 3, 4)] == [1.5, 3.0, 6.0]


def test_should_retry() -> None:
    policy = RetryPolicy(max_attempts=3, non_retryable_errors=["KeyError", ValueError, "app.Fatal", "Boom"])
    transient = ErrorDetails(type="tests.Transient", message="")
    assert policy.should_retry(1, transient)
    assert policy.should_retry(2, transient)
    assert not policy.should_retry(3, transient)
    assert not policy.should_retry(1, ErrorDetails(type="KeyError", message=""))
    assert not policy.should_retry(1, ErrorDetails(type="ValueError", message=""))
    assert not policy.should_retry(1, ErrorDetails(type="app.Fatal", message=""))
    assert not policy.should_retry(1, ErrorDetails(type="other.module.Boom", message=""))  # by last component
    assert policy.should_retry(1, ErrorDetails(type="other.module.Fatal", message=""))  # a qualified name is exact
    assert policy.should_retry(1, ErrorDetails(type="app.NotFatal", message=""))


def test_should_retry_matches_a_class_by_its_qualified_name_and_not_its_subclasses() -> None:
    policy = RetryPolicy(max_attempts=3, non_retryable_errors=[Transient])
    assert not policy.should_retry(1, ErrorDetails.from_exception(Transient()))
    assert policy.should_retry(1, ErrorDetails(type="elsewhere.Transient", message=""))  # another class, same name

    class Narrower(Transient):
        pass

    assert policy.should_retry(1, ErrorDetails.from_exception(Narrower()))


# --- retries in an orchestration -----------------------------------------------------------------


def test_activity_retries_with_backoff_timers_and_attempt_numbers() -> None:
    policy = RetryPolicy(max_attempts=5, initial_interval=2, backoff_coefficient=3, max_interval=10)

    async def orch(ctx: Ctx, succeed_at: int) -> Any:
        return await ctx.call_activity("flaky", succeed_at, retry=policy)

    driver = Driver(orch, activities=ACTIVITIES).start(5)
    result = driver.run()
    assert result.status is OrchestrationStatus.COMPLETED
    assert result.output == "ok at 5"
    scheduled = [e for e in driver.history if isinstance(e, ActivityScheduled)]
    assert [e.attempt for e in scheduled] == [1, 2, 3, 4, 5]
    assert {(e.name, e.input) for e in scheduled} == {("flaky", 5)}
    failures = [e for e in driver.history if isinstance(e, ActivityFailed)]
    timers = [e for e in driver.history if isinstance(e, TimerCreated)]
    assert [f.error.message for f in failures] == ["attempt 1", "attempt 2", "attempt 3", "attempt 4"]
    # Each backoff timer is decided in response to the failure, due after the policy's delay.
    delays = [(t.fire_at - f.timestamp).total_seconds() for f, t in zip(failures, timers, strict=True)]
    assert delays == [2, 6, 10, 10]
    for failure, timer in zip(failures, timers, strict=True):
        assert timer.event_id == failure.event_id + 1
    assert [type(e).__name__ for e in driver.history[1:6]] == [
        "ActivityScheduled",
        "ActivityFailed",
        "TimerCreated",
        "TimerFired",
        "ActivityScheduled",
    ]


def test_retries_give_up_after_max_attempts() -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        try:
            await ctx.call_activity("flaky", 99, retry=RetryPolicy(max_attempts=3, initial_interval=1))
        except ActivityFailedError as exc:
            return exc.details.message

    driver = Driver(orch, activities=ACTIVITIES).start()
    assert driver.run().output == "attempt 3"
    assert sum(isinstance(e, ActivityScheduled) for e in driver.history) == 3
    assert sum(isinstance(e, TimerFired) for e in driver.history) == 2


@pytest.mark.parametrize("non_retryable", ["KeyError", KeyError])
def test_non_retryable_error_fails_at_once(non_retryable: Any) -> None:
    async def orch(ctx: Ctx, _: Any) -> Any:
        policy = RetryPolicy(max_attempts=5, non_retryable_errors=[non_retryable])
        return await ctx.call_activity("fatal", None, retry=policy)

    driver = Driver(orch, activities=ACTIVITIES).start()
    result = driver.run()
    assert result.status is OrchestrationStatus.FAILED
    assert result.error is not None
    assert result.error.type == "perdure.ActivityFailedError"
    assert "KeyError" in result.error.message
    assert sum(isinstance(e, ActivityScheduled) for e in driver.history) == 1
    assert not any(isinstance(e, TimerCreated) for e in driver.history)


@pytest.mark.parametrize("non_retryable", ["KeyError", KeyError])
def test_non_retryable_child_failure_fails_at_once_and_others_are_retried(non_retryable: Any) -> None:
    async def child(ctx: Ctx, error: str) -> Any:
        if error == "KeyError":
            raise KeyError("gone")
        raise Transient("later")

    async def orch(ctx: Ctx, _: Any) -> Any:
        policy = RetryPolicy(max_attempts=3, initial_interval=1, non_retryable_errors=[non_retryable])
        failures = []
        for error in ("KeyError", "Transient"):
            try:
                await ctx.call_sub_orchestration("Child", error, retry=policy)
            except SubOrchestrationFailedError as exc:
                failures.append(exc.details.type)
        return failures

    driver = Driver(orch, children={"Child": child}).start()
    result = driver.run()
    assert result.output == ["KeyError", f"{__name__}.Transient"]
    scheduled = [e.input for e in driver.history if isinstance(e, SubOrchestrationScheduled)]
    assert scheduled == ["KeyError", "Transient", "Transient", "Transient"]


def test_retry_replays_identically_from_every_committed_turn() -> None:
    async def orch(ctx: Ctx, succeed_at: int) -> Any:
        return await ctx.call_activity("flaky", succeed_at, retry=RetryPolicy(max_attempts=4, initial_interval=3))

    driver = Driver(orch, activities=ACTIVITIES).start(3)  # the harness replays after each turn
    driver.run()
    boundaries = [0]
    for result in driver.results:
        boundaries.append(boundaries[-1] + len(result.new_events))
    for end in boundaries:
        again = replay(orch, driver.history[:end])
        assert again.new_events == []
        assert again.error is None


def test_sub_orchestration_retry_uses_a_new_instance_per_attempt() -> None:
    async def child(ctx: Ctx, succeed_at: int) -> Any:
        return await ctx.call_activity("flaky", succeed_at)

    async def orch(ctx: Ctx, _: Any) -> Any:
        policy = RetryPolicy(max_attempts=3, initial_interval=1)
        named = await ctx.call_sub_orchestration("Child", 1, instance_id="kid", retry=policy)
        try:
            await ctx.call_sub_orchestration("Child", 99, retry=policy)
        except SubOrchestrationFailedError as exc:
            return [named, exc.details.type]

    driver = Driver(orch, activities=ACTIVITIES, children={"Child": child}).start()
    result = driver.run()
    assert result.output == ["ok at 1", "perdure.ActivityFailedError"]
    ids = [e.instance_id for e in driver.history if isinstance(e, SubOrchestrationScheduled)]
    assert ids == ["kid", "inst:1:1", "inst:1:2", "inst:1:3"]


def test_explicit_child_id_gets_a_suffix_on_retries() -> None:
    calls: list[str] = []

    async def child(ctx: Ctx, _: Any) -> Any:
        calls.append(ctx.instance_id)
        if len(calls) < 3:
            raise Transient("not yet")
        return ctx.instance_id

    async def orch(ctx: Ctx, _: Any) -> Any:
        return await ctx.call_sub_orchestration("Child", instance_id="kid", retry=RetryPolicy(initial_interval=1))

    driver = Driver(orch, children={"Child": child}, verify=False).start()
    assert driver.run().output == "kid:3"
    assert calls == ["kid", "kid:2", "kid:3"]
