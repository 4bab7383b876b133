"""``Payloads``: the converter, the codec and the size limit together, as every entry and exit uses them.

A value on its way to the store is converted to JSON (:meth:`Payloads.to_json`, where the user
gives it, so that a bad value fails that call), checked (size, depth, digits), then encoded by the
codec (:meth:`Payloads.seal`). On its way back it is decoded (:meth:`Payloads.open`) and converted
to the type its receiver names (:meth:`Payloads.decode`). The replay engine compares decisions in
their converted, unencoded form, since an encryption codec never encodes a value twice alike.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, Protocol

from perdure._errors import SerializationError
from perdure._json import dumps, loads, unreadable
from perdure._payloads._codec import PayloadCodec, UnreadablePayloadError, is_encoded, seal, unseal
from perdure._payloads._convert import DataConverter

_PLAIN = (str, int, float, bool, dict, list)

__all__ = ["DEFAULT_MAX_PAYLOAD_BYTES", "PayloadTypes", "Payloads", "parameter_type", "return_type"]

DEFAULT_MAX_PAYLOAD_BYTES = 2 * 1024 * 1024
"""The largest payload accepted by default (2 MiB of JSON): larger values belong in blob storage."""


class PayloadTypes(Protocol):
    """What the replay engine asks the registries: which type a completed task's result decodes to."""

    def activity_result(self, name: str) -> Any:
        """The return annotation of activity ``name`` (``None``: unknown here, keep the JSON)."""

    def orchestration_result(self, name: str) -> Any:
        """The return annotation of orchestration ``name`` (``None``: unknown here)."""


class Payloads:
    """The payload settings of a runtime or client (all optional: the defaults store plain JSON)."""

    __slots__ = ("_fast", "codec", "converter", "max_bytes")

    def __init__(
        self,
        converter: DataConverter | None = None,
        codec: PayloadCodec | None = None,
        max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        if converter is not None and not isinstance(converter, DataConverter):
            raise TypeError(f"data_converter must be a perdure.DataConverter, not {type(converter).__name__}")
        if codec is not None and not all(callable(getattr(codec, m, None)) for m in ("encode", "decode")):
            raise TypeError(f"payload_codec must be a perdure.PayloadCodec, not {type(codec).__name__}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ValueError(f"max_payload_bytes must be an int >= 1, got {max_bytes!r}")
        self.converter = converter or DataConverter()
        self.codec = codec
        self.max_bytes = max_bytes
        # The default converter leaves JSON values as they are: those are checked by encoding them
        # once (the C encoder), the walk runs only for values it refuses.
        self._fast = type(self.converter) is DataConverter

    def to_json(self, value: Any, what: str) -> Any:
        """``value`` converted to a JSON value and checked; ``what`` names it (``"input of activity 'Pay'"``).

        Raises:
            SerializationError: naming ``what``, the path inside the value and the reason.
        """
        if value is None or value is True or value is False:
            return value
        try:
            if self._fast:
                try:
                    text = dumps(value)
                except (TypeError, ValueError, RecursionError):
                    value = self.converter.to_json(value, _root(what))
                    text = dumps(value)
            else:
                value = self.converter.to_json(value, _root(what))
                text = dumps(value)
        except SerializationError as exc:
            raise SerializationError(f"the {what} cannot be stored: {exc}") from None
        except (TypeError, ValueError, RecursionError) as exc:  # from a converter that returned no JSON value
            raise SerializationError(f"the {what} cannot be stored: it is not a JSON value: {exc}") from None
        size = len(text) if text.isascii() else len(text.encode())
        if size > self.max_bytes:
            raise SerializationError(
                f"the {what} cannot be stored: it is {size:,} bytes as JSON; the limit is {self.max_bytes:,} "
                "bytes (RuntimeOptions.max_payload_bytes): keep large data elsewhere and pass a reference"
            )
        problem = unreadable(text)
        if problem is not None:
            raise SerializationError(f"the {what} cannot be stored: {problem}")
        return value

    def seal(self, value: Any) -> Any:
        """The stored form of a converted value: encoded by the codec, if there is one.

        ``None`` stays ``None``, and a value already encoded is not encoded again.
        """
        if self.codec is None or value is None or is_encoded(value):
            return value
        return seal(self.codec, dumps(value))

    def send(self, value: Any, what: str) -> Any:
        """:meth:`to_json` then :meth:`seal`: what to store for a value a user gave."""
        return self.seal(self.to_json(value, what))

    def open(self, stored: Any, what: str) -> Any:
        """The JSON value of a stored payload (decoded by the codec if it was encoded).

        A payload stored unencoded (before a codec was configured) is read as it is.

        Raises:
            UnreadablePayloadError: if it is encoded and this codec cannot decode it.
        """
        if not is_encoded(stored):
            return stored
        text = unseal(self.codec, stored, what)
        try:
            return loads(text.decode())
        except (UnicodeDecodeError, ValueError):
            codec = type(self.codec).__name__
            raise UnreadablePayloadError(f"the {what} decoded by {codec} is not JSON text") from None

    def decode(self, data: Any, type_: Any, what: str) -> Any:
        """``data`` as the type ``type_`` names (``None``: as it is); raises :class:`SerializationError`.

        ``null`` stays ``None`` whatever the type: no value given, or the output of an instance
        that failed, is not a value of the wrong type.
        """
        if (
            type_ is None
            or data is None
            or (self._fast and (type_ is Any or (type_ in _PLAIN and type(data) is type_)))
        ):
            return data  # nothing to convert (the common case, kept cheap)
        try:
            return self.converter.from_json(data, type_, _root(what))
        except SerializationError as exc:
            raise SerializationError(f"the {what} cannot be decoded: {exc}") from None

    def receive(self, stored: Any, type_: Any, what: str) -> Any:
        """:meth:`open` then :meth:`decode`: a stored payload as its receiver wants it."""
        if type_ is None and self.codec is None and not is_encoded(stored):
            return stored  # plain JSON to an unannotated receiver: the common case, kept cheap
        return self.decode(self.open(stored, what), type_, what)


def _root(what: str) -> str:
    """The first word of a path in messages: ``"input of activity 'Pay'"`` → ``input``."""
    head = what.split(" of ", 1)[0]
    return head.replace(" ", "_")


def parameter_type(function: Callable[..., Any], index: int) -> Any:
    """The annotation of ``function``'s positional parameter ``index`` (``None`` if it has none)."""
    names = _POSITIONAL.get(function)
    if names is None:
        try:
            params = inspect.signature(function).parameters.values()
        except (TypeError, ValueError):
            return None
        positional = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)
        names = _POSITIONAL[function] = [p.name for p in params if p.kind in positional]
    return _hints(function).get(names[index]) if index < len(names) else None


def return_type(function: Callable[..., Any]) -> Any:
    """The return annotation of ``function`` (``None`` if it has none, or says ``None``)."""
    hint = _hints(function).get("return")
    return None if hint is type(None) else hint


# Looked up once per function and kept (a registry's functions live as long as the process).
_POSITIONAL: dict[Callable[..., Any], list[str]] = {}
_HINTS: dict[Callable[..., Any], dict[str, Any]] = {}


def _hints(function: Callable[..., Any]) -> dict[str, Any]:
    """``function``'s annotations, evaluated (``from __future__ import annotations`` makes them text).

    While some cannot be evaluated (a name they use is not defined yet, or not reachable from the
    function's module, like a class defined inside another function), only the others, asked
    again next time; the values of the others stay JSON (docs/payloads.md).
    """
    hints = _HINTS.get(function)
    if hints is None:
        try:
            hints = typing.get_type_hints(function, include_extras=True)
        except Exception:
            return _each_hint(function)  # not kept: what is missing may be defined later
        _HINTS[function] = hints
    return hints


def _each_hint(function: Callable[..., Any]) -> dict[str, Any]:
    """The annotations of ``function`` that can be evaluated, one by one (``ctx: Context`` imported
    inside a function must not keep ``order: Order`` from being decoded)."""
    found: dict[str, Any] = {}
    namespace = getattr(function, "__globals__", {})
    for name, annotation in getattr(function, "__annotations__", {}).items():
        try:
            found[name] = typing.get_type_hints(_Annotated(annotation, namespace), include_extras=True)["value"]
        except Exception:
            continue
    return found


class _Annotated:
    """One annotation alone, as ``typing.get_type_hints`` evaluates them (in the function's module)."""

    def __init__(self, annotation: Any, namespace: dict[str, Any]) -> None:
        self.__annotations__ = {"value": annotation}
        self.__globals__ = namespace
