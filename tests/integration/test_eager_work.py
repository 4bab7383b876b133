"""Eager activity dispatch by the fetch, on every provider kind: a work fetch that finds an item also
locks, in the same statement, one more of its queues' items for each activity loop of the process
that waits for work, and hands them to those loops' next fetches without asking the store.

``provider`` plays the process whose loops wait; ``other``, a second provider on the same store,
plays another worker process. A waiting loop is a registration with the provider's activity
signal, as ``wait_for_work`` makes one: a hand-over wakes it, and then it no longer waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from tests.conftest import drop_test_provider, open_test_provider
from tests.integration.test_provider_contract import eventually, fetch, request, run_start_turn, start

from perdure import Provider, open_provider
from perdure.engine.events import EventRaised
from perdure.providers import Message, WorkItem

_LOCK = 30.0


@pytest.fixture
async def pair(provider_kind: str, tmp_path: Path) -> AsyncIterator[tuple[Provider, Provider]]:
    """This process's provider and another process's, on one fresh store."""
    provider, url = await open_test_provider(provider_kind, tmp_path)
    other = await open_provider(url)
    yield provider, other
    await other.close()
    await drop_test_provider(provider_kind, provider)


async def _queue_work(provider: Provider, count: int, instance_id: str = "a") -> None:
    """A turn of a new instance that queues ``count`` activities, while no loop of the process waits."""
    await provider.create_instance(start(instance_id))
    items = [request(instance_id, source=2 + n) for n in range(count)]
    await run_start_turn(provider, instance_id, activity_items=items)


@contextlib.contextmanager
def _waiting_loops(provider: Provider, count: int) -> Iterator[None]:
    """``count`` activity loops of ``provider``'s process waiting for work."""
    signal = provider._signals.queues["activity"]  # type: ignore[attr-defined]
    with contextlib.ExitStack() as stack:
        for _ in range(count):
            stack.enter_context(signal.waiter())
        yield


def _waiting(provider: Provider) -> int:
    return int(provider._signals.queues["activity"].idle)  # type: ignore[attr-defined]


async def _drain(provider: Provider) -> list[WorkItem]:
    """Every work item ``provider`` can fetch now, one fetch at a time."""
    items = []
    while (item := await provider.fetch_work_item(["default"], _LOCK)) is not None:
        items.append(item)
    return items


def _sources(items: list[WorkItem]) -> list[int]:
    return sorted(item.request.source_event_id for item in items if item.request is not None)


async def test_a_fetch_locks_one_more_item_for_each_waiting_loop(pair: tuple[Provider, Provider]) -> None:
    provider, other = pair
    await _queue_work(provider, 5)
    with _waiting_loops(provider, 2):
        first = await provider.fetch_work_item(["default"], _LOCK)
        assert first is not None and first.dequeue_count == 1
        assert _waiting(provider) == 0, "both loops are woken for the items locked for them"

    assert _sources(await _drain(other)) == [5, 6], "three are locked: the fetch's and one per waiting loop"
    handed = [await provider.fetch_work_item(["default"], _LOCK) for _ in range(2)]
    assert all(item is not None and item.dequeue_count == 1 for item in handed), "counted once"
    assert _sources([first, *(item for item in handed if item is not None)]) == [2, 3, 4]
    for item in [first, *handed]:
        assert item is not None and item.request is not None
        await provider.ack_work_item(item, Message(instance_id="a", execution_id=1, event=EventRaised(name="x")))
    assert await other.fetch_work_item(["default"], _LOCK) is None


async def test_without_a_waiting_loop_a_fetch_locks_one_item(pair: tuple[Provider, Provider]) -> None:
    provider, other = pair
    await _queue_work(provider, 3)
    assert await provider.fetch_work_item(["default"], _LOCK) is not None
    assert len(await _drain(other)) == 2


async def test_fetches_side_by_side_lock_one_item_per_waiting_loop_between_them(
    pair: tuple[Provider, Provider],
) -> None:
    provider, other = pair
    await _queue_work(provider, 6)
    with _waiting_loops(provider, 1):
        fetched = await asyncio.gather(*(provider.fetch_work_item(["default"], _LOCK) for _ in range(2)))
        assert all(item is not None for item in fetched)
    assert len(await _drain(other)) == 3, "two fetches and one waiting loop: three locked"


async def test_an_item_no_loop_takes_is_put_back_uncounted(pair: tuple[Provider, Provider]) -> None:
    provider, other = pair
    await _queue_work(provider, 2)
    with _waiting_loops(provider, 1):
        assert await provider.fetch_work_item(["default"], _LOCK) is not None
    # The woken loop never fetches: within seconds another process can, as a first delivery.
    item = await eventually(lambda: other.fetch_work_item(["default"], _LOCK), "the item put back")
    assert item.dequeue_count == 1 and item.request is not None and item.request.source_event_id == 3
    assert await provider.fetch_work_item(["default"], _LOCK) is None, "handed out twice"


async def test_items_kept_are_put_back_uncounted_when_the_provider_closes(provider_kind: str, tmp_path: Path) -> None:
    provider, url = await open_test_provider(provider_kind, tmp_path)
    other = await open_provider(url)
    try:
        await _queue_work(provider, 3)
        with _waiting_loops(provider, 2):
            assert await provider.fetch_work_item(["default"], _LOCK) is not None
        await provider.close()
        left = await _drain(other)
        assert _sources(left) == [3, 4] and [item.dequeue_count for item in left] == [1, 1]
    finally:
        await other.close()
        await drop_test_provider(provider_kind, provider)


async def test_a_suspect_turn_puts_back_what_is_kept_and_stops_the_hand_over(pair: tuple[Provider, Provider]) -> None:
    provider, other = pair
    await _queue_work(provider, 6)
    await provider.create_instance(start("s"))
    once = await fetch(provider)
    await provider.abandon_orchestration_item(once)  # delivered once, no turn completed: a suspect next
    with _waiting_loops(provider, 2):
        assert await provider.fetch_work_item(["default"], _LOCK) is not None  # and two kept

    suspect = await fetch(provider)
    assert suspect.instance_id == "s" and suspect.messages[0].dequeue_count == 2
    put_back = await _drain(other)
    assert _sources(put_back) == [3, 4, 5, 6, 7] and {item.dequeue_count for item in put_back} == {1}
    for item in put_back:
        await other.abandon_work_item(item)
    with _waiting_loops(provider, 2):  # (the other process's releases may wake them: not asserted)
        assert await provider.fetch_work_item(["default"], _LOCK) is not None
    assert len(await _drain(other)) == 4, "nothing locked for the loops while the suspect's turn runs"


async def test_after_a_fetch_that_found_less_than_it_asked_a_fetch_locks_one_item(
    pair: tuple[Provider, Provider],
) -> None:
    provider, other = pair
    await _queue_work(provider, 1)
    with _waiting_loops(provider, 2):
        assert await provider.fetch_work_item(["default"], _LOCK) is not None  # asked for three: no backlog
    await _queue_work(provider, 3, "b")
    with _waiting_loops(provider, 2):
        assert await provider.fetch_work_item(["default"], _LOCK) is not None
        assert _waiting(provider) == 2, "the loops are left to the writes that queue work"
    assert len(await _drain(other)) == 2
