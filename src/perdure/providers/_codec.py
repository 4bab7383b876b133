"""Row encoding shared by the SQL providers: payloads, errors, times, and the records a fetch returns."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, NamedTuple

from perdure import _json
from perdure._errors import ErrorDetails, HistoryFormatError, type_name_of_class
from perdure._state import AwaitedEvent, OrchestrationState, OrchestrationStatus
from perdure.engine import HistoryEvent, decode_event
from perdure.engine._codec import error_from_dict, error_to_dict
from perdure.providers._base import ActivityRequest, Message, OrchestrationItem, QueuedMessage, WorkerInfo, WorkItem

__all__ = [
    "DecodedHistory",
    "MessageRow",
    "activity_items",
    "decode_error",
    "decode_request",
    "decode_state",
    "decode_value",
    "decode_waits",
    "decoded_history",
    "encode_error",
    "encode_request",
    "encode_value",
    "encode_waits",
    "from_epoch",
    "held_activities",
    "message_kind",
    "orchestration_item",
    "state_from_row",
    "to_epoch",
    "work_item",
    "worker_from_row",
    "worker_serves",
]

_REQUEST_FIELD_ORDER = tuple(f.name for f in dataclasses.fields(ActivityRequest))
_REQUEST_FIELDS = set(_REQUEST_FIELD_ORDER)
# Optional fields, written only when set (rows from before they existed stay readable).
_OPTIONAL_REQUEST_FIELDS = {"trace_context", "start_to_close", "deadline", "heartbeat_timeout"}


def to_epoch(value: datetime) -> float:
    """Seconds since the epoch."""
    return value.timestamp()


def from_epoch(value: float) -> datetime:
    """An aware UTC datetime."""
    return datetime.fromtimestamp(value, UTC)


def encode_value(value: Any) -> str | None:
    """A JSON payload column: SQL NULL for ``None``."""
    return None if value is None else _json.dumps(value)


def decode_value(text: str | None) -> Any:
    """The inverse of :func:`encode_value`."""
    return None if text is None else _json.loads(text)


def encode_error(error: ErrorDetails | None) -> str | None:
    """An error column."""
    if error is None:
        return None
    return _json.dumps(error_to_dict(error))


def decode_error(text: str | None) -> ErrorDetails | None:
    """The inverse of :func:`encode_error`."""
    if text is None:
        return None
    return error_from_dict(_json.loads(text))


def encode_waits(waits: Sequence[AwaitedEvent]) -> str | None:
    """The ``waiting_for`` column: a JSON list of waits, SQL NULL for none."""
    if not waits:
        return None
    return _json.dumps([_wait_to_dict(w) for w in waits])


def _wait_to_dict(wait: AwaitedEvent) -> dict[str, Any]:
    return {
        "name": wait.name,
        "since": wait.since.isoformat(),
        "timeout_at": None if wait.timeout_at is None else wait.timeout_at.isoformat(),
        "timer_event_id": wait.timer_event_id,
    }


def decode_waits(text: str | None) -> tuple[AwaitedEvent, ...]:
    """The inverse of :func:`encode_waits`; raises ``ValueError`` or ``TypeError`` for a corrupted column."""
    if text is None:
        return ()
    raw = _json.loads(text)
    if not isinstance(raw, list) or not all(isinstance(w, dict) and set(w) == _WAIT_FIELDS for w in raw):
        raise ValueError("expected a list of waits")
    return tuple(
        AwaitedEvent(
            name=_text(w["name"]),
            since=_iso_time(w["since"]),
            timeout_at=None if w["timeout_at"] is None else _iso_time(w["timeout_at"]),
            timer_event_id=None if w["timer_event_id"] is None else _integer(w["timer_event_id"]),
        )
        for w in raw
    )


_WAIT_FIELDS = {"name", "since", "timeout_at", "timer_event_id"}


def _iso_time(value: Any) -> datetime:
    moment = datetime.fromisoformat(_text(value))
    if moment.tzinfo is None:
        raise ValueError(f"time {value!r} has no time zone")
    return moment


def encode_request(request: ActivityRequest) -> str:
    """A worker queue row's payload."""
    # Field by field rather than ``dataclasses.asdict``, which deep-copies the input for nothing.
    raw = {}
    for name in _REQUEST_FIELD_ORDER:
        value = getattr(request, name)
        if value is not None or name not in _OPTIONAL_REQUEST_FIELDS:
            raw[name] = value
    if request.deadline is not None:
        raw["deadline"] = request.deadline.isoformat()
    return _json.dumps(raw)


def decode_request(text: str) -> ActivityRequest:
    """The inverse of :func:`encode_request`; raises :class:`HistoryFormatError` for a corrupted row."""
    try:
        raw = _json.loads(text)
        if not isinstance(raw, dict) or not _REQUEST_FIELDS - _OPTIONAL_REQUEST_FIELDS <= set(raw) <= _REQUEST_FIELDS:
            raise ValueError("unexpected fields")
        if raw.get("deadline") is not None:
            raw["deadline"] = _aware(datetime.fromisoformat(raw["deadline"]))
        request = ActivityRequest(**raw)
        if not all(isinstance(getattr(request, f), int) for f in ("execution_id", "source_event_id", "attempt")):
            raise ValueError("ids must be integers")
        if request.trace_context is not None and not isinstance(request.trace_context, str):
            raise ValueError("trace_context must be a string")
        for limit in (request.start_to_close, request.heartbeat_timeout):
            if limit is not None and (type(limit) not in (int, float) or limit <= 0):
                raise ValueError("time limits must be positive numbers")
    except (ValueError, TypeError) as exc:
        raise HistoryFormatError(f"a work item is corrupted ({exc}): {text[:200]!r}") from None
    return request


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("deadline has no time zone")
    return value


def held_activities(rows: Iterable[Sequence[Any]], execution_id: int) -> dict[int, str]:
    """Of ``(request, worker_id)`` rows of held work items, the workers of ``execution_id``'s activities,
    by ``source_event_id`` (a row that cannot be decoded is left out: this is only for operators)."""
    held: dict[int, str] = {}
    for text, worker_id in rows:
        try:
            request = decode_request(text)
        except HistoryFormatError:
            continue
        if request.execution_id == execution_id:
            held[request.source_event_id] = str(worker_id)
    return held


def activity_items(rows: Iterable[tuple[int, str]], execution_id: int, source_event_ids: Iterable[int]) -> list[int]:
    """The ids of the work items, among an instance's ``(item id, request)`` rows, of these activities.

    What a turn's ``cancelled_activities`` name; a corrupted row is never one of them.
    """
    wanted = set(source_event_ids)
    found = []
    for item_id, text in rows:
        try:
            request = decode_request(text)
        except HistoryFormatError:
            continue
        if request.execution_id == execution_id and request.source_event_id in wanted:
            found.append(item_id)
    return found


def state_from_row(row: Sequence[Any]) -> OrchestrationState:
    """An ``OrchestrationState`` from the columns of ``select_state`` (in that order).

    A row that cannot be decoded in full still reads: see :func:`decode_state`.
    """
    return decode_state(row)[0]


def decode_state(row: Sequence[Any]) -> tuple[OrchestrationState, str | None]:
    """An ``OrchestrationState`` from the ``select_state`` columns, and what in them could not be decoded.

    Never raises for what a row holds: one corrupted instance must not fail a page of
    ``list_instances`` or a fetch. An unreadable column reads as ``None`` (a time as the epoch, a
    status as FAILED, an execution id as 0), and ``error`` then says which columns are corrupted
    and why, so that whoever reads the state sees it.

    Returns:
        The state, and ``None`` or a description of the corrupted columns.
    """
    instance_id, name, version, status, execution_id, input_, output, error, custom_status, parent, *rest = row
    created, updated, *optional = rest  # ``waiting_for`` comes last, where the query reads it
    problems: list[str] = []

    def read(column: str, decode: Callable[[Any], Any], value: Any, default: Any = None) -> Any:
        try:
            return decode(value)
        except (ValueError, TypeError, OverflowError, OSError, RecursionError) as exc:
            reason = str(exc) if len(str(exc)) <= 200 else str(exc)[:200] + "…"
            problems.append(f"column {column!r}: {reason or type(exc).__name__}")
            return default

    state = OrchestrationState(
        instance_id=instance_id,
        name=read("name", _text, name, ""),
        version=read("version", _optional_text, version),
        status=read("status", OrchestrationStatus, status, OrchestrationStatus.FAILED),
        execution_id=read("execution_id", _integer, execution_id, 0),
        input=read("input", decode_value, input_),
        output=read("output", decode_value, output),
        error=read("error", decode_error, error),
        custom_status=read("custom_status", decode_value, custom_status),
        parent_instance_id=read("parent_instance_id", _optional_text, parent),
        created_at=read("created_at", _time, created, _EPOCH),
        updated_at=read("updated_at", _time, updated, _EPOCH),
        waiting_for=read("waiting_for", decode_waits, optional[0], ()) if optional else (),
    )
    if not problems:
        return state, None
    problem = "; ".join(problems)
    details = ErrorDetails(
        type=type_name_of_class(HistoryFormatError), message=f"the stored instance row is corrupted: {problem}"
    )
    return dataclasses.replace(state, error=details), problem


_EPOCH = datetime.fromtimestamp(0, UTC)


def _text(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, found {type(value).__name__}")
    return value


def _optional_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _integer(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"expected an integer, found {value!r:.50}")
    return value


def _time(value: Any) -> datetime:
    """SQLite stores seconds since the epoch; PostgreSQL's driver reads a datetime (``None``: out of range)."""
    if isinstance(value, datetime):
        return value
    if isinstance(value, bool) or not isinstance(value, float | int):
        raise TypeError(f"expected a time, found {value!r:.50}")
    return from_epoch(value)


_FETCHED_COLUMNS = 12  # the ``select_state`` columns up to ``updated_at``
MessageRow = tuple[int, int | None, str, int]
"""A queued message as stored: message id, execution id, event text, delivery count."""


class DecodedHistory(NamedTuple):
    """Stored events decoded, or why they could not be (``events`` is then ``None``)."""

    events: list[HistoryEvent] | None
    error: str | None


def decoded_history(history: Iterable[str]) -> DecodedHistory:
    """Decode stored events; one that cannot be decoded makes the whole history unreadable."""
    try:
        return DecodedHistory([decode_event(text) for text in history], None)
    except HistoryFormatError as exc:
        return DecodedHistory(None, str(exc))


def orchestration_item(
    instance_id: str,
    lock_token: str,
    messages: Iterable[MessageRow],
    state: Sequence[Any] | None,
    history: Sequence[str],
    history_from: int = 1,
) -> OrchestrationItem:
    """A fetched instance from its stored rows (``state`` holds the ``select_state`` columns).

    A message that cannot be decoded comes back with ``event=None`` and why; a history that cannot
    be decoded comes back as ``None`` and why; an instance row that cannot be decoded in full
    comes back with ``state_error`` set. Each fails one instance, never the dispatcher.
    """
    events, history_error = decoded_history(history)
    # The turn works out again what the code waits for: a corrupted ``waiting_for`` must not fail it.
    decoded, state_error = (None, None) if state is None else decode_state(state[:_FETCHED_COLUMNS])
    return OrchestrationItem(
        instance_id=instance_id,
        lock_token=lock_token,
        messages=[_queued_message(instance_id, *row) for row in messages],
        state=decoded,
        history=events,
        history_error=history_error,
        state_error=state_error,
        history_from=history_from,
    )


def _queued_message(
    instance_id: str, message_id: int, execution_id: int | None, text: str, dequeue_count: int
) -> QueuedMessage:
    try:
        event: HistoryEvent | None = decode_event(text)
        error = None
    except HistoryFormatError as exc:
        event, error = None, f"{exc} (stored text: {text[:200]!r})"
    return QueuedMessage(
        message_id=message_id,
        instance_id=instance_id,
        execution_id=execution_id,
        event=event,
        dequeue_count=dequeue_count,
        error=error,
    )


def work_item(
    item_id: int,
    lock_token: str,
    text: str,
    dequeue_count: int,
    heartbeat_details: str | None = None,
    heartbeat_at: datetime | float | None = None,
) -> WorkItem:
    """A fetched work item from its stored row; one that cannot be decoded comes back with ``request=None`` and why."""
    try:
        request: ActivityRequest | None = decode_request(text)
        error = None
    except HistoryFormatError as exc:
        request, error = None, str(exc)
    try:
        details = decode_value(heartbeat_details)
    except ValueError:  # progress notes only: a damaged one means starting over, not failing the item
        details = None
    return WorkItem(
        item_id=item_id,
        lock_token=lock_token,
        request=request,
        dequeue_count=dequeue_count,
        error=error,
        heartbeat_details=details,
        heartbeat_at=_moment(heartbeat_at),
    )


def _moment(value: datetime | float | None) -> datetime | None:
    """A stored time (epoch seconds on SQLite, a timestamp on PostgreSQL) as an aware datetime."""
    if value is None or isinstance(value, datetime):
        return value
    return from_epoch(value)


def worker_serves(worker: WorkerInfo) -> str:
    """The stored ``serves`` column of a worker record."""
    return _json.dumps(
        {
            "orchestrations": list(worker.orchestrations),
            "activities": list(worker.activities),
            "queues": list(worker.queues),
        }
    )


def worker_from_row(row: Sequence[Any]) -> WorkerInfo:
    """A :class:`WorkerInfo` from the columns of ``select_workers`` (in that order)."""
    worker_id, host, pid, serves, started_at, last_seen, alive = row
    try:
        what = _json.loads(serves)
    except ValueError:
        what = None
    if not isinstance(what, dict):  # a damaged record still says who and when
        what = {}
    return WorkerInfo(
        worker_id=worker_id,
        host=host,
        pid=int(pid),
        orchestrations=tuple(what.get("orchestrations", ())),
        activities=tuple(what.get("activities", ())),
        queues=tuple(what.get("queues", ())),
        started_at=_moment(started_at) or from_epoch(0),
        last_seen=_moment(last_seen) or from_epoch(0),
        alive=bool(alive),
    )


def message_kind(message: Message) -> str:
    """The stored ``kind`` of a message: ``"control"`` if it reaches a suspended instance."""
    return "control" if message.control else "message"
