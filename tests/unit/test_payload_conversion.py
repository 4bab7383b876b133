"""The data converter and the payload codecs, without a store: stored forms, typed decoding, errors."""

from __future__ import annotations

import base64
import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum, IntEnum
from typing import Any

import pytest
from pydantic import BaseModel

from perdure import DataConverter, OrchestrationContext, PayloadCodec, RuntimeOptions, SerializationError
from perdure._payloads import ENCODED_KEY, Payloads, UnreadablePayloadError, encoded_size, iso_duration
from perdure.codecs import FernetCodec, ZlibCodec
from perdure.engine import replay
from perdure.engine.events import ActivityScheduled, OrchestrationStarted


class Color(Enum):
    RED = "red"
    BLUE = "blue"


class Size(IntEnum):
    S = 1
    L = 3


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
    size: Size
    blob: bytes
    dims: tuple[int, str]
    tags: set[str]
    by_sku: dict[str, Item] = field(default_factory=dict)
    note: str | None = None


class Receipt(BaseModel):
    order_id: uuid.UUID
    total: Decimal
    paid_at: datetime
    lines: list[Item]


ORDER = Order(
    order_id=uuid.UUID("12345678-1234-5678-1234-567812345678"),
    items=[Item("A7", Decimal("19.99"), 2), Item("B2", Decimal("0.10"))],
    placed_at=datetime(2026, 11, 29, 14, 30, 5, 123456, tzinfo=UTC),
    ship_on=date(2026, 12, 1),
    cutoff=time(17, 30),
    window=timedelta(days=2, hours=3, microseconds=5),
    color=Color.BLUE,
    size=Size.L,
    blob=bytes(range(256)),
    dims=(3, "cm"),
    tags={"fragile", "gift", "b", "a"},
    by_sku={"A7": Item("A7", Decimal("19.99"), 2)},
)
PAYLOADS = Payloads()


def stored(value: Any) -> Any:
    """What the store keeps for ``value``: converted, through JSON text and back."""
    return json.loads(json.dumps(PAYLOADS.send(value, "input of orchestration 'X'")))


def test_every_listed_type_is_stored_as_readable_json() -> None:
    raw = stored(ORDER)
    assert raw["order_id"] == "12345678-1234-5678-1234-567812345678"
    assert raw["items"] == [{"sku": "A7", "price": "19.99", "qty": 2}, {"sku": "B2", "price": "0.10", "qty": 1}]
    assert raw["placed_at"] == "2026-11-29T14:30:05.123456+00:00"
    assert (raw["ship_on"], raw["cutoff"], raw["window"]) == ("2026-12-01", "17:30:00", "P2DT3H0.000005S")
    assert (raw["color"], raw["size"]) == ("blue", 3)
    assert raw["dims"] == [3, "cm"]
    assert raw["tags"] == ["a", "b", "fragile", "gift"]  # sorted: a set is always stored alike
    assert raw["blob"].startswith("AAECAwQF")
    receipt = Receipt(order_id=ORDER.order_id, total=Decimal("40.08"), paid_at=ORDER.placed_at, lines=ORDER.items)
    assert stored(receipt)["total"] == "40.08"
    assert stored({"when": [date(2026, 1, 2)]}) == {"when": ["2026-01-02"]}


@pytest.mark.parametrize(
    "annotation", [int, str, float, list[int], dict[str, Any], int | None, list[dict[str, list[str]]], Any]
)
def test_annotations_of_json_types_leave_the_value_as_stored(annotation: Any) -> None:
    # As before typed payloads: code annotated with JSON types gets what was given, even if it does not match.
    value = {"given": ["as", "is"]}
    assert PAYLOADS.decode(value, annotation, "input") is value


def test_values_decode_to_the_annotated_type() -> None:
    raw = stored(ORDER)
    assert PAYLOADS.decode(raw, Order, "input") == ORDER
    assert PAYLOADS.decode(stored([ORDER, ORDER]), list[Order], "input") == [ORDER, ORDER]
    assert PAYLOADS.decode(stored({"x": ORDER.items}), dict[str, tuple[Item, ...]], "input") == {
        "x": tuple(ORDER.items)
    }
    receipt = Receipt(order_id=ORDER.order_id, total=Decimal("1.5"), paid_at=ORDER.placed_at, lines=ORDER.items)
    assert PAYLOADS.decode(stored(receipt), Receipt, "result") == receipt
    assert PAYLOADS.decode(stored(b"\x00\xff"), bytes, "data") == b"\x00\xff"
    assert PAYLOADS.decode(stored({1, 2}), frozenset[int], "data") == frozenset({1, 2})
    assert PAYLOADS.decode(stored(Color.RED), Color, "data") is Color.RED
    assert PAYLOADS.decode(stored(None), Order | None, "data") is None
    assert PAYLOADS.decode(None, Order, "data") is None  # no value is not a value of the wrong type
    # Without a type, or with a plain JSON one, the stored value comes back as it is.
    assert PAYLOADS.decode(raw, None, "input") is raw
    assert PAYLOADS.decode(raw, dict, "input") is raw
    assert PAYLOADS.decode(raw, Any, "input") is raw


@pytest.mark.parametrize(
    "delta",
    [timedelta(0), timedelta(seconds=90), timedelta(days=-1, seconds=5), timedelta(weeks=520, microseconds=1)],
)
def test_durations_round_trip(delta: timedelta) -> None:
    assert PAYLOADS.decode(iso_duration(delta), timedelta, "x") == delta


def test_plain_json_is_kept_as_given() -> None:
    value = {"a": [1, 2.5, "x", None, True], "b": {"c": []}}
    assert PAYLOADS.to_json(value, "input") is value  # no copy on the hot path


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (
            {"items": [Item("A", Decimal(1))] * 3 + [Item("B", Decimal("NaN"))]},
            "the input of orchestration 'X' cannot be stored: input.items[3].price: Decimal NaN cannot be stored",
        ),
        ([1, {"x": float("inf")}], "input[1].x: float inf is not a JSON value"),
        ({"k": object()}, "input.k: builtins.object is not a JSON value, nor a type perdure converts"),
        ({(1, 2): 3}, "input: a dict key of type tuple; JSON keys are strings"),
        ({"s": "\ud800"}, "input.s: str with the lone surrogate"),
        ({"deep": [[[1j]]]}, "input.deep[0][0][0]: builtins.complex"),
    ],
)
def test_a_value_that_cannot_be_stored_names_the_path_and_the_type(value: Any, message: str) -> None:
    with pytest.raises(SerializationError) as raised:
        PAYLOADS.to_json(value, "input of orchestration 'X'")
    assert message in str(raised.value)
    assert str(raised.value).startswith("the input of orchestration 'X' cannot be stored: input")


def test_a_value_that_does_not_fit_the_type_names_the_path() -> None:
    raw = stored(ORDER)
    raw["items"][1]["price"] = "cheap"
    with pytest.raises(
        SerializationError, match=r"the input of activity 'Pay' cannot be decoded: input\.items\[1\]\.price"
    ):
        PAYLOADS.decode(raw, Order, "input of activity 'Pay'")


def test_the_size_limit_counts_json_bytes() -> None:
    small = Payloads(max_bytes=100)
    small.to_json("é" * 48, "data of event 'e'")  # 96 bytes and the quotes
    with pytest.raises(SerializationError, match="it is 102 bytes as JSON; the limit is 100 bytes"):
        small.to_json("é" * 50, "data of event 'e'")
    with pytest.raises(ValueError, match="max_payload_bytes"):
        Payloads(max_bytes=0)


class Upper(DataConverter):
    """A converter of its own: strings are stored upper-case, other values as the default does."""

    def to_json(self, value: Any, path: str) -> Any:
        return value.upper() if isinstance(value, str) else super().to_json(value, path)


def test_a_converter_of_ones_own_is_used_for_every_value() -> None:
    payloads = Payloads(Upper())
    assert payloads.send("abc", "input") == "ABC"
    assert payloads.send(date(2026, 1, 1), "input") == "2026-01-01"
    with pytest.raises(TypeError, match="DataConverter"):
        Payloads(converter=object())  # type: ignore[arg-type]


# --- codecs ---------------------------------------------------------------------------------------


def test_a_codec_encodes_the_json_text_and_keeps_a_json_value() -> None:
    payloads = Payloads(codec=ZlibCodec())
    sealed = payloads.send({"text": "x" * 1000}, "input")
    assert set(sealed) == {ENCODED_KEY} and len(json.dumps(sealed)) < 200
    assert payloads.open(sealed, "input") == {"text": "x" * 1000}
    assert payloads.open({"plain": 1}, "input") == {"plain": 1}  # stored before the codec came: read as is
    assert payloads.send(None, "input") is None
    for n in range(6):  # every padding
        text = Payloads(codec=ZlibCodec(min_size=10**6)).send("y" * n, "input")
        assert encoded_size(text) == len(base64.b64decode(text[ENCODED_KEY])) == n + 4  # marker, quotes
    assert encoded_size({"plain": 1}) is None


def test_fernet_encodes_with_the_first_key_and_decodes_with_any() -> None:
    old, new = FernetCodec.generate_key(), FernetCodec.generate_key()
    sealed_old = Payloads(codec=FernetCodec([old])).send({"card": "4111"}, "input")
    rotated = Payloads(codec=FernetCodec([new, old]))
    assert rotated.open(sealed_old, "input") == {"card": "4111"}
    sealed_new = rotated.send({"card": "5500"}, "input")
    assert "5500" not in json.dumps(sealed_new)
    assert Payloads(codec=FernetCodec([new])).open(sealed_new, "input") == {"card": "5500"}
    with pytest.raises(UnreadablePayloadError, match=r"cannot be decoded by FernetCodec .*wrong key"):
        Payloads(codec=FernetCodec([old])).open(sealed_new, "input of instance 'x'")
    with pytest.raises(UnreadablePayloadError, match="no payload codec is configured"):
        Payloads().open(sealed_new, "input")
    with pytest.raises(ValueError, match="at least one key"):
        FernetCodec([])
    with pytest.raises(ValueError, match="malformed"):
        FernetCodec(["not a key"])


def test_an_encryption_codec_never_encodes_a_value_twice_alike() -> None:
    payloads = Payloads(codec=FernetCodec([FernetCodec.generate_key()]))
    assert payloads.send("same", "input") != payloads.send("same", "input")


def test_zlib_refuses_what_it_did_not_make() -> None:
    with pytest.raises(ValueError, match="not a payload made by ZlibCodec"):
        ZlibCodec().decode(b"plain")
    assert ZlibCodec(min_size=100).decode(ZlibCodec(min_size=100).encode(b"short")) == b"short"


def test_a_codec_must_have_encode_and_decode() -> None:
    with pytest.raises(TypeError, match="PayloadCodec"):
        Payloads(codec=object())  # type: ignore[arg-type]
    assert issubclass(ZlibCodec, PayloadCodec)


def test_runtime_options_check_the_payload_settings_when_made() -> None:
    with pytest.raises(TypeError, match="PayloadCodec"):
        RuntimeOptions(payload_codec="fernet")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_payload_bytes"):
        RuntimeOptions(max_payload_bytes=0)
    assert RuntimeOptions().max_payload_bytes == 2 * 1024 * 1024


def test_the_engine_stores_decisions_encoded_and_compares_them_decoded() -> None:
    payloads = Payloads(codec=FernetCodec([FernetCodec.generate_key()]))
    now = datetime(2026, 11, 29, tzinfo=UTC)

    def orchestration(secret: str) -> Any:
        async def run(ctx: OrchestrationContext, order: Order) -> None:
            assert isinstance(order, Order)  # decoded from its encoded form
            await ctx.call_activity("charge", {"card": secret})

        return run

    def turn(function: Any, history: list[Any], new: list[Any]) -> Any:
        return replay(
            function, instance_id="i", execution_id=1, history=history, new_events=new, now=now, payloads=payloads
        )

    started = OrchestrationStarted(name="pay", version="1", input=payloads.send(ORDER, "input"))
    first = turn(orchestration("SECRET-1"), [], [started])
    scheduled = first.new_events[-1]
    assert isinstance(scheduled, ActivityScheduled) and set(scheduled.input) == {ENCODED_KEY}
    assert payloads.open(scheduled.input, "input") == {"card": "SECRET-1"}
    # The same code replays its history, though encoding the same input again gives other bytes.
    assert turn(orchestration("SECRET-1"), first.new_events, []).engine_error is None
    # Other code fails, and the error, which is stored, does not hold the value in clear.
    diverged = turn(orchestration("SECRET-2"), first.new_events, [])
    assert diverged.engine_error is not None and "perdure:encoded" in str(diverged.engine_error)
    assert "SECRET" not in str(diverged.engine_error)


def test_an_annotation_that_cannot_be_evaluated_leaves_the_others() -> None:
    from perdure._payloads import parameter_type, return_type

    class Local:  # not reachable from the module: its annotation cannot be evaluated
        pass

    def activity(ctx: Local, when: datetime) -> Order: ...

    assert (parameter_type(activity, 0), parameter_type(activity, 1), return_type(activity)) == (None, datetime, Order)
