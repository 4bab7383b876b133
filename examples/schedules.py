"""Schedules and a delayed start: orchestrations that start themselves, durably.

A schedule is created once and then lives in the store: any runtime on it starts each run when it
is due, once, even across restarts. Here an interval schedule sends a digest every second (every
few hours in real life), a cron schedule waits for 02:00 in Paris, and a report starts a little
later than asked for, with ``start_at``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo

from perdure import ActivityContext, Client, OrchestrationContext, Registry, Runtime, ScheduleInfo, SqliteProvider

T = TypeVar("T")
registry = Registry()


@registry.activity("SendDigest")
async def send_digest(ctx: ActivityContext, audience: str) -> str:
    return f"digest sent to {audience}"


@registry.orchestration("Digest")
async def digest(ctx: OrchestrationContext, audience: str) -> str:
    return str(await ctx.call_activity("SendDigest", audience))


@registry.orchestration("Report")
async def report(ctx: OrchestrationContext, _: Any) -> str:
    return "report ready"


async def until(check: Callable[[], Awaitable[T | None]]) -> T:
    """Poll ``check`` until it returns something: schedule commands take effect at its next turn."""
    while True:
        found = await check()
        if found is not None:
            return found
        await asyncio.sleep(0.05)


async def completed_runs(client: Client, schedule_id: str, count: int) -> list[str] | None:
    """The ids of the schedule's first ``count`` runs once they have completed (runs are ordinary instances)."""
    runs = [s.instance_id for s in await client.list_instances(instance_id_prefix=f"{schedule_id}@") if s.output]
    return runs[:count] if len(runs) >= count else None


async def in_state(client: Client, schedule_id: str, state: str) -> ScheduleInfo | None:
    info = await client.get_schedule(schedule_id)
    return info if info.state == state else None


async def new_run(client: Client, schedule_id: str, before: str | None) -> str | None:
    run = (await client.get_schedule(schedule_id)).last_run_id
    return run if run != before else None


async def none_left(client: Client) -> list[ScheduleInfo] | None:
    schedules = await client.list_schedules()
    return None if schedules else schedules


async def main() -> None:
    provider = await SqliteProvider.open(":memory:")
    async with Runtime(provider, registry):
        client = Client(provider)

        nightly = await client.create_schedule(
            "nightly-export", "Report", cron="0 2 * * *", timezone="Europe/Paris", overlap="skip"
        )
        assert nightly.next_fire_at is not None
        print(f"nightly-export: next run at {nightly.next_fire_at.astimezone(ZoneInfo('Europe/Paris')):%H:%M} in Paris")

        await client.create_schedule("digest", "Digest", "the team", every=1)
        runs = await until(lambda: completed_runs(client, "digest", 2))
        print(f"digest: {len(runs)} runs, one per second, ids like {runs[0].split('@')[0]}@<due time>")

        await client.pause_schedule("digest", "holidays")
        paused = await until(lambda: in_state(client, "digest", "paused"))
        print(f"digest: paused ({paused.note})")
        await client.trigger_schedule("digest")  # a run now, even while paused
        run = await until(lambda: new_run(client, "digest", paused.last_run_id))
        state = await client.wait_for_orchestration(run, timeout=10)
        print(f"digest: triggered while paused: {state.output}")

        await client.delete_schedule("digest")
        await client.delete_schedule("nightly-export")
        left = await until(lambda: none_left(client))
        print(f"schedules left: {len(left)}")

        start_at = datetime.now(UTC) + timedelta(seconds=0.5)
        await client.start_orchestration("report-late", "Report", start_at=start_at)
        before = await client.get_status("report-late")
        assert before is not None
        done = await client.wait_for_orchestration("report-late", timeout=10)
        print(f"report-late: {before.status.value} until start_at, then {done.status.value}: {done.output}")
    await provider.close()


if __name__ == "__main__":
    asyncio.run(main())
