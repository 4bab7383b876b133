"""A suspect turn runs alone in its process: nothing else is fetched or in flight while it runs,
and the activities that keep running beside it are not charged for it."""

from __future__ import annotations

import asyncio

import pytest

from perdure import ProviderError
from perdure.providers._base import OrchestrationItem, QueuedMessage, WorkItem
from perdure.runtime._isolation import HeldWork, TurnGate, is_suspect


def item(*counts: int) -> OrchestrationItem:
    messages = [
        QueuedMessage(message_id=n, instance_id="i", execution_id=None, event=None, dequeue_count=count)
        for n, count in enumerate(counts)
    ]
    return OrchestrationItem(instance_id="i", lock_token="t", messages=messages, state=None, history=[])


def test_a_turn_is_suspect_once_a_message_was_delivered_before() -> None:
    assert not is_suspect(item(1, 1))
    assert is_suspect(item(1, 2))


async def _settle() -> None:
    for _ in range(10):
        await asyncio.sleep(0)


async def test_turns_run_side_by_side_until_a_suspect_waits_for_them_and_runs_alone() -> None:
    gate = TurnGate()
    await gate.admit()
    await gate.admit()  # two ordinary turns in flight
    suspect = asyncio.ensure_future(_suspect(gate))
    await _settle()
    assert not suspect.done(), "the suspect waits for the turns in flight"
    late = asyncio.ensure_future(gate.admit())
    await _settle()
    assert not late.done(), "no loop fetches while a suspect waits or runs"
    await gate.leave(alone=False)
    await gate.leave(alone=False)
    await _settle()
    assert suspect.done() and not late.done()  # the suspect runs, alone
    await gate.leave(alone=True)
    await asyncio.wait_for(late, 1)  # and then the others fetch again
    await gate.leave(alone=False)


async def _suspect(gate: TurnGate) -> None:
    await gate.admit()
    assert await gate.isolate()


async def test_a_second_suspect_is_refused_while_the_first_runs_alone() -> None:
    gate = TurnGate()
    await gate.admit()
    await gate.admit()
    first = asyncio.ensure_future(gate.isolate())
    await _settle()
    assert not first.done()
    assert await gate.isolate() is False  # at once: the second is put back, not held
    await gate.leave(alone=False)
    assert await asyncio.wait_for(first, 1) is True
    await gate.leave(alone=True)
    await asyncio.wait_for(gate.admit(), 1)


async def test_a_suspect_cancelled_while_waiting_leaves_the_gate_as_it_found_it() -> None:
    gate = TurnGate()
    await gate.admit()
    await gate.admit()
    waiting = asyncio.ensure_future(gate.isolate())
    await _settle()
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    await gate.leave(alone=False)  # the cancelled loop leaves as an ordinary one
    await gate.leave(alone=False)
    await asyncio.wait_for(gate.admit(), 1)


class Store:
    """Records the charges asked of it; refuses them while ``down``."""

    def __init__(self) -> None:
        self.charges: list[tuple[list[int], bool]] = []
        self.down = False

    async def charge_work_deliveries(self, items: list[WorkItem], *, charged: bool) -> None:
        if self.down:
            raise ProviderError("the store is away")
        self.charges.append(([item.item_id for item in items], charged))


def work(item_id: int) -> WorkItem:
    return WorkItem(item_id=item_id, lock_token=f"t{item_id}", request=None, dequeue_count=1)


async def _fetch(held: HeldWork, item: WorkItem | None) -> None:
    await held.fetching()
    await held.fetched(item)


async def test_a_suspect_waits_for_fetches_in_flight_and_uncharges_what_they_hold_until_it_is_over() -> None:
    held, store = HeldWork(), Store()
    await _fetch(held, work(1))
    await _fetch(held, work(2))
    await _fetch(held, None)
    held.done(work(2))  # acked: no longer anyone's to answer for
    await held.fetching()  # a fetch in progress: what it returns is held too
    uncharging = asyncio.ensure_future(held.uncharge(store))  # type: ignore[arg-type]
    await _settle()
    assert not uncharging.done(), "it waits for the fetch in progress"
    late = asyncio.ensure_future(held.fetching())
    await held.fetched(work(3))
    items = await asyncio.wait_for(uncharging, 1)
    assert items is not None and sorted(i.item_id for i in items) == [1, 3]
    assert store.charges == [([1, 3], False)]
    await _settle()
    assert not late.done(), "nothing is fetched while the suspect runs"

    await held.recharge(store, items)  # type: ignore[arg-type]
    assert store.charges[-1] == ([1, 3], True)
    await asyncio.wait_for(late, 1)


async def test_a_store_that_refuses_the_uncharge_keeps_the_suspect_from_running_and_fetching_going() -> None:
    held, store = HeldWork(), Store()
    await _fetch(held, work(1))
    store.down = True
    assert await held.uncharge(store) is None  # type: ignore[arg-type]
    await asyncio.wait_for(held.fetching(), 1)
    await held.fetched(None)

    assert await held.uncharge(Store()) == [work(1)]  # type: ignore[arg-type]
    await held.recharge(store, [work(1)])  # type: ignore[arg-type]  # refused: logged, and fetching goes on
    await asyncio.wait_for(held.fetching(), 1)


async def test_a_suspect_cancelled_while_waiting_for_a_fetch_leaves_fetching_as_it_was() -> None:
    held, store = HeldWork(), Store()
    await held.fetching()
    uncharging = asyncio.ensure_future(held.uncharge(store))  # type: ignore[arg-type]
    await _settle()
    uncharging.cancel()
    with pytest.raises(asyncio.CancelledError):
        await uncharging
    await held.fetched(None)
    await asyncio.wait_for(held.fetching(), 1)
    assert store.charges == []
