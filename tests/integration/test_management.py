"""Instance management: terminate, suspend, resume, events and purge, with their refusals."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from tests.integration.runtime_support import history_has, running, wait_until

from perdure import (
    ActivityContext,
    Client,
    InstanceNotFoundError,
    InvalidInstanceStateError,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    SqliteProvider,
)
from perdure.engine.events import (
    OrchestrationStarted,
    OrchestrationSuspended,
    OrchestrationTerminated,
    TimerCreated,
)


async def rows_left(provider: Provider, instance_id: str) -> dict[str, int]:
    """Rows that mention ``instance_id`` in every table of the store that has an instance_id column."""
    counts: dict[str, int] = {}
    if isinstance(provider, SqliteProvider):
        db = provider._db
        tables = [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in tables:
            columns = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
            if "instance_id" in columns:
                query = f"SELECT count(*) FROM {table} WHERE instance_id = ?"
                counts[table] = db.execute(query, (instance_id,)).fetchone()[0]
        return counts
    import psycopg
    from tests.conftest import POSTGRES_URL

    schema = provider.schema  # type: ignore[attr-defined]
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
        cursor = await conn.execute(
            "SELECT table_name FROM information_schema.columns WHERE table_schema = %s AND column_name = 'instance_id'",
            (schema,),
        )
        for (table,) in await cursor.fetchall():
            found = await conn.execute(
                f'SELECT count(*) FROM "{schema}"."{table}" WHERE instance_id = %s', (instance_id,)
            )
            counts[table] = (await found.fetchone())[0]  # type: ignore[index]
    return counts


def family_registry() -> Registry:
    """Parent → child → grandchild; the grandchild waits forever for an event."""
    registry = Registry()

    @registry.orchestration("Grandchild")
    async def grandchild(ctx: OrchestrationContext, _: Any) -> str:
        return str(await ctx.wait_for_event("never"))

    @registry.orchestration("Child")
    async def child(ctx: OrchestrationContext, _: Any) -> str:
        return str(await ctx.call_sub_orchestration("Grandchild", instance_id="grandchild"))

    @registry.orchestration("Parent")
    async def parent(ctx: OrchestrationContext, _: Any) -> str:
        try:
            return str(await ctx.call_sub_orchestration("Child", instance_id="child"))
        except Exception as exc:
            return f"parent saw {type(exc).__name__}: {exc}"

    @registry.orchestration("Quick")
    async def quick(ctx: OrchestrationContext, _: Any) -> str:
        return "quick"

    return registry


async def test_terminate_cascades_to_the_grandchild_and_the_waiting_parent_sees_a_failure(provider: Provider) -> None:
    async with running(provider, family_registry()) as client:
        await client.start_orchestration("parent", "Parent")
        await wait_until(lambda: history_has(client, "grandchild", OrchestrationStarted), what="grandchild started")
        assert await client.terminate("child", "operator said stop") is True
        for instance_id in ("child", "grandchild"):
            state = await client.wait_for_orchestration(instance_id)
            assert state.status is OrchestrationStatus.TERMINATED, instance_id
            terminated = (await client.get_history(instance_id))[-1]
            assert isinstance(terminated, OrchestrationTerminated)
            assert terminated.reason == "operator said stop"
        parent = await client.wait_for_orchestration("parent")
    assert parent.status is OrchestrationStatus.COMPLETED
    assert parent.output.startswith("parent saw SubOrchestrationFailedError")
    assert "operator said stop" in parent.output


async def test_terminate_without_recursion_leaves_children_running(provider: Provider) -> None:
    async with running(provider, family_registry()) as client:
        await client.start_orchestration("child", "Child")
        await wait_until(lambda: history_has(client, "grandchild", OrchestrationStarted), what="grandchild started")
        await client.terminate("child", recursive=False)
        assert (await client.wait_for_orchestration("child")).status is OrchestrationStatus.TERMINATED
        await client.raise_event("grandchild", "never", "still alive")
        grandchild = await client.wait_for_orchestration("grandchild")
    assert (grandchild.status, grandchild.output) == (OrchestrationStatus.COMPLETED, "still alive")


async def test_terminating_a_finished_instance_changes_nothing_and_says_so(provider: Provider) -> None:
    async with running(provider, family_registry()) as client:
        await client.start_orchestration("done", "Quick")
        before = await client.wait_for_orchestration("done")
        assert await client.terminate("done", "too late") is False
        await asyncio.sleep(0.05)  # a wrongly queued termination would have been processed by now
        after = await client.get_status("done")
        history = await client.get_history("done")
    assert after == before
    assert not any(isinstance(e, OrchestrationTerminated) for e in history)


async def test_suspended_instance_applies_a_due_timer_and_a_finished_activity_after_resume(provider: Provider) -> None:
    registry = Registry()
    release = asyncio.Event()

    @registry.activity("Slow")
    async def slow(ctx: ActivityContext, value: int) -> int:
        await release.wait()
        return value * 10

    @registry.orchestration("Suspendable")
    async def suspendable(ctx: OrchestrationContext, value: int) -> list[Any]:
        work = ctx.call_activity("Slow", value)
        await ctx.create_timer(0.2)
        return [await work, "timer fired"]

    async with running(provider, registry) as client:
        await client.start_orchestration("s", "Suspendable", 4)
        await wait_until(lambda: history_has(client, "s", TimerCreated), what="the timer was created")
        await client.suspend("s", "maintenance")
        await wait_until(
            lambda: _status_is(client, "s", OrchestrationStatus.SUSPENDED), what="the instance is suspended"
        )
        release.set()  # the activity completes while the instance is suspended…
        await asyncio.sleep(0.4)  # …and the timer becomes due
        history = await client.get_history("s")
        assert isinstance(history[-1], OrchestrationSuspended), "nothing is applied while suspended"
        assert (await client.get_status("s")).status is OrchestrationStatus.SUSPENDED  # type: ignore[union-attr]
        with pytest.raises(InvalidInstanceStateError):
            await client.suspend("s")
        await client.resume("s", "maintenance over")
        state = await client.wait_for_orchestration("s")
    assert (state.status, state.output) == (OrchestrationStatus.COMPLETED, [40, "timer fired"])


async def test_events_raised_while_suspended_arrive_after_resume_in_order(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration("Collector")
    async def collector(ctx: OrchestrationContext, count: int) -> list[Any]:
        return [await ctx.wait_for_event("item") for _ in range(count)]

    async with running(provider, registry) as client:
        await client.start_orchestration("c", "Collector", 5)
        await client.raise_event("c", "item", 0)
        await wait_until(lambda: history_has(client, "c", OrchestrationStarted), what="started")
        await client.suspend("c")
        await wait_until(lambda: _status_is(client, "c", OrchestrationStatus.SUSPENDED), what="suspended")
        for n in range(1, 5):
            await client.raise_event("c", "item", n)
        await asyncio.sleep(0.05)
        assert (await client.get_status("c")).status is OrchestrationStatus.SUSPENDED  # type: ignore[union-attr]
        await client.resume("c")
        state = await client.wait_for_orchestration("c")
    assert state.output == [0, 1, 2, 3, 4]


async def test_suspend_and_resume_refuse_states_where_they_make_no_sense(provider: Provider) -> None:
    async with running(provider, family_registry()) as client:
        await client.start_orchestration("done", "Quick")
        await client.wait_for_orchestration("done")
        with pytest.raises(InvalidInstanceStateError, match="COMPLETED"):
            await client.suspend("done")
        with pytest.raises(InvalidInstanceStateError, match="not SUSPENDED"):
            await client.resume("done")
        for call in (client.suspend, client.resume, client.terminate, client.purge):
            with pytest.raises(InstanceNotFoundError):
                await call("nobody")


async def test_purge_deletes_every_row_of_a_finished_family(provider: Provider) -> None:
    registry = Registry()

    @registry.activity("Noop")
    async def noop(ctx: ActivityContext, _: Any) -> None:
        return None

    @registry.orchestration("Leaf")
    async def leaf(ctx: OrchestrationContext, _: Any) -> str:
        await ctx.call_activity("Noop")
        await ctx.create_timer(0.01)
        return "leaf"

    @registry.orchestration("Root")
    async def root(ctx: OrchestrationContext, _: Any) -> list[Any]:
        return await ctx.when_all([ctx.call_sub_orchestration("Leaf", instance_id=f"leaf-{n}") for n in range(2)])

    async with running(provider, registry) as client:
        await client.start_orchestration("root", "Root")
        await client.start_orchestration("bystander", "Leaf")
        assert (await client.wait_for_orchestration("root")).output == ["leaf", "leaf"]
        await client.wait_for_orchestration("bystander")
        assert sum((await rows_left(provider, "leaf-0")).values()) > 0
        assert await client.purge("root") == 3
        for instance_id in ("root", "leaf-0", "leaf-1"):
            assert await client.get_status(instance_id) is None
            assert set((await rows_left(provider, instance_id)).values()) == {0}, instance_id
        assert (await client.get_status("bystander")) is not None
        with pytest.raises(InstanceNotFoundError):
            await client.purge("root")


async def test_purge_refuses_a_running_instance_and_keeps_it(provider: Provider) -> None:
    async with running(provider, family_registry()) as client:
        await client.start_orchestration("busy", "Grandchild")
        await wait_until(lambda: history_has(client, "busy", OrchestrationStarted), what="started")
        with pytest.raises(InvalidInstanceStateError, match="RUNNING"):
            await client.purge("busy")
        await client.raise_event("busy", "never", "fine")
        assert (await client.wait_for_orchestration("busy")).output == "fine"


async def test_bulk_purge_by_status_and_age(provider: Provider) -> None:
    registry = family_registry()

    @registry.orchestration("Fails")
    async def fails(ctx: OrchestrationContext, _: Any) -> None:
        raise ValueError("boom")

    async with running(provider, registry) as client:
        for n in range(7):
            await client.start_orchestration(f"ok-{n}", "Quick")
        for n in range(3):
            await client.start_orchestration(f"bad-{n}", "Fails")
        await client.start_orchestration("waiting", "Grandchild")
        for n in range(7):
            await client.wait_for_orchestration(f"ok-{n}")
        for n in range(3):
            await client.wait_for_orchestration(f"bad-{n}")
        cutoff = datetime.now(UTC) + timedelta(seconds=1)
        assert await client.purge_instances(created_before=datetime.now(UTC) - timedelta(days=1)) == 0
        seen: list[int] = []
        purged = await client.purge_instances(
            status=OrchestrationStatus.FAILED, created_before=cutoff, batch_size=2, progress=seen.append
        )
        assert purged == 3
        assert seen == [2, 3]
        assert await client.purge_instances(created_before=cutoff) == 7
        left = [s.instance_id for s in await client.list_instances()]
    assert left == ["waiting"]


async def _status_is(client: Client, instance_id: str, status: OrchestrationStatus) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and state.status is status
