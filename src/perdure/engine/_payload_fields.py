"""Payloads in the engine: which field of which event holds one, encoding and decoding it in place,
and handing decoded values to the code (its input, and the results of its tasks)."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Any, TypeVar

from perdure._errors import SerializationError
from perdure._payloads import Payloads, PayloadTypes, UnreadablePayloadError, parameter_type
from perdure.engine._tasks import DurableTask
from perdure.engine.events import (
    ActivityCompleted,
    ActivityScheduled,
    CustomStatusUpdated,
    EventRaised,
    EventSent,
    HistoryEvent,
    OrchestrationChained,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationStarted,
    StartRequested,
    SubOrchestrationCompleted,
    SubOrchestrationScheduled,
)

__all__ = ["PAYLOAD_FIELDS", "hand_over", "hand_over_result", "open_event", "seal_event", "started_input"]

_Function = Callable[..., Coroutine[Any, Any, Any]]

_E = TypeVar("_E", bound=HistoryEvent)

PAYLOAD_FIELDS: dict[type[HistoryEvent], str] = {
    OrchestrationStarted: "input",
    StartRequested: "input",
    OrchestrationCompleted: "output",
    OrchestrationContinuedAsNew: "input",
    CustomStatusUpdated: "value",
    ActivityScheduled: "input",
    ActivityCompleted: "result",
    EventRaised: "data",
    EventSent: "data",
    SubOrchestrationScheduled: "input",
    SubOrchestrationCompleted: "result",
    OrchestrationChained: "input",
}
"""The payload field of each event type that has one; the others carry no user data but errors and names."""


def seal_event(event: _E, payloads: Payloads) -> _E:
    """``event`` with its payload encoded by the codec (the same event when there is no codec)."""
    if payloads.codec is None:
        return event
    field = PAYLOAD_FIELDS.get(type(event))
    if field is None:
        return event
    value = getattr(event, field)
    sealed = payloads.seal(value)
    return event if sealed is value else replace(event, **{field: sealed})


def open_event(event: _E, payloads: Payloads) -> _E:
    """``event`` with its payload decoded by the codec, as JSON; raises ``UnreadablePayloadError``."""
    field = PAYLOAD_FIELDS.get(type(event))
    if field is None:
        return event
    value = getattr(event, field)
    opened = payloads.open(value, f"{field} of {type(event).__name__}")
    return event if opened is value else replace(event, **{field: opened})


def hand_over(task: DurableTask[Any], stored: Any, what: str, payloads: Payloads, type_: Any = None) -> None:
    """Resolve ``task`` with a stored payload decoded to ``type_`` (else the task's ``result_type``).

    A value that does not fit the type fails the task: the code sees the
    :class:`~perdure.SerializationError` where it awaits. A payload this process cannot decode
    raises :class:`UnreadablePayloadError` out of the turn.
    """
    if type_ is None:
        type_ = getattr(task, "result_type", None)
    try:
        value = payloads.receive(stored, type_, what)
    except UnreadablePayloadError:
        raise
    except SerializationError as exc:
        task._fail(exc)
        return
    task._resolve(value)


def hand_over_result(
    task: DurableTask[Any], source: Any, event: HistoryEvent, payloads: Payloads, types: PayloadTypes | None
) -> None:
    """Resolve the task ``source`` scheduled with the result ``event`` carries (``None`` for a timer).

    Without a ``result_type`` on the task, the result is decoded to the return annotation of the
    activity or child, when ``types`` knows it.
    """
    if isinstance(event, ActivityCompleted):
        kind, result = "activity", event.result
        type_ = None if types is None else types.activity_result(source.name)
    elif isinstance(event, SubOrchestrationCompleted):
        kind, result = "sub-orchestration", event.result
        type_ = None if types is None else types.orchestration_result(source.name)
    else:
        task._resolve(None)
        return
    if getattr(task, "result_type", None) is not None:
        type_ = None  # the task's own wins
    hand_over(task, result, f"result of {kind} {source.name!r}", payloads, type_)


def started_input(orchestration: _Function, event: OrchestrationStarted, payloads: Payloads) -> tuple[_Function, Any]:
    """The orchestration to call and its input, decoded to its parameter's annotation.

    An input that does not fit gives a function that raises the error instead: the execution
    fails as if its first line had raised it.
    """
    what = f"input of orchestration {event.name!r}"
    try:
        return orchestration, payloads.receive(event.input, parameter_type(orchestration, 1), what)
    except UnreadablePayloadError:
        raise
    except SerializationError as exc:
        error = exc

    async def refuse(*_: Any) -> Any:
        raise error

    return refuse, None
