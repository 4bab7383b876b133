"""In-process wake-ups: kept due-time answers, wake-ups missed while fetching, waits until an end."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from perdure.providers._handoff import Handoffs
from perdure.providers._signal import DueTimes, SignalBoard


def test_a_due_answer_is_kept_until_forgotten() -> None:
    due = DueTimes()
    assert due.get("orchestrator") == (False, None)
    due.put("orchestrator", due.version, 30.0)
    known, seconds = due.get("orchestrator")
    assert known and seconds is not None and 29 < seconds <= 30
    due.forget()
    assert due.get("orchestrator") == (False, None)


def test_an_answer_read_across_a_forget_is_not_kept() -> None:
    # The answer was read before a delayed write committed: it may miss that write's due time.
    due = DueTimes()
    version = due.version
    due.forget()
    due.put("orchestrator", version, 30.0)
    assert due.get("orchestrator") == (False, None)


def test_nothing_due_is_kept_but_due_now_is_not() -> None:
    due = DueTimes()
    due.put("a", due.version, None)
    assert due.get("a") == (True, None)
    due.put("b", due.version, 0.0)  # fetchable now: the caller fetches, and must ask again after
    assert due.get("b") == (False, None)


def test_an_answer_expires_after_max_age() -> None:
    due = DueTimes(max_age=0.0)
    due.put("a", due.version, 30.0)
    assert due.get("a") == (False, None)


async def test_a_wake_up_sent_while_a_loop_was_fetching_is_noticed() -> None:
    board = SignalBoard()
    board.fetching("orchestrator")
    board.work("orchestrator")  # nobody waits: the fetching loop would miss it
    assert board.missed_wake_up("orchestrator")
    board.fetching("orchestrator")
    assert not board.missed_wake_up("orchestrator")
    assert not board.missed_wake_up("orchestrator"), "no fetch began since"


async def test_another_process_writing_forgets_every_due_answer() -> None:
    board = SignalBoard()
    board.due.put("a", board.due.version, 30.0)
    board.everything()
    assert board.due.get("a") == (False, None)


async def _waiting(board: SignalBoard, until_ended: int | None) -> asyncio.Task[Any]:
    task = asyncio.create_task(board.wait_instance("i", 5, until_ended))
    await asyncio.sleep(0)  # registered
    return task


@pytest.mark.parametrize(("ended", "wakes"), [((False, 1), False), ((True, 0), False), ((True, 1), True)])
async def test_a_wait_until_ended_wakes_only_for_an_end_from_its_execution(
    ended: tuple[bool, int], wakes: bool
) -> None:
    board = SignalBoard()
    task = await _waiting(board, until_ended=1)
    board.instance("i", ended)
    await asyncio.sleep(0.05)
    assert task.done() is wakes
    task.cancel()


async def test_a_wait_until_ended_wakes_for_a_change_it_cannot_read() -> None:
    board = SignalBoard()
    task = await _waiting(board, until_ended=1)
    board.instance("i")  # another process changed it: nobody knows how
    await asyncio.wait_for(task, 1)


async def test_two_changes_before_the_waiter_runs_wake_it_whatever_they_were() -> None:
    # The first change is not an end, the second is; the waiter sees only the last one's news, so
    # it must not sleep on through the pair.
    board = SignalBoard()
    task = await _waiting(board, until_ended=1)
    board.instance("i", (True, 1))
    board.instance("i", (False, 2))
    await asyncio.wait_for(task, 1)


async def test_a_wait_until_ended_returns_the_row_its_ending_change_came_with() -> None:
    board = SignalBoard()
    task = await _waiting(board, until_ended=1)
    board.instance("i", (False, 1), ("running",))  # ends nothing: the waiter sleeps on
    board.instance("i", (True, 1), ("completed",))
    assert await asyncio.wait_for(task, 1) == ("completed",)


async def test_a_row_is_not_returned_after_another_change_it_cannot_read() -> None:
    board = SignalBoard()
    task = await _waiting(board, until_ended=1)
    board.instance("i")  # unknown: the waiter must read
    board.instance("i", (True, 1), ("completed",))
    assert await asyncio.wait_for(task, 1) is None


async def test_a_change_that_ends_nothing_wakes_the_waiters_of_any_change_only() -> None:
    board = SignalBoard()
    for_end, for_any = await _waiting(board, until_ended=1), await _waiting(board, until_ended=None)
    board.instance("i", (False, 1))
    assert await asyncio.wait_for(for_any, 1) is None
    await asyncio.sleep(0.05)
    assert not for_end.done()
    board.instance("i", (False, 1))  # the waiter of any change is gone: nobody to wake
    board.instance("i", (True, 1), ("completed",))
    assert await asyncio.wait_for(for_end, 1) == ("completed",)


# --- work items handed to this process's next fetches --------------------------------------------

KEY = (("default",), 10.0, "w1")


async def test_handed_items_go_to_fetches_that_ask_for_the_same_thing_in_order() -> None:
    released: list[object] = []

    async def release(handed: object) -> None:
        released.append(handed)

    handoffs = Handoffs(release)
    handoffs.give(KEY, [((1,), "t"), ((2,), "t")])
    assert handoffs.take((("other",), 10.0, "w1")) is None
    assert handoffs.last_fetch == (("other",), 10.0, "w1")
    assert handoffs.take(KEY) == ((1,), "t")
    assert handoffs.take(KEY) == ((2,), "t")
    assert handoffs.take(KEY) is None
    await handoffs.close()
    assert released == []


async def test_an_item_no_fetch_takes_is_released_and_so_is_every_item_left_at_close() -> None:
    released: list[object] = []

    async def release(handed: object) -> None:
        released.append(handed)

    handoffs = Handoffs(release, expires=0.05)
    handoffs.give(KEY, [((1,), "t")])
    await asyncio.sleep(0.2)
    assert released == [((1,), "t")]
    assert handoffs.take(KEY) is None, "released items are not handed out"
    handoffs = Handoffs(release, expires=60)
    handoffs.give(KEY, [((2,), "t")])
    await handoffs.close()
    assert released == [((1,), "t"), ((2,), "t")]


async def _no_release(handed: object) -> None:
    raise AssertionError("nothing is released here")


async def test_the_fetch_after_a_handed_item_is_skipped_only_if_nothing_fetchable_was_signalled() -> None:
    board, handoffs = SignalBoard(), Handoffs(_no_release)
    activity = board.queues["activity"]
    handoffs.found_empty(activity.fresh)  # this loop's fetch from the store found nothing
    handoffs.give(KEY, [((1,), "t")])
    board.work("activity", 1, handed=True)  # the turn's only item is locked for this process
    assert handoffs.take(KEY) == ((1,), "t")
    assert handoffs.still_empty(activity.fresh)
    handoffs.give(KEY, [((2,), "t")])
    board.work("activity", 1, handed=True)
    assert handoffs.take(KEY) == ((2,), "t")
    assert handoffs.still_empty(activity.fresh), "a skipped fetch counts as one that found nothing"


@pytest.mark.parametrize(
    "news",
    [
        lambda board: board.work("activity", 2),  # an item no loop was handed
        lambda board: board.everything(),  # another process wrote
    ],
)
async def test_the_fetch_after_a_handed_item_asks_the_store_after_other_news(news: Any) -> None:
    board, handoffs = SignalBoard(), Handoffs(_no_release)
    handoffs.found_empty(board.queues["activity"].fresh)
    handoffs.give(KEY, [((1,), "t")])
    assert handoffs.take(KEY) is not None
    news(board)
    assert not handoffs.still_empty(board.queues["activity"].fresh)


async def test_a_fetch_not_after_a_handed_item_always_asks_the_store() -> None:
    board, handoffs = SignalBoard(), Handoffs(_no_release)
    handoffs.found_empty(board.queues["activity"].fresh)
    assert not handoffs.still_empty(board.queues["activity"].fresh), "a poll after an empty fetch asks again"
    handoffs.give(KEY, [((1,), "t")])
    assert handoffs.take(KEY) is not None  # no empty fetch of this loop before it
    assert not handoffs.still_empty(board.queues["activity"].fresh)
