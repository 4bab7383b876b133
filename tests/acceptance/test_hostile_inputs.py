"""Hostile inputs end to end: values built to break the store, the readers or the dispatchers.

Each case feeds a real runtime something a careless or malicious caller could send (payloads too
deep or not storable, timers that cannot be computed, …) and checks the promise of issue 13: the
bad value is refused where it is given, or fails its own instance or task cleanly; no healthy
instance pays for it, nothing loops, and nothing unreadable is stored. Add new hostile-input cases
here.
"""

from __future__ import annotations

import json
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.acceptance.operator_support import cli
from tests.acceptance.test_dashboard import start_dashboard, stop_process
from tests.integration.runtime_support import assert_history_sound, running, wait_until

from perdure import (
    ActivityContext,
    ActivityFailedError,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    RetryPolicy,
    SerializationError,
    SqliteProvider,
)
from perdure._json import MAX_PAYLOAD_BYTES, MAX_PAYLOAD_DEPTH
from perdure.engine.events import EventRaised


def nested(depth: int) -> Any:
    """A value ``depth`` containers deep, alternating lists and objects."""
    value: Any = "leaf"
    for level in range(depth):
        value = [value] if level % 2 else {"k": value}
    return value


DEEPEST = nested(MAX_PAYLOAD_DEPTH)
TOO_DEEP = nested(MAX_PAYLOAD_DEPTH + 1)

# Values json.dumps may produce text for, but that no store can keep or no reader can read back.
UNSTORABLE: dict[str, Any] = {
    "lone surrogate": "\ud800",
    "lone surrogate in a key": {"\udc00": 1},
    "int of 4,301 digits": 10**4300,
    "NaN": float("nan"),
    "infinity": float("-inf"),
    "one level too deep": TOO_DEEP,
    "far too deep": nested(50_000),
    "too large": "x" * MAX_PAYLOAD_BYTES,
}

COMPLETED = OrchestrationStatus.COMPLETED


# --- payload depth --------------------------------------------------------------------------------


def _deep_registry() -> Registry:
    registry = Registry()

    @registry.activity()
    async def echo(ctx: ActivityContext, value: Any) -> Any:
        return value

    @registry.orchestration()
    async def deep(ctx: OrchestrationContext, value: Any) -> Any:
        ctx.set_custom_status(value)
        refused = []
        for call in (
            lambda: ctx.call_activity("echo", TOO_DEEP),
            lambda: ctx.set_custom_status(TOO_DEEP),
            lambda: ctx.send_event(ctx.instance_id, "more", TOO_DEEP),
        ):
            try:
                call()
            except SerializationError:
                refused.append(True)
        assert refused == [True, True, True]
        ctx.set_custom_status(await ctx.wait_for_event("more"))
        return await ctx.call_activity("echo", value)

    return registry


async def test_a_payload_at_the_depth_limit_is_readable_everywhere(provider: Provider) -> None:
    async with running(provider, _deep_registry()) as client:
        for instance_id in ("deep", "deep-terminated"):
            await client.start_orchestration(instance_id, "deep", DEEPEST)
            await client.raise_event(instance_id, "other", DEEPEST)  # kept, never awaited
        await client.raise_event("deep", "more", DEEPEST)
        state = await client.wait_for_orchestration("deep", timeout=10)
        assert state.status is COMPLETED, state.error
        assert state.input == state.custom_status == state.output == DEEPEST

        await wait_until(lambda: _has_status(client, "deep-terminated", OrchestrationStatus.RUNNING))
        assert await client.terminate("deep-terminated", "enough")
        terminated = await client.wait_for_orchestration("deep-terminated", timeout=10)
        assert terminated.status is OrchestrationStatus.TERMINATED

        listed = await client.list_instances()
        assert [s.instance_id for s in listed] == ["deep", "deep-terminated"]
        assert all(s.input == DEEPEST for s in listed)
        history = await client.get_history("deep")
        assert_history_sound(history)
        assert [e.data for e in history if isinstance(e, EventRaised)] == [DEEPEST, DEEPEST]

        assert await client.purge("deep") == 1
        assert await client.purge_instances(created_before=datetime.now(UTC) + timedelta(hours=1)) == 1
        assert await client.list_instances() == []


async def _has_status(client: Client, instance_id: str, status: OrchestrationStatus) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and state.status is status


async def test_a_payload_one_level_too_deep_is_refused_and_nothing_is_stored(provider: Provider) -> None:
    client = Client(provider)
    with pytest.raises(SerializationError, match=f"nested more than {MAX_PAYLOAD_DEPTH} levels deep"):
        await client.start_orchestration("too-deep", "deep", TOO_DEEP)
    assert await client.get_status("too-deep") is None

    await client.start_orchestration("waiting", "deep", DEEPEST)
    with pytest.raises(SerializationError, match="data of event 'more'"):
        await client.raise_event("waiting", "more", TOO_DEEP)
    assert [s.instance_id for s in await client.list_instances()] == ["waiting"]
    item = await provider.fetch_orchestration_item(30.0)
    assert item is not None
    assert len(item.messages) == 1  # the start, and no event


async def test_the_cli_and_the_dashboard_show_an_instance_at_the_depth_limit(tmp_path: Path) -> None:
    db = tmp_path / "perdure.db"
    provider = await SqliteProvider.open(db)
    try:
        async with running(provider, _deep_registry()) as client:
            await client.start_orchestration("deep", "deep", DEEPEST)
            await client.raise_event("deep", "more", DEEPEST)
            await client.wait_for_orchestration("deep", timeout=10)
    finally:
        await provider.close()
    for args in (["instances", "list"], ["instances", "show", "deep"]):
        result = await cli(*args, db=db)
        assert result.code == 0, result.err
        assert "deep" in result.out
    shown = await cli("instances", "show", "deep", "--json", db=db)
    assert json.loads(shown.out)["instance"]["output"] == DEEPEST, shown.err

    process, url = start_dashboard(db)
    try:
        async with httpx.AsyncClient(base_url=url) as http:
            listed = await http.get("api/instances")
            one = await http.get("api/instance", params={"id": "deep"})
            whole = await http.get("api/download", params={"id": "deep", "field": "output"})
    finally:
        stop_process(process)
    assert listed.status_code == one.status_code == whole.status_code == 200
    # The list shows previews; the instance page a clip of the indented JSON; the download the value itself.
    [summary] = listed.json()["instances"]
    assert summary["instance_id"] == "deep" and summary["input_preview"]["length"] > 0
    output = one.json()["values"]["output"]
    assert not output["truncated"] and json.loads(output["text"]) == DEEPEST
    assert json.loads(whole.content) == DEEPEST


# --- values that cannot be stored -------------------------------------------------------------


async def test_an_activity_result_that_cannot_be_stored_fails_each_attempt_once(provider: Provider) -> None:
    calls: Counter[str] = Counter()
    registry = Registry()

    @registry.activity()
    def returns(ctx: ActivityContext, case: str) -> Any:
        calls[case] += 1
        return UNSTORABLE[case]

    @registry.orchestration()
    async def calls_each(ctx: OrchestrationContext, cases: list[str]) -> list[Any]:
        retry = RetryPolicy(max_attempts=2, initial_interval=0.01)
        outcomes = []
        for case in cases:
            try:
                await ctx.call_activity("returns", case, retry=retry)
                outcomes.append("completed")
            except ActivityFailedError as exc:
                outcomes.append([exc.details.type, exc.details.message])
        return outcomes

    async with running(provider, registry) as client:
        await client.start_orchestration("results", "calls_each", list(UNSTORABLE))
        state = await client.wait_for_orchestration("results", timeout=30)

    assert state.status is COMPLETED
    assert calls == dict.fromkeys(UNSTORABLE, 2)  # each attempt ran the body once: no redelivery
    for (kind, message), case in zip(state.output, UNSTORABLE, strict=True):
        assert kind == "perdure.SerializationError", case
        assert "result of activity 'returns' cannot be stored" in message, case
    assert_history_sound(await client.get_history("results"))


@pytest.mark.parametrize("case", list(UNSTORABLE))
async def test_an_orchestration_output_that_cannot_be_stored_fails_the_instance_once(
    provider: Provider, case: str
) -> None:
    runs = Counter[str]()
    registry = Registry()

    @registry.orchestration()
    async def returns(ctx: OrchestrationContext) -> Any:
        runs["returns"] += 1
        return UNSTORABLE[case]

    async with running(provider, registry) as client:
        await client.start_orchestration("output", "returns")
        state = await client.wait_for_orchestration("output", timeout=10)

    assert state.status is OrchestrationStatus.FAILED
    assert state.error is not None
    assert state.error.type == "perdure.SerializationError"
    assert "output of orchestration 'returns' cannot be stored" in state.error.message
    assert runs["returns"] == 1
    assert_history_sound(await client.get_history("output"))


async def test_unstorable_custom_status_and_client_values_are_refused_at_the_call(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration()
    async def sets_status(ctx: OrchestrationContext, cases: list[str]) -> Any:
        refused = []
        for case in cases:
            try:
                ctx.set_custom_status(UNSTORABLE[case])
            except SerializationError as exc:
                refused.append("custom status cannot be stored" in str(exc))
        ctx.set_custom_status("fine")
        return [refused, await ctx.wait_for_event("go")]

    async with running(provider, registry) as client:
        for case, value in UNSTORABLE.items():
            with pytest.raises(SerializationError, match="input of orchestration 'sets_status' cannot be stored"):
                await client.start_orchestration(case, "sets_status", value)
            assert await client.get_status(case) is None
        await client.start_orchestration("status", "sets_status", list(UNSTORABLE))
        for value in UNSTORABLE.values():
            with pytest.raises(SerializationError, match="data of event 'go' cannot be stored"):
                await client.raise_event("status", "go", value)
        await client.raise_event("status", "go", "last")
        state = await client.wait_for_orchestration("status", timeout=10)

    assert state.status is COMPLETED
    assert state.output == [[True] * len(UNSTORABLE), "last"]
    assert state.custom_status == "fine"
    assert [e.data for e in await client.get_history("status") if isinstance(e, EventRaised)] == ["last"]


async def test_an_exception_message_with_a_lone_surrogate_fails_its_task_once(provider: Provider) -> None:
    calls: Counter[str] = Counter()
    registry = Registry()

    @registry.activity()
    def raises(ctx: ActivityContext) -> None:
        calls["raises"] += 1
        raise ValueError("bad \ud800 input")

    @registry.orchestration()
    async def fails(ctx: OrchestrationContext) -> None:
        calls["fails"] += 1
        try:
            await ctx.call_activity("raises")
        except ActivityFailedError as exc:
            raise RuntimeError(f"gave up: {exc.details.message} \udfff") from None

    async with running(provider, registry) as client:
        await client.start_orchestration("surrogates", "fails")
        state = await client.wait_for_orchestration("surrogates", timeout=10)

    assert state.status is OrchestrationStatus.FAILED
    assert state.error is not None
    assert (state.error.type, state.error.message) == ("RuntimeError", "gave up: bad \\ud800 input \\udfff")
    # The activity runs once; the code is called once: its second turn resumes it (the execution cache).
    assert calls == {"raises": 1, "fails": 1}
    assert_history_sound(await client.get_history("surrogates"))


async def test_names_and_reasons_with_a_lone_surrogate_are_refused_at_the_call(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration()
    async def names(ctx: OrchestrationContext) -> list[str]:
        refused = []
        for call in (
            lambda: ctx.call_activity("act\ud800"),
            lambda: ctx.call_activity("act", queue="q\ud800"),
            lambda: ctx.wait_for_event("e\ud800"),
            lambda: ctx.send_event("other\udc00", "e"),
            lambda: ctx.start_orchestration("names", instance_id="child\udc00"),
        ):
            try:
                call()
                refused.append("accepted")
            except ValueError as exc:
                refused.append(str(exc).split(" must")[0])
        return refused

    async with running(provider, registry) as client:
        with pytest.raises(ValueError, match="lone surrogate"):
            await client.start_orchestration("id\ud800", "names")
        await client.start_orchestration("names", "names")
        state = await client.wait_for_orchestration("names", timeout=10)
        with pytest.raises(ValueError, match="lone surrogate"):
            await client.terminate("names", "reason \ud800")

    assert state.status is COMPLETED, state.error
    assert state.output == [
        "the activity name",
        "the queue name",
        "the event name",
        "the instance id",
        "the instance id",
    ]
    assert [s.instance_id for s in await client.list_instances()] == ["names"]


# --- timers -----------------------------------------------------------------------------------


async def test_timers_that_cannot_be_computed_raise_value_error_at_the_call(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration()
    async def times(ctx: OrchestrationContext) -> list[str]:
        refused = []
        for call in (
            lambda: ctx.create_timer(float("nan")),
            lambda: ctx.create_timer(float("inf")),
            lambda: ctx.create_timer(1e300),
            lambda: ctx.create_timer(timedelta.max),
            lambda: ctx.wait_for_event("e", timeout=float("nan")),
            lambda: ctx.wait_for_event("e", timeout=-1),
        ):
            try:
                call()
                refused.append("accepted")
            except ValueError as exc:
                refused.append(type(exc).__name__)
        await ctx.create_timer(0.01)
        return refused

    async with running(provider, registry) as client:
        await client.start_orchestration("timers", "times")
        state = await client.wait_for_orchestration("timers", timeout=10)

    assert state.status is COMPLETED, state.error
    assert state.output == ["ValueError"] * 6
