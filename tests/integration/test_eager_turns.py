"""Eager orchestration dispatch, on every provider kind: a start or an activity's ack locks its
instance in its own commit for an idle orchestration loop of the same process, and that loop's next
fetch takes it without asking the store; the fetch after such a turn is skipped only when nothing
fetchable can have appeared.

Each test drives the providers directly. ``provider`` plays the process whose loop waits; ``other``,
a second provider on the same store, plays another worker process.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.conftest import drop_test_provider, open_test_provider
from tests.integration.test_provider_contract import (
    drain_orchestrations,
    eventually,
    fetch_work,
    raised,
    request,
    run_start_turn,
    start,
)

from perdure import OrchestrationStatus, Provider, open_provider
from perdure.engine.events import ActivityCompleted, OrchestrationResumed, StartRequested
from perdure.providers import LockLostError, Message, OrchestrationItem, TurnCommit


@pytest.fixture
async def pair(provider_kind: str, tmp_path: Path) -> AsyncIterator[tuple[Provider, Provider]]:
    """This process's provider and another process's, on one fresh store."""
    provider, url = await open_test_provider(provider_kind, tmp_path)
    other = await open_provider(url)
    yield provider, other
    await other.close()
    await drop_test_provider(provider_kind, provider)


async def _idle_loop(provider: Provider, lock_seconds: float = 30) -> asyncio.Task[None]:
    """An orchestration loop of ``provider``'s process that found nothing and now waits for work."""
    assert await provider.fetch_orchestration_item(lock_seconds) is None
    waiting = asyncio.create_task(provider.wait_for_work("orchestrator", 30))
    await asyncio.sleep(0.1)  # registered as a waiter
    return waiting


async def _waiting_loop(provider: Provider) -> asyncio.Task[None]:
    """Like ``_idle_loop``, after the other process committed: its commits wake the loop (on SQLite,
    when the watcher sees them), which finds nothing and waits again."""
    assert await provider.fetch_orchestration_item(30) is None

    async def waiting() -> None:
        while True:
            await provider.wait_for_work("orchestrator", 30)

    loop = asyncio.create_task(waiting())
    await asyncio.sleep(0.3)
    return loop


def _consume_all(item: OrchestrationItem) -> TurnCommit:
    return TurnCommit(execution_id=1, consumed=[m.message_id for m in item.messages])


async def test_an_activity_ack_locks_its_instance_for_the_idle_loop(pair: tuple[Provider, Provider]) -> None:
    provider, other = pair
    await provider.create_instance(start("a"))
    await run_start_turn(provider, "a", activity_items=[request("a")])
    work = await fetch_work(provider)
    waiting = await _idle_loop(provider)
    completion = Message(instance_id="a", execution_id=1, event=ActivityCompleted(source_event_id=2, result=7))
    await provider.ack_work_item(work, completion)
    await asyncio.wait_for(waiting, 5)  # the loop is woken for it

    assert await other.fetch_orchestration_item(30) is None, "locked for the idle loop already"
    item = await provider.fetch_orchestration_item(30)
    assert item is not None and item.instance_id == "a"
    assert [type(m.event) for m in item.messages] == [ActivityCompleted]
    assert item.messages[0].dequeue_count == 1
    assert item.state is not None and item.state.status is OrchestrationStatus.RUNNING
    assert item.history is not None and [e.event_id for e in item.history] == [1]
    await provider.ack_orchestration_item(item, _consume_all(item))  # the lock it was handed is the store's
    assert await other.fetch_orchestration_item(30) is None, "consumed"


async def test_a_start_locks_its_new_instance_for_the_idle_loop(pair: tuple[Provider, Provider]) -> None:
    provider, other = pair
    waiting = await _idle_loop(provider)
    await provider.create_instance(start("a", input=5))
    await asyncio.wait_for(waiting, 5)

    assert await other.fetch_orchestration_item(30) is None, "locked for the idle loop already"
    item = await provider.fetch_orchestration_item(30)
    assert item is not None and item.instance_id == "a"
    assert [type(m.event) for m in item.messages] == [StartRequested]
    assert item.state is not None and item.state.input == 5 and item.history == []
    await provider.ack_orchestration_item(item, _consume_all(item))


async def test_no_more_instances_are_locked_than_loops_wait(pair: tuple[Provider, Provider]) -> None:
    provider, other = pair
    await _idle_loop(provider)
    await asyncio.gather(provider.create_instance(start("a")), provider.create_instance(start("b")))

    unclaimed = await other.fetch_orchestration_item(30)
    assert unclaimed is not None, "one loop waits: one instance is locked for it, not both"
    item = await provider.fetch_orchestration_item(30)
    assert item is not None and {item.instance_id, unclaimed.instance_id} == {"a", "b"}


async def test_an_item_no_loop_takes_is_put_back_uncounted_for_another_worker(
    pair: tuple[Provider, Provider],
) -> None:
    provider, other = pair
    await _idle_loop(provider)
    await provider.create_instance(start("a"))
    # Nobody in this process fetches it: within seconds another process can, as a first delivery.
    item = await eventually(lambda: other.fetch_orchestration_item(30), "the instance put back")
    assert item.instance_id == "a" and [m.dequeue_count for m in item.messages] == [1]
    assert await provider.fetch_orchestration_item(30) is None, "handed out twice"


async def test_a_handed_item_whose_lock_was_taken_over_cannot_be_acked(
    pair: tuple[Provider, Provider], monkeypatch: pytest.MonkeyPatch
) -> None:
    provider, other = pair
    monkeypatch.setattr(provider._turns.kept, "_expires", 60.0)  # type: ignore[attr-defined]  # kept, not put back
    await _idle_loop(provider, lock_seconds=0.5)
    await provider.create_instance(start("a"))
    taken_over = await eventually(lambda: other.fetch_orchestration_item(30), "the lock to expire")
    assert taken_over.instance_id == "a" and [m.dequeue_count for m in taken_over.messages] == [2]

    handed = await provider.fetch_orchestration_item(0.5)
    assert handed is not None and handed.instance_id == "a"
    with pytest.raises(LockLostError):
        await provider.ack_orchestration_item(handed, _consume_all(handed))
    await other.ack_orchestration_item(taken_over, _consume_all(taken_over))
    assert await provider.fetch_orchestration_item(30) is None


async def test_a_suspended_instance_is_not_locked_for_an_activity_ack(pair: tuple[Provider, Provider]) -> None:
    provider, other = pair
    await provider.create_instance(start("a"))
    await run_start_turn(provider, "a", status=OrchestrationStatus.SUSPENDED, activity_items=[request("a")])
    work = await fetch_work(provider)
    await _idle_loop(provider)
    await provider.ack_work_item(
        work, Message(instance_id="a", execution_id=1, event=ActivityCompleted(source_event_id=2))
    )
    assert await provider.fetch_orchestration_item(30) is None, "held back by the suspension"

    # Not locked for anyone: a control message lets any worker take it, with the completion.
    resume = Message(instance_id="a", execution_id=1, event=OrchestrationResumed(reason="go"), control=True)
    await other.enqueue_messages([resume])
    item = await eventually(lambda: other.fetch_orchestration_item(30), "the resumed instance")
    assert [type(m.event) for m in item.messages] == [ActivityCompleted, OrchestrationResumed]
    assert [m.dequeue_count for m in item.messages] == [1, 1]


async def test_closing_releases_a_handed_item_uncounted(pair: tuple[Provider, Provider]) -> None:
    provider, other = pair
    await _idle_loop(provider)
    await provider.create_instance(start("a"))
    await provider.close()  # a runtime shutting down with the item not taken

    item = await other.fetch_orchestration_item(30)
    assert item is not None and item.instance_id == "a" and [m.dequeue_count for m in item.messages] == [1]


async def _turn_on_handed_item(provider: Provider, instance_id: str) -> None:
    """Create ``instance_id`` while a loop waits, then take it and commit its turn, as that loop would."""
    waiting = await _idle_loop(provider)
    await provider.create_instance(start(instance_id))
    await asyncio.wait_for(waiting, 5)
    item = await provider.fetch_orchestration_item(30)
    assert item is not None and item.instance_id == instance_id
    await provider.ack_orchestration_item(item, _consume_all(item))


@pytest.mark.parametrize("another_queues_a_message", [False, True])
async def test_the_fetch_after_a_handed_turn_finds_what_another_process_queued_meanwhile(
    pair: tuple[Provider, Provider], another_queues_a_message: bool
) -> None:
    provider, other = pair
    await _turn_on_handed_item(provider, "a")
    if another_queues_a_message:
        await other.create_instance(start("b"))
        await asyncio.sleep(0.5)  # its notification (or the SQLite watcher's poll) arrives
    after = await provider.fetch_orchestration_item(30)
    if another_queues_a_message:
        assert after is not None and after.instance_id == "b"
    else:
        assert after is None
        assert await other.fetch_orchestration_item(30) is None, "nothing was left behind"


async def test_the_fetch_after_a_handed_turn_finds_a_timer_that_fell_due(pair: tuple[Provider, Provider]) -> None:
    provider, _ = pair
    await provider.create_instance(start("t"))
    await drain_orchestrations(provider)
    await provider.enqueue_messages([raised("t", "timer", visible_at=datetime.now(UTC) + timedelta(seconds=0.8))])
    await _turn_on_handed_item(provider, "a")
    await asyncio.sleep(1.2)  # the timer is due now; nothing signals it
    item = await provider.fetch_orchestration_item(30)
    assert item is not None and item.instance_id == "t"


async def test_the_fetch_after_a_turn_that_left_messages_queued_finds_them(pair: tuple[Provider, Provider]) -> None:
    provider, _ = pair
    waiting = await _idle_loop(provider)
    await provider.create_instance(start("a"))
    await asyncio.wait_for(waiting, 5)
    item = await provider.fetch_orchestration_item(30)
    assert item is not None
    await provider.ack_orchestration_item(item, TurnCommit(execution_id=1))  # consumes nothing
    again = await provider.fetch_orchestration_item(30)
    assert (
        again is not None and again.instance_id == "a" and [type(m.event) for m in again.messages] == [StartRequested]
    )


async def test_a_suspect_fetched_puts_back_what_was_handed_and_nothing_is_handed_until_its_turn_ends(
    pair: tuple[Provider, Provider],
) -> None:
    provider, other = pair
    await provider.create_instance(start("suspect"))
    first = await provider.fetch_orchestration_item(29)
    assert first is not None
    waiting = await _idle_loop(provider)
    await provider.create_instance(start("a"))  # locked for the loop that waits: kept
    await asyncio.wait_for(waiting, 5)
    await provider.abandon_orchestration_item(first)  # delivered once, no turn completed

    # Another loop (asking for another lock duration) fetches the suspect: its turn will run alone.
    suspect = await provider.fetch_orchestration_item(29)
    assert suspect is not None and suspect.instance_id == "suspect"
    assert [m.dequeue_count for m in suspect.messages] == [2]
    put_back = await other.fetch_orchestration_item(30)
    assert put_back is not None and put_back.instance_id == "a", "put back before the suspect's fetch returned"
    assert [m.dequeue_count for m in put_back.messages] == [1], "its delivery taken back"

    await _idle_loop(provider)
    await provider.create_instance(start("b"))
    not_handed = await other.fetch_orchestration_item(30)
    assert not_handed is not None and not_handed.instance_id == "b", "nothing is handed while the suspect runs"

    await provider.ack_orchestration_item(suspect, _consume_all(suspect))
    loop = await _waiting_loop(provider)
    await provider.create_instance(start("c"))
    assert await other.fetch_orchestration_item(30) is None, "handed again once the suspect's turn ended"
    item = await provider.fetch_orchestration_item(30)
    assert item is not None and item.instance_id == "c"
    loop.cancel()


async def test_an_instance_with_work_still_queued_or_running_is_not_locked_for_an_activity_ack(
    pair: tuple[Provider, Provider],
) -> None:
    provider, other = pair
    await provider.create_instance(start("fan"))
    await run_start_turn(provider, "fan", activity_items=[request("fan", source=2), request("fan", source=3)])
    first, second = await fetch_work(provider), await fetch_work(provider)
    done = [
        Message(instance_id="fan", execution_id=1, event=ActivityCompleted(source_event_id=s, result=s)) for s in (2, 3)
    ]
    await _idle_loop(provider)
    await provider.ack_work_item(first, done[0])
    # The other activity still runs: its completion is coming, and a fetch a little later takes both.
    item = await other.fetch_orchestration_item(30)
    assert item is not None and item.instance_id == "fan", "not locked for the loop"
    await other.ack_orchestration_item(item, _consume_all(item))

    loop = await _waiting_loop(provider)
    await provider.ack_work_item(second, done[1])
    assert await other.fetch_orchestration_item(30) is None, "the last completion: locked for the loop"
    handed = await provider.fetch_orchestration_item(30)
    assert handed is not None and [m.event for m in handed.messages] == [done[1].event]
    loop.cancel()


async def test_work_a_turn_queues_is_locked_in_its_commit_for_an_idle_activity_loop(
    pair: tuple[Provider, Provider],
) -> None:
    provider, other = pair
    await provider.create_instance(start("a"))
    assert await provider.fetch_work_item(["default"], 30) is None  # what this process's loop asks for
    waiting = asyncio.create_task(provider.wait_for_work("activity", 30, ["default"]))
    await asyncio.sleep(0.1)
    await run_start_turn(provider, "a", activity_items=[request("a")])
    await asyncio.wait_for(waiting, 5)

    assert await other.fetch_work_item(["default"], 30) is None, "locked for the idle loop already"
    work = await provider.fetch_work_item(["default"], 30)
    assert work is not None and work.request is not None and work.request.instance_id == "a"
    assert work.dequeue_count == 1
    done = Message(instance_id="a", execution_id=1, event=ActivityCompleted(source_event_id=2))
    await provider.ack_work_item(work, done)
    assert await provider.work_items_held([work]) == set()
    assert await provider.fetch_work_item(["default"], 30) is None, "nothing left, and the fetch after it is skipped"
    assert await other.fetch_work_item(["default"], 30) is None
