"""The client's side of payloads: values it sends are converted and encoded, values it reads decoded."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from typing import Any, TypedDict, overload

from perdure._payloads import (
    DEFAULT_MAX_PAYLOAD_BYTES,
    DataConverter,
    PayloadCodec,
    Payloads,
    UnreadablePayloadError,
    encoded_size,
    is_encoded,
)
from perdure._state import OrchestrationState
from perdure.engine._payload_fields import PAYLOAD_FIELDS
from perdure.engine.events import HistoryEvent

__all__ = ["ClientPayloads", "PayloadSettings", "show_unreadable"]


class PayloadSettings(TypedDict, total=False):
    """The payload keywords of ``Client`` and ``SyncClient``; they must match the runtimes' ``RuntimeOptions``.

    Values the client gives are converted and encoded as the runtimes will read them, and values it
    reads (states, histories) come back decoded. See docs/payloads.md.

    Attributes:
        payload_codec: The :class:`~perdure.PayloadCodec` the store's payloads are encoded with.
        data_converter: The :class:`~perdure.DataConverter` (default: the built-in one).
        max_payload_bytes: The largest input or event data accepted, as JSON (default 2 MiB).
    """

    payload_codec: PayloadCodec | None
    data_converter: DataConverter | None
    max_payload_bytes: int


class ClientPayloads:
    """The payload settings of one client (see :class:`PayloadSettings`)."""

    def __init__(
        self,
        data_converter: DataConverter | None = None,
        payload_codec: PayloadCodec | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
    ) -> None:
        self.payloads = Payloads(data_converter, payload_codec, max_payload_bytes)
        self.lenient = False
        """Show a payload this client cannot decode as ``"<encoded N bytes>"`` instead of raising (the tools do)."""

    def send(self, value: Any, what: str) -> Any:
        """The stored form of a value the caller gives; raises ``SerializationError`` at the call."""
        return self.payloads.send(value, what)

    @overload
    def state(self, state: OrchestrationState, result_type: Any = None) -> OrchestrationState: ...

    @overload
    def state(self, state: None, result_type: Any = None) -> None: ...

    def state(self, state: OrchestrationState | None, result_type: Any = None) -> OrchestrationState | None:
        """``state`` with its input, output and custom status decoded (the output to ``result_type``).

        Raises:
            SerializationError: if one cannot be decoded (``UnreadablePayloadError``: the codec is
                missing or has not the key), or the output does not fit ``result_type``.
        """
        if state is None:
            return None
        payloads = self.payloads
        plain = payloads.codec is None and result_type is None and not self.lenient
        if plain and not (is_encoded(state.input) or is_encoded(state.output) or is_encoded(state.custom_status)):
            return state  # nothing to decode (the common case, kept cheap)
        ident = f"instance {state.instance_id!r}"
        output = self._open(state.output, f"output of {ident}")
        return replace(
            state,
            input=self._open(state.input, f"input of {ident}"),
            output=payloads.decode(output, result_type, f"output of {ident}"),
            custom_status=self._open(state.custom_status, f"custom status of {ident}"),
        )

    def states(self, states: Sequence[OrchestrationState]) -> list[OrchestrationState]:
        """Every state of a listing, decoded."""
        return [self.state(state) for state in states]

    def history(self, events: Sequence[HistoryEvent]) -> list[HistoryEvent]:
        """A history with every payload decoded by the codec (as JSON values)."""
        if self.payloads.codec is None and not self.lenient:
            return list(events)
        return [self._open_event(event) for event in events]

    def _open(self, stored: Any, what: str) -> Any:
        try:
            return self.payloads.open(stored, what)
        except UnreadablePayloadError:
            if not self.lenient:
                raise
            return f"<encoded {encoded_size(stored)} bytes>"

    def _open_event(self, event: HistoryEvent) -> HistoryEvent:
        field = PAYLOAD_FIELDS.get(type(event))
        if field is None:
            return event
        value = getattr(event, field)
        opened = self._open(value, f"{field} of {type(event).__name__}")
        return event if opened is value else replace(event, **{field: opened})


def show_unreadable(client: Any) -> None:
    """Make ``client`` (a ``Client``) show payloads it cannot decode as ``"<encoded N bytes>"``, as the CLI and
    dashboard do, rather than raise."""
    client._payloads.lenient = True
