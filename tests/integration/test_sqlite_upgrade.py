"""SQLite files written by earlier versions open and work unchanged."""

from __future__ import annotations

import contextlib
import sqlite3
from pathlib import Path

from perdure import OrchestrationStatus, SqliteProvider
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
