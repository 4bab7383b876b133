"""The turn rules and invariants, end to end: locks, stale and duplicate messages, concurrent runtimes."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from runtime_support import (
    DelegatingProvider,
    assert_history_sound,
    drop_test_provider,
    events_of,
    history_has,
    open_test_provider,
    running,
    wait_until,
)

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    RuntimeOptions,
    SubOrchestrationFailedError,
    open_provider,
)
from perdure.engine.events import (
    ActivityCompleted,
    ActivityScheduled,
    EventRaised,
    OrchestrationCompleted,
    OrchestrationStarted,
    StartRequested,
)
from perdure.providers import (
    InstanceUpdate,
    LockLostError,
    Message,
    NewInstance,
    OrchestrationItem,
    TurnCommit,
)

COMPLETED = OrchestrationStatus.COMPLETED


def _registry(gate: asyncio.Event | None = None) -> Registry:
    registry = Registry()

    @registry.activity()
    async def step(ctx: ActivityContext, n: int) -> str:
        if gate is not None and n < 0:
            await gate.wait()
        return f"step-{n}"

    @registry.activity()
    def sync_step(ctx: ActivityContext, n: int) -> int:
        return n * 10

    @registry.orchestration()
    async def one_step(ctx: OrchestrationContext, n: int) -> str:
        return str(await ctx.call_activity("step", n))

    @registry.orchestration()
    async def waiter(ctx: OrchestrationContext) -> list[Any]:
        return [ctx.instance_id, await ctx.wait_for_event("go")]

    @registry.orchestration()
    async def step_then_wait(ctx: OrchestrationContext) -> list[Any]:
        return [await ctx.call_activity("step", 1), await ctx.wait_for_event("go")]

    @registry.orchestration()
    async def adopt(ctx: OrchestrationContext, child_id: str) -> Any:
        try:
            return await ctx.call_sub_orchestration("waiter", instance_id=child_id)
        except SubOrchestrationFailedError as exc:
            return [exc.details.type, exc.details.message]

    @registry.orchestration()
    async def restarts(ctx: OrchestrationContext, n: int) -> str:
        # execution 1 runs step(1) and continues; execution 2 runs step(-1), which waits for the gate
        result = str(await ctx.call_activity("step", n))
        if n > 0:
            ctx.continue_as_new(-n)
        return result

    @registry.orchestration()
    async def busy(ctx: OrchestrationContext, n: int) -> list[Any]:
        first = [await ctx.call_activity("step", i) for i in range(3)]
        fanned = await ctx.when_all([ctx.call_activity("sync_step", n + i) for i in range(3)])
        return [*first, *fanned]

    return registry


async def _nothing_queued(provider: Provider) -> None:
    item = await provider.fetch_orchestration_item(1.0)
    assert item is None, f"unexpected message for {item.instance_id!r}: {item.messages}"


def _logged(caplog: pytest.LogCaptureFixture, text: str) -> bool:
    return any(text in record.getMessage() for record in caplog.records)


# --- one turn of an instance at a time ------------------------------------------------------------


class _TurnRecorder:
    """Who holds each instance between a fetch and its ack, across threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.holders: dict[str, str] = {}
        self.overlaps: list[tuple[str, str, str]] = []
        self.turns: Counter[str] = Counter()


class _RecordingProvider(DelegatingProvider):
    """Marks an instance held from the moment a fetch returns it until its ack or abandon begins.

    A holder can only lose the instance legitimately once it acks (or its lock expires, which the
    long lock of this test rules out), so another fetch of a held instance is an overlap.
    """

    def __init__(self, inner: Provider, name: str, recorder: _TurnRecorder) -> None:
        super().__init__(inner)
        self.name = name
        self.recorder = recorder

    async def fetch_orchestration_item(self, lock_seconds: float, **kwargs: Any) -> OrchestrationItem | None:
        item = await self.inner.fetch_orchestration_item(lock_seconds, **kwargs)
        if item is not None:
            with self.recorder.lock:
                holder = self.recorder.holders.get(item.instance_id)
                if holder is not None:
                    self.recorder.overlaps.append((item.instance_id, holder, self.name))
                self.recorder.holders[item.instance_id] = self.name
                self.recorder.turns[self.name] += 1
            await asyncio.sleep(0.002)  # widen the window in which an overlap would show
        return item

    def _release(self, item: OrchestrationItem) -> None:
        with self.recorder.lock:
            if self.recorder.holders.get(item.instance_id) == self.name:
                del self.recorder.holders[item.instance_id]

    async def ack_orchestration_item(self, item: OrchestrationItem, commit: TurnCommit) -> None:
        self._release(item)
        await self.inner.ack_orchestration_item(item, commit)

    async def abandon_orchestration_item(
        self, item: OrchestrationItem, delay: float = 0.0, *, undo_delivery: bool = False
    ) -> None:
        self._release(item)
        await self.inner.abandon_orchestration_item(item, delay, undo_delivery=undo_delivery)


def _serve_in_thread(url: str, name: str, recorder: _TurnRecorder, stop: threading.Event, errors: list[Any]) -> None:
    """A runtime with its own provider and event loop, like a second process."""

    async def serve() -> None:
        provider = _RecordingProvider(await open_provider(url), name, recorder)
        try:
            options = RuntimeOptions(orchestration_concurrency=4, activity_concurrency=4, idle_timeout=0.2)
            async with running(provider, _registry(), options):
                await asyncio.to_thread(stop.wait)
        finally:
            await provider.close()

    try:
        asyncio.run(serve())
    except BaseException as exc:
        errors.append(exc)


async def test_two_runtimes_on_one_store_never_run_turns_of_one_instance_at_once(
    provider_kind: str, tmp_path: Path
) -> None:
    provider, url = await open_test_provider(provider_kind, tmp_path)
    recorder = _TurnRecorder()
    stop = threading.Event()
    errors: list[Any] = []
    threads = [
        threading.Thread(target=_serve_in_thread, args=(url, name, recorder, stop, errors), name=f"runtime-{name}")
        for name in ("a", "b")
    ]
    try:
        client = Client(provider)
        for thread in threads:
            thread.start()
        count = 30
        for i in range(count):
            await client.start_orchestration(f"busy-{i:02}", "busy", i)
        states = [await client.wait_for_orchestration(f"busy-{i:02}", timeout=60) for i in range(count)]
        for i, state in enumerate(states):
            assert state.status is COMPLETED, state
            assert state.output == ["step-0", "step-1", "step-2", i * 10, i * 10 + 10, i * 10 + 20]
            assert_history_sound(await client.get_history(state.instance_id))
    finally:
        stop.set()
        for thread in threads:
            await asyncio.to_thread(thread.join, 30)
        await drop_test_provider(provider_kind, provider)
    assert errors == []
    assert recorder.overlaps == []
    assert recorder.turns["a"] > 0, recorder.turns
    assert recorder.turns["b"] > 0, recorder.turns


# --- lock expiry ---------------------------------------------------------------------------------


async def test_an_expired_instance_lock_is_taken_over_and_the_stale_ack_writes_nothing(provider: Provider) -> None:
    client = Client(provider)
    await client.start_orchestration("taken", "one_step", 5)
    locked_at = datetime.now(UTC)
    stale = await provider.fetch_orchestration_item(0.5)  # a worker that fetched and then hung
    assert stale is not None
    assert stale.instance_id == "taken"

    async with running(provider, _registry()) as client:
        state = await client.wait_for_orchestration("taken", timeout=10)
    assert (state.status, state.output) == (COMPLETED, "step-5")
    history = await client.get_history("taken")
    assert_history_sound(history)
    assert history[0].timestamp >= locked_at + timedelta(seconds=0.5), "the lock was not respected"

    commit = TurnCommit(
        execution_id=1,
        history=[OrchestrationCompleted(event_id=len(history) + 1, timestamp=locked_at, output="stale")],
        state=InstanceUpdate(name="one_step", version="1.0.0", status=COMPLETED, execution_id=1, output="stale"),
        messages=[
            Message(
                instance_id="spawned-by-stale",
                execution_id=None,
                event=StartRequested(name="waiter"),
                new_instance=NewInstance(name="waiter"),
            )
        ],
        consumed=[m.message_id for m in stale.messages],
    )
    with pytest.raises(LockLostError):
        await provider.ack_orchestration_item(stale, commit)
    assert await client.get_history("taken") == history
    assert await client.get_status("taken") == state
    assert await client.get_status("spawned-by-stale") is None
    await _nothing_queued(provider)


async def test_an_expired_work_item_lock_is_taken_over_and_the_stale_ack_writes_nothing(provider: Provider) -> None:
    registry = _registry()
    orchestrations_only = RuntimeOptions(run_activities=False, idle_timeout=1.0)
    async with running(provider, registry, orchestrations_only) as client:
        await client.start_orchestration("work", "one_step", 7)
        await wait_until(lambda: history_has(client, "work", ActivityScheduled), what="the activity was scheduled")
        stale = await provider.fetch_work_item(["default"], 0.5)  # a worker that hangs in the activity
        assert stale is not None
        assert stale.request is not None
        assert (stale.request.instance_id, stale.request.input) == ("work", 7)
        async with running(provider, registry, RuntimeOptions(run_orchestrations=False, idle_timeout=1.0)):
            state = await client.wait_for_orchestration("work", timeout=10)
        assert (state.status, state.output) == (COMPLETED, "step-7")

        history = await client.get_history("work")
        completion = Message(
            instance_id="work", execution_id=1, event=ActivityCompleted(source_event_id=2, result="stale")
        )
        with pytest.raises(LockLostError):
            await provider.ack_work_item(stale, completion)
        with pytest.raises(LockLostError):
            await provider.renew_work_item(stale, 10)
    assert await client.get_history("work") == history
    assert len(events_of(history, ActivityCompleted)) == 1
    await _nothing_queued(provider)
    assert await provider.fetch_work_item(["default"], 1.0) is None


# --- stale, duplicate and misaddressed messages --------------------------------------------------


async def test_a_stale_completion_from_a_previous_execution_is_ignored(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    gate = asyncio.Event()
    async with running(provider, _registry(gate)) as client:
        await client.start_orchestration("cycle", "restarts", 1)

        async def in_execution_2_activity() -> bool:
            state = await client.get_status("cycle")
            return (
                state is not None and state.execution_id == 2 and await history_has(client, "cycle", ActivityScheduled)
            )

        await wait_until(in_execution_2_activity, what="execution 2 scheduled its activity")
        first = await client.get_history("cycle", 1)
        # The completion of execution 1's activity (event 2) again: in execution 2, event 2 is the
        # pending activity, so accepting it would complete that activity with the wrong result.
        stale = ActivityCompleted(source_event_id=2, result="stale")
        await provider.enqueue_messages([Message(instance_id="cycle", execution_id=1, event=stale)])
        await wait_until(lambda: _logged(caplog, "belongs to execution 1, not 2"), what="the stale message was dropped")
        gate.set()
        state = await client.wait_for_orchestration("cycle", timeout=10)

    assert (state.status, state.execution_id, state.output) == (COMPLETED, 2, "step--1")
    assert await client.get_history("cycle", 1) == first
    second = await client.get_history("cycle", 2)
    assert_history_sound(second)
    assert [c.result for c in events_of(second, ActivityCompleted)] == ["step--1"]
    await _nothing_queued(provider)


async def test_a_completion_for_an_execution_that_does_not_exist_yet_is_dropped_with_an_error(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    """A parent's id reused after a purge while its child still ran: the child answers execution 2
    of an instance that is at execution 1. Nothing can apply it; the error names both executions."""
    registry = _registry()

    @registry.orchestration()
    async def adopts_in_round_2(ctx: OrchestrationContext, round: int) -> Any:
        if round == 1:
            ctx.continue_as_new(2)
        return await ctx.call_sub_orchestration("waiter", instance_id="orphan")

    async with running(provider, registry) as client:
        await client.start_orchestration("reused", "adopts_in_round_2", 1)
        await wait_until(lambda: history_has(client, "orphan", OrchestrationStarted), what="the child started")
        await client.terminate("reused", recursive=False)
        await client.wait_for_orchestration("reused", timeout=10)
        assert await client.purge("reused", recursive=False) == 1  # the child runs on
        await client.start_orchestration("reused", "waiter")
        await wait_until(lambda: history_has(client, "reused", OrchestrationStarted), what="the new instance started")
        await client.raise_event("orphan", "go", "late")
        assert (await client.wait_for_orchestration("orphan", timeout=10)).status is COMPLETED
        newer = "it is addressed to execution 2, after the current 1"
        await wait_until(lambda: _logged(caplog, newer), what="the answer to execution 2 was dropped")
        await client.raise_event("reused", "go", "mine")
        state = await client.wait_for_orchestration("reused", timeout=10)

    assert (state.status, state.execution_id, state.output) == (COMPLETED, 1, ["reused", "mine"])
    [record] = [r for r in caplog.records if newer in r.getMessage()]
    assert record.levelno == logging.ERROR
    assert record.getMessage().startswith("dropped SubOrchestrationCompleted for instance 'reused'")
    assert (record.instance_id, record.execution_id) == ("reused", 1)  # type: ignore[attr-defined]
    assert_history_sound(await client.get_history("reused"))
    await _nothing_queued(provider)


async def test_a_duplicate_start_is_a_no_op(provider: Provider, caplog: pytest.LogCaptureFixture) -> None:
    async with running(provider, _registry()) as client:
        await client.start_orchestration("once", "waiter")
        await wait_until(lambda: history_has(client, "once", OrchestrationStarted), what="the instance started")
        duplicate = StartRequested(name="one_step", input=99)
        new = NewInstance(name="one_step", input=99)
        await provider.enqueue_messages(
            [Message(instance_id="once", execution_id=None, event=duplicate, new_instance=new)]
        )
        await wait_until(lambda: _logged(caplog, "already started"), what="the duplicate start was dropped")
        await client.raise_event("once", "go", "went")
        state = await client.wait_for_orchestration("once", timeout=10)

    assert (state.status, state.name, state.input, state.output) == (COMPLETED, "waiter", None, ["once", "went"])
    history = await client.get_history("once")
    assert_history_sound(history)
    assert sum(isinstance(e, OrchestrationStarted) for e in history) == 1


@pytest.mark.parametrize("finished", [False, True], ids=["running", "finished"])
async def test_a_child_start_for_a_taken_instance_id_fails_the_call(provider: Provider, finished: bool) -> None:
    async with running(provider, _registry()) as client:
        await client.start_orchestration("taken", "waiter")
        await wait_until(lambda: history_has(client, "taken", OrchestrationStarted), what="the instance started")
        if finished:
            await client.raise_event("taken", "go", "done")
            await client.wait_for_orchestration("taken", timeout=10)
        await client.start_orchestration("adopter", "adopt", "taken")
        adopter = await client.wait_for_orchestration("adopter", timeout=10)
        if not finished:
            await client.raise_event("taken", "go", "still mine")
        taken = await client.wait_for_orchestration("taken", timeout=10)

    assert adopter.status is COMPLETED
    assert adopter.output[0] == "perdure.InstanceAlreadyExistsError"
    assert "'taken'" in adopter.output[1]
    assert taken.output == ["taken", "done" if finished else "still mine"]
    assert taken.parent_instance_id is None
    assert sum(isinstance(e, OrchestrationStarted) for e in await client.get_history("taken")) == 1


async def test_duplicate_completions_are_ignored(provider: Provider) -> None:
    async with running(provider, _registry()) as client:
        await client.start_orchestration("dup", "step_then_wait")
        await wait_until(lambda: history_has(client, "dup", ActivityCompleted), what="the activity completed")
        duplicate = ActivityCompleted(source_event_id=2, result="duplicate")
        await provider.enqueue_messages([Message(instance_id="dup", execution_id=1, event=duplicate)] * 2)
        await client.raise_event("dup", "go", "went")  # queued after the duplicates: one turn sees them all
        state = await client.wait_for_orchestration("dup", timeout=10)

    assert (state.status, state.output) == (COMPLETED, ["step-1", "went"])
    history = await client.get_history("dup")
    assert_history_sound(history)
    assert [c.result for c in events_of(history, ActivityCompleted)] == ["step-1"]
    await _nothing_queued(provider)


async def test_messages_to_unknown_or_finished_instances_are_dropped(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG, logger="perdure.runtime")  # a late message is routine: logged at debug
    async with running(provider, _registry()) as client:
        await client.start_orchestration("done", "one_step", 1)
        finished = await client.wait_for_orchestration("done", timeout=10)
        history = await client.get_history("done")
        await provider.enqueue_messages(
            [
                Message(instance_id="ghost", execution_id=None, event=EventRaised(name="go", data=1)),
                Message(instance_id="done", execution_id=None, event=EventRaised(name="go", data=2)),
            ]
        )
        await wait_until(lambda: _logged(caplog, "the instance does not exist"), what="the ghost message was dropped")
        await wait_until(lambda: _logged(caplog, "the instance is COMPLETED"), what="the late message was dropped")
    levels = {r.getMessage().split(": ")[-1]: r.levelno for r in caplog.records if "dropped" in r.getMessage()}
    assert levels == {"the instance does not exist": logging.WARNING, "the instance is COMPLETED": logging.DEBUG}

    await _nothing_queued(provider)
    assert await client.get_status("ghost") is None
    assert await provider.get_history("ghost") == []
    assert await client.get_status("done") == finished
    assert await client.get_history("done") == history
