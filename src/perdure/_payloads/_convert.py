"""``DataConverter``: Python values to the JSON the store keeps, and back to the types code names.

To JSON (no dependency): JSON values as they are; dataclasses as objects of their fields;
pydantic models as ``model_dump(mode="json")`` makes them; ``datetime``, ``date`` and ``time`` in
ISO 8601; ``timedelta`` as an ISO 8601 duration (``"P1DT2H"``); ``UUID`` and ``Decimal`` as
strings; an ``Enum`` as its value; ``bytes`` in base64; a ``tuple`` as a list; a ``set`` as a
sorted list (sorted by its items' JSON text, so that the same set is always stored the same way,
which replay needs).

Back (pydantic's ``TypeAdapter``, the ``pydantic`` extra): the JSON value is validated into the
type an annotation names. Annotations made of JSON types only (``str``, ``int``, ``float``,
``bool``, ``None``, ``dict``, ``list``, ``Any``, and ``list[...]``, ``dict[str, ...]``, unions and
``Optional`` of those) and no annotation at all need no pydantic and convert nothing: the value
arrives as the JSON the store holds, as it always did, even if it does not match the annotation.
"""

from __future__ import annotations

import base64
import collections.abc
import dataclasses
import functools
import math
import sys
import types
import typing
import uuid
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from enum import Enum
from typing import Any

from perdure._errors import SerializationError
from perdure._json import MAX_PAYLOAD_DEPTH, dumps, lone_surrogate

__all__ = ["DataConverter", "iso_duration", "type_label"]

_NO_TYPE = (None, Any, object)


class DataConverter:
    """Converts values to the JSON values the store keeps (:meth:`to_json`) and back (:meth:`from_json`).

    The default conversion handles JSON values plus dataclasses, pydantic v2 models, ``datetime``,
    ``date``, ``time``, ``timedelta``, ``UUID``, ``Decimal``, ``Enum``, ``bytes``, ``tuple`` and
    ``set`` (docs/payloads.md shows the stored form of each). Subclass it and override either
    method to store other types; give the instance to ``RuntimeOptions(data_converter=...)`` and
    ``Client(provider, data_converter=...)`` alike.
    """

    def to_json(self, value: Any, path: str) -> Any:
        """The JSON value (dicts with ``str`` keys, lists, strings, numbers, booleans, ``None``) to store.

        Args:
            value: What user code gave.
            path: Names ``value`` in error messages (``"input"``); parts inside it extend it
                (``"input.items[3].price"``).

        Raises:
            SerializationError: naming the path inside ``value`` and the type that cannot be converted.
        """
        return _to_json(value, path, 0)

    def from_json(self, data: Any, type_: Any, path: str) -> Any:
        """``data`` (a JSON value read from the store) as an instance of ``type_``.

        Args:
            data: The stored JSON value.
            type_: The annotation of the receiving parameter (or ``result_type``); ``None``,
                ``Any`` or ``object`` return ``data`` unchanged.
            path: Names ``data`` in error messages.

        Raises:
            SerializationError: if ``data`` does not fit ``type_`` (naming where and why), or if
                decoding to ``type_`` needs pydantic and it is not installed.
        """
        if type_ in _NO_TYPE or not _converts(type_):
            return data
        adapter = _adapter(type_)
        try:
            return adapter.validate_python([data])[0]
        except Exception as exc:  # pydantic's ValidationError, or a validator that raised
            raise SerializationError(f"{_validation_problem(exc, path)} (expected {type_label(type_)})") from None


def _to_json(value: Any, path: str, depth: int) -> Any:
    """The walk of :meth:`DataConverter.to_json`; ``depth`` counts the lists and objects around ``value``."""
    if value is None or value is True or value is False:
        return value
    if isinstance(value, Enum):
        return _to_json(value.value, path, depth)
    if isinstance(value, str):
        surrogate = lone_surrogate(value)
        if surrogate is not None:
            raise SerializationError(f"{path}: str with the lone surrogate {surrogate!r}, which UTF-8 cannot encode")
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise SerializationError(f"{path}: float {value!r} is not a JSON value (JSON has no NaN or infinity)")
        return value
    if depth >= MAX_PAYLOAD_DEPTH:
        raise SerializationError(f"{path}: nested more than {MAX_PAYLOAD_DEPTH} levels deep")
    if isinstance(value, dict):
        return {_key(k, path): _to_json(v, f"{path}.{k}", depth + 1) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_to_json(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
    if isinstance(value, set | frozenset):
        items = [_to_json(v, f"{path}{{{i}}}", depth + 1) for i, v in enumerate(value)]
        return sorted(items, key=dumps)
    return _scalar_or_object(value, path, depth)


def _scalar_or_object(value: Any, path: str, depth: int) -> Any:
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    if isinstance(value, timedelta):
        return iso_duration(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, Decimal):
        if not value.is_finite():
            raise SerializationError(f"{path}: Decimal {value} cannot be stored (only finite numbers can)")
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return base64.b64encode(value).decode("ascii")
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = dataclasses.fields(value)
        return {f.name: _to_json(getattr(value, f.name), f"{path}.{f.name}", depth + 1) for f in fields}
    if _is_pydantic_model(value):
        try:
            dumped = value.model_dump(mode="json")
        except Exception as exc:
            raise SerializationError(f"{path}: {type(value).__name__} cannot be dumped: {exc}") from None
        return _to_json(dumped, path, depth)  # checked like any other value (NaN, depth…)
    raise SerializationError(
        f"{path}: {type(value).__module__}.{type(value).__qualname__} is not a JSON value, nor a type perdure "
        "converts (dataclasses, pydantic models, datetime/date/time/timedelta, UUID, Decimal, Enum, bytes, "
        "tuple, set); convert it first, or give a DataConverter that knows it"
    )


def _key(key: Any, path: str) -> str:
    """A dict key as JSON has it: a string (an ``Enum`` by its value, numbers in decimal, as ``json`` does)."""
    if isinstance(key, Enum):
        key = key.value
    if isinstance(key, str):
        if lone_surrogate(key) is not None:
            raise SerializationError(f"{path}: a dict key with a lone surrogate, which UTF-8 cannot encode")
        return key
    if isinstance(key, int | float | uuid.UUID) and not isinstance(key, bool):
        return str(key)
    raise SerializationError(f"{path}: a dict key of type {type(key).__name__}; JSON keys are strings")


def _is_pydantic_model(value: Any) -> bool:
    pydantic = sys.modules.get("pydantic")  # a model exists only if pydantic was imported
    return pydantic is not None and isinstance(value, pydantic.BaseModel)


def iso_duration(value: timedelta) -> str:
    """``value`` as an ISO 8601 duration: ``"PT1H30M"``, ``"-P2DT0.5S"``, ``"PT0S"``."""
    micros = abs(value.days * 86_400_000_000 + value.seconds * 1_000_000 + value.microseconds)
    days, rest = divmod(micros, 86_400_000_000)
    hours, rest = divmod(rest, 3_600_000_000)
    minutes, rest = divmod(rest, 60_000_000)
    seconds, fraction = divmod(rest, 1_000_000)
    text = "-P" if value < timedelta(0) else "P"
    if days:
        text += f"{days}D"
    clock = (f"{hours}H" if hours else "") + (f"{minutes}M" if minutes else "")
    if fraction:
        clock += f"{seconds}.{fraction:06d}".rstrip("0") + "S"
    elif seconds or not (days or clock):
        clock += f"{seconds}S"
    return text + ("T" + clock if clock else "")


_JSON_TYPES = frozenset({str, int, float, bool, dict, list, type(None), Any, object})
_JSON_ORIGINS = frozenset(
    {list, dict, typing.Union, types.UnionType, collections.abc.Sequence, collections.abc.Mapping}
)


def _converts(type_: Any) -> bool:
    """Whether values for the annotation ``type_`` need converting (it names more than JSON types)."""
    try:
        return _converts_cached(type_)
    except TypeError:  # an annotation that cannot be hashed: let the adapter decide
        return True


@functools.lru_cache(maxsize=1024)
def _converts_cached(type_: Any) -> bool:
    if type_ in _JSON_TYPES or isinstance(type_, typing.TypeVar):
        return False
    origin = typing.get_origin(type_)
    if origin is typing.Annotated:
        return _converts(typing.get_args(type_)[0])
    if origin is typing.Literal:
        return False
    if origin in _JSON_ORIGINS:
        return any(_converts(arg) for arg in typing.get_args(type_) if arg is not Ellipsis)
    return True


def type_label(type_: Any) -> str:
    """A short name of an annotation for messages: ``Order``, ``list[Order]``."""
    return type_.__qualname__ if isinstance(type_, type) else repr(type_).replace("typing.", "")


@functools.lru_cache(maxsize=512)
def _adapter(type_: Any) -> Any:
    """A pydantic ``TypeAdapter`` of ``list[type_]``: through the list, base64 text decodes to ``bytes``
    (a config that a dataclass or model at the top would not take)."""
    try:
        from pydantic import ConfigDict, TypeAdapter
    except ImportError:
        raise SerializationError(
            f"decoding a value to {type_label(type_)} needs pydantic: pip install 'perdure[pydantic]' "
            "(without it, annotate plain JSON types, or leave the parameter unannotated)"
        ) from None
    config = ConfigDict(val_json_bytes="base64", ser_json_bytes="base64", arbitrary_types_allowed=False)
    try:
        return TypeAdapter(list[type_], config=config)
    except Exception as exc:
        raise SerializationError(f"values cannot be decoded to {type_label(type_)}: {exc}") from None


def _validation_problem(exc: Exception, path: str) -> str:
    """The first problem pydantic found, at its path inside the value: ``input.items[3].price: …``."""
    errors = getattr(exc, "errors", None)
    if not callable(errors):
        return f"{path}: {exc}"
    try:
        first = errors()[0]
    except Exception:
        return f"{path}: {exc}"
    where = path
    for part in first.get("loc", ())[1:]:  # the first is the index in the list the adapter wraps
        where += f"[{part}]" if isinstance(part, int) else f".{part}"
    return f"{where}: {first.get('msg', exc)}"
