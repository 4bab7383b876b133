"""Schedules and delayed starts on a running runtime, on both providers."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from tests.integration.runtime_support import running, wait_until

from perdure import (
    Client,
    InvalidInstanceStateError,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    RegistrationError,
    Registry,
    ScheduleAlreadyExistsError,
    ScheduleInfo,
    ScheduleNotFoundError,
    SyncClient,
)
from perdure.testing import Replayer

registry = Registry()


@registry.orchestration("Tick")
async def tick(ctx: OrchestrationContext, data: Any) -> Any:
    return {"ran": ctx.instance_id, "data": data}


@registry.orchestration("Held")
async def held(ctx: OrchestrationContext, _: Any) -> Any:
    """Runs until the test raises "Go" on it: a run that is still running when the next one is due."""
    return await ctx.wait_for_event("Go")


async def runs_of(client: Client, schedule_id: str) -> list[str]:
    return [s.instance_id for s in await client.list_instances(instance_id_prefix=f"{schedule_id}@")]


async def schedule_reads(client: Client, schedule_id: str, **expected: Any) -> ScheduleInfo:
    """Wait until the schedule reads as ``expected`` (commands take effect at its next turn)."""

    async def check() -> ScheduleInfo | None:
        info = await client.get_schedule(schedule_id)
        return info if all(getattr(info, k) == v for k, v in expected.items()) else None

    result: ScheduleInfo = await wait_until(check, timeout=15, what=f"schedule {schedule_id} reads {expected}")
    return result


async def test_an_interval_schedule_fires_pauses_resumes_is_triggered_and_deleted(provider: Provider) -> None:
    async with running(provider, registry) as client:
        created = await client.create_schedule("tick", "Tick", {"n": 1}, every=1, overlap="allow")
        assert created.state == "active" and created.next_fire_at is not None
        assert created.next_fire_at - created.created_at == timedelta(seconds=1)
        await wait_until(lambda: _at_least(client, "tick", 2), timeout=15, what="two runs")

        await client.pause_schedule("tick", "maintenance")
        paused = await schedule_reads(client, "tick", state="paused")
        assert paused.note == "maintenance"
        before = await runs_of(client, "tick")
        await client.trigger_schedule("tick")  # a trigger starts a run while paused, too
        await wait_until(lambda: _at_least(client, "tick", len(before) + 1), timeout=15, what="the triggered run")
        triggered = (await client.get_schedule("tick")).last_run_id
        assert triggered is not None and triggered.endswith(f"~{paused.fires + 1}")
        state = await client.wait_for_orchestration(triggered, timeout=15)
        assert state.output == {"ran": triggered, "data": {"n": 1}}
        assert len(await runs_of(client, "tick")) == len(before) + 1  # nothing else fired while paused

        await client.resume_schedule("tick")
        resumed = await schedule_reads(client, "tick", state="active")
        assert resumed.next_fire_at is not None and resumed.next_fire_at > paused.updated_at
        await wait_until(lambda: _at_least(client, "tick", len(before) + 2), timeout=15, what="a run after resume")

        await client.delete_schedule("tick")
        await wait_until(lambda: _gone(client, "tick"), timeout=15, what="the schedule gone")
        assert await client.list_schedules() == []
        count = len(await runs_of(client, "tick"))
        info = await client.get_status("schedule:tick")
        assert info is not None and info.status is OrchestrationStatus.COMPLETED
        await client.wait_for_orchestration((await runs_of(client, "tick"))[-1], timeout=15)
        assert len(await runs_of(client, "tick")) == count  # it fires no more

        # The id is free again; the new schedule starts from scratch.
        again = await client.create_schedule("tick", "Tick", every=60)
        assert again.fires == 0 and again.state == "active"
        assert [s.schedule_id for s in await client.list_schedules()] == ["tick"]
        # Its history replays against today's code, as any orchestration's does.
        for run in await client.list_instances(name="perdure.Schedule"):
            history = await client.get_history(run.instance_id)
            assert Replayer(registry).replay(history).ok


async def _at_least(client: Client, schedule_id: str, count: int) -> bool:
    return len(await runs_of(client, schedule_id)) >= count


async def _gone(client: Client, schedule_id: str) -> bool:
    try:
        await client.get_schedule(schedule_id)
    except ScheduleNotFoundError:
        return True
    return False


async def test_skip_starts_nothing_while_the_previous_run_still_runs(provider: Provider) -> None:
    async with running(provider, registry) as client:
        await client.create_schedule("held", "Held", every=1, overlap="skip")
        await wait_until(lambda: _at_least(client, "held", 1), timeout=15, what="the first run")
        first = (await runs_of(client, "held"))[0]
        info = await schedule_reads(client, "held", running=first)
        await asyncio.sleep(3.2)  # three due times come and go while the first run waits
        assert await runs_of(client, "held") == [first]
        await client.raise_event(first, "Go", "done")
        after = await schedule_reads(client, "held", running=None)
        assert after.skipped >= 3 and after.fires == 1 and info.fires == 1
        # The next due time after the run ended starts the next run.
        await wait_until(lambda: _at_least(client, "held", 2), timeout=15, what="the next run")
        second = (await runs_of(client, "held"))[1]
        assert second > first and (await client.get_schedule("held")).running == second
        await client.raise_event(second, "Go")
        await client.delete_schedule("held")


async def test_buffer_one_starts_one_kept_run_as_soon_as_the_previous_ends(provider: Provider) -> None:
    async with running(provider, registry) as client:
        await client.create_schedule("buf", "Held", every=1, overlap="buffer_one")
        await wait_until(lambda: _at_least(client, "buf", 1), timeout=15, what="the first run")
        first = (await runs_of(client, "buf"))[0]
        info = await schedule_reads(client, "buf", running=first)
        buffered = await wait_until(
            lambda: _buffered(client, "buf"), timeout=15, what="a due time kept while the first run runs"
        )
        await asyncio.sleep(2.2)
        assert await runs_of(client, "buf") == [first]
        await client.raise_event(first, "Go")
        await schedule_reads(client, "buf", running=buffered)  # started at once, not at the next due time
        final = await client.get_schedule("buf")
        assert final.skipped >= 2 and final.fires == info.fires + 1
        await client.raise_event(buffered, "Go")
        await client.delete_schedule("buf")


async def _buffered(client: Client, schedule_id: str) -> str | None:
    return (await client.get_schedule(schedule_id)).buffered


async def test_a_schedule_ends_after_end_at_and_then_takes_no_commands(provider: Provider) -> None:
    async with running(provider, registry) as client:
        start = datetime.now(UTC) + timedelta(seconds=1)
        await client.create_schedule("short", "Tick", every=1, start_at=start, end_at=start + timedelta(seconds=1))
        await client.wait_for_orchestration("schedule:short", timeout=15)  # after its last run ended
        ended = await client.get_schedule("short")
        assert ended.state == "ended" and ended.fires == 2 and ended.next_fire_at is None
        assert [s.schedule_id for s in await client.list_schedules()] == ["short"]
        with pytest.raises(InvalidInstanceStateError, match="'short' is ended"):
            await client.trigger_schedule("short")
        await client.delete_schedule("short")  # an ended schedule is purged at once
        with pytest.raises(ScheduleNotFoundError):
            await client.get_schedule("short")


async def test_schedule_calls_refuse_bad_input_and_unknown_or_taken_ids(provider: Provider) -> None:
    client = Client(provider)  # no runtime needed: every refusal comes before anything is stored
    with pytest.raises(ValueError, match="not a valid cron"):
        await client.create_schedule("x", "Tick", cron="0 25 * * *")
    with pytest.raises(ValueError, match="exactly one of cron= and every="):
        await client.create_schedule("x", "Tick")
    with pytest.raises(ValueError, match="unknown time zone"):
        await client.create_schedule("x", "Tick", cron="0 9 * * *", timezone="Europe/Atlantis")
    with pytest.raises(ValueError, match="overlap must be one of"):
        await client.create_schedule("x", "Tick", every=5, overlap="queue")  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="every takes seconds or a timedelta"):
        await client.create_schedule("x", "Tick", every="5s")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="catchup_window must be positive"):
        await client.create_schedule("x", "Tick", every=5, catchup_window=0)
    with pytest.raises(TypeError, match="catchup_window takes seconds or a timedelta"):
        await client.create_schedule("x", "Tick", every=5, catchup_window=None)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="would never fire"):
        await client.create_schedule("x", "Tick", every=60, end_at=datetime.now(UTC) + timedelta(seconds=30))
    for call in (client.get_schedule, client.pause_schedule, client.trigger_schedule, client.delete_schedule):
        with pytest.raises(ScheduleNotFoundError, match="no schedule with id 'nope'"):
            await call("nope")
    await client.start_orchestration("schedule:fake", "Tick")  # an instance that is not a schedule
    with pytest.raises(ScheduleNotFoundError):
        await client.get_schedule("fake")
    assert await client.list_schedules() == []
    await client.create_schedule("x", "Tick", cron="0 9 * * *", timezone="Europe/Paris")
    with pytest.raises(ScheduleAlreadyExistsError, match="'x' exists"):
        await client.create_schedule("x", "Tick", every=5)
    for schedule_id in ("w", "y", "z"):
        await client.create_schedule(schedule_id, "Tick", every=3600)
    first = await client.list_schedules(limit=2)
    assert [s.schedule_id for s in first] == ["w", "x"]
    assert [s.schedule_id for s in await client.list_schedules(limit=2, after="x")] == ["y", "z"]
    with pytest.raises(RegistrationError, match="built-in"):
        Registry().orchestration("perdure.Schedule")(tick)


async def test_a_delayed_start_stays_pending_until_start_at_and_keeps_what_came_meanwhile(provider: Provider) -> None:
    async with running(provider, registry) as client:
        start_at = datetime.now(UTC) + timedelta(seconds=2)
        await client.start_orchestration("later", "Held", start_at=start_at)
        await client.raise_event("later", "Go", "early")  # waits for the start, and is not poison
        await asyncio.sleep(1.0)
        state = await client.get_status("later")
        assert state is not None and state.status is OrchestrationStatus.PENDING
        done = await client.wait_for_orchestration("later", timeout=15)
        assert done.status is OrchestrationStatus.COMPLETED and done.output == "early"
        history = await client.get_history("later")
        assert history[0].timestamp >= start_at
        with pytest.raises(ValueError, match="start_at must be an aware datetime"):
            await client.start_orchestration("naive", "Tick", start_at=datetime(2030, 1, 1))
        # A restart can be delayed too, and a terminate does not wait for the start.
        await client.start_orchestration("later", "Tick", if_exists="restart", start_at=start_at + timedelta(days=1))
        restarted = await client.get_status("later")
        assert restarted is not None and restarted.status is OrchestrationStatus.PENDING
        assert await client.terminate("later", "not needed after all")
        ended = await client.wait_for_orchestration("later", timeout=15)
        assert ended.status is OrchestrationStatus.TERMINATED and ended.execution_id == restarted.execution_id


def test_sync_client_manages_schedules_from_code_without_a_loop(tmp_path: Path) -> None:
    with SyncClient(f"sqlite:///{tmp_path / 'sync.db'}") as client:
        created = client.create_schedule("report", "Tick", {"x": 1}, cron="0 9 * * mon", timezone="Europe/Paris")
        assert created.next_fire_at is not None and created.next_fire_at.astimezone(ZoneInfo("Europe/Paris")).hour == 9
        assert [s.schedule_id for s in client.list_schedules()] == ["report"]
        client.pause_schedule("report", "holidays")  # queued for the schedule's next turn
        assert client.get_schedule("report").cron == "0 9 * * mon"
        with pytest.raises(ScheduleAlreadyExistsError):
            client.create_schedule("report", "Tick", every=60)
        client.delete_schedule("report")
