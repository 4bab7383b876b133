"""SQLite's turn commit: it locks the work it queues for this process's idle loop (eager activity
dispatch), and tells a client waiting for the end the row it left, which then needs no read."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from tests.integration.test_provider_contract import request, run_start_turn

from perdure import OrchestrationStatus
from perdure.engine.events import EventRaised, StartRequested
from perdure.providers import InstanceUpdate, Message, NewInstance, TurnCommit
from perdure.providers.sqlite import SqliteProvider


def _start(instance_id: str) -> Message:
    return Message(
        instance_id=instance_id, execution_id=None, event=StartRequested(name="N"), new_instance=NewInstance(name="N")
    )


async def _turn_queueing_work(provider: SqliteProvider, instance_id: str) -> None:
    """A turn of a new instance that schedules one activity, committed while a work loop waits."""
    await provider.create_instance(_start(instance_id))
    assert await provider.fetch_work_item(["default"], 30) is None  # what this process's loop asks for
    waiting = asyncio.create_task(provider.wait_for_work("activity", 30, ["default"]))
    await asyncio.sleep(0.05)  # the loop is idle now
    await run_start_turn(provider, instance_id, activity_items=[request(instance_id)])
    await asyncio.wait_for(waiting, 5)


async def test_work_a_turn_queues_is_locked_in_its_commit_for_this_process_idle_loop(tmp_path: Path) -> None:
    provider = await SqliteProvider.open(tmp_path / "store.db")
    other = await SqliteProvider.open(tmp_path / "store.db")
    try:
        await _turn_queueing_work(provider, "a")
        assert await other.fetch_work_item(["default"], 30) is None, "locked for the idle loop already"
        work = await provider.fetch_work_item(["default"], 30)
        assert work is not None and work.request is not None and work.request.instance_id == "a"
        assert work.dequeue_count == 1
        done = Message(instance_id="a", execution_id=1, event=EventRaised(name="done"))
        await provider.ack_work_item(work, done)  # the lock it was handed is the store's
        assert await provider.work_items_held([work]) == set()
        assert await other.fetch_work_item(["default"], 30) is None, "acked once, gone"
    finally:
        await other.close()
        await provider.close()


async def test_work_locked_for_a_loop_that_never_takes_it_is_put_back(tmp_path: Path) -> None:
    provider = await SqliteProvider.open(tmp_path / "store.db")
    other = await SqliteProvider.open(tmp_path / "store.db")
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


async def test_a_client_waiting_for_an_end_this_process_committed_needs_no_read(tmp_path: Path) -> None:
    provider = await SqliteProvider.open(tmp_path / "store.db")
    try:
        await provider.create_instance(_start("a"))
        item = await provider.fetch_orchestration_item(30)
        assert item is not None
        waiter = asyncio.create_task(provider.wait_for_state_change("a", 30, until_ended=1))
        await asyncio.sleep(0.05)
        ended = InstanceUpdate(
            name="N", version="1", status=OrchestrationStatus.COMPLETED, execution_id=1, output={"n": 1}
        )
        commit = TurnCommit(execution_id=1, state=ended, consumed=[m.message_id for m in item.messages])
        await provider.ack_orchestration_item(item, commit)
        known = await asyncio.wait_for(waiter, 5)
        assert known is not None and known == await provider.get_state("a")
        assert known.output == {"n": 1} and known.status is OrchestrationStatus.COMPLETED
    finally:
        await provider.close()
