"""Typed payloads through the real runtime on both providers: every listed type round-trips, values
reach code as the annotated type, encryption leaves no plaintext in the store, a wrong key loses
nothing, and oversized payloads are refused at the call."""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel
from runtime_support import FAST, wait_until

from perdure import (
    ActivityContext,
    ActivityFailedError,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    Runtime,
    SerializationError,
)
from perdure.codecs import FernetCodec, ZlibCodec
from perdure.engine.events import EventRaised
from perdure.testing import Replayer

COMPLETED = OrchestrationStatus.COMPLETED


class Color(Enum):
    RED = "red"
    BLUE = "blue"


@dataclass(frozen=True)
class Item:
    sku: str
    price: Decimal
    qty: int = 1


@dataclass
class Order:
    order_id: uuid.UUID
    items: list[Item]
    placed_at: datetime
    ship_on: date
    cutoff: time
    window: timedelta
    color: Color
    blob: bytes
    dims: tuple[int, str]
    tags: set[str]
    by_sku: dict[str, list[Item]] = field(default_factory=dict)


class Receipt(BaseModel):
    order_id: uuid.UUID
    total: Decimal
    paid_at: datetime
    lines: list[Item]


@dataclass
class Approval:
    by: str
    at: datetime
    color: Color


@dataclass
class Summary:
    order: Order
    receipt: Receipt
    shipped: Order
    approval: Approval
    window: timedelta
    executions: int
    checks: list[str]


ORDER = Order(
    order_id=uuid.UUID("0b6f1c9e-94a4-4c8e-9d3b-2d3c1b1e0a77"),
    items=[Item("A7", Decimal("19.99"), 2), Item("B2", Decimal("0.10"))],
    placed_at=datetime(2026, 11, 29, 14, 30, 5, 123456, tzinfo=UTC),
    ship_on=date(2026, 12, 1),
    cutoff=time(17, 30, 15),
    window=timedelta(days=2, hours=3, microseconds=5),
    color=Color.BLUE,
    blob=bytes(range(256)),
    dims=(3, "cm"),
    tags={"fragile", "gift"},
    by_sku={"A7": [Item("A7", Decimal("19.99"), 2)]},
)
APPROVAL = Approval(by="ops", at=datetime(2026, 11, 30, 9, 0, tzinfo=UTC), color=Color.RED)


def typed_registry() -> Registry:
    registry = Registry()

    @registry.activity()
    async def price(ctx: ActivityContext, order: Order) -> Receipt:
        assert isinstance(order, Order) and isinstance(order.items[0], Item), order
        total = sum((i.price * i.qty for i in order.items), Decimal(0))
        return Receipt(order_id=order.order_id, total=total, paid_at=order.placed_at, lines=order.items)

    @registry.activity()
    def untyped(ctx: ActivityContext, value):  # type: ignore[no-untyped-def]
        return value  # a plain def, no annotations: values stay JSON both ways

    @registry.orchestration()
    async def ship(ctx: OrchestrationContext, receipt: Receipt) -> Order:
        assert isinstance(receipt, Receipt), receipt
        return replace(ORDER, items=list(receipt.lines), tags={"shipped"})

    @registry.orchestration()
    async def process(ctx: OrchestrationContext, order: Order) -> Summary:
        checks = [f"input {type(order).__name__} {order == ORDER or len(order.items) == 4}"]
        if len(order.items) == 2:  # the first execution continues as new with the order doubled
            ctx.continue_as_new(replace(order, items=order.items * 2))
        receipt = await ctx.call_activity("price", order)  # a Receipt: the activity's return annotation
        shipped = await ctx.call_sub_orchestration("ship", receipt)  # an Order: the child's return annotation
        ctx.set_custom_status(APPROVAL)
        approval = await ctx.wait_for_event("approve", result_type=Approval)
        window = await ctx.call_activity("untyped", order.window, result_type=timedelta)
        raw = await ctx.call_activity("untyped", order.placed_at)
        checks += [f"receipt {type(receipt).__name__}", f"shipped {type(shipped).__name__}", f"raw {raw}"]
        return Summary(order, receipt, shipped, approval, window, ctx.execution_id, checks)

    return registry


async def test_every_listed_type_round_trips_through_the_runtime(provider: Provider) -> None:
    async with Runtime(provider, typed_registry(), FAST):
        client = Client(provider)
        await client.start_orchestration("typed", "process", ORDER)
        await wait_until(lambda: _waiting_for_approval(client), what="the wait for the approval")
        await client.raise_event("typed", "approve", APPROVAL)
        state = await client.wait_for_orchestration("typed", timeout=30, result_type=Summary)

    assert state.status is COMPLETED, state.error
    summary = state.output
    assert isinstance(summary, Summary)
    doubled = replace(ORDER, items=ORDER.items * 2)
    assert summary.order == doubled
    assert summary.receipt == Receipt(
        order_id=ORDER.order_id, total=Decimal("80.16"), paid_at=ORDER.placed_at, lines=doubled.items
    )
    assert summary.shipped == replace(ORDER, items=doubled.items, tags={"shipped"})
    assert summary.approval == APPROVAL and summary.window == ORDER.window and summary.executions == 2
    assert summary.checks == [
        "input Order True",
        "receipt Receipt",
        "shipped Order",
        "raw 2026-11-29T14:30:05.123456+00:00",  # no annotation, no result_type: the stored JSON
    ]
    # What the store keeps stays readable JSON, for the CLI and the dashboard.
    raw = await client.get_status("typed")
    assert raw is not None
    assert raw.input["items"][0] == {"sku": "A7", "price": "19.99", "qty": 2}
    assert raw.input["tags"] == ["fragile", "gift"] and raw.input["window"] == "P2DT3H0.000005S"
    assert raw.custom_status == {"by": "ops", "at": "2026-11-30T09:00:00+00:00", "color": "red"}
    # The replayer decodes as the runtime does: today's code replays the typed history.
    for execution_id in (1, 2):
        history = await client.get_history("typed", execution_id)
        result = Replayer(typed_registry()).replay(history, instance_id="typed", execution_id=execution_id)
        assert result.ok, result.error


async def _waiting_for_approval(client: Client) -> bool:
    state = await client.get_status("typed")
    return state is not None and state.custom_status is not None


async def test_a_value_that_does_not_fit_the_annotation_fails_where_it_is_awaited(provider: Provider) -> None:
    registry = Registry()

    @registry.orchestration()
    async def strict(ctx: OrchestrationContext) -> str:
        try:
            await ctx.wait_for_event("approve", result_type=Approval)
        except SerializationError as exc:
            return str(exc)
        return "accepted"

    @registry.orchestration()
    async def takes_order(ctx: OrchestrationContext, order: Order) -> str:
        return "ran"

    async with Runtime(provider, registry, FAST):
        client = Client(provider)
        await client.start_orchestration("strict", "strict")
        await client.raise_event("strict", "approve", {"by": "ops", "at": "yesterday", "color": "red"})
        await client.start_orchestration("bad-input", "takes_order", {"order_id": "not a uuid"})
        strict_state = await client.wait_for_orchestration("strict", timeout=20)
        bad = await client.wait_for_orchestration("bad-input", timeout=20)

    assert strict_state.output.startswith("the data of event 'approve' cannot be decoded: data.at: ")
    assert bad.status is OrchestrationStatus.FAILED and bad.error is not None
    assert bad.error.type == "perdure.SerializationError"
    assert "the input of orchestration 'takes_order' cannot be decoded: input" in bad.error.message


# --- encryption at rest ---------------------------------------------------------------------------

SECRETS = {
    "input": "SECRET-INPUT-5d1e",
    "activity result": "SECRET-RESULT-90ab",
    "event": "SECRET-EVENT-77c2",
    "status": "SECRET-STATUS-e4f0",
    "child": "SECRET-CHILD-3b8d",
    "output": "SECRET-OUTPUT-a61c",
}
HEARTBEAT = "SECRET-HEARTBEAT-c0de"  # kept only while its activity runs


def secret_registry() -> Registry:
    registry = Registry()

    @registry.activity()
    async def lookup(ctx: ActivityContext, card: str) -> dict[str, str]:
        if ctx.instance_id == "pay-1":
            ctx.heartbeat({"progress": HEARTBEAT})
            await asyncio.sleep(1.0)  # a few liveness beats store the details meanwhile
        return {"card": card, "holder": SECRETS["activity result"]}

    @registry.orchestration()
    async def child(ctx: OrchestrationContext, note: str) -> str:
        return note.lower()

    @registry.orchestration()
    async def pay(ctx: OrchestrationContext, card: str) -> list[Any]:
        found = await ctx.call_activity("lookup", card)
        ctx.set_custom_status(SECRETS["status"])
        child_output = await ctx.call_sub_orchestration("child", SECRETS["child"])
        event = await ctx.wait_for_event("confirm")
        return [found, child_output, event, SECRETS["output"]]

    return registry


def _sqlite_files(folder: Path) -> bytes:
    """The database file and its write-ahead log, where recent pages are."""
    return b"".join(p.read_bytes() for p in sorted(folder.glob("perdure-*.db*")))


async def raw_store_bytes(provider: Provider, provider_kind: str, tmp_path: Path) -> bytes:
    """Everything the store holds: the SQLite files byte for byte, or every PostgreSQL row as text."""
    if provider_kind == "sqlite":
        return _sqlite_files(tmp_path)
    import psycopg
    from tests.conftest import POSTGRES_URL

    schema = provider.schema  # type: ignore[attr-defined]
    chunks = []
    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        tables = await conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s", (schema,)
        )
        for (table,) in await tables.fetchall():
            rows = await conn.execute(f'SELECT t::text FROM "{schema}"."{table}" t')
            chunks += [row[0].encode() for row in await rows.fetchall()]
    assert chunks, "the store holds rows"
    return b"\n".join(chunks)


@pytest.mark.parametrize("encrypted", [True, False], ids=["fernet", "plain"])
async def test_with_fernet_no_plaintext_reaches_the_store(
    provider: Provider, provider_kind: str, tmp_path: Path, encrypted: bool
) -> None:
    codec = FernetCodec([FernetCodec.generate_key()]) if encrypted else None
    async with Runtime(provider, secret_registry(), replace(FAST, payload_codec=codec, worker_timeout=1.0)):
        client = Client(provider, payload_codec=codec)
        await client.start_orchestration("pay-1", "pay", SECRETS["input"])
        await asyncio.sleep(0.7)
        while_running = await raw_store_bytes(provider, provider_kind, tmp_path)
        await wait_until(lambda: _status_is(client, "pay-1", SECRETS["status"]), what="the custom status")
        await client.raise_event("pay-1", "confirm", SECRETS["event"])
        state = await client.wait_for_orchestration("pay-1", timeout=30)
        history = await client.get_history("pay-1")

    assert state.status is COMPLETED, state.error
    assert state.output == [
        {"card": SECRETS["input"], "holder": SECRETS["activity result"]},
        SECRETS["child"].lower(),
        SECRETS["event"],
        SECRETS["output"],
    ]
    assert any(isinstance(e, EventRaised) and e.data == SECRETS["event"] for e in history)  # decoded for readers
    stored = await raw_store_bytes(provider, provider_kind, tmp_path)
    found = sorted(name for name, secret in SECRETS.items() if secret.encode() in stored)
    assert (HEARTBEAT.encode() in while_running) is not encrypted
    if encrypted:
        assert found == []
        assert b"perdure:encoded" in stored
    else:
        # The same search finds every value when nothing is encrypted: the search itself works.
        assert found == sorted(SECRETS)


async def _status_is(client: Client, instance_id: str, value: Any) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and state.custom_status == value


async def test_a_worker_with_the_wrong_key_puts_turns_and_activities_back_and_loses_nothing(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    key = FernetCodec.generate_key()
    right, wrong = FernetCodec([key]), FernetCodec([FernetCodec.generate_key()])
    client = Client(provider, payload_codec=right)
    registry = secret_registry()
    caplog.set_level(logging.ERROR, logger="perdure.runtime")

    # Turns: a worker without the key cannot read the input; the instance waits, untouched.
    async with Runtime(provider, registry, replace(FAST, payload_codec=wrong)):
        await client.start_orchestration("pay-2", "pay", SECRETS["input"])
        await wait_until(lambda: "cannot be decoded by FernetCodec" in caplog.text, what="the error")
        await asyncio.sleep(0.3)
    state = await client.get_status("pay-2")
    assert state is not None and state.status is OrchestrationStatus.PENDING
    assert "turn of instance 'pay-2' put back" in caplog.text
    assert "is the codec, or its key, the one it was stored with?" in caplog.text

    # Activities: orchestrations run with the key, activities on a worker without it.
    caplog.clear()
    async with (
        Runtime(provider, registry, replace(FAST, payload_codec=right, run_activities=False)),
        Runtime(provider, registry, replace(FAST, payload_codec=wrong, run_orchestrations=False)),
    ):
        await wait_until(lambda: "activity 'lookup' of 'pay-2' put back" in caplog.text, what="the activity error")
        await asyncio.sleep(0.3)
    assert (await client.get_history("pay-2"))[-1].__class__.__name__ == "ActivityScheduled"

    # With the key (rotated: a new one first), everything that waited runs: nothing was lost.
    rotated = FernetCodec([FernetCodec.generate_key(), key])
    client = Client(provider, payload_codec=rotated)
    async with Runtime(provider, registry, replace(FAST, payload_codec=rotated)):
        await wait_until(lambda: _status_is(client, "pay-2", SECRETS["status"]), what="the custom status")
        await client.raise_event("pay-2", "confirm", SECRETS["event"])
        state = await client.wait_for_orchestration("pay-2", timeout=30)
    assert state.status is COMPLETED, state.error
    assert state.output[0] == {"card": SECRETS["input"], "holder": SECRETS["activity result"]}


async def test_a_compression_codec_round_trips_typed_values(provider: Provider) -> None:
    codec = ZlibCodec()
    async with Runtime(provider, typed_registry(), replace(FAST, payload_codec=codec)):
        client = Client(provider, payload_codec=codec)
        await client.start_orchestration("typed", "process", ORDER)
        await wait_until(lambda: _waiting_for_approval(client), what="the wait for the approval")
        await client.raise_event("typed", "approve", APPROVAL)
        state = await client.wait_for_orchestration("typed", timeout=30, result_type=Summary)
    assert state.status is COMPLETED, state.error
    assert state.output.approval == APPROVAL
    raw = await provider.get_state("typed")
    assert raw is not None and set(raw.input) == {"perdure:encoded"}


# --- size limits ----------------------------------------------------------------------------------


async def test_oversized_payloads_are_refused_at_the_call_and_nothing_is_stored(provider: Provider) -> None:
    limit = 2000
    registry = Registry()

    @registry.activity()
    async def big(ctx: ActivityContext, size: int) -> str:
        return "x" * size

    @registry.orchestration()
    async def calls_big(ctx: OrchestrationContext, size: int) -> Any:
        refused = []
        try:
            ctx.set_custom_status("y" * limit)
        except SerializationError as exc:
            refused.append(str(exc))
        try:
            await ctx.call_activity("big", size)
        except ActivityFailedError as exc:
            return [exc.details.type, exc.details.message, refused]
        return "accepted"

    options = replace(FAST, max_payload_bytes=limit)
    async with Runtime(provider, registry, options):
        client = Client(provider, max_payload_bytes=limit)
        with pytest.raises(SerializationError, match=f"the limit is {limit:,} bytes"):
            await client.start_orchestration("too-big", "calls_big", {"blob": "z" * limit})
        assert await client.get_status("too-big") is None
        assert await client.list_instances() == []

        await client.start_orchestration("big-result", "calls_big", limit)
        with pytest.raises(SerializationError, match="data of event 'e' cannot be stored: it is 2,002 bytes"):
            await client.raise_event("big-result", "e", "e" * limit)
        state = await client.wait_for_orchestration("big-result", timeout=20)
        history = await client.get_history("big-result")

    assert state.status is COMPLETED, state.error
    kind, message, refused = state.output
    assert kind == "perdure.SerializationError"
    assert message == (
        f"the result of activity 'big' cannot be stored: it is {limit + 2:,} bytes as JSON; the limit is "
        f"{limit:,} bytes (RuntimeOptions.max_payload_bytes): keep large data elsewhere and pass a reference"
    )
    assert refused == [message.replace("result of activity 'big'", "custom status")]
    assert not any(isinstance(e, EventRaised) for e in history)
    assert max(len(repr(e)) for e in history) < limit  # nothing oversized was stored


async def test_a_schedule_runs_with_a_typed_input_under_a_codec(
    provider: Provider, provider_kind: str, tmp_path: Path
) -> None:
    codec = FernetCodec([FernetCodec.generate_key()])
    registry = Registry()

    @registry.orchestration()
    async def greet(ctx: OrchestrationContext, approval: Approval) -> str:
        return f"{type(approval).__name__} by {approval.by} in {approval.at.year}"

    secret = replace(APPROVAL, by="SECRET-SCHEDULED-4e2a")
    async with Runtime(provider, registry, replace(FAST, payload_codec=codec)):
        client = Client(provider, payload_codec=codec)
        await client.create_schedule("nightly", "greet", secret, every=timedelta(seconds=1))
        runs = await wait_until(
            lambda: client.list_instances(name="greet", status=COMPLETED), timeout=20, what="a scheduled run"
        )
        await client.pause_schedule("nightly", note="enough")  # a command the schedule reads encoded
        await wait_until(lambda: _schedule_state_is(client, "paused"), what="the pause")

    assert runs[0].output == "Approval by SECRET-SCHEDULED-4e2a in 2026"
    assert b"SECRET-SCHEDULED" not in await raw_store_bytes(provider, provider_kind, tmp_path)


async def _schedule_state_is(client: Client, state: str) -> bool:
    return (await client.get_schedule("nightly")).state == state
