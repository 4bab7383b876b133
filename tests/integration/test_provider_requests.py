"""The provider calls that change an instance at a client's request: restart and rewind; and opening a
store without creating one. On every provider kind, driving the provider directly (no runtime)."""

from __future__ import annotations

import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.conftest import POSTGRES_URL

from perdure import ErrorDetails, OrchestrationStatus, Provider, SqliteProvider, open_provider
from perdure.engine.events import (
    EventRaised,
    ExecutionRewound,
    OrchestrationFailed,
    OrchestrationStarted,
    StartRequested,
    TimerFired,
)
from perdure.providers import (
    ActivityRequest,
    InstanceUpdate,
    LockLostError,
    Message,
    NewInstance,
    StoreNotFoundError,
    TurnCommit,
)

ERROR = ErrorDetails(type="RuntimeError", message="boom")


def start(instance_id: str, name: str = "Orch", input: object = None) -> Message:
    return Message(
        instance_id=instance_id,
        execution_id=None,
        event=StartRequested(name=name, input=input),
        new_instance=NewInstance(name=name, input=input),
    )


def rewind_request(instance_id: str, execution_id: int) -> Message:
    return Message(instance_id=instance_id, execution_id=execution_id, event=ExecutionRewound(reason="retry"))


def state_update(status: OrchestrationStatus, error: ErrorDetails | None = None) -> InstanceUpdate:
    return InstanceUpdate(name="Orch", version="1.0.0", status=status, execution_id=1, input="in", error=error)


async def first_turn(provider: Provider, status: OrchestrationStatus, *, with_work: bool = False) -> None:
    """Run the instance's first turn: started, then ``status`` (FAILED with ERROR); optionally an activity."""
    item = await provider.fetch_orchestration_item(30)
    assert item is not None
    history = [OrchestrationStarted(event_id=1, name="Orch", version="1.0.0", input="in")]
    if status is OrchestrationStatus.FAILED:
        history.append(OrchestrationFailed(event_id=2, error=ERROR))
    work = [
        ActivityRequest(
            instance_id=item.instance_id,
            execution_id=1,
            source_event_id=2,
            name="Act",
            input=None,
            queue="default",
            attempt=1,
            orchestration_name="Orch",
            orchestration_version="1.0.0",
        )
    ]
    due = datetime.now(UTC) + timedelta(hours=1)
    timer = Message(
        instance_id=item.instance_id, execution_id=1, event=TimerFired(source_event_id=3, fire_at=due), visible_at=due
    )
    commit = TurnCommit(
        execution_id=1,
        history=history,
        state=state_update(status, ERROR if status is OrchestrationStatus.FAILED else None),
        activity_items=work if with_work else (),
        messages=[timer] if with_work else (),
        consumed=[m.message_id for m in item.messages],
    )
    await provider.ack_orchestration_item(item, commit)


# --- restart ---------------------------------------------------------------------------------------------


async def test_restart_of_a_missing_instance_creates_it_in_execution_1(provider: Provider) -> None:
    assert await provider.restart_instance(start("a", input=1)) == 1

    state = await provider.get_state("a")
    assert state is not None and (state.status, state.execution_id, state.input) == (OrchestrationStatus.PENDING, 1, 1)
    item = await provider.fetch_orchestration_item(30)
    assert item is not None and [(type(m.event), m.execution_id) for m in item.messages] == [(StartRequested, 1)]


async def test_restart_of_a_finished_instance_is_a_fresh_run_in_the_next_execution(provider: Provider) -> None:
    await provider.create_instance(start("a", input="old"))
    await first_turn(provider, OrchestrationStatus.FAILED)
    await provider.enqueue_messages([Message(instance_id="a", execution_id=None, event=EventRaised(name="late"))])

    assert await provider.restart_instance(start("a", name="New", input="new")) == 2

    state = await provider.get_state("a")
    assert state is not None
    assert (state.name, state.version, state.status, state.execution_id, state.input, state.error) == (
        "New",
        None,
        OrchestrationStatus.PENDING,
        2,
        "new",
        None,
    )
    assert await provider.get_history("a") == []
    assert await provider.get_history("a", 1) == [], "the old run's history is purged"
    item = await provider.fetch_orchestration_item(30)
    assert item is not None and item.history == []
    assert [(type(m.event), m.execution_id) for m in item.messages] == [(StartRequested, 2)], "the old event is gone"


async def test_restart_of_a_running_instance_discards_its_work_and_its_turn_in_progress(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    await first_turn(provider, OrchestrationStatus.RUNNING, with_work=True)
    await provider.enqueue_messages([Message(instance_id="a", execution_id=None, event=EventRaised(name="go"))])
    old_turn = await provider.fetch_orchestration_item(30)
    assert old_turn is not None

    assert await provider.restart_instance(start("a", input="again")) == 2

    with pytest.raises(LockLostError):
        await provider.ack_orchestration_item(
            old_turn, TurnCommit(execution_id=1, state=state_update(OrchestrationStatus.COMPLETED))
        )
    state = await provider.get_state("a")
    assert state is not None and (state.status, state.execution_id) == (OrchestrationStatus.PENDING, 2)
    assert await provider.fetch_work_item(["default"], 30) is None, "the old run's activity is discarded"
    item = await provider.fetch_orchestration_item(30)
    assert item is not None and [type(m.event) for m in item.messages] == [StartRequested]


async def test_restart_needs_the_instance_row(provider: Provider) -> None:
    with pytest.raises(ValueError, match="new_instance"):
        await provider.restart_instance(Message(instance_id="a", execution_id=None, event=StartRequested(name="Orch")))
    assert await provider.get_state("a") is None


# --- rewind request --------------------------------------------------------------------------------------


async def test_a_rewind_request_marks_a_failed_instance_pending_and_keeps_its_error(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    await first_turn(provider, OrchestrationStatus.FAILED)

    assert await provider.request_rewind(rewind_request("a", 1)) is True

    state = await provider.get_state("a")
    assert state is not None and (state.status, state.execution_id, state.error) == (
        OrchestrationStatus.PENDING,
        1,
        ERROR,
    )
    assert [type(e) for e in await provider.get_history("a")] == [OrchestrationStarted, OrchestrationFailed]
    item = await provider.fetch_orchestration_item(30)
    assert item is not None and [(type(m.event), m.execution_id) for m in item.messages] == [(ExecutionRewound, 1)]


async def test_a_rewind_request_for_anything_but_that_failed_execution_writes_nothing(provider: Provider) -> None:
    await provider.create_instance(start("running"))
    await first_turn(provider, OrchestrationStatus.RUNNING)
    await provider.create_instance(start("failed"))
    await first_turn(provider, OrchestrationStatus.FAILED)

    assert await provider.request_rewind(rewind_request("running", 1)) is False
    assert await provider.request_rewind(rewind_request("failed", 2)) is False
    assert await provider.request_rewind(rewind_request("missing", 1)) is False
    assert await provider.request_rewind(rewind_request("failed", 1)) is True
    assert await provider.request_rewind(rewind_request("failed", 1)) is False, "a second rewind finds it PENDING"

    running, failed = await provider.get_state("running"), await provider.get_state("failed")
    assert running is not None and running.status is OrchestrationStatus.RUNNING
    assert failed is not None and failed.status is OrchestrationStatus.PENDING
    assert await provider.get_state("missing") is None
    item = await provider.fetch_orchestration_item(30)
    assert item is not None and item.instance_id == "failed" and len(item.messages) == 1
    assert await provider.fetch_orchestration_item(30) is None


async def test_a_rewind_request_names_the_failed_execution(provider: Provider) -> None:
    with pytest.raises(ValueError, match="execution"):
        await provider.request_rewind(Message(instance_id="a", execution_id=None, event=ExecutionRewound()))


def files_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


# --- opening without creating ----------------------------------------------------------------------------


async def test_sqlite_without_create_opens_only_an_existing_perdure_file(tmp_path: Path) -> None:
    missing = tmp_path / "typo.db"
    in_missing_directory = tmp_path / "no" / "such" / "directory" / "perdure.db"
    foreign = tmp_path / "foreign.db"
    with sqlite3.connect(foreign) as other:
        other.execute("CREATE TABLE instances (id INTEGER)")
    garbage = tmp_path / "notes.txt"
    garbage.write_text("not a database\n" * 100)
    for path in (missing, in_missing_directory, foreign, garbage, ":memory:"):
        with pytest.raises(StoreNotFoundError, match="no perdure store at"):
            await SqliteProvider.open(path, create=False)
        with pytest.raises(StoreNotFoundError):
            await open_provider(f"sqlite:///{path}", create=False)
    assert files_in(tmp_path) == ["foreign.db", "notes.txt"], "nothing was created"
    with sqlite3.connect(foreign) as other:
        assert other.execute("PRAGMA journal_mode").fetchone()[0] == "delete", "another application's file is untouched"

    made = await SqliteProvider.open(tmp_path / "perdure.db")
    await made.create_instance(start("a"))
    await made.close()
    opened = await SqliteProvider.open(tmp_path / "perdure.db", create=False)
    assert await opened.get_state("a") is not None
    await opened.close()


@pytest.mark.postgres
async def test_postgres_without_create_opens_only_an_existing_perdure_schema() -> None:
    psycopg = pytest.importorskip("psycopg")
    from perdure.providers.postgres import PostgresProvider

    missing, foreign = f"test_{uuid.uuid4().hex[:12]}", f"test_{uuid.uuid4().hex[:12]}"
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'CREATE SCHEMA "{foreign}"')
    try:
        for schema in (missing, foreign):
            with pytest.raises(StoreNotFoundError, match=rf"no perdure store at postgresql://.*\?schema={schema}"):
                await PostgresProvider.connect(POSTGRES_URL, schema=schema, create=False)
            with pytest.raises(StoreNotFoundError):
                await open_provider(f"{POSTGRES_URL}?schema={schema}", create=False)
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname IN (%s, %s)", (missing, foreign)
            )
            assert [row[0] for row in await cursor.fetchall()] == [foreign], "nothing was created"
            cursor = await conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = %s", (foreign,))
            assert (await cursor.fetchone())[0] == 0

        made = await PostgresProvider.connect(POSTGRES_URL, schema=missing)
        await made.create_instance(start("a"))
        await made.close()
        opened = await PostgresProvider.connect(POSTGRES_URL, schema=missing, create=False)
        assert await opened.get_state("a") is not None
        await opened.close()
    finally:
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            for schema in (missing, foreign):
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
