"""What only the PostgreSQL provider does: migrations, schemas, notifications across processes, reconnects."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

pytest.importorskip("psycopg")

import psycopg
from tests.conftest import POSTGRES_URL
from tests.integration.test_provider_contract import (
    beat,
    drain_orchestrations,
    liveness,
    request,
    run_start_turn,
    run_start_turn_for_work,
    worker,
)

from perdure import Client, OrchestrationStatus, ProviderError, Registry, Runtime, RuntimeOptions, open_provider
from perdure.engine import encode_event
from perdure.engine.events import EventRaised, OrchestrationResumed, OrchestrationStarted, StartRequested
from perdure.providers import InstanceUpdate, Message, NewInstance, TurnCommit, _clock
from perdure.providers._sql import read_sql
from perdure.providers.postgres import PostgresProvider, _migrate
from perdure.providers.postgres._migrate import apply_migrations, migrations
from perdure.providers.postgres._params import turn_params

pytestmark = pytest.mark.postgres


def _start(instance_id: str) -> Message:
    return Message(
        instance_id=instance_id, execution_id=None, event=StartRequested(name="N"), new_instance=NewInstance(name="N")
    )


@pytest.fixture
async def admin() -> AsyncIterator[psycopg.AsyncConnection[Any]]:
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        yield conn


@pytest.fixture
async def schemas(admin: psycopg.AsyncConnection[Any]) -> AsyncIterator[list[str]]:
    """Schema names for the test; every one is dropped afterwards."""
    names = [f"test_{uuid.uuid4().hex[:12]}" for _ in range(3)]
    yield names
    for name in names:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')


async def _shape(conn: psycopg.AsyncConnection[Any], schema: str) -> dict[str, list[Any]]:
    """Columns, indexes, constraints and functions of ``schema``, with the schema name taken out."""
    queries = {
        "columns": """SELECT table_name, column_name, ordinal_position, data_type, is_nullable, column_default,
                             is_identity FROM information_schema.columns
                      WHERE table_schema = %(s)s AND table_name <> 'schema_migrations' ORDER BY 1, 3""",
        "indexes": """SELECT tablename, indexname, replace(indexdef, %(s)s, 'S') FROM pg_indexes
                      WHERE schemaname = %(s)s AND tablename <> 'schema_migrations' ORDER BY 1, 2""",
        "constraints": """SELECT table_name, constraint_name, constraint_type FROM information_schema.table_constraints
                          WHERE table_schema = %(s)s AND table_name <> 'schema_migrations'
                            AND constraint_type <> 'CHECK' ORDER BY 1, 2""",
        "functions": """SELECT p.proname, pg_get_function_arguments(p.oid), pg_get_function_result(p.oid), p.prosrc
                        FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
                        WHERE n.nspname = %(s)s ORDER BY 1, 2""",
    }
    shape = {}
    for key, query in queries.items():
        cursor = await conn.execute(query, {"s": schema})  # type: ignore[arg-type]
        shape[key] = [tuple(row) for row in await cursor.fetchall()]
    return shape


async def test_the_migrations_produce_the_canonical_schema(
    admin: psycopg.AsyncConnection[Any], schemas: list[str]
) -> None:
    migrated, canonical = schemas[:2]
    assert await apply_migrations(admin, migrated) == [m.version for m in migrations()]
    await admin.execute(f'CREATE SCHEMA "{canonical}"')
    async with admin.transaction():
        await admin.execute(f'SET LOCAL search_path TO "{canonical}"')
        await admin.execute(read_sql("perdure.providers.postgres", "schema.sql").encode())

    migrated_shape, canonical_shape = await _shape(admin, migrated), await _shape(admin, canonical)
    assert migrated_shape["columns"], "the comparison saw no tables"
    assert len(migrated_shape["functions"]) >= 3
    assert migrated_shape == canonical_shape


async def test_control_messages_queued_before_they_were_flagged_still_reach_a_suspended_instance(
    admin: psycopg.AsyncConnection[Any], schemas: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    schema = schemas[0]
    # The schema as version 2 left it, with what that version queued: the event type as the kind.
    monkeypatch.setattr(_migrate, "migrations", lambda: [m for m in migrations() if m.version <= 2])
    await apply_migrations(admin, schema)
    monkeypatch.undo()
    async with admin.transaction():
        await admin.execute(f'SET LOCAL search_path TO "{schema}"')
        await admin.execute(
            "INSERT INTO instances (instance_id, name, status, execution_id, created_at, updated_at)"
            " VALUES ('held', 'N', 'SUSPENDED', 1, now(), now()), ('resumed', 'N', 'SUSPENDED', 1, now(), now())"
        )
        await admin.execute(
            "INSERT INTO orchestrator_queue (instance_id, execution_id, kind, event, visible_at)"
            " VALUES ('held', 1, 'EventRaised', %s, now()), ('resumed', 1, 'OrchestrationResumed', %s, now())",
            (encode_event(EventRaised(name="e")), encode_event(OrchestrationResumed())),
        )

    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schema)  # applies the rest
    try:
        item = await provider.fetch_orchestration_item(30)
        assert item is not None and item.instance_id == "resumed"
        assert [m.event for m in item.messages] == [OrchestrationResumed()]
        assert await provider.fetch_orchestration_item(30) is None, "the event still waits for the resume"
    finally:
        await provider.close()


async def test_migrations_apply_once_even_when_many_workers_start_together(schemas: list[str]) -> None:
    schema = schemas[0]
    providers = await asyncio.gather(*(PostgresProvider.connect(POSTGRES_URL, schema=schema) for _ in range(6)))
    try:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as conn:
            cursor = await conn.execute(f'SELECT version FROM "{schema}".schema_migrations ORDER BY version')
            assert [row[0] for row in await cursor.fetchall()] == [m.version for m in migrations()]
    finally:
        for provider in providers:
            await provider.close()


async def test_the_schema_comes_from_the_url_or_the_argument(schemas: list[str]) -> None:
    from_url = await open_provider(f"{POSTGRES_URL}?schema={schemas[0]}")
    from_argument = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[1])
    try:
        assert isinstance(from_url, PostgresProvider)
        assert (from_url.schema, from_argument.schema) == (schemas[0], schemas[1])
        await from_url.create_instance(_start("x"))
        assert await from_argument.get_state("x") is None, "schemas are separate tenants"
        assert await from_url.get_state("x") is not None
    finally:
        await from_url.close()
        await from_argument.close()


async def test_libpq_options_in_the_url_reach_the_server(schemas: list[str]) -> None:
    # A space in a URL parameter must stay %20: libpq does not read '+' as a space.
    url = f"{POSTGRES_URL}?options=-c%20application_name%3Dperdure-options-test&schema={schemas[0]}"
    provider = await open_provider(url)
    try:
        assert isinstance(provider, PostgresProvider)
        async with provider._pool.connection() as conn:
            cursor = await conn.execute("SHOW application_name")
            assert await cursor.fetchone() == ("perdure-options-test",)
    finally:
        await provider.close()


@pytest.mark.parametrize("schema", ["bad-name", "1starts_with_digit", 'quote"d', "x" * 64, ""])
async def test_a_bad_schema_name_is_refused(schema: str) -> None:
    with pytest.raises(ValueError, match="schema"):
        await PostgresProvider.connect(POSTGRES_URL, schema=schema)


async def test_conflicting_schemas_are_refused() -> None:
    with pytest.raises(ValueError, match="schema"):
        await PostgresProvider.connect(f"{POSTGRES_URL}?schema=one", schema="two")


async def test_an_unreachable_server_is_a_provider_error() -> None:
    with pytest.raises(ProviderError) as caught:
        await PostgresProvider.connect("postgresql://postgres@127.0.0.1:1/test", schema="x")
    assert isinstance(caught.value.__cause__, psycopg.Error)


async def test_a_notification_wakes_another_process_at_once(schemas: list[str]) -> None:
    # Two providers stand for two processes; a long poll interval proves the wake-up came from NOTIFY.
    writer = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    reader = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0], poll_interval=60)
    try:
        waiting = asyncio.create_task(reader.wait_for_work("orchestrator", 60))
        watching = asyncio.create_task(reader.wait_for_state_change("x", 60))
        await asyncio.sleep(0.2)
        assert not waiting.done()
        began = time.monotonic()
        await writer.create_instance(_start("x"))
        await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - began < 5

        item = await writer.fetch_orchestration_item(30)
        assert item is not None and not watching.done()
        state = InstanceUpdate(name="N", version="1.0.0", status=OrchestrationStatus.RUNNING, execution_id=1)
        await writer.ack_orchestration_item(item, TurnCommit(execution_id=1, state=state))
        await asyncio.wait_for(watching, 5)
    finally:
        await writer.close()
        await reader.close()


async def _terminate_backends(admin: psycopg.AsyncConnection[Any]) -> int:
    cursor = await admin.execute(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid() AND application_name = ''"
        " AND backend_type = 'client backend'"
    )
    row = await cursor.fetchone()
    return int(row[0]) if row else 0


async def test_work_survives_killed_connections(admin: psycopg.AsyncConnection[Any], schemas: list[str]) -> None:
    registry = Registry()

    @registry.activity("Double")
    async def double(ctx: Any, n: int) -> int:
        return n * 2

    @registry.orchestration("Chain")
    async def chain(ctx: Any, n: int) -> int:
        for _ in range(5):
            n = await ctx.call_activity("Double", n)
        return int(n)

    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0], retry_seconds=30)
    options = RuntimeOptions(idle_timeout=0.5)
    try:
        async with Runtime(provider, registry, options):
            client = Client(provider)
            for n in range(20):
                await client.start_orchestration(f"c{n}", "Chain", n)
            killed = 0
            for _ in range(3):
                await asyncio.sleep(0.1)  # let the workload make progress between the kills
                killed += await _terminate_backends(admin)
            assert killed > 0
            states = [await client.wait_for_orchestration(f"c{n}", timeout=30) for n in range(20)]
        assert [s.output for s in states] == [n * 32 for n in range(20)]
    finally:
        await provider.close()


async def test_raise_event_reaches_an_instance_waiting_in_another_process(schemas: list[str]) -> None:
    registry = Registry()

    @registry.orchestration("Wait")
    async def wait(ctx: Any) -> Any:
        return await ctx.wait_for_event("go")

    worker_side = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0], poll_interval=60)
    client_side = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0], poll_interval=60)
    try:
        async with Runtime(worker_side, registry, RuntimeOptions(idle_timeout=60)):
            client = Client(client_side)
            await client.start_orchestration("w", "Wait")
            await client.raise_event("w", "go", {"data": 1})
            state = await client.wait_for_orchestration("w", timeout=10)
        assert state.output == {"data": 1}
        assert any(isinstance(e, EventRaised) for e in await client.get_history("w"))
    finally:
        await worker_side.close()
        await client_side.close()


async def test_an_enqueue_retried_after_a_lost_reply_is_applied_once(schemas: list[str]) -> None:
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    client = Client(provider)
    event = Message(instance_id="i", execution_id=None, event=EventRaised(name="pay", data=100))
    await client.start_orchestration("i", "Collect")
    real_run = provider._run

    async def lose_the_first_reply(function: Any, *, retry: bool = True) -> Any:
        async def committed_then_lost(conn: Any, attempt: int) -> Any:
            result = await function(conn, attempt)
            if attempt == 0:  # the server committed; the answer never came back
                raise psycopg.OperationalError("SSL SYSCALL error: EOF detected")
            return result

        return await real_run(committed_then_lost, retry=retry)

    provider._run = lose_the_first_reply  # type: ignore[method-assign]
    try:
        await provider.enqueue_messages([event])
    finally:
        provider._run = real_run  # type: ignore[method-assign]
    item = await provider.fetch_orchestration_item(30)
    assert item is not None
    assert [type(m.event).__name__ for m in item.messages] == ["StartRequested", "EventRaised"]
    await provider.close()


# --- due times by the database clock ----------------------------------------------------------------


def _raised(instance_id: str, visible_at: datetime) -> Message:
    return Message(instance_id=instance_id, execution_id=None, event=EventRaised(name="e"), visible_at=visible_at)


@pytest.mark.parametrize("skew", [3600.0, -3600.0])
async def test_a_timer_is_due_by_the_database_clock_whatever_the_writers_clock_says(
    schemas: list[str], monkeypatch: pytest.MonkeyPatch, skew: float
) -> None:
    # This process's clock is an hour off the database's. A message delayed by 1.5 s by that clock
    # is due 1.5 s after its commit by the database's clock: not an hour early (visible at once),
    # not an hour late.
    real = time.time
    monkeypatch.setattr(time, "time", lambda: real() + skew)
    monkeypatch.setattr(_clock, "CLOCK", _clock.Clock())
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    try:
        skewed_now = datetime.fromtimestamp(_clock.now(), UTC)
        await provider.enqueue_messages([_raised("later", skewed_now + timedelta(seconds=1.5))])
        committed = time.monotonic()
        assert await provider.fetch_orchestration_item(30) is None, "due before its delay"
        await provider.wait_for_work("orchestrator", 30)  # the database says when it is due
        item = await provider.fetch_orchestration_item(30)
        while item is None and time.monotonic() - committed < 10:
            await asyncio.sleep(0.05)
            item = await provider.fetch_orchestration_item(30)
        waited = time.monotonic() - committed
        assert item is not None and item.instance_id == "later"
        assert 1.3 <= waited < 10, f"due after {waited:.2f} s, not about 1.5 s"
    finally:
        await provider.close()


# --- eager activity dispatch ------------------------------------------------------------------------


async def _turn_queueing_work(
    provider: PostgresProvider, instance_id: str, queues: tuple[str, ...] = ("default",)
) -> None:
    """A turn of a new instance that schedules an activity on each of ``queues``, committed while a
    work loop (of the "default" queue) waits."""
    await provider.create_instance(_start(instance_id))
    assert await provider.fetch_work_item(["default"], 30) is None  # what this process's loop asks for
    waiting = asyncio.create_task(provider.wait_for_work("activity", 30, ["default"]))
    await asyncio.sleep(0.1)  # the loop is idle now
    items = [request(instance_id, queue, source=2 + n) for n, queue in enumerate(queues)]
    await run_start_turn(provider, instance_id, activity_items=items)
    await asyncio.wait_for(waiting, 5)


async def test_work_a_turn_queues_is_locked_in_its_commit_for_this_process_idle_loop(schemas: list[str]) -> None:
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    other = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    try:
        await _turn_queueing_work(provider, "a")
        assert await other.fetch_work_item(["default"], 30) is None, "locked for the idle loop already"
        work = await provider.fetch_work_item(["default"], 30)
        assert work is not None and work.request is not None and work.request.instance_id == "a"
        assert work.dequeue_count == 1
        done = Message(instance_id="a", execution_id=1, event=EventRaised(name="done"))
        await provider.ack_work_item(work, done)  # the lock it was handed is the store's
        assert await provider.work_items_held([work]) == set()
    finally:
        await other.close()
        await provider.close()


async def test_a_turn_locks_no_more_items_than_loops_are_idle_and_only_of_their_queues(schemas: list[str]) -> None:
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    other = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    try:
        await _turn_queueing_work(provider, "a", ("elsewhere", "default", "default"))
        handed = await provider.fetch_work_item(["default"], 30)
        assert handed is not None and handed.request is not None and handed.request.source_event_id == 3
        left = [await other.fetch_work_item([queue], 30) for queue in ("default", "elsewhere")]
        assert [w.request.source_event_id for w in left if w is not None and w.request is not None] == [4, 2]
        assert await other.fetch_work_item(["default", "elsewhere"], 30) is None
    finally:
        await other.close()
        await provider.close()


async def test_a_client_waiting_for_an_end_this_process_committed_needs_no_read(schemas: list[str]) -> None:
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    try:
        await provider.create_instance(_start("a"))
        item = await provider.fetch_orchestration_item(30)
        assert item is not None
        waiter = asyncio.create_task(provider.wait_for_state_change("a", 30, until_ended=1))
        await asyncio.sleep(0.1)
        ended = InstanceUpdate(
            name="N", version="1", status=OrchestrationStatus.COMPLETED, execution_id=1, output={"n": 1}
        )
        commit = TurnCommit(execution_id=1, state=ended, consumed=[m.message_id for m in item.messages])
        await provider.ack_orchestration_item(item, commit)
        known = await asyncio.wait_for(waiter, 5)
        assert known is not None and known == await provider.get_state("a")
        assert known.output == {"n": 1} and known.created_at < known.updated_at
    finally:
        await provider.close()


async def test_work_an_ack_locked_for_a_lost_answer_is_put_back(schemas: list[str]) -> None:
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    other = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    try:
        await provider.create_instance(_start("a"))
        item = await provider.fetch_orchestration_item(30)
        assert item is not None
        commit = TurnCommit(execution_id=1, activity_items=[request("a")], consumed=[item.messages[0].message_id])
        done = await provider._commit_turn_claiming(item, commit, ((("default",), 30.0, None), "lost", 1))
        assert done.committed and len(done.claimed) == 1
        assert await other.fetch_work_item(["default"], 30) is None, "locked by the ack"
        # A retried ack found the lock gone and cannot tell what its first attempt locked: it puts back.
        await provider._put_back_lost("release_claimed_work_items", "activity", instance_id="a", lock_token="lost")
        work = await other.fetch_work_item(["default"], 30)
        assert work is not None and work.request is not None and work.request.instance_id == "a"
        assert work.dequeue_count == 1, "the lost delivery is not counted"
    finally:
        await other.close()
        await provider.close()


# The turn's ack as the previous release calls it: the old signature, answering a boolean.
_PREVIOUS_ACK = """SELECT ack_orchestration_item(
    %(instance_id)s, %(lock_token)s, %(execution_id)s, %(event_ids)b::integer[], %(events)b::text[],
    %(work_queues)b::text[], %(work_requests)b::text[],
    %(instances)b::text[], %(executions)b::integer[], %(kinds)b::text[], %(msg_events)b::text[], '{}'::timestamptz[],
    %(start_instances)b::text[], %(start_names)b::text[], %(start_inputs)b::text[], %(start_parents)b::text[],
    %(set_state)s, %(name)s, %(version)s, %(status)s, %(state_execution_id)s,
    %(input)s, %(output)s, %(error)s, %(custom_status)s, %(parent_instance_id)s,
    %(consumed)b::bigint[], %(notify)s, %(waiting_for)s
)"""


async def test_a_worker_of_the_previous_release_still_commits_turns(
    admin: psycopg.AsyncConnection[Any], schemas: list[str]
) -> None:
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    try:
        await provider.create_instance(_start("a"))
        item = await provider.fetch_orchestration_item(30)
        assert item is not None
        commit = TurnCommit(
            execution_id=1,
            history=[OrchestrationStarted(event_id=1, name="N", version="1", input=None)],
            activity_items=[request("a")],
            consumed=[m.message_id for m in item.messages],
        )
        params = {**turn_params(item, commit), "notify": "elsewhere 0 1 a"}
        await admin.execute(f'SET search_path TO "{schemas[0]}"')
        for expected in (True, False):  # the second call finds the lock released
            row = await (await admin.execute(_PREVIOUS_ACK, params)).fetchone()
            assert row == (expected,)
        work = await provider.fetch_work_item(["default"], 30)
        assert work is not None and work.request is not None and work.request.instance_id == "a"
        assert [e.event_id for e in await provider.get_history("a")] == [1]
    finally:
        await provider.close()


@pytest.mark.parametrize("another_queues_work", [False, True])
async def test_the_fetch_after_a_handed_item_finds_work_another_process_queued_meanwhile(
    schemas: list[str], another_queues_work: bool
) -> None:
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    other = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    try:
        await _turn_queueing_work(provider, "a")
        work = await provider.fetch_work_item(["default"], 30)
        assert work is not None and work.request is not None and work.request.instance_id == "a"
        await provider.ack_work_item(work, Message(instance_id="a", execution_id=1, event=EventRaised(name="done")))
        if another_queues_work:
            await drain_orchestrations(other)  # the completion just queued
            await other.create_instance(_start("b"))
            await run_start_turn(other, "b", activity_items=[request("b")])
            await asyncio.sleep(0.5)  # its notification arrives
        after = await provider.fetch_work_item(["default"], 30)
        if another_queues_work:
            assert after is not None and after.request is not None and after.request.instance_id == "b"
        else:
            assert after is None
            assert await other.fetch_work_item(["default"], 30) is None, "nothing was left behind"
    finally:
        await other.close()
        await provider.close()


async def test_work_locked_for_a_loop_that_never_takes_it_is_put_back(schemas: list[str]) -> None:
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    other = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    try:
        await _turn_queueing_work(provider, "a")
        # Nobody in this process fetches it: within seconds another process can.
        taken = None
        deadline = time.monotonic() + 10
        while taken is None and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            taken = await other.fetch_work_item(["default"], 30)
        assert taken is not None and taken.request is not None and taken.request.instance_id == "a"
        assert await provider.fetch_work_item(["default"], 30) is None, "handed out twice"
    finally:
        await other.close()
        await provider.close()


async def test_a_retried_instance_claim_whose_first_attempt_committed_returns_the_item_counted_once(
    schemas: list[str],
) -> None:
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    other = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    try:
        await provider.create_instance(_start("a"))
        first = await provider._claim_instance("a", (30.0, None), "token", {})
        assert first is not None and [m[3] for m in first.messages] == [1]
        # The same call again, as after a connection lost before its answer came: the lock is its own.
        again = await provider._claim_instance("a", (30.0, None), "token", {})
        assert again is not None and [m[3] for m in again.messages] == [1], "the delivery is counted once"
        assert await provider._claim_instance("a", (30.0, None), "another", {}) is None, "locked"
        assert await other.fetch_orchestration_item(30) is None
    finally:
        await other.close()
        await provider.close()


async def test_a_beat_skips_rows_another_transaction_holds_rather_than_wait_for_them(schemas: list[str]) -> None:
    # A process's batches lock worker_queue and instance_locks rows in the order their calls came;
    # a beat that waited for such a row could deadlock with them (a second lost each time).
    schema = schemas[0]
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schema)
    handle = liveness(provider, worker("w1"), 30)
    try:
        for instance_id in ("a", "b"):
            await provider.create_instance(_start(instance_id))
        await beat(handle)
        held = [await provider.fetch_orchestration_item(30, worker_id="w1") for _ in range(2)]
        await run_start_turn_for_work(provider)
        item = await provider.fetch_work_item(["default"], 30, worker_id="w1")
        assert all(held) and item is not None
        busy, free = sorted(h.instance_id for h in held if h is not None)
        expiry = f'SELECT locked_until FROM "{schema}".instance_locks WHERE instance_id = %s'
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL) as blocker:
            await blocker.execute(f'SELECT 1 FROM "{schema}".instance_locks WHERE instance_id = %s FOR UPDATE', [busy])
            await blocker.execute(
                f'SELECT 1 FROM "{schema}".worker_queue WHERE item_id = %s FOR UPDATE', [item.item_id]
            )
            async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as reader:
                before = {i: (await (await reader.execute(expiry, [i])).fetchone()) for i in (busy, free)}
                await asyncio.sleep(0.05)
                await asyncio.wait_for(beat(handle), 5)  # waited for the blocker (15 s) before
                after = {i: (await (await reader.execute(expiry, [i])).fetchone()) for i in (busy, free)}
            await blocker.rollback()
        assert after[free] > before[free], "a free lock is extended"
        assert after[busy] == before[busy], "a row another transaction holds is left to the next beat"
        await beat(handle)
    finally:
        await asyncio.to_thread(handle.close)
        await provider.close()


def _lose_the_next_reply(provider: PostgresProvider) -> None:
    """The provider's next batch commits on the server, but its answer is lost with the connection."""
    real_run = provider._batch._run
    lost = False

    async def run(function: Any) -> Any:
        async def committed_then_lost(conn: Any, attempt: int) -> Any:
            nonlocal lost
            result = await function(conn, attempt)
            if not lost:
                lost = True
                raise psycopg.OperationalError("SSL SYSCALL error: EOF detected")
            return result

        return await real_run(committed_then_lost)

    provider._batch._run = run


async def test_a_fetch_retried_after_a_lost_answer_puts_back_what_its_first_attempt_locked(schemas: list[str]) -> None:
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    other = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    handle = liveness(provider, worker("w1"), 30)
    try:
        await beat(handle)  # a lock with a worker id lives as long as the worker: nothing would free it
        for instance_id in ("a", "b"):
            await provider.create_instance(_start(instance_id))
        _lose_the_next_reply(provider)
        item = await provider.fetch_orchestration_item(30, worker_id="w1")
        assert item is not None and item.instance_id == "b", "the first attempt locked a, then its answer was lost"
        again = await other.fetch_orchestration_item(30)
        assert again is not None and again.instance_id == "a", "put back at once"
        assert [m.dequeue_count for m in again.messages] == [1], "the lost delivery is not counted"
    finally:
        await asyncio.to_thread(handle.close)
        await other.close()
        await provider.close()


async def test_a_work_fetch_retried_after_a_lost_answer_puts_back_what_its_first_attempt_locked(
    schemas: list[str],
) -> None:
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    other = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    handle = liveness(provider, worker("w1"), 30)
    try:
        await beat(handle)
        await provider.create_instance(_start("a"))
        await run_start_turn(provider, "a", activity_items=[request("a", source=2), request("a", source=3)])
        _lose_the_next_reply(provider)
        item = await provider.fetch_work_item(["default"], 30, worker_id="w1")
        assert item is not None and item.request is not None and item.request.source_event_id == 3
        again = await other.fetch_work_item(["default"], 30)
        assert again is not None and again.request is not None and again.request.source_event_id == 2
        assert again.dequeue_count == 1, "the lost delivery is not counted"
    finally:
        await asyncio.to_thread(handle.close)
        await other.close()
        await provider.close()


async def test_a_work_fetch_for_idle_loops_retried_after_a_lost_answer_puts_back_all_its_first_attempt_locked(
    schemas: list[str],
) -> None:
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    other = await PostgresProvider.connect(POSTGRES_URL, schema=schemas[0])
    try:
        await provider.create_instance(_start("a"))
        await run_start_turn(provider, "a", activity_items=[request("a", source=2 + n) for n in range(5)])
        _lose_the_next_reply(provider)
        with provider._signals.queues["activity"].waiter():  # one activity loop waits
            item = await provider.fetch_work_item(["default"], 30)
        handed = await provider.fetch_work_item(["default"], 30)
        assert [w.request.source_event_id for w in (item, handed) if w is not None and w.request] == [4, 5]
        left = [await other.fetch_work_item(["default"], 30) for _ in range(4)]
        assert sorted(w.request.source_event_id for w in left if w is not None and w.request) == [2, 3, 6]
        assert [w.dequeue_count for w in left if w is not None] == [1, 1, 1], "the lost deliveries are not counted"
    finally:
        await other.close()
        await provider.close()
