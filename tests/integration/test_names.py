"""Names and ids: one rule at every entry (client, orchestration context, registry), on real stores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from runtime_support import running

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    RegistrationError,
    Registry,
    RetryPolicy,
    RuntimeOptions,
    SqliteProvider,
)
from perdure._validate import MAX_NAME_LENGTH
from perdure.engine.events import (
    ActivityScheduled,
    EventSent,
    OrchestrationChained,
    SubOrchestrationScheduled,
)

TOO_LONG = "x" * (MAX_NAME_LENGTH + 1)
# 256 different characters of four UTF-8 bytes each: the largest id or name, uncompressible.
LONGEST = "".join(chr(0x10000 + i) for i in range(MAX_NAME_LENGTH))

BAD_IDS: list[tuple[Any, type[Exception], str]] = [
    (TOO_LONG, ValueError, "the instance id must be at most 256 characters, got 257"),
    ("   ", ValueError, "the instance id must not be empty or only whitespace"),
    ("", ValueError, "the instance id must not be empty or only whitespace"),
    ("a\x00b", ValueError, "the instance id must not contain control characters"),
    (42, TypeError, "the instance id must be a string, got int"),
]

CLIENT_CALLS_BY_ID: dict[str, Callable[[Client, Any], Any]] = {
    "start_orchestration": lambda c, i: c.start_orchestration(i, "Echo"),
    "raise_event": lambda c, i: c.raise_event(i, "go"),
    "get_status": lambda c, i: c.get_status(i),
    "wait_for_orchestration": lambda c, i: c.wait_for_orchestration(i, timeout=1),
    "terminate": lambda c, i: c.terminate(i),
    "suspend": lambda c, i: c.suspend(i),
    "resume": lambda c, i: c.resume(i),
    "rewind": lambda c, i: c.rewind(i),
    "purge": lambda c, i: c.purge(i),
    "get_history": lambda c, i: c.get_history(i),
    "get_orchestration_descriptor": lambda c, i: c.get_orchestration_descriptor(i),
    "list_instances": lambda c, i: c.list_instances(parent_instance_id=i),
}


def _registry() -> Registry:
    registry = Registry()

    @registry.activity()
    async def echo(ctx: ActivityContext, value: Any) -> Any:
        return value

    @registry.orchestration("Echo")
    async def echo_orchestration(ctx: OrchestrationContext, value: Any) -> Any:
        return value

    return registry


async def _store_is_empty(client: Client) -> None:
    assert await client.list_instances() == []
    depths = await client.provider.queue_depths()
    assert not any(depths.values()), depths


@pytest.mark.parametrize("call", sorted(CLIENT_CALLS_BY_ID))
@pytest.mark.parametrize(("bad_id", "error", "message"), BAD_IDS)
async def test_every_client_call_taking_an_instance_id_applies_the_rule(
    sqlite_provider: SqliteProvider, call: str, bad_id: Any, error: type[Exception], message: str
) -> None:
    client = Client(sqlite_provider)
    with pytest.raises(error, match=message):
        await CLIENT_CALLS_BY_ID[call](client, bad_id)
    await _store_is_empty(client)


@pytest.mark.parametrize(
    ("call", "error", "message"),
    [
        (lambda c: c.start_orchestration("i", "   "), ValueError, "the orchestration name must not be empty"),
        (lambda c: c.start_orchestration("i", TOO_LONG), ValueError, "the orchestration name must be at most 256"),
        (lambda c: c.start_orchestration("i", None), TypeError, "the orchestration name must be a string"),
        (lambda c: c.start_orchestration("i", "Echo", version="1.0.0\n"), RegistrationError, "semantic version"),
        (lambda c: c.start_orchestration("i", "Echo", version=f"1.0.0-{TOO_LONG}"), RegistrationError, "at most 256"),
        (lambda c: c.raise_event("i", "   "), ValueError, "the event name must not be empty or only whitespace"),
        (lambda c: c.raise_event("i", TOO_LONG), ValueError, "the event name must be at most 256 characters"),
        (lambda c: c.raise_event("i", "go\x1b[2J"), ValueError, "the event name must not contain control characters"),
    ],
)
async def test_client_names_and_versions_apply_the_rule(
    sqlite_provider: SqliteProvider, call: Any, error: type[Exception], message: str
) -> None:
    client = Client(sqlite_provider)
    with pytest.raises(error, match=message):
        await call(client)
    await _store_is_empty(client)


async def test_the_longest_ids_and_names_are_stored_and_addressable(provider: Provider) -> None:
    registry = _registry()

    @registry.orchestration(LONGEST)
    async def longest(ctx: OrchestrationContext, value: Any) -> Any:
        return value

    async with running(provider, registry) as client:
        await client.start_orchestration(LONGEST, LONGEST, "in")
        state = await client.wait_for_orchestration(LONGEST, timeout=20)
        assert (state.instance_id, state.name, state.output) == (LONGEST, LONGEST, "in")
        assert [s.instance_id for s in await client.list_instances(name=LONGEST)] == [LONGEST]


BAD_CONTEXT_CALLS: dict[str, Callable[[OrchestrationContext], Any]] = {
    "activity name whitespace": lambda ctx: ctx.call_activity("   "),
    "activity name wrong type": lambda ctx: ctx.call_activity(None),  # type: ignore[arg-type]
    "activity queue NUL": lambda ctx: ctx.call_activity("echo", queue="q\x00"),
    "activity queue too long": lambda ctx: ctx.call_activity("echo", queue=TOO_LONG),
    "child name empty": lambda ctx: ctx.call_sub_orchestration(""),
    "child id too long": lambda ctx: ctx.call_sub_orchestration("Echo", instance_id=TOO_LONG),
    "child id whitespace": lambda ctx: ctx.call_sub_orchestration("Echo", instance_id=" \t"),
    "child version": lambda ctx: ctx.call_sub_orchestration("Echo", version="one"),
    "detached name too long": lambda ctx: ctx.start_orchestration(TOO_LONG),
    "detached id NUL": lambda ctx: ctx.start_orchestration("Echo", instance_id="a\x00"),
    "detached version": lambda ctx: ctx.start_orchestration("Echo", version="1.0"),
    "send_event id whitespace": lambda ctx: ctx.send_event("   ", "go"),
    "send_event name whitespace": lambda ctx: ctx.send_event("target", "   "),
    "send_event id wrong type": lambda ctx: ctx.send_event(7, "go"),  # type: ignore[arg-type]
    "wait_for_event name too long": lambda ctx: ctx.wait_for_event(TOO_LONG),
    "continue_as_new version": lambda ctx: ctx.continue_as_new(version=f"2.0.0-{TOO_LONG}"),
}


async def test_every_context_call_applies_the_rule_and_schedules_nothing(sqlite_provider: SqliteProvider) -> None:
    registry = _registry()

    @registry.orchestration()
    async def prober(ctx: OrchestrationContext, cases: list[str]) -> dict[str, Any]:
        refused: dict[str, Any] = {}
        for case in cases:
            try:
                BAD_CONTEXT_CALLS[case](ctx)
            except (TypeError, ValueError, RegistrationError) as exc:
                refused[case] = [type(exc).__name__, str(exc)]
        # The orchestration goes on: a refused call left no trace in its state.
        refused["after"] = await ctx.call_activity("echo", "still fine")
        return refused

    async with running(sqlite_provider, registry) as client:
        await client.start_orchestration("prober", "prober", sorted(BAD_CONTEXT_CALLS))
        state = await client.wait_for_orchestration("prober", timeout=20)
    assert state.status is OrchestrationStatus.COMPLETED, state.error
    output = state.output
    assert output.pop("after") == "still fine"
    assert sorted(output) == sorted(BAD_CONTEXT_CALLS)
    expected_types = {"wrong type": "TypeError", "version": "RegistrationError"}
    for case, (error_type, message) in output.items():
        expected = next((t for key, t in expected_types.items() if case.endswith(key)), "ValueError")
        assert error_type == expected, (case, message)
    assert "the instance id must be at most 256 characters, got 257" in output["child id too long"][1]
    assert "the instance id must not be empty or only whitespace" in output["send_event id whitespace"][1]
    assert "the event name must not be empty or only whitespace" in output["send_event name whitespace"][1]
    assert "the queue name must not contain control characters" in output["activity queue NUL"][1]
    history = await client.get_history("prober")
    reaching_out = SubOrchestrationScheduled | OrchestrationChained | EventSent
    assert [type(e) for e in history if isinstance(e, reaching_out)] == []
    assert [e.name for e in history if isinstance(e, ActivityScheduled)] == ["echo"]
    assert [s.instance_id for s in await client.list_instances()] == ["prober"]


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("child id too long", "ValueError: the instance id must be at most 256 characters, got 257"),
        ("send_event id whitespace", "ValueError: the instance id must not be empty or only whitespace"),
    ],
)
async def test_an_uncaught_refusal_fails_the_orchestration_and_reaches_no_store(
    sqlite_provider: SqliteProvider, case: str, message: str
) -> None:
    registry = _registry()

    @registry.orchestration()
    async def careless(ctx: OrchestrationContext, case: str) -> None:
        await BAD_CONTEXT_CALLS[case](ctx)

    async with running(sqlite_provider, registry) as client:
        await client.start_orchestration("careless", "careless", case)
        state = await client.wait_for_orchestration("careless", timeout=20)
    assert state.status is OrchestrationStatus.FAILED
    assert state.error is not None and f"{state.error.type}: {state.error.message}".startswith(message)
    assert [s.instance_id for s in await client.list_instances()] == ["careless"]
    assert not any((await sqlite_provider.queue_depths()).values())


async def test_ids_derived_from_a_long_parent_id_stay_addressable(sqlite_provider: SqliteProvider) -> None:
    registry = _registry()
    parent_id = "p" * MAX_NAME_LENGTH
    given_id = "c" * MAX_NAME_LENGTH  # its retry's id, given id + ":2", is too long as it stands

    @registry.orchestration()
    async def fails_first(ctx: OrchestrationContext, first_id: str) -> str:
        if ctx.instance_id == first_id:
            raise RuntimeError("the first attempt fails")
        return ctx.instance_id

    @registry.orchestration()
    async def parent(ctx: OrchestrationContext, _: Any) -> list[str]:
        first = await ctx.call_sub_orchestration("Echo", "a")
        second = await ctx.call_sub_orchestration("Echo", "b")
        detached = ctx.start_orchestration("Echo", "c")
        retry = RetryPolicy(max_attempts=2, initial_interval=0.01)
        retried = await ctx.call_sub_orchestration("fails_first", given_id, instance_id=given_id, retry=retry)
        return [first, second, detached, retried]

    async with running(sqlite_provider, registry, RuntimeOptions(idle_timeout=1.0, dispatch_backoff=0.01)) as client:
        await client.start_orchestration(parent_id, "parent")
        state = await client.wait_for_orchestration(parent_id, timeout=20)
        assert state.status is OrchestrationStatus.COMPLETED, state.error
        first, second, detached, retried = state.output
        assert (first, second) == ("a", "b")
        assert retried != given_id and retried.startswith("c" * 200)
        children = {s.instance_id for s in await client.list_instances(parent_instance_id=parent_id)}
        assert given_id in children and retried in children
        ids = children | {detached}
        assert len(ids) == 5  # two Echo children, the detached one, and both attempts: all distinct
        for child_id in ids:
            assert len(child_id) <= MAX_NAME_LENGTH
            assert (await client.wait_for_orchestration(child_id, timeout=20)).status.is_terminal
