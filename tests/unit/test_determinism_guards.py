"""Determinism guards: while orchestration code runs, and only in its thread, calls that differ on replay raise."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
import random
import secrets
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, date, datetime
from random import choice
from time import time as wall_clock
from typing import Any
from uuid import uuid4

import pytest
from engine_harness import T0, Driver, replay

from perdure import NonDeterminismError, NonDeterministicCallError, OrchestrationContext, OrchestrationStatus
from perdure.engine import ReplayOutcome
from perdure.engine import replay as engine_replay
from perdure.engine.events import OrchestrationStarted

Ctx = OrchestrationContext
NOW, RANDOM, GUID, BYTES = "ctx.now()", "ctx.random()", "ctx.new_guid()", "ctx.random().randbytes(n)"

# Module functions: refused wherever the call comes from, here a helper the code calls through a variable.
MODULE_CALLS: list[tuple[str, Callable[[], Any], str]] = [
    ("time.time()", lambda: time.time(), NOW),
    ("time.time_ns()", lambda: time.time_ns(), NOW),
    ("time.monotonic()", lambda: time.monotonic(), NOW),
    ("time.monotonic_ns()", lambda: time.monotonic_ns(), NOW),
    ("random.random()", lambda: random.random(), RANDOM),
    ("random.randint()", lambda: random.randint(1, 6), RANDOM),
    ("random.choice()", lambda: random.choice("ab"), RANDOM),
    ("random.shuffle()", lambda: random.shuffle([1, 2, 3]), RANDOM),
    ("random.uniform()", lambda: random.uniform(0, 1), RANDOM),
    ("random.getrandbits()", lambda: random.getrandbits(8), RANDOM),
    ("random.seed()", lambda: random.seed(7), RANDOM),
    ("uuid.uuid1()", lambda: uuid.uuid1(), GUID),
    ("uuid.uuid4()", lambda: uuid.uuid4(), GUID),
    ("os.urandom()", lambda: os.urandom(4), BYTES),
    ("secrets.token_hex()", lambda: secrets.token_hex(), BYTES),
    ("secrets.token_bytes()", lambda: secrets.token_bytes(), BYTES),
    ("secrets.choice()", lambda: secrets.choice("ab"), BYTES),
    ("secrets.randbelow()", lambda: secrets.randbelow(10), BYTES),
]


def first_turn(orchestration: Any, *, instance_id: str = "inst", guards: bool = True) -> ReplayOutcome:
    started = OrchestrationStarted(name="orch", version="1.0.0")
    return engine_replay(
        orchestration,
        instance_id=instance_id,
        execution_id=1,
        history=[],
        new_events=[started],
        now=T0,
        determinism_guards=guards,
    )


def refused(result: ReplayOutcome) -> str:
    """The message of the guarded call that failed the turn."""
    assert result.status is OrchestrationStatus.FAILED
    assert result.error is not None and result.error.type == "perdure.NonDeterministicCallError", result.error
    assert isinstance(result.engine_error, NonDeterministicCallError)
    return result.error.message


@pytest.mark.parametrize(("call", "function", "alternative"), MODULE_CALLS, ids=[c[0] for c in MODULE_CALLS])
def test_module_functions_raise_in_orchestration_code_naming_the_alternative(
    call: str, function: Callable[[], Any], alternative: str
) -> None:
    async def orchestration(ctx: Ctx, _: Any) -> Any:
        return str(function())

    message = refused(first_turn(orchestration))
    assert message.startswith(f"{call} in orchestration code answers differently on every replay")
    assert alternative in message


def test_every_module_level_function_of_random_is_guarded() -> None:
    first_turn(lambda_free)  # the guard is installed by the first guarded replay
    functions = [n for n in random.__all__ if not isinstance(getattr(random, n), type)]
    assert functions and all(hasattr(getattr(random, n), "__wrapped__") for n in functions)
    assert not hasattr(secrets.compare_digest, "__wrapped__")  # deterministic: left alone


async def lambda_free(ctx: Ctx, _: Any) -> None:
    return None


# Calls the wrappers cannot see (C methods, names imported before the guard), in the code itself.


async def calls_datetime_now(ctx: Ctx, _: Any) -> Any:
    return str(datetime.now(UTC))


async def calls_datetime_utcnow(ctx: Ctx, _: Any) -> Any:
    return str(datetime.utcnow())


async def calls_qualified_now(ctx: Ctx, _: Any) -> Any:
    return str(dt.datetime.now())


async def calls_date_today(ctx: Ctx, _: Any) -> Any:
    return str(date.today())


async def calls_datetime_today(ctx: Ctx, _: Any) -> Any:
    return str(dt.datetime.today())


async def calls_imported_time(ctx: Ctx, _: Any) -> Any:
    return wall_clock()


async def calls_imported_uuid4(ctx: Ctx, _: Any) -> Any:
    return str(uuid4())


async def calls_imported_choice(ctx: Ctx, _: Any) -> Any:
    return choice("ab")


current_time = datetime.now  # an alias made at import


async def calls_an_alias(ctx: Ctx, _: Any) -> Any:
    return str(current_time(UTC))


def stamp() -> str:
    return datetime.now(UTC).isoformat()


async def calls_a_helper_of_its_module(ctx: Ctx, _: Any) -> Any:
    await ctx.create_timer(1)
    return stamp()


async def calls_it_in_a_nested_function(ctx: Ctx, _: Any) -> Any:
    def later() -> str:
        return datetime.now(UTC).isoformat()

    return later()


@pytest.mark.parametrize(
    ("orchestration", "call", "alternative"),
    [
        (calls_datetime_now, "datetime.now()", NOW),
        (calls_datetime_utcnow, "datetime.utcnow()", NOW),
        (calls_qualified_now, "datetime.now()", NOW),
        (calls_date_today, "date.today()", NOW),
        (calls_datetime_today, "datetime.today()", NOW),
        (calls_imported_time, "time.time()", NOW),
        (calls_imported_uuid4, "uuid.uuid4()", GUID),
        (calls_imported_choice, "random.choice()", RANDOM),
        (calls_it_in_a_nested_function, "datetime.now()", NOW),
        (calls_an_alias, "datetime.now()", NOW),
    ],
    ids=lambda value: getattr(value, "__name__", None) or "",
)
def test_calls_in_the_code_itself_raise_naming_the_alternative(orchestration: Any, call: str, alternative: str) -> None:
    message = refused(first_turn(orchestration))
    assert message.startswith(f"{call} in orchestration code"), message
    assert alternative in message


def test_a_helper_of_the_same_module_is_checked_when_it_runs_on_replay() -> None:
    driver = Driver(calls_a_helper_of_its_module, verify=False).start()
    driver.turn()
    result = driver.complete_all().turn()
    assert "datetime.now() in orchestration code" in refused(result)


def test_the_error_is_a_non_determinism_error() -> None:
    assert issubclass(NonDeterministicCallError, NonDeterminismError)


def test_catching_the_error_does_not_save_the_turn() -> None:
    async def swallows(ctx: Ctx, _: Any) -> Any:
        try:
            return time.time()
        except Exception:
            return "carried on"

    assert "time.time()" in refused(first_turn(swallows))


def test_the_guard_can_be_turned_off() -> None:
    async def reads_the_clock(ctx: Ctx, _: Any) -> Any:
        return [time.time() > 0, datetime.now(UTC) > T0, len(str(uuid.uuid4())), random.random() < 1]

    result = first_turn(reads_the_clock, guards=False)
    assert result.status is OrchestrationStatus.COMPLETED, result.error
    assert result.output == [True, True, 36, True]


def test_other_threads_are_unaffected_while_orchestration_code_runs() -> None:
    inside, done = threading.Event(), threading.Event()
    results: dict[str, Any] = {}

    def activity_thread() -> None:
        inside.wait(5)
        for call, function, _ in MODULE_CALLS:
            results[call] = function()  # the orchestration's step is running right now
        results["datetime.now()"] = datetime.now(UTC)
        results["date.today()"] = date.today()
        done.set()

    async def waits_for_the_thread(ctx: Ctx, _: Any) -> Any:
        inside.set()
        assert done.wait(5)
        return time.time()

    worker = threading.Thread(target=activity_thread)
    worker.start()
    message = refused(first_turn(waits_for_the_thread))
    worker.join(5)
    assert "time.time()" in message
    assert len(results) == len(MODULE_CALLS) + 2
    assert results["time.time()"] > 0 and results["datetime.now()"] > T0


def test_outside_the_code_the_same_thread_is_unaffected() -> None:
    refused(first_turn(calls_datetime_now))
    assert time.time() > 0 and datetime.now(UTC) > T0 and uuid.uuid4() and random.random() < 1


def test_logging_from_orchestration_code_keeps_working(caplog: pytest.LogCaptureFixture) -> None:
    async def logs(ctx: Ctx, _: Any) -> str:
        ctx.logger.warning("from the context's logger")
        logging.getLogger("app").warning("from a plain logger")
        return "logged"

    with caplog.at_level(logging.WARNING):
        assert first_turn(logs).output == "logged"
    assert {r.getMessage() for r in caplog.records} >= {"from the context's logger", "from a plain logger"}


# --- the deterministic alternatives ------------------------------------------------------------


async def draws(ctx: Ctx, _: Any) -> list[float]:
    first = ctx.random().random()
    await ctx.create_timer(1)
    return [first, ctx.random().random(), ctx.random().randint(1, 1000)]


def test_ctx_random_gives_the_same_numbers_on_every_replay() -> None:
    driver = Driver(draws, instance_id="a").start()
    driver.run()  # the driver replays every committed turn and checks nothing changes
    numbers = driver.result.output
    assert len(set(numbers)) == 3
    again = replay(draws, driver.history, instance_id="a")
    assert again.new_events == [] and again.output == numbers


def test_ctx_random_differs_between_instances_and_executions() -> None:
    async def one_draw(ctx: Ctx, _: Any) -> float:
        assert ctx.random() is ctx.random()
        return ctx.random().random()

    def number(instance_id: str, execution_id: int) -> Any:
        started = OrchestrationStarted(name="orch", version="1.0.0")
        result = replay(one_draw, [], [started], instance_id=instance_id, execution_id=execution_id, now=T0)
        assert result.status is OrchestrationStatus.COMPLETED, result.error
        return result.output

    assert number("a", 1) == number("a", 1)
    assert len({number("a", 1), number("b", 1), number("a", 2)}) == 3


# --- asyncio instead of durable tasks ----------------------------------------------------------


def test_asyncio_gather_points_to_when_all() -> None:
    async def gathers(ctx: Ctx, _: Any) -> Any:
        return await asyncio.gather(ctx.call_activity("A"), ctx.call_activity("B"))

    result = first_turn(gathers)
    assert result.error is not None
    assert result.error.type == "perdure.NonDurableAwaitError"
    assert "asyncio.gather" in result.error.message and "ctx.when_all" in result.error.message


def test_asyncio_wait_points_to_when_any() -> None:
    async def waits(ctx: Ctx, _: Any) -> Any:
        return await asyncio.wait([ctx.call_activity("A")], return_when=asyncio.FIRST_COMPLETED)

    result = first_turn(waits)
    assert result.error is not None
    assert "asyncio.wait" in result.error.message and "ctx.when_any" in result.error.message
