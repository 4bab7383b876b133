"""A suspect turn runs alone in its process: nothing else is fetched or in flight while it runs."""

from __future__ import annotations

import asyncio

import pytest

from perdure.providers._base import OrchestrationItem, QueuedMessage
from perdure.runtime._isolation import TurnGate, is_suspect


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
