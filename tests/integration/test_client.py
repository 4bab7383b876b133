"""The client against a real store: queries, errors at the call, and operator requests."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from runtime_support import assert_history_sound, history_has, running, wait_until

from perdure import (
    ActivityContext,
    Client,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    InvalidInstanceStateError,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    SerializationError,
)
from perdure._json import MAX_PAYLOAD_BYTES
from perdure.engine.events import (
    EventRaised,
    OrchestrationResumed,
    OrchestrationStarted,
    OrchestrationSuspended,
    OrchestrationTerminated,
    StartRequested,
    SubOrchestrationScheduled,
)

COMPLETED = OrchestrationStatus.COMPLETED


def _registry() -> Registry:
    registry = Registry()

    @registry.activity()
    async def echo(ctx: ActivityContext, value: Any) -> Any:
        return value

    @registry.orchestration()
    async def quick(ctx: OrchestrationContext, value: Any) -> Any:
        if value == "fail":
            raise RuntimeError("asked to fail")
        return await ctx.call_activity("echo", value)

    @registry.orchestration()
    async def waits(ctx: OrchestrationContext) -> Any:
        return await ctx.wait_for_event("go")

    @registry.orchestration()
    async def waits_on_child(ctx: OrchestrationContext) -> Any:
        return await ctx.call_sub_orchestration("waits", instance_id=f"{ctx.instance_id}-child")

    return registry


async def _nothing_queued(provider: Provider) -> None:
    """No message is queued (checked with no runtime running)."""
    item = await provider.fetch_orchestration_item(1.0)
    assert item is None, f"unexpected message for {item.instance_id!r}: {item.messages}"


async def test_list_instances_filters_and_pages(provider: Provider) -> None:
    async with running(provider, _registry()) as client:
        for i in range(7):
            await client.start_orchestration(f"q-{i}", "quick", "fail" if i == 3 else i)
        before_waiters = datetime.now(UTC)
        await client.start_orchestration("w-1", "waits")
        await client.start_orchestration("w-2", "waits")
        for i in range(7):
            await client.wait_for_orchestration(f"q-{i}", timeout=10)
        for waiter in ("w-1", "w-2"):
            await wait_until(lambda w=waiter: history_has(client, w, OrchestrationStarted), what=f"{waiter} started")

        def ids(states: list[Any]) -> list[str]:
            return [s.instance_id for s in states]

        every = await client.list_instances()
        assert ids(every) == sorted(ids(every))
        assert set(ids(every)) == {*(f"q-{i}" for i in range(7)), "w-1", "w-2"}
        assert ids(await client.list_instances(status=OrchestrationStatus.FAILED)) == ["q-3"]
        assert ids(await client.list_instances(status=OrchestrationStatus.RUNNING)) == ["w-1", "w-2"]
        both = await client.list_instances(status=[OrchestrationStatus.FAILED, OrchestrationStatus.RUNNING])
        assert ids(both) == ["q-3", "w-1", "w-2"]
        assert ids(await client.list_instances(name="waits")) == ["w-1", "w-2"]
        assert ids(await client.list_instances(name="quick", status=COMPLETED)) == [
            f"q-{i}" for i in range(7) if i != 3
        ]
        assert ids(await client.list_instances(instance_id_prefix="w-")) == ["w-1", "w-2"]
        assert ids(await client.list_instances(created_after=before_waiters)) == ["w-1", "w-2"]
        assert "w-1" not in ids(await client.list_instances(created_before=before_waiters))
        assert await client.list_instances(name="nobody") == []

        paged: list[str] = []
        after: str | None = None
        while page := await client.list_instances(limit=2, after=after):
            assert len(page) <= 2
            paged.extend(ids(page))
            after = page[-1].instance_id
        assert paged == ids(every)
        assert ids(await client.list_instances(name="quick", limit=3, after="q-1")) == ["q-2", "q-3", "q-4"]

        state = (await client.list_instances(instance_id_prefix="q-5"))[0]
        assert (state.name, state.status, state.input, state.output, state.version) == (
            "quick",
            COMPLETED,
            5,
            5,
            "1.0.0",
        )
        assert state.created_at <= state.updated_at


async def test_wait_for_orchestration_times_out_or_finds_nothing(provider: Provider) -> None:
    async with running(provider, _registry()) as client:
        await client.start_orchestration("slow", "waits")
        with pytest.raises(TimeoutError, match="slow"):
            await client.wait_for_orchestration("slow", timeout=0.2)
        with pytest.raises(InstanceNotFoundError):
            await client.wait_for_orchestration("nobody", timeout=0.2)
        with pytest.raises(InstanceNotFoundError):
            await client.get_history("nobody")
        assert await client.get_status("nobody") is None
        assert await client.get_orchestration_descriptor("nobody") is None


async def test_starting_an_existing_instance_is_refused(provider: Provider) -> None:
    async with running(provider, _registry()) as client:
        await client.start_orchestration("dup", "quick", "first")
        with pytest.raises(InstanceAlreadyExistsError, match="dup"):
            await client.start_orchestration("dup", "quick", "second")
        state = await client.wait_for_orchestration("dup", timeout=10)
        with pytest.raises(InstanceAlreadyExistsError):
            await client.start_orchestration("dup", "quick", "third")  # finished instances too

    assert (state.input, state.output) == ("first", "first")
    history = await client.get_history("dup")
    assert_history_sound(history)
    assert sum(isinstance(e, OrchestrationStarted) for e in history) == 1


async def test_raising_an_event_to_an_unknown_instance_is_refused(provider: Provider) -> None:
    client = Client(provider)
    with pytest.raises(InstanceNotFoundError, match="ghost"):
        await client.raise_event("ghost", "go", 1)
    await _nothing_queued(provider)
    assert await client.get_status("ghost") is None


@pytest.mark.parametrize(
    "bad",
    [object(), {1j, 2}, float("nan"), {"key": [1j]}, "x" * (MAX_PAYLOAD_BYTES + 1), ["y" * MAX_PAYLOAD_BYTES, 1]],
    ids=["object", "set-of-complex", "nan", "complex", "oversized-str", "oversized-list"],
)
async def test_bad_input_is_refused_at_the_call_and_nothing_is_stored(provider: Provider, bad: Any) -> None:
    client = Client(provider)
    with pytest.raises(SerializationError, match="input of orchestration 'quick'"):
        await client.start_orchestration("bad", "quick", bad)
    assert await client.get_status("bad") is None
    assert await client.list_instances() == []

    await client.start_orchestration("good", "waits")
    with pytest.raises(SerializationError, match="data of event 'go'"):
        await client.raise_event("good", "go", bad)
    assert await client.get_status("good") is not None
    item = await provider.fetch_orchestration_item(1.0)
    assert item is not None
    assert [type(m.event) for m in item.messages] == [StartRequested]  # the start only, no event
    await provider.abandon_orchestration_item(item)


async def test_terminate(provider: Provider) -> None:
    async with running(provider, _registry()) as client:
        await client.start_orchestration("parent", "waits_on_child")
        await wait_until(lambda: client.get_status("parent-child"), what="the child was created")
        await wait_until(lambda: history_has(client, "parent-child", OrchestrationStarted), what="the child started")
        assert await client.terminate("parent", "operator said so") is True
        parent = await client.wait_for_orchestration("parent", timeout=10)
        child = await client.wait_for_orchestration("parent-child", timeout=10)
        assert await client.terminate("parent") is False  # already finished: nothing changes
        with pytest.raises(InstanceNotFoundError):
            await client.terminate("nobody")

    assert parent.status is OrchestrationStatus.TERMINATED
    assert child.status is OrchestrationStatus.TERMINATED  # recursive by default
    history = await client.get_history("parent")
    assert_history_sound(history)
    assert isinstance(history[-1], OrchestrationTerminated)
    assert history[-1].reason == "operator said so"
    assert any(isinstance(e, SubOrchestrationScheduled) for e in history)


async def test_terminate_a_pending_instance(provider: Provider) -> None:
    client = Client(provider)
    await client.start_orchestration("never-ran", "quick", 1)
    assert await client.terminate("never-ran", "not needed") is True
    async with running(provider, _registry()) as client:
        state = await client.wait_for_orchestration("never-ran", timeout=10)
    assert state.status is OrchestrationStatus.TERMINATED


async def test_suspend_holds_messages_until_resume(provider: Provider) -> None:
    registry = _registry()
    async with running(provider, registry) as client:
        await client.start_orchestration("s", "waits")
        await wait_until(lambda: history_has(client, "s", OrchestrationStarted), what="the instance started")
        await client.suspend("s", "maintenance")

        async def status() -> OrchestrationStatus | None:
            state = await client.get_status("s")
            return state.status if state is not None and state.status is OrchestrationStatus.SUSPENDED else None

        await wait_until(status, what="the instance was suspended")
        with pytest.raises(InvalidInstanceStateError):
            await client.suspend("s")
        await client.raise_event("s", "go", "held")

    # With no runtime running, the store offers nothing: the event waits for the resume.
    await _nothing_queued(provider)
    assert (await client.get_status("s")).status is OrchestrationStatus.SUSPENDED  # type: ignore[union-attr]
    assert not await history_has(client, "s", EventRaised)

    async with running(provider, registry) as client:
        await client.resume("s", "back")
        state = await client.wait_for_orchestration("s", timeout=10)
        with pytest.raises(InvalidInstanceStateError):
            await client.resume("s")
        with pytest.raises(InvalidInstanceStateError):
            await client.suspend("s")

    assert (state.status, state.output) == (COMPLETED, "held")
    history = await client.get_history("s")
    assert_history_sound(history)
    kinds = [type(e) for e in history]
    assert kinds.index(OrchestrationSuspended) < kinds.index(OrchestrationResumed) < kinds.index(EventRaised)
    assert [e.reason for e in history if isinstance(e, OrchestrationSuspended | OrchestrationResumed)] == [
        "maintenance",
        "back",
    ]


async def test_operator_requests_on_unknown_instances(provider: Provider) -> None:
    client = Client(provider)
    with pytest.raises(InstanceNotFoundError):
        await client.suspend("nobody")
    with pytest.raises(InstanceNotFoundError):
        await client.resume("nobody")
    await _nothing_queued(provider)


async def test_created_filters_need_aware_datetimes(provider: Provider) -> None:
    with pytest.raises(ValueError, match="aware"):
        await Client(provider).list_instances(created_after=datetime.now() - timedelta(days=1))
