"""SQLite files written by earlier versions open and work unchanged."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import time
from pathlib import Path

from perdure import AwaitedEvent, OrchestrationStatus, SqliteProvider
from perdure.engine import encode_event
from perdure.engine.events import EventRaised, OrchestrationResumed, StartRequested
from perdure.providers import InstanceUpdate, Message, NewInstance, TurnCommit


async def _suspended_instance(path: Path, instance_id: str) -> None:
    provider = await SqliteProvider.open(path)
    try:
        start = StartRequested(name="N")
        await provider.create_instance(
            Message(instance_id=instance_id, execution_id=None, event=start, new_instance=NewInstance(name="N"))
        )
        item = await provider.fetch_orchestration_item(30)
        assert item is not None
        state = InstanceUpdate(name="N", version="1", status=OrchestrationStatus.SUSPENDED, execution_id=1)
        await provider.ack_orchestration_item(
            item, TurnCommit(execution_id=1, state=state, consumed=[m.message_id for m in item.messages])
        )
    finally:
        await provider.close()


async def test_control_messages_queued_before_they_were_flagged_still_reach_a_suspended_instance(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old.db"
    for instance_id in ("held", "resumed"):
        await _suspended_instance(path, instance_id)
    # As an earlier version left the file: the event type as the kind, and no file version.
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.executemany(
            "INSERT INTO orchestrator_queue (instance_id, execution_id, kind, event, visible_at)"
            " VALUES (?, 1, ?, ?, 0)",
            [
                ("held", "EventRaised", encode_event(EventRaised(name="e"))),
                ("resumed", "OrchestrationResumed", encode_event(OrchestrationResumed())),
            ],
        )
        db.execute("PRAGMA user_version=0")
        db.commit()

    provider = await SqliteProvider.open(path)
    try:
        item = await provider.fetch_orchestration_item(30)
        assert item is not None and item.instance_id == "resumed"
        assert [m.event for m in item.messages] == [OrchestrationResumed()]
        assert await provider.fetch_orchestration_item(30) is None, "the event still waits for the resume"
    finally:
        await provider.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 1


async def test_files_from_before_worker_records_gain_their_columns_and_keep_their_locks(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    await _suspended_instance(path, "unused")  # creates the file
    # As the version before worker records left it: no holder or heartbeat columns, version 1, and
    # an activity locked the old way (expiring on its own) plus one waiting.
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("DROP INDEX worker_queue_by_worker")
        db.execute("DROP INDEX instance_locks_by_worker")
        for table, column in [
            ("instance_locks", "worker_id"),
            ("worker_queue", "worker_id"),
            ("worker_queue", "heartbeat_details"),
            ("worker_queue", "heartbeat_at"),
        ]:
            db.execute(f"ALTER TABLE {table} DROP COLUMN {column}")
        request = '{"instance_id": "i", "execution_id": 1, "source_event_id": 2, "name": "A", "input": null,'
        request += ' "queue": "default", "attempt": 1, "orchestration_name": "N", "orchestration_version": "1"}'
        db.executemany(
            "INSERT INTO worker_queue (queue, instance_id, request, visible_at, lock_token)"
            " VALUES ('default', 'i', ?, ?, ?)",
            [(request, time.time() + 0.3, "old-token"), (request, 0, None)],
        )
        db.execute("PRAGMA user_version=1")
        db.commit()

    provider = await SqliteProvider.open(path)
    try:
        waiting = await provider.fetch_work_item(["default"], 30, worker_id="w1")
        assert waiting is not None and (waiting.heartbeat_details, waiting.heartbeat_at) == (None, None)
        assert await provider.fetch_work_item(["default"], 30) is None, "the old lock still holds"
        await asyncio.sleep(0.4)
        assert await provider.fetch_work_item(["default"], 30) is not None, "and expires on its own"
    finally:
        await provider.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] >= 2
        assert {row[1] for row in db.execute("PRAGMA index_list(worker_queue)")} >= {"worker_queue_by_worker"}


async def test_files_from_before_waiting_for_gain_the_column_and_keep_their_instances(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    await _suspended_instance(path, "old")
    # As the version before OrchestrationState.waiting_for left it: no such column, version 2.
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute("ALTER TABLE instances DROP COLUMN waiting_for")
        db.execute("PRAGMA user_version=2")
        db.commit()

    provider = await SqliteProvider.open(path)
    try:
        old = await provider.get_state("old")
        assert old is not None and (old.status, old.waiting_for) == (OrchestrationStatus.SUSPENDED, ())
        await provider.enqueue_messages(
            [Message(instance_id="old", execution_id=1, event=OrchestrationResumed(), control=True)]
        )
        item = await provider.fetch_orchestration_item(30)
        assert item is not None and item.state is not None and item.state.instance_id == "old"
        wait = AwaitedEvent(name="approved", since=old.updated_at)
        state = InstanceUpdate(
            name="N", version="1", status=OrchestrationStatus.RUNNING, execution_id=1, waiting_for=[wait]
        )
        await provider.ack_orchestration_item(
            item, TurnCommit(execution_id=1, state=state, consumed=[m.message_id for m in item.messages])
        )
        now = await provider.get_state("old")
        assert now is not None and now.waiting_for == (wait,)
    finally:
        await provider.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 3
