"""The runtime's liveness thread and activity heartbeats, over a fake provider handle."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Sequence

import pytest

from perdure import ActivityContext, ProviderError, Registry, RuntimeOptions, SerializationError
from perdure.providers import Heartbeat, WorkerLiveness, WorkItem
from perdure.runtime._liveness import Liveness, describe_worker


class FakeHandle(WorkerLiveness):
    """Records every beat; fails the beats it is told to."""

    def __init__(self) -> None:
        self.beats: list[list[Heartbeat]] = []
        self.failures = 0
        self.closed: bool | None = None
        self.beat_seen = threading.Event()

    def beat(self, heartbeats: Sequence[Heartbeat] = ()) -> None:
        if self.failures:
            self.failures -= 1
            raise ProviderError("the store is unreachable")
        self.beats.append(list(heartbeats))
        self.beat_seen.set()

    def close(self, *, remove: bool = True) -> None:
        self.closed = remove

    async def next_beat(self) -> list[Heartbeat]:
        self.beat_seen.clear()
        assert await asyncio.to_thread(self.beat_seen.wait, 5), "no beat came"
        return self.beats[-1]


def item(item_id: int, token: str = "t") -> WorkItem:
    return WorkItem(item_id=item_id, lock_token=token, request=None, dequeue_count=1)


def registry() -> Registry:
    registry = Registry()

    @registry.orchestration("Flow", version="1.0.0")
    async def flow_1(ctx: object) -> None: ...

    @registry.orchestration("Flow", version="2.0.0")
    async def flow_2(ctx: object) -> None: ...

    @registry.activity("Charge")
    def charge(ctx: ActivityContext) -> None: ...

    return registry


def test_a_worker_says_what_its_options_let_it_serve() -> None:
    both = describe_worker(registry(), RuntimeOptions(activity_queues=("default", "gpu")))
    assert both.orchestrations == ("Flow@1.0.0", "Flow@2.0.0")
    assert (both.activities, both.queues) == (("Charge",), ("default", "gpu"))
    assert both.pid > 0 and both.host and len(both.worker_id) == 32
    turns_only = describe_worker(registry(), RuntimeOptions(run_activities=False))
    assert turns_only.orchestrations and (turns_only.activities, turns_only.queues) == ((), ())
    assert describe_worker(registry(), RuntimeOptions(run_orchestrations=False)).orchestrations == ()
    assert describe_worker(registry(), RuntimeOptions()).worker_id != both.worker_id


async def test_beats_carry_the_latest_heartbeat_of_each_item_and_a_clean_stop_removes_the_record() -> None:
    handle = FakeHandle()
    liveness = Liveness(handle, describe_worker(registry(), RuntimeOptions()), timeout=0.2)
    await liveness.start()
    assert handle.beats == [[]], "start returns after the first beat registered the worker"
    liveness.heartbeat(item(1), {"done": 1})
    liveness.heartbeat(item(1), {"done": 2})
    liveness.heartbeat(item(1), None)  # still going: keeps {"done": 2}, not yet stored
    liveness.heartbeat(item(2, "u"), None)
    stored = await handle.next_beat()
    assert sorted(stored, key=lambda h: h.item_id) == [
        Heartbeat(item_id=1, lock_token="t", details={"done": 2}),
        Heartbeat(item_id=2, lock_token="u", details=None),
    ]
    assert await handle.next_beat() == [], "each heartbeat is stored once"
    await liveness.stop()
    assert handle.closed is True


async def test_a_failed_beat_is_logged_once_and_its_heartbeats_wait_for_the_next(
    caplog: pytest.LogCaptureFixture,
) -> None:
    handle = FakeHandle()
    liveness = Liveness(handle, describe_worker(registry(), RuntimeOptions()), timeout=0.2)
    await liveness.start()
    handle.failures = 3
    liveness.heartbeat(item(1), {"done": 1})
    with caplog.at_level(logging.INFO, logger="perdure.runtime"):
        stored = await handle.next_beat()
        await handle.next_beat()  # the first good beat has logged by now
    assert stored == [Heartbeat(item_id=1, lock_token="t", details={"done": 1})]
    messages = [r.getMessage() for r in caplog.records]
    assert sum("could not renew its record" in m for m in messages) == 1, messages
    assert any("renews its record again" in m for m in messages)
    await liveness.stop()


def test_a_heartbeat_is_checked_where_it_is_given_and_a_copy_is_kept() -> None:
    recorded: list[object] = []
    ctx = ActivityContext(
        instance_id="i",
        execution_id=1,
        name="Charge",
        attempt=1,
        orchestration_name="Flow",
        orchestration_version="1.0.0",
        heartbeat_details={"done": 3},
        _record_heartbeat=recorded.append,
    )
    assert ctx.heartbeat_details == {"done": 3}
    progress = {"done": [4]}
    ctx.heartbeat(progress)
    progress["done"].append(5)
    ctx.heartbeat()
    assert recorded == [{"done": [4]}, None]
    with pytest.raises(SerializationError, match="heartbeat details of activity 'Charge'"):
        ctx.heartbeat({"when": object()})
    # Made by hand (tests of an activity), a context takes heartbeats and keeps nothing.
    ActivityContext(
        instance_id="i", execution_id=1, name="A", attempt=1, orchestration_name="F", orchestration_version="1"
    ).heartbeat({"done": 1})
