"""The provider conformance suite: every method of the contract, on every provider kind.

Each test drives the provider directly (no runtime), so a failure names the provider behaviour
that broke, not a symptom three layers up.
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import TypeVar

import pytest

from perdure import AwaitedEvent, InstanceAlreadyExistsError, OrchestrationStatus, Provider
from perdure.engine.events import (
    ActivityCompleted,
    EventRaised,
    OrchestrationCompleted,
    OrchestrationResumed,
    OrchestrationStarted,
    StartRequested,
    TerminateRequested,
)
from perdure.providers import (
    ActivityRequest,
    Heartbeat,
    HistoryMark,
    InstanceFilter,
    InstanceUpdate,
    LockLostError,
    Message,
    NewInstance,
    OrchestrationItem,
    TurnCommit,
    WorkerInfo,
    WorkerLiveness,
    WorkItem,
)

T = TypeVar("T")


# --- helpers -------------------------------------------------------------------------------------------


def start(instance_id: str, name: str = "Orch", input: object = None, parent: str | None = None) -> Message:
    return Message(
        instance_id=instance_id,
        execution_id=None,
        event=StartRequested(name=name, input=input, parent_instance=parent),
        new_instance=NewInstance(name=name, input=input, parent_instance_id=parent),
    )


def raised(instance_id: str, name: str, data: object = None, visible_at: datetime | None = None) -> Message:
    return Message(
        instance_id=instance_id, execution_id=1, event=EventRaised(name=name, data=data), visible_at=visible_at
    )


def request(instance_id: str, queue: str = "default", source: int = 2, input: object = None) -> ActivityRequest:
    return ActivityRequest(
        instance_id=instance_id,
        execution_id=1,
        source_event_id=source,
        name="Act",
        input=input,
        queue=queue,
        attempt=1,
        orchestration_name="Orch",
        orchestration_version="1.0.0",
    )


def update(status: OrchestrationStatus, *, output: object = None, parent: str | None = None) -> InstanceUpdate:
    return InstanceUpdate(
        name="Orch",
        version="1.0.0",
        status=status,
        execution_id=1,
        input="in",
        output=output,
        parent_instance_id=parent,
    )


async def eventually(probe: Callable[[], Awaitable[T | None]], what: str, timeout: float = 10.0) -> T:
    """Call ``probe`` until it returns something other than ``None`` (polling, with a deadline)."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if value is not None:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.02)


async def fetch(provider: Provider, lock_seconds: float = 30.0) -> OrchestrationItem:
    item = await provider.fetch_orchestration_item(lock_seconds)
    assert item is not None, "expected an instance with visible messages"
    return item


async def fetch_work(provider: Provider, queues: tuple[str, ...] = ("default",), lock: float = 30.0) -> WorkItem:
    item = await provider.fetch_work_item(queues, lock)
    assert item is not None, "expected a visible work item"
    return item


async def run_start_turn(
    provider: Provider, instance_id: str, *, status: OrchestrationStatus = OrchestrationStatus.RUNNING, **extra: object
) -> None:
    """Fetch the instance and commit a first turn: OrchestrationStarted + a state."""
    item = await fetch(provider)
    assert item.instance_id == instance_id
    commit = TurnCommit(
        execution_id=1,
        history=[OrchestrationStarted(event_id=1, name="Orch", version="1.0.0", input="in")],
        state=update(status),
        consumed=[m.message_id for m in item.messages],
        **extra,  # type: ignore[arg-type]
    )
    await provider.ack_orchestration_item(item, commit)


async def drain_orchestrations(provider: Provider) -> None:
    """Consume every visible message, so tests start from empty queues."""
    while (item := await provider.fetch_orchestration_item(30)) is not None:
        await provider.ack_orchestration_item(
            item, TurnCommit(execution_id=1, consumed=[m.message_id for m in item.messages])
        )


# --- instances and history --------------------------------------------------------------------------------


async def test_create_instance_is_pending_with_its_start_queued(provider: Provider) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    await provider.create_instance(start("a", input={"x": [1, 2]}))

    state = await provider.get_state("a")
    assert state is not None
    assert (state.instance_id, state.name, state.status, state.execution_id) == (
        "a",
        "Orch",
        OrchestrationStatus.PENDING,
        1,
    )
    assert state.input == {"x": [1, 2]}
    assert state.created_at.tzinfo is not None and state.created_at > before
    assert await provider.get_state("missing") is None
    item = await fetch(provider)
    assert [type(m.event) for m in item.messages] == [StartRequested]
    assert item.messages[0].dequeue_count == 1
    assert item.state is not None and item.state.status is OrchestrationStatus.PENDING
    assert item.history == []


async def test_create_instance_twice_raises_and_changes_nothing(provider: Provider) -> None:
    await provider.create_instance(start("a", input=1))
    with pytest.raises(InstanceAlreadyExistsError):
        await provider.create_instance(start("a", name="Other", input=2))

    state = await provider.get_state("a")
    assert state is not None and (state.name, state.input) == ("Orch", 1)
    item = await fetch(provider)
    assert len(item.messages) == 1


async def test_create_instance_needs_the_instance_row(provider: Provider) -> None:
    bare = Message(instance_id="a", execution_id=None, event=StartRequested(name="Orch"))
    with pytest.raises(ValueError, match="new_instance"):
        await provider.create_instance(bare)
    assert await provider.get_state("a") is None
    assert await provider.fetch_orchestration_item(30) is None


async def test_enqueued_start_creates_a_missing_instance_only(provider: Provider) -> None:
    await provider.create_instance(start("existing", input="original"))
    await provider.enqueue_messages([start("child", name="Child", input=5, parent="parent"), start("existing", "X")])

    state = await provider.get_state("child")
    assert state is not None
    assert (state.name, state.status, state.input, state.parent_instance_id) == (
        "Child",
        OrchestrationStatus.PENDING,
        5,
        "parent",
    )
    existing = await provider.get_state("existing")
    assert existing is not None and (existing.name, existing.input) == ("Orch", "original")
    item = await fetch(provider)
    assert item.instance_id == "existing" and len(item.messages) == 2, "the second start is queued all the same"


async def test_only_the_record_says_what_a_message_creates(provider: Provider) -> None:
    # The provider never looks into the event: a start without new_instance creates nothing, and
    # new_instance creates the row whatever the event is.
    await provider.enqueue_messages(
        [
            Message(instance_id="bare", execution_id=None, event=StartRequested(name="Orch")),
            Message(
                instance_id="made", execution_id=None, event=EventRaised(name="e"), new_instance=NewInstance(name="N")
            ),
        ]
    )

    assert await provider.get_state("bare") is None
    made = await provider.get_state("made")
    assert made is not None and (made.name, made.status) == ("N", OrchestrationStatus.PENDING)


async def test_messages_for_an_unknown_instance_are_fetched_without_state(provider: Provider) -> None:
    await provider.enqueue_messages([raised("ghost", "e")])

    item = await fetch(provider)
    assert (item.instance_id, item.state, item.history) == ("ghost", None, [])
    assert [m.event for m in item.messages] == [EventRaised(name="e")]


async def test_ack_writes_history_state_and_queues_in_one_commit(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    await run_start_turn(provider, "a", activity_items=[request("a")], messages=[raised("other", "hello", 7)])

    state = await provider.get_state("a")
    assert state is not None and state.status is OrchestrationStatus.RUNNING
    assert state.updated_at >= state.created_at
    assert [type(e) for e in await provider.get_history("a")] == [OrchestrationStarted]
    assert await provider.get_history("a", 1) == await provider.get_history("a")
    assert await provider.get_history("a", 2) == []
    assert await provider.get_history("missing") == []
    work = await fetch_work(provider)
    assert work.request == request("a")
    other = await fetch(provider)
    assert other.instance_id == "other"
    assert [m.event for m in other.messages] == [EventRaised(name="hello", data=7)]
    assert await provider.fetch_orchestration_item(30) is None, "the start message was consumed"


async def test_history_of_each_execution_is_kept(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    await run_start_turn(provider, "a", messages=[raised("a", "next")])
    item = await fetch(provider)
    second = dataclasses.replace(update(OrchestrationStatus.RUNNING), execution_id=2)
    await provider.ack_orchestration_item(
        item,
        TurnCommit(
            execution_id=2,
            history=[OrchestrationStarted(event_id=1, name="Orch", version="2.0.0", input="again")],
            state=second,
            consumed=[m.message_id for m in item.messages],
        ),
    )

    first, current = await provider.get_history("a", 1), await provider.get_history("a")
    assert [e.version for e in first if isinstance(e, OrchestrationStarted)] == ["1.0.0"]
    assert [e.version for e in current if isinstance(e, OrchestrationStarted)] == ["2.0.0"]
    state = await provider.get_state("a")
    assert state is not None and state.execution_id == 2


# --- the orchestrator queue -------------------------------------------------------------------------------


async def _history_of(provider: Provider, instance_id: str, length: int) -> list[int]:
    """Give ``instance_id`` an execution 1 of ``length`` events (one turn each after the start); their ids."""
    await provider.create_instance(start(instance_id))
    await run_start_turn(provider, instance_id)
    for event_id in range(2, length + 1):
        await provider.enqueue_messages([raised(instance_id, "tick", event_id)])
        item = await fetch(provider)
        event = EventRaised(event_id=event_id, timestamp=datetime.now(UTC), name="tick", data=event_id)
        commit = TurnCommit(execution_id=1, history=[event], consumed=[m.message_id for m in item.messages])
        await provider.ack_orchestration_item(item, commit)
    await provider.enqueue_messages([raised(instance_id, "tick", "next")])
    return list(range(1, length + 1))


async def _fetched(provider: Provider, held: dict[str, HistoryMark]) -> OrchestrationItem:
    item = await provider.fetch_orchestration_item(30, held=held)
    assert item is not None
    await provider.abandon_orchestration_item(item, undo_delivery=True)
    return item


@pytest.mark.parametrize("length", [3, 40])  # short and long histories (PostgreSQL treats them apart)
async def test_a_fetch_returns_only_the_history_after_what_the_caller_holds(provider: Provider, length: int) -> None:
    ids = await _history_of(provider, "h", length)
    whole = await _fetched(provider, {})
    assert [e.event_id for e in whole.history or []] == ids and whole.history_from == 1
    assert await provider.get_history("h") == whole.history

    last = await _fetched(provider, {"h": HistoryMark(execution_id=1, event_id=length)})
    assert last.history == (whole.history or [])[-1:] and last.history_from == length, "only the event it holds"
    tail = await _fetched(provider, {"h": HistoryMark(execution_id=1, event_id=2)})
    assert tail.history == (whole.history or [])[1:] and tail.history_from == 2, "the event it holds, then the rest"
    assert [m.event for m in tail.messages] == [m.event for m in whole.messages]
    assert tail.state == whole.state


@pytest.mark.parametrize("length", [3, 40])
async def test_a_mark_that_does_not_fit_the_store_gets_the_whole_history(provider: Provider, length: int) -> None:
    ids = await _history_of(provider, "h", length)
    for mark in (
        HistoryMark(execution_id=2, event_id=1),  # another execution
        HistoryMark(execution_id=1, event_id=length + 5),  # more than is stored
    ):
        item = await _fetched(provider, {"h": mark, "other": HistoryMark(execution_id=1, event_id=1)})
        assert [e.event_id for e in item.history or []] == ids and item.history_from == 1, mark
    item = await _fetched(provider, {"other": HistoryMark(execution_id=1, event_id=length)})
    assert [e.event_id for e in item.history or []] == ids and item.history_from == 1, "a mark of another instance"


async def test_a_mark_on_an_instance_without_history_changes_nothing(provider: Provider) -> None:
    await provider.create_instance(start("fresh"))
    item = await _fetched(provider, {"fresh": HistoryMark(execution_id=1, event_id=1)})
    assert item.history == [] and item.history_from == 1 and item.state is not None


async def test_a_locked_instance_is_not_fetched_twice(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    item = await fetch(provider)
    await provider.enqueue_messages([raised("a", "more")])

    assert await provider.fetch_orchestration_item(30) is None
    await provider.ack_orchestration_item(item, TurnCommit(execution_id=1, consumed=[item.messages[0].message_id]))
    again = await fetch(provider)
    assert [m.event for m in again.messages] == [EventRaised(name="more")]


async def test_concurrent_fetches_lock_each_instance_once(provider: Provider) -> None:
    for n in range(6):
        await provider.create_instance(start(f"i{n}"))
        await provider.enqueue_messages([raised(f"i{n}", "e")])

    items = await asyncio.gather(*(provider.fetch_orchestration_item(30) for _ in range(10)))
    fetched = [item.instance_id for item in items if item is not None]
    assert sorted(fetched) == [f"i{n}" for n in range(6)]


async def test_only_consumed_messages_are_deleted(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    await provider.enqueue_messages([raised("a", "one"), raised("a", "two")])
    item = await fetch(provider)
    assert [type(m.event) for m in item.messages] == [StartRequested, EventRaised, EventRaised]
    assert [m.message_id for m in item.messages] == sorted(m.message_id for m in item.messages)

    keep = item.messages[2]
    await provider.ack_orchestration_item(
        item, TurnCommit(execution_id=1, consumed=[m.message_id for m in item.messages[:2]])
    )
    again = await fetch(provider)
    assert [m.message_id for m in again.messages] == [keep.message_id]
    assert again.messages[0].dequeue_count == 1, "a successful turn restarts the count of what it left"


async def test_messages_arriving_during_a_turn_stay_queued(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    item = await fetch(provider)
    await provider.enqueue_messages([raised("a", "late")])
    await provider.ack_orchestration_item(
        item, TurnCommit(execution_id=1, consumed=[m.message_id for m in item.messages])
    )

    again = await fetch(provider)
    assert [m.event for m in again.messages] == [EventRaised(name="late")]


async def test_abandon_releases_and_delays_the_messages(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    item = await fetch(provider)
    await provider.abandon_orchestration_item(item)
    again = await fetch(provider)
    assert again.messages[0].dequeue_count == 2

    abandoned_at = time.monotonic()
    await provider.abandon_orchestration_item(again, delay=0.5)
    assert await provider.fetch_orchestration_item(30) is None
    third = await eventually(lambda: provider.fetch_orchestration_item(30), "the delayed messages")
    assert time.monotonic() - abandoned_at >= 0.45
    assert third.messages[0].dequeue_count == 3


async def test_an_abandon_may_take_the_delivery_back(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    item = await fetch(provider)
    await provider.abandon_orchestration_item(item)
    again = await fetch(provider)
    assert again.messages[0].dequeue_count == 2
    await provider.abandon_orchestration_item(again, undo_delivery=True)  # put back before it ran
    third = await fetch(provider)
    assert third.messages[0].dequeue_count == 2
    await provider.abandon_orchestration_item(third, delay=0.2, undo_delivery=True)
    fourth = await eventually(lambda: provider.fetch_orchestration_item(30), "the delayed messages")
    assert fourth.messages[0].dequeue_count == 2

    await provider.abandon_orchestration_item(fourth)
    taken = await fetch(provider, lock_seconds=0.2)
    fresh = await eventually(lambda: provider.fetch_orchestration_item(30), "the take-over")
    await provider.abandon_orchestration_item(taken, undo_delivery=True)  # no longer its lock: no effect
    await provider.abandon_orchestration_item(fresh)
    assert (await fetch(provider)).messages[0].dequeue_count == 5


async def test_an_expired_lock_is_taken_over_and_the_stale_ack_writes_nothing(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    stale = await fetch(provider, lock_seconds=0.3)
    assert await provider.fetch_orchestration_item(30) is None

    fresh = await eventually(lambda: provider.fetch_orchestration_item(30), "the take-over")
    assert fresh.instance_id == "a" and fresh.lock_token != stale.lock_token
    assert fresh.messages[0].dequeue_count == 2
    with pytest.raises(LockLostError):
        await provider.ack_orchestration_item(
            stale,
            TurnCommit(
                execution_id=1,
                history=[OrchestrationStarted(event_id=1, name="Orch", version="1.0.0")],
                state=update(OrchestrationStatus.COMPLETED),
                activity_items=[request("a")],
                messages=[raised("b", "x")],
                consumed=[m.message_id for m in stale.messages],
            ),
        )
    assert await provider.get_history("a") == []
    state = await provider.get_state("a")
    assert state is not None and state.status is OrchestrationStatus.PENDING
    assert await provider.fetch_work_item(["default"], 30) is None
    assert await provider.fetch_orchestration_item(30) is None, "nothing was enqueued, and 'a' is still locked"

    await provider.ack_orchestration_item(
        fresh, TurnCommit(execution_id=1, consumed=[m.message_id for m in fresh.messages])
    )
    assert await provider.fetch_orchestration_item(30) is None


async def test_a_stale_abandon_leaves_the_new_lock_alone(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    stale = await fetch(provider, lock_seconds=0.2)
    fresh = await eventually(lambda: provider.fetch_orchestration_item(30), "the take-over")
    await provider.abandon_orchestration_item(stale)

    assert await provider.fetch_orchestration_item(30) is None, "the new holder still has the instance"
    await provider.ack_orchestration_item(fresh, TurnCommit(execution_id=1))


async def test_a_suspended_instance_is_fetched_only_for_control_messages(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    await run_start_turn(provider, "a", status=OrchestrationStatus.SUSPENDED)
    await provider.enqueue_messages([raised("a", "held")])
    # What counts is the flag, not the event: an unflagged resume waits like anything else.
    await provider.enqueue_messages([Message(instance_id="a", execution_id=1, event=OrchestrationResumed())])
    assert await provider.fetch_orchestration_item(30) is None

    await provider.enqueue_messages(
        [Message(instance_id="a", execution_id=1, event=OrchestrationResumed(reason="go"), control=True)]
    )
    item = await fetch(provider)
    assert [type(m.event) for m in item.messages] == [EventRaised, OrchestrationResumed, OrchestrationResumed]


async def test_a_terminate_request_reaches_a_suspended_instance(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    await run_start_turn(provider, "a", status=OrchestrationStatus.SUSPENDED)
    await provider.enqueue_messages(
        [Message(instance_id="a", execution_id=1, event=TerminateRequested(), control=True)]
    )

    item = await fetch(provider)
    assert [type(m.event) for m in item.messages] == [TerminateRequested]


async def test_a_timer_message_is_invisible_until_due(provider: Provider) -> None:
    due = datetime.now(UTC) + timedelta(seconds=0.6)
    await provider.enqueue_messages([raised("a", "timer", visible_at=due)])
    assert await provider.fetch_orchestration_item(30) is None

    item = await eventually(lambda: provider.fetch_orchestration_item(30), "the timer")
    assert datetime.now(UTC) >= due - timedelta(milliseconds=50)
    assert [m.event for m in item.messages] == [EventRaised(name="timer")]


# --- worker queues ----------------------------------------------------------------------------------------


async def _enqueue_work(provider: Provider, *requests: ActivityRequest) -> None:
    await provider.create_instance(start("a"))
    await run_start_turn(provider, "a", activity_items=list(requests))


async def test_work_items_are_fetched_once_and_acked_with_their_completion(provider: Provider) -> None:
    await _enqueue_work(provider, request("a", source=2, input="x"), request("a", source=3, input="y"))

    first, second = await fetch_work(provider), await fetch_work(provider)
    assert [first.request, second.request] == [request("a", source=2, input="x"), request("a", source=3, input="y")]
    assert first.dequeue_count == 1
    assert await provider.fetch_work_item(["default"], 30) is None
    completion = ActivityCompleted(source_event_id=2, result="done")
    await provider.ack_work_item(first, Message(instance_id="a", execution_id=1, event=completion))

    item = await fetch(provider)
    assert [(m.execution_id, m.event) for m in item.messages] == [(1, completion)]
    await provider.abandon_work_item(second)
    assert (await fetch_work(provider)).request == second.request


async def test_activity_workers_names_the_worker_holding_each_running_activity(provider: Provider) -> None:
    older = dataclasses.replace(request("a", source=9), execution_id=0)  # of an earlier execution
    await _enqueue_work(provider, request("a", source=2), request("a", source=3), request("a", source=4), older)
    assert await provider.activity_workers("a", 1) == {}, "queued, not running"

    by_w1 = await provider.fetch_work_item(["default"], 30, worker_id="w1")
    anonymous = await fetch_work(provider)  # a lock without a worker record names no worker
    expiring = await provider.fetch_work_item(["default"], 0.3, worker_id="w2")
    by_w3 = await provider.fetch_work_item(["default"], 30, worker_id="w3")
    assert by_w1 and expiring and by_w3 and by_w3.request is not None and by_w3.request.execution_id == 0
    assert [i.request.source_event_id for i in (by_w1, anonymous, expiring) if i.request] == [2, 3, 4]
    assert await provider.activity_workers("a", 1) == {2: "w1", 4: "w2"}
    assert await provider.activity_workers("a", 0) == {9: "w3"}
    assert await provider.activity_workers("other", 1) == {}

    await asyncio.sleep(0.5)  # w2's lock expires: the item waits for a worker again
    await provider.ack_work_item(
        by_w1, Message(instance_id="a", execution_id=1, event=ActivityCompleted(source_event_id=2))
    )
    assert await provider.activity_workers("a", 1) == {}


async def test_a_completion_that_would_create_an_instance_is_refused(provider: Provider) -> None:
    await _enqueue_work(provider, request("a"))
    item = await fetch_work(provider)
    completion = ActivityCompleted(source_event_id=2, result="done")
    spawning = Message(instance_id="b", execution_id=1, event=completion, new_instance=NewInstance(name="Orch"))

    with pytest.raises(ValueError, match="cannot create"):
        await provider.ack_work_item(item, spawning)
    assert await provider.get_state("b") is None
    assert await provider.fetch_orchestration_item(30) is None, "nothing was enqueued"
    await provider.ack_work_item(item, Message(instance_id="a", execution_id=1, event=completion))
    assert [m.event for m in (await fetch(provider)).messages] == [completion]


async def test_work_items_are_fetched_only_from_the_given_queues(provider: Provider) -> None:
    await _enqueue_work(provider, request("a", queue="gpu"), request("a", queue="default"))

    gpu = await fetch_work(provider, ("gpu",))
    assert gpu.request is not None and gpu.request.queue == "gpu"
    assert await provider.fetch_work_item(["gpu", "other"], 30) is None
    default = await fetch_work(provider, ("other", "default"))
    assert default.request is not None and default.request.queue == "default"


async def test_an_abandoned_work_item_comes_back_after_its_delay(provider: Provider) -> None:
    await _enqueue_work(provider, request("a"))
    item = await fetch_work(provider)
    abandoned_at = time.monotonic()
    await provider.abandon_work_item(item, delay=0.5)
    assert await provider.fetch_work_item(["default"], 30) is None

    again = await eventually(lambda: provider.fetch_work_item(["default"], 30), "the delayed work item")
    assert time.monotonic() - abandoned_at >= 0.45
    assert again.dequeue_count == 2


async def test_an_expired_work_item_is_taken_over_and_the_stale_holder_loses(provider: Provider) -> None:
    await _enqueue_work(provider, request("a"))
    stale = await fetch_work(provider, lock=0.3)
    fresh = await eventually(lambda: provider.fetch_work_item(["default"], 30), "the take-over")
    assert fresh.dequeue_count == 2
    completion = Message(instance_id="a", execution_id=1, event=ActivityCompleted(source_event_id=2, result="stale"))

    with pytest.raises(LockLostError):
        await provider.ack_work_item(stale, completion)
    with pytest.raises(LockLostError):
        await provider.renew_work_item(stale, 30)
    with pytest.raises(LockLostError):
        await provider.abandon_work_item(stale)
    assert await provider.fetch_orchestration_item(30) is None, "the stale completion was not enqueued"
    await provider.ack_work_item(fresh, completion)
    assert len((await fetch(provider)).messages) == 1


async def test_renewing_keeps_a_work_item_locked(provider: Provider) -> None:
    await _enqueue_work(provider, request("a"))
    item = await fetch_work(provider, lock=0.5)
    await provider.renew_work_item(item, 30)
    fetched_again = await provider.fetch_work_item(["default"], 30)
    deadline = time.monotonic() + 1.0
    while fetched_again is None and time.monotonic() < deadline:  # well past the original 0.5 s lock
        await asyncio.sleep(0.05)
        fetched_again = await provider.fetch_work_item(["default"], 30)
    assert fetched_again is None
    await provider.ack_work_item(
        item, Message(instance_id="a", execution_id=1, event=ActivityCompleted(source_event_id=2))
    )


async def test_a_turn_deletes_the_work_items_of_the_activities_it_cancels(provider: Provider) -> None:
    """Locked or not; only those of its execution; one scheduled and cancelled in the same turn too."""
    other_execution = dataclasses.replace(request("a", source=3), execution_id=2)
    await _enqueue_work(provider, request("a", source=2), request("a", source=3), other_execution)
    running = await fetch_work(provider)
    assert running.request == request("a", source=2)
    await provider.enqueue_messages([raised("a", "go")])
    item = await fetch(provider)
    commit = TurnCommit(
        execution_id=1,
        activity_items=[request("a", source=7), request("a", source=8)],
        consumed=[m.message_id for m in item.messages],
        cancelled_activities=[2, 3, 7],
    )
    await provider.ack_orchestration_item(item, commit)

    assert await provider.work_items_held([running]) == set()
    left = [await fetch_work(provider), await fetch_work(provider)]
    assert sorted((w.request.execution_id, w.request.source_event_id) for w in left if w.request) == [(1, 8), (2, 3)]
    assert await provider.fetch_work_item(["default"], 30) is None
    completion = Message(instance_id="a", execution_id=1, event=ActivityCompleted(source_event_id=2, result="late"))
    with pytest.raises(LockLostError):
        await provider.ack_work_item(running, completion)


async def test_work_items_held_names_the_items_still_locked_with_their_tokens(provider: Provider) -> None:
    await _enqueue_work(provider, request("a", source=2), request("a", source=3), request("a", source=4))
    kept, done, lost = await fetch_work(provider), await fetch_work(provider), await fetch_work(provider, lock=0.2)
    await provider.ack_work_item(
        done, Message(instance_id="a", execution_id=1, event=ActivityCompleted(source_event_id=3))
    )
    await eventually(lambda: provider.fetch_work_item(["default"], 30), "the take-over of the expired item")

    assert await provider.work_items_held([kept, done, lost]) == {kept.item_id}
    assert await provider.work_items_held([]) == set()


async def test_deliveries_of_held_work_items_can_be_taken_back_and_counted_again(provider: Provider) -> None:
    """What a suspect turn running alone does to the activities in flight beside it."""
    await _enqueue_work(provider, request("a", source=2), request("a", source=3), request("a", source=4))
    held, done, lost = await fetch_work(provider), await fetch_work(provider), await fetch_work(provider, lock=0.2)
    await provider.ack_work_item(
        done, Message(instance_id="a", execution_id=1, event=ActivityCompleted(source_event_id=3))
    )
    taken = await eventually(lambda: provider.fetch_work_item(["default"], 30), "the take-over of the expired item")
    assert taken.item_id == lost.item_id and taken.dequeue_count == 2

    # Only the item still held with its token changes: the acked one is gone, the other is another's now.
    await provider.charge_work_deliveries([held, done, lost], charged=False)
    await provider.charge_work_deliveries([held], charged=False)  # never below zero
    await provider.charge_work_deliveries([], charged=False)
    await provider.abandon_work_item(held)
    await provider.abandon_work_item(taken)
    items = {w.item_id: w for w in [await fetch_work(provider), await fetch_work(provider)]}
    assert {i: w.dequeue_count for i, w in items.items()} == {held.item_id: 1, lost.item_id: 3}

    again = items[held.item_id]
    await provider.charge_work_deliveries([again], charged=False)
    await provider.charge_work_deliveries([again], charged=True)  # the turn is over: counted after all
    await provider.abandon_work_item(again)
    assert (await fetch_work(provider)).dequeue_count == again.dequeue_count + 1


async def test_activity_requests_round_trip_their_time_limits(provider: Provider) -> None:
    deadline = datetime(2030, 5, 1, 12, 30, tzinfo=UTC)
    limited = dataclasses.replace(request("a"), start_to_close=1.5, deadline=deadline, heartbeat_timeout=10.0)
    await _enqueue_work(provider, limited)
    assert (await fetch_work(provider)).request == limited


# --- purge and listing ------------------------------------------------------------------------------------


async def test_purge_deletes_only_finished_instances_with_everything_they_own(provider: Provider) -> None:
    for instance_id in ("done", "running"):
        await provider.create_instance(start(instance_id))
    await run_start_turn(provider, "done", status=OrchestrationStatus.COMPLETED, activity_items=[request("done")])
    await run_start_turn(provider, "running")
    await provider.enqueue_messages([raised("done", "late"), raised("running", "e")])

    assert await provider.purge_instances(["done", "running", "unknown"]) == 1
    assert await provider.get_state("done") is None
    assert await provider.get_history("done") == []
    assert await provider.fetch_work_item(["default"], 30) is None
    item = await fetch(provider)
    assert item.instance_id == "running"
    assert await provider.fetch_orchestration_item(30) is None, "the finished instance's messages are gone"
    assert await provider.purge_instances([]) == 0
    assert [e.event_id for e in await provider.get_history("running")] == [1]


async def test_list_instances_filters_and_pages(provider: Provider) -> None:
    for instance_id, name in [("job-1", "Job"), ("job-2", "Job"), ("job-3", "Other"), ("task-1", "Job")]:
        await provider.create_instance(start(instance_id, name=name))
    await provider.enqueue_messages([start("child-1", name="Job", parent="job-1")])
    await drain_orchestrations(provider)
    item_states = {s.instance_id: s for s in await provider.list_instances(InstanceFilter())}
    assert list(item_states) == ["child-1", "job-1", "job-2", "job-3", "task-1"]

    async def ids(**where: object) -> list[str]:
        return [s.instance_id for s in await provider.list_instances(InstanceFilter(**where))]  # type: ignore[arg-type]

    assert await ids(name="Job") == ["child-1", "job-1", "job-2", "task-1"]
    assert await ids(instance_id_prefix="job-") == ["job-1", "job-2", "job-3"]
    assert await ids(parent_instance_id="job-1") == ["child-1"]
    assert await ids(status=[OrchestrationStatus.PENDING], name="Other") == ["job-3"]
    assert await ids(status=[OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED]) == []
    assert await ids(limit=2) == ["child-1", "job-1"]
    assert await ids(limit=2, after="job-1") == ["job-2", "job-3"]
    assert await ids(limit=2, after="job-3") == ["task-1"]
    created = item_states["job-2"].created_at
    assert "job-2" in await ids(created_after=created - timedelta(seconds=1))
    assert await ids(created_after=datetime.now(UTC) + timedelta(hours=1)) == []
    assert await ids(created_before=datetime.now(UTC) - timedelta(hours=1)) == []
    assert await ids(created_before=datetime.now(UTC) + timedelta(hours=1), name="Other") == ["job-3"]


async def test_state_round_trips_every_field(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    item = await fetch(provider)
    await provider.ack_orchestration_item(
        item,
        TurnCommit(
            execution_id=1,
            history=[
                OrchestrationStarted(event_id=1, name="Orch", version="1.0.0", input="in"),
                OrchestrationCompleted(event_id=2, output={"ok": True}),
            ],
            state=InstanceUpdate(
                name="Orch",
                version="1.0.0",
                status=OrchestrationStatus.COMPLETED,
                execution_id=1,
                input="in",
                output={"ok": True},
                custom_status=["step", 3],
                parent_instance_id="p",
            ),
            consumed=[m.message_id for m in item.messages],
        ),
    )

    state = await provider.get_state("a")
    assert state is not None
    assert (state.status, state.version, state.output, state.custom_status, state.parent_instance_id) == (
        OrchestrationStatus.COMPLETED,
        "1.0.0",
        {"ok": True},
        ["step", 3],
        "p",
    )
    assert state.error is None


async def test_waiting_for_is_written_with_the_turn_and_replaced_by_the_next(provider: Provider) -> None:
    await provider.create_instance(start("w"))
    await provider.create_instance(start("other"))
    since = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
    waits = (
        AwaitedEvent(name="Approved", since=since, timeout_at=since + timedelta(hours=2), timer_event_id=2),
        AwaitedEvent(name="comment", since=since + timedelta(seconds=5)),
    )
    for _ in range(2):
        item = await fetch(provider)
        turn_waits = waits if item.instance_id == "w" else ()
        state = dataclasses.replace(update(OrchestrationStatus.RUNNING), waiting_for=turn_waits, custom_status="s")
        commit = TurnCommit(execution_id=1, state=state, consumed=[m.message_id for m in item.messages])
        await provider.ack_orchestration_item(item, commit)

    state = await provider.get_state("w")
    assert state is not None and (state.custom_status, state.waiting_for) == ("s", waits)
    listed = {s.instance_id: s.waiting_for for s in await provider.list_instances(InstanceFilter())}
    assert listed == {"w": waits, "other": ()}

    # The next turn writes what the code waits for then: here nothing, as the instance completed.
    await provider.enqueue_messages([raised("w", "approved")])
    item = await fetch(provider)
    assert item.state is not None and item.state.custom_status == "s"
    done = dataclasses.replace(update(OrchestrationStatus.COMPLETED, output=1), custom_status="s")
    await provider.ack_orchestration_item(
        item, TurnCommit(execution_id=1, state=done, consumed=[m.message_id for m in item.messages])
    )
    state = await provider.get_state("w")
    assert state is not None and (state.status, state.waiting_for) == (OrchestrationStatus.COMPLETED, ())


# --- waiting ------------------------------------------------------------------------------------------------


async def test_wait_for_work_wakes_when_work_is_enqueued(provider: Provider) -> None:
    orchestrator = asyncio.create_task(provider.wait_for_work("orchestrator", 30))
    worker = asyncio.create_task(provider.wait_for_work("activity", 30, ["default"]))
    await asyncio.sleep(0.1)  # let both waiters go to sleep first
    assert not orchestrator.done() and not worker.done()

    await provider.create_instance(start("a"))
    await asyncio.wait_for(orchestrator, 5)
    assert not worker.done()
    await run_start_turn(provider, "a", activity_items=[request("a")])
    await asyncio.wait_for(worker, 5)


async def test_wait_for_work_returns_when_a_timer_falls_due(provider: Provider) -> None:
    await provider.enqueue_messages([raised("a", "t", visible_at=datetime.now(UTC) + timedelta(seconds=0.3))])
    began = time.monotonic()
    await asyncio.wait_for(provider.wait_for_work("orchestrator", 30), 5)
    assert time.monotonic() - began < 5
    assert await eventually(lambda: provider.fetch_orchestration_item(30), "the due timer")


async def test_wait_for_work_times_out_when_idle(provider: Provider) -> None:
    began = time.monotonic()
    await provider.wait_for_work("activity", 0.2, ["default"])
    assert 0.15 <= time.monotonic() - began < 5


async def test_wait_for_state_change_wakes_on_a_committed_turn(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    waiter = asyncio.create_task(provider.wait_for_state_change("a", 30))
    await asyncio.sleep(0.1)
    await run_start_turn(provider, "a")
    await asyncio.wait_for(waiter, 5)


async def test_a_wait_until_ended_sleeps_through_turns_that_leave_the_instance_running(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    waiter = asyncio.create_task(provider.wait_for_state_change("a", 30, until_ended=1))
    await asyncio.sleep(0.1)
    await run_start_turn(provider, "a")  # RUNNING: nothing ended
    await provider.enqueue_messages([raised("a", "go")])
    await asyncio.sleep(0.2)
    assert not waiter.done()
    item = await fetch(provider)
    commit = TurnCommit(
        execution_id=1,
        history=[OrchestrationCompleted(event_id=2, output=1)],
        state=update(OrchestrationStatus.COMPLETED, output=1),
        consumed=[m.message_id for m in item.messages],
    )
    await provider.ack_orchestration_item(item, commit)
    known = await asyncio.wait_for(waiter, 5)
    # A provider may tell the state the ending turn left (sparing the waiter a read): the stored one.
    assert known is None or known == await provider.get_state("a")


# --- worker records: locks that live as long as their worker, heartbeats --------------------------------


def worker(worker_id: str = "w1") -> WorkerInfo:
    now = datetime.now(UTC)
    return WorkerInfo(
        worker_id=worker_id,
        host="host-a",
        pid=4242,
        orchestrations=("Orch@1.0.0", "Orch@2.0.0"),
        activities=("Act",),
        queues=("default", "gpu"),
        started_at=now,
        last_seen=now,
    )


def liveness(provider: Provider, info: WorkerInfo, timeout: float) -> WorkerLiveness:
    handle = provider.worker_liveness(info, timeout)
    assert handle is not None, "a built-in provider keeps worker records"
    return handle


async def beat(handle: WorkerLiveness, *heartbeats: Heartbeat) -> None:
    # The runtime beats from a thread of its own; so does this test, the loop stays free.
    await asyncio.to_thread(handle.beat, list(heartbeats))


async def beat_for(handle: WorkerLiveness, seconds: float, probe: Callable[[], Awaitable[object]]) -> None:
    """Beat every 0.1 s for ``seconds``, calling ``probe`` between beats (it asserts)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        await beat(handle)
        await probe()
        await asyncio.sleep(0.1)


async def test_a_worker_record_says_who_it_is_and_what_it_serves_until_removed(provider: Provider) -> None:
    before = datetime.now(UTC) - timedelta(seconds=5)
    handle = liveness(provider, worker("w1"), 30)
    assert await provider.list_workers() == [], "nothing is written before the first beat"
    try:
        await beat(handle)
        await beat(handle)
        [record] = await provider.list_workers()
    finally:
        await asyncio.to_thread(handle.close)
    assert (record.worker_id, record.host, record.pid, record.alive) == ("w1", "host-a", 4242, True)
    assert (record.orchestrations, record.activities, record.queues) == (
        ("Orch@1.0.0", "Orch@2.0.0"),
        ("Act",),
        ("default", "gpu"),
    )
    assert before < record.started_at <= record.last_seen < datetime.now(UTC) + timedelta(seconds=5)
    assert record.serves("Orch") and record.serves("Orch", "2.0.0")
    assert not record.serves("Orch", "3.0.0") and not record.serves("Other")
    assert await provider.list_workers() == [], "a clean shutdown removes the record"


async def test_a_worker_that_stops_beating_is_listed_dead_and_comes_back_with_its_next_beat(
    provider: Provider,
) -> None:
    handle = liveness(provider, worker("w1"), 0.3)
    try:
        await beat(handle)
        await asyncio.sleep(0.5)
        [stale] = await provider.list_workers()
        assert stale.worker_id == "w1" and not stale.alive
        await beat(handle)
        [back] = await provider.list_workers()
        assert back.alive and back.last_seen > stale.last_seen
    finally:
        await asyncio.to_thread(handle.close)


async def test_an_instance_lock_lives_as_long_as_its_workers_beats(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    handle = liveness(provider, worker("w1"), 0.4)
    try:
        await beat(handle)
        held = await provider.fetch_orchestration_item(0.4, worker_id="w1")
        assert held is not None

        async def not_taken() -> None:
            assert await provider.fetch_orchestration_item(30, worker_id="w2") is None

        await beat_for(handle, 1.2, not_taken)  # three times its lock, held all along
        last_beat = time.monotonic()
        taken = await eventually(lambda: provider.fetch_orchestration_item(30, worker_id="w2"), "the take-over")
        assert time.monotonic() - last_beat > 0.25, "taken over before the holder's timeout"
        assert taken.instance_id == "a" and taken.messages[0].dequeue_count == 2
        with pytest.raises(LockLostError):
            await provider.ack_orchestration_item(held, TurnCommit(execution_id=1, consumed=[1]))
    finally:
        await asyncio.to_thread(handle.close)


async def test_a_work_item_lock_lives_as_long_as_its_workers_beats(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    await run_start_turn(provider, "a", activity_items=[request("a")])
    handle = liveness(provider, worker("w1"), 0.4)
    try:
        await beat(handle)
        held = await provider.fetch_work_item(["default"], 0.4, worker_id="w1")
        assert held is not None

        async def not_taken() -> None:
            assert await provider.fetch_work_item(["default"], 30, worker_id="w2") is None

        await beat_for(handle, 1.2, not_taken)
        last_beat = time.monotonic()
        taken = await eventually(lambda: provider.fetch_work_item(["default"], 30), "the take-over")
        assert time.monotonic() - last_beat > 0.25, "taken over before the holder's timeout"
        assert taken.item_id == held.item_id and taken.dequeue_count == 2
        completion = Message(instance_id="a", execution_id=1, event=ActivityCompleted(source_event_id=2, result=1))
        with pytest.raises(LockLostError):
            await provider.ack_work_item(held, completion)
    finally:
        await asyncio.to_thread(handle.close)


async def run_start_turn_for_work(provider: Provider) -> None:
    """Queue one activity work item (for an instance of its own)."""
    await provider.create_instance(start("work"))
    await run_start_turn(provider, "work", activity_items=[request("work")])


async def test_locks_without_a_worker_and_delayed_put_backs_keep_their_own_expiry(provider: Provider) -> None:
    # Rows written without a worker id (older code, a provider user) expire on their own, and a
    # delayed put-back is the delay alone: the worker's beats extend neither.
    for instance_id in ("plain", "held"):
        await provider.create_instance(start(instance_id))
    handle = liveness(provider, worker("w1"), 30)
    try:
        await beat(handle)
        plain = await fetch(provider, lock_seconds=0.3)
        held = await provider.fetch_orchestration_item(30, worker_id="w1")
        assert held is not None and {plain.instance_id, held.instance_id} == {"plain", "held"}
        await provider.abandon_orchestration_item(held, 0.3)
        await run_start_turn_for_work(provider)
        item = await provider.fetch_work_item(["default"], 30, worker_id="w1")
        assert item is not None
        await provider.abandon_work_item(item, 0.3)
        await beat(handle)
        await asyncio.sleep(0.4)
        await beat(handle)
        again = {(await fetch(provider)).instance_id, (await fetch(provider)).instance_id}
        assert again == {"plain", "held"}
        assert await provider.fetch_work_item(["default"], 30) is not None
    finally:
        await asyncio.to_thread(handle.close)


async def test_heartbeats_reach_the_next_fetch_of_a_taken_over_item(provider: Provider) -> None:
    await provider.create_instance(start("a"))
    await run_start_turn(provider, "a", activity_items=[request("a")])
    first, second = liveness(provider, worker("w1"), 0.3), liveness(provider, worker("w2"), 0.3)
    try:
        await beat(first)
        item = await provider.fetch_work_item(["default"], 0.3, worker_id="w1")
        assert item is not None and (item.heartbeat_details, item.heartbeat_at) == (None, None)
        stale = Heartbeat(item_id=item.item_id, lock_token="not-its-token", details={"done": 99})
        await beat(first, Heartbeat(item_id=item.item_id, lock_token=item.lock_token, details={"done": 7}), stale)

        await beat(second)
        retry = await eventually(lambda: provider.fetch_work_item(["default"], 0.3, worker_id="w2"), "the take-over")
        assert retry.item_id == item.item_id and retry.heartbeat_details == {"done": 7}
        assert retry.heartbeat_at is not None
        assert abs((datetime.now(UTC) - retry.heartbeat_at).total_seconds()) < 5

        # A bare heartbeat says "still going" and keeps the details.
        await asyncio.sleep(0.05)
        await beat(second, Heartbeat(item_id=retry.item_id, lock_token=retry.lock_token))
        third = await eventually(lambda: provider.fetch_work_item(["default"], 30), "the second take-over")
        assert third.heartbeat_details == {"done": 7} and third.heartbeat_at is not None
        assert third.heartbeat_at > retry.heartbeat_at
    finally:
        for handle in (first, second):
            await asyncio.to_thread(handle.close)


async def test_beats_never_wait_for_a_blocked_event_loop(provider: Provider) -> None:
    handle = liveness(provider, worker("w1"), 2.0)
    try:
        await beat(handle)
        [before] = await provider.list_workers()
        done = threading.Event()
        beating = threading.Thread(target=lambda: (handle.beat(), done.set()))
        beating.start()
        time.sleep(1.0)  # noqa: ASYNC251 - the loop is blocked on purpose
        assert done.is_set(), "the beat waited for the event loop"
        beating.join()
        [after] = await provider.list_workers()
        assert after.alive and after.last_seen > before.last_seen
    finally:
        await asyncio.to_thread(handle.close)
