"""``PayloadCodec``: bytes to bytes over a payload's JSON text (compression, encryption at rest).

A payload passed through a codec is stored as the JSON object ``{"perdure:encoded": "<base64>"}``:
still a JSON value, so every table keeps its shape and tools that cannot decode it can say what it
is (``<encoded 84 bytes>``) instead of failing.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from perdure._errors import SerializationError

__all__ = ["ENCODED_KEY", "PayloadCodec", "UnreadablePayloadError", "encoded_size", "is_encoded"]

ENCODED_KEY = "perdure:encoded"
"""The only key of the JSON object that stands for an encoded payload."""


class PayloadCodec:
    """Turns the JSON text of every payload into other bytes before it is stored, and back.

    Implement both methods; ``decode(encode(data)) == data`` must hold, and ``decode`` must raise
    (any exception) for data it cannot decode, such as data encoded with a key it does not have.
    ``perdure.codecs`` ships :class:`~perdure.codecs.ZlibCodec` and
    :class:`~perdure.codecs.FernetCodec`; chain several by writing one that calls the others.

    Set the same codec on every runtime and client of a store: ``RuntimeOptions(payload_codec=...)``,
    ``Client(provider, payload_codec=...)``, and ``--codec`` for the CLI and dashboard.
    """

    def encode(self, data: bytes) -> bytes:
        """The bytes to store for ``data`` (UTF-8 JSON text)."""
        raise NotImplementedError

    def decode(self, data: bytes) -> bytes:
        """The inverse of :meth:`encode`; raises for data this codec cannot decode."""
        raise NotImplementedError


class UnreadablePayloadError(SerializationError):
    """A stored payload is encoded and cannot be decoded here: no codec, or the wrong one (wrong key).

    It says nothing about the instance, only about this process's settings: a turn or activity
    that meets one is put back, not failed, so that a process with the right codec can run it.
    """


def is_encoded(stored: Any) -> bool:
    """Whether ``stored`` is the stored form of an encoded payload."""
    return type(stored) is dict and len(stored) == 1 and type(stored.get(ENCODED_KEY)) is str


def seal(codec: PayloadCodec, text: str) -> dict[str, str]:
    """The stored form of the JSON ``text`` encoded by ``codec``."""
    return {ENCODED_KEY: base64.b64encode(codec.encode(text.encode())).decode("ascii")}


def unseal(codec: PayloadCodec | None, stored: dict[str, str], what: str) -> bytes:
    """The JSON text (UTF-8) inside an encoded payload; raises :class:`UnreadablePayloadError`."""
    try:
        data = base64.b64decode(stored[ENCODED_KEY], validate=True)
    except (binascii.Error, ValueError):
        raise UnreadablePayloadError(f"the {what} is stored encoded, but its text is not base64") from None
    if codec is None:
        raise UnreadablePayloadError(
            f"the {what} is stored encoded ({len(data)} bytes) and no payload codec is configured to decode it"
        )
    try:
        return codec.decode(data)
    except Exception as exc:
        raise UnreadablePayloadError(
            f"the {what} cannot be decoded by {type(codec).__name__} ({type(exc).__name__}: {exc or 'no detail'}); "
            "is the codec, or its key, the one it was stored with?"
        ) from None


def encoded_size(stored: Any) -> int | None:
    """How many bytes the codec made of an encoded payload (``None`` if ``stored`` is not one)."""
    if not is_encoded(stored):
        return None
    text: str = stored[ENCODED_KEY]
    return len(text) * 3 // 4 - text.count("=", -2)
