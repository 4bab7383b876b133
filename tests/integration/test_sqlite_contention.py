"""SQLite specifics: several providers writing one file never surface "database is locked"."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from pathlib import Path

from perdure import Client, SqliteProvider
from perdure.engine.events import EventRaised
from perdure.providers._base import InstanceFilter, Message, TurnCommit


async def test_a_write_waits_for_another_connection_s_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    provider = await SqliteProvider.open(path)
    try:
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # another process in the middle of a write
        try:
            start = asyncio.create_task(Client(provider).start_orchestration("waits", "Anything", 1))
            await asyncio.sleep(0.2)  # hold the write lock while the provider tries
            assert not start.done(), "the write went through while another connection held the write lock"
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        assert await asyncio.wait_for(start, 10) == "waits"
        state = await provider.get_state("waits")
        assert state is not None
        assert state.input == 1
    finally:
        await provider.close()


def _hammer(path: Path, worker: int, per_worker: int, consumed: list[int], errors: list[BaseException]) -> None:
    """One provider on its own thread and loop (so statements really run in parallel) writing hard."""

    async def run() -> None:
        provider = await SqliteProvider.open(path)
        client = Client(provider)
        try:
            for i in range(per_worker):
                instance_id = f"w{worker}-{i:03}"
                await client.start_orchestration(instance_id, "Anything", i)
                await client.raise_event(instance_id, "e", i)
                # A peek-lock cycle: fetch whatever instance is next and commit a turn that consumes it.
                item = await provider.fetch_orchestration_item(30)
                if item is not None:
                    ids = [m.message_id for m in item.messages]
                    await provider.ack_orchestration_item(item, TurnCommit(execution_id=1, consumed=ids))
                    consumed.extend(ids)
                await client.list_instances(limit=5)
        finally:
            await provider.close()

    try:
        asyncio.run(run())
    except BaseException as exc:
        errors.append(exc)


async def test_providers_on_one_file_writing_concurrently_never_fail_with_locked(tmp_path: Path) -> None:
    path = tmp_path / "shared.db"
    await (await SqliteProvider.open(path)).close()  # create the schema before the threads race
    errors: list[BaseException] = []
    consumed: list[int] = []
    workers, per_worker = 4, 60
    threads = [threading.Thread(target=_hammer, args=(path, w, per_worker, consumed, errors)) for w in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        await asyncio.to_thread(thread.join, 60)
    assert errors == []

    provider = await SqliteProvider.open(path)
    try:
        instances = await provider.list_instances(InstanceFilter(limit=10_000))
        assert len(instances) == workers * per_worker
        # Every message (a start and an event per instance) was consumed by exactly one commit, or
        # is still queued: none is lost and none was handed to two workers.
        while (item := await provider.fetch_orchestration_item(30)) is not None:
            ids = [m.message_id for m in item.messages]
            await provider.ack_orchestration_item(item, TurnCommit(execution_id=1, consumed=ids))
            consumed.extend(ids)
        assert len(consumed) == len(set(consumed)) == 2 * workers * per_worker
    finally:
        await provider.close()


async def test_a_second_provider_sees_work_enqueued_by_the_first(tmp_path: Path) -> None:
    path = tmp_path / "two.db"
    writer = await SqliteProvider.open(path)
    reader = await SqliteProvider.open(path, poll_interval=0.01)
    try:
        waiting = asyncio.create_task(reader.wait_for_work("orchestrator", 30))
        await asyncio.sleep(0)  # let it start waiting
        await writer.enqueue_messages([Message(instance_id="x", execution_id=None, event=EventRaised(name="e"))])
        await asyncio.wait_for(waiting, 10)  # woken by the other connection's commit, not by the 30 s timeout
        item = await reader.fetch_orchestration_item(30)
        assert item is not None
        assert [type(m.event) for m in item.messages] == [EventRaised]
        assert item.state is None
    finally:
        await writer.close()
        await reader.close()


async def test_opening_waits_for_another_connections_write_lock(tmp_path: Path) -> None:
    path = tmp_path / "new.db"
    setup = sqlite3.connect(path)
    setup.execute("PRAGMA journal_mode=WAL")  # an empty WAL database: creating the schema needs the lock
    setup.close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    opening = asyncio.create_task(SqliteProvider.open(path))
    await asyncio.sleep(0.2)
    assert not opening.done(), "it must wait for the lock, not fail"
    blocker.execute("COMMIT")
    blocker.close()
    provider = await asyncio.wait_for(opening, 10)
    try:
        assert await provider.get_state("nobody") is None  # the schema is there
    finally:
        await provider.close()
