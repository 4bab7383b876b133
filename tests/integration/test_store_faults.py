"""A store that misbehaves for one instance: a write it refuses, a row it cannot decode, a clock that jumps.

Each case checks the promise of issue 13 on every provider it applies to: the bad instance fails
alone and clearly, at once, and every other instance goes on as if nothing happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import pytest
from runtime_support import history_has, raw_sql, running, wait_until

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    RuntimeOptions,
    SqliteProvider,
)
from perdure.engine.events import EventRaised, OrchestrationFailed
from perdure.providers import DataRefusedError, Message, _clock

ONE_SLOT = RuntimeOptions(
    orchestration_concurrency=1, idle_timeout=1.0, dispatch_backoff=0.01, max_dispatch_backoff=0.05
)
MARKER = "refuse-me"


async def refuse_rows(provider: Provider, table: str, column: str) -> None:
    """Make the store refuse every row of ``table`` whose ``column`` holds the marker, as a deterministic error.

    PostgreSQL raises SQLSTATE 54000 (what an index row that is too large raises); SQLite raises a
    constraint error.
    """
    if isinstance(provider, SqliteProvider):
        await raw_sql(
            provider,
            f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} WHEN NEW.{column} LIKE '%{MARKER}%' "
            "BEGIN SELECT RAISE(ABORT, 'row too large'); END",
        )
        return
    await raw_sql(
        provider,
        f"CREATE FUNCTION refuse_{table}() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"IF NEW.{column} LIKE '%{MARKER}%' THEN RAISE EXCEPTION 'index row size exceeds maximum' "
        "USING ERRCODE = 'program_limit_exceeded'; END IF; RETURN NEW; END $$; "
        f"CREATE TRIGGER refuse_{table} BEFORE INSERT ON {table} FOR EACH ROW EXECUTE FUNCTION refuse_{table}()",
    )


def _registry() -> Registry:
    registry = Registry()

    @registry.activity()
    async def echo(ctx: ActivityContext, value: Any) -> Any:
        return value

    @registry.orchestration()
    async def relay(ctx: OrchestrationContext, value: Any) -> Any:
        return await ctx.call_activity("echo", value)

    @registry.orchestration()
    async def waiter(ctx: OrchestrationContext, value: Any) -> Any:
        return [value, await ctx.wait_for_event("go")]

    return registry


# --- writes the store refuses (issue 13, item 3) -------------------------------------------------


@pytest.mark.parametrize("when", ["first turn", "later turn"])
async def test_a_turn_the_store_refuses_fails_its_instance_at_once_and_frees_the_slot(
    provider: Provider, when: str
) -> None:
    await refuse_rows(provider, "history", "event")
    async with running(provider, _registry(), ONE_SLOT) as client:
        if when == "first turn":  # its OrchestrationStarted holds the marker
            await client.start_orchestration("bad", "relay", MARKER)
        else:  # its ActivityCompleted does
            await client.start_orchestration("bad", "relay", {"text": MARKER, "pad": "x"})
        await client.start_orchestration("good", "relay", "fine")
        began = time.monotonic()
        good = await client.wait_for_orchestration("good", timeout=30)
        bad = await client.wait_for_orchestration("bad", timeout=30)
        took = time.monotonic() - began

    assert good.status is OrchestrationStatus.COMPLETED and good.output == "fine"
    assert took < 5, f"one refused instance held the only dispatcher slot for {took:.1f} s"
    assert bad.status is OrchestrationStatus.FAILED
    assert bad.error is not None and bad.error.type == "perdure.providers.DataRefusedError"
    expected = "SQLSTATE 54000 (ProgramLimitExceeded)" if provider_is_postgres(provider) else "SQLite refused"
    assert expected in bad.error.message
    assert "the store refused to record a turn" in bad.error.message


async def test_a_client_call_the_store_refuses_fails_at_once(provider: Provider) -> None:
    await refuse_rows(provider, "instances", "input")
    client = Client(provider)
    began = time.monotonic()
    with pytest.raises(DataRefusedError) as raised:
        await client.start_orchestration("bad", "relay", MARKER)
    assert time.monotonic() - began < 5
    assert raised.value.__cause__ is not None
    assert await client.get_status("bad") is None
    await client.start_orchestration("good", "relay", "fine")  # the store itself is fine


def provider_is_postgres(provider: Provider) -> bool:
    return not isinstance(provider, SqliteProvider)


# --- rows that cannot be decoded (issue 13, item 4) ----------------------------------------------

CORRUPTIONS = {
    "input": "{not json",
    "output": "[1, 2",
    "error": '{"type": 1}',
    "custom_status": "nope",
    "status": "BOGUS",
    "created_at": None,  # per provider: a text on SQLite, infinity on PostgreSQL
}


def _garbage(provider: Provider, column: str) -> str:
    if column == "created_at":
        return "yesterday" if isinstance(provider, SqliteProvider) else "infinity"
    value = CORRUPTIONS[column]
    assert value is not None
    return value


@pytest.mark.parametrize("column", list(CORRUPTIONS))
async def test_an_undecodable_instance_row_fails_that_instance_alone(provider: Provider, column: str) -> None:
    async with running(provider, _registry()) as client:
        await client.start_orchestration("bad", "waiter", "x")
        await wait_until(lambda: _running(client, "bad"), what="the instance waits for its event")
        param = _param(provider)
        await raw_sql(
            provider,
            f"UPDATE instances SET {column} = {param} WHERE instance_id = 'bad'",
            {"v": _garbage(provider, column)},
        )
        # Reading it never raises: it reads as corrupted, alone and within its page.
        state = await client.get_status("bad")
        assert state is not None and state.error is not None
        assert state.error.type == "perdure.HistoryFormatError"
        assert f"column {column!r}" in state.error.message
        await client.start_orchestration("good", "relay", 1)
        listed = {s.instance_id: s for s in await client.list_instances()}
        assert set(listed) == {"bad", "good"}

        # Its next turn fails it (a garbage status reads as FAILED already); everyone else runs on.
        # The event comes as another instance would send it: the client refuses events to a FAILED one.
        await provider.enqueue_messages(
            [Message(instance_id="bad", execution_id=None, event=EventRaised(name="go", data=1))]
        )
        good = await client.wait_for_orchestration("good", timeout=10)
        assert good.status is OrchestrationStatus.COMPLETED
        await wait_until(lambda: history_has(client, "bad", OrchestrationFailed), what="the bad instance fails")
        bad = await client.get_status("bad")
        assert bad is not None and bad.status is OrchestrationStatus.FAILED
        assert bad.error is not None and "the stored instance row is corrupted" in bad.error.message
        assert f"column {column!r}" in bad.error.message
        assert await client.purge("bad") == 1
        assert await client.get_status("bad") is None


async def test_terminate_and_purge_work_on_an_instance_whose_row_is_corrupted(provider: Provider) -> None:
    async with running(provider, _registry()) as client:
        for instance_id in ("payload", "status"):
            await client.start_orchestration(instance_id, "waiter", "x")
            await wait_until(lambda i=instance_id: _running(client, i), what="the instances wait")  # type: ignore[misc]
        param = _param(provider)
        await raw_sql(
            provider, f"UPDATE instances SET custom_status = {param} WHERE instance_id = 'payload'", {"v": "{"}
        )
        await raw_sql(provider, f"UPDATE instances SET status = {param} WHERE instance_id = 'status'", {"v": "??"})

        assert await client.terminate("payload", "stop it") is True  # readable status RUNNING: the request goes out
        ended = await client.wait_for_orchestration("payload", timeout=10)
        assert ended.status is OrchestrationStatus.FAILED  # its turn cannot run: it fails, and says why
        assert ended.error is not None and "column 'custom_status'" in ended.error.message

        assert await client.terminate("status") is False  # reads as FAILED: nothing left to stop
        assert await client.purge("payload") == 1
        assert await client.purge("status") == 1
        assert await client.list_instances() == []


def _param(provider: Provider) -> str:
    return ":v" if isinstance(provider, SqliteProvider) else "%(v)s"


async def _running(client: Client, instance_id: str) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and state.status is OrchestrationStatus.RUNNING


# --- wall-clock jumps on SQLite (issue 13, item 11) ----------------------------------------------


@pytest.fixture
def wall_clock(monkeypatch: pytest.MonkeyPatch) -> Callable[[float], None]:
    """Moves the system's wall clock as this process sees it (``time.time``); a fresh process clock."""
    real = time.time
    offset = [0.0]
    monkeypatch.setattr(time, "time", lambda: real() + offset[0])
    monkeypatch.setattr(_clock, "CLOCK", _clock.Clock())

    def jump(seconds: float) -> None:
        offset[0] += seconds

    return jump


async def test_a_wall_clock_set_back_does_not_delay_a_timer(
    sqlite_provider: SqliteProvider, wall_clock: Callable[[float], None]
) -> None:
    registry = Registry()

    @registry.orchestration()
    async def sleeper(ctx: OrchestrationContext) -> str:
        await ctx.create_timer(2.0)
        return "woke"

    async with running(sqlite_provider, registry) as client:
        await client.start_orchestration("sleeper", "sleeper")
        await wait_until(lambda: _running(client, "sleeper"), what="the timer is set")
        began = time.monotonic()
        wall_clock(-60)
        state = await client.wait_for_orchestration("sleeper", timeout=20)
        took = time.monotonic() - began
    assert state.output == "woke"
    assert took < 4, f"a 2 s timer fired after {took:.1f} s"


async def test_a_wall_clock_set_forward_does_not_run_a_running_activity_twice(
    sqlite_provider: SqliteProvider, wall_clock: Callable[[float], None]
) -> None:
    runs: list[float] = []
    registry = Registry()

    @registry.activity()
    async def slow(ctx: ActivityContext) -> int:
        runs.append(time.monotonic())
        await asyncio.sleep(4)
        return len(runs)

    @registry.orchestration()
    async def calls_slow(ctx: OrchestrationContext) -> Any:
        return await ctx.call_activity("slow")

    options = RuntimeOptions(activity_lock_seconds=3, activity_concurrency=4, idle_timeout=0.2)
    async with running(sqlite_provider, registry, options) as client:
        await client.start_orchestration("slow", "calls_slow")
        await wait_until(lambda: runs, what="the activity starts")
        wall_clock(300)  # five minutes forward while it runs (its lock was for 3 s)
        state = await client.wait_for_orchestration("slow", timeout=20)
    assert state.status is OrchestrationStatus.COMPLETED
    assert len(runs) == 1, "another dispatcher took the running activity over"
