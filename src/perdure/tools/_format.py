"""How the operator tools show instances and histories: stable JSON shapes and plain-text tables.

The JSON shapes are the contract for scripts (``perdure … --json``); the dashboard's API uses the
events and spans, and sends instances as summaries (:mod:`perdure.tools._preview`):

- an instance: ``{"instance_id", "name", "version", "status", "execution_id", "input", "output",
  "error": {"type", "message", "traceback"} | null, "custom_status", "parent_instance_id",
  "created_at", "updated_at", "waiting_for": [{"name", "since", "timeout_at", "timer_event_id"}]}``
  (times in ISO 8601, UTC; ``waiting_for``: the external events its code waits for);
- a history event: ``{"event_id", "type", "timestamp", "offset_seconds", "details": {…}}`` where
  ``offset_seconds`` counts from the execution's first event and ``details`` holds the event's own
  fields;
- a timeline span: ``{"kind": "activity" | "timer" | "child", "label", "event_id", "start",
  "end", "outcome", "instance_id"}`` (``instance_id`` only for children; ``end`` is null while
  pending). ``outcome`` is ``completed``, ``failed``, ``cancelled`` (by the code, or an activity
  still open when its execution ended: the end cancels it), ``withdrawn`` (a timer still open when
  its execution ended: it never fires, such as the timeout of an event that came in time),
  ``abandoned`` (a child still open when its execution ended: the parent stopped waiting for it),
  or ``pending`` (open, in an execution that goes on);
- a worker: ``{"worker_id", "host", "pid", "started_at", "last_seen", "alive", "orchestrations":
  ["name@version"], "activities", "queues"}``.

Text output is inert: every character a terminal would obey rather than show (``ESC``, the other
C0 and C1 controls, bidirectional overrides) is escaped by :func:`inert` before it is printed, so
an id, an output or an error message cannot retitle the window or clear the screen. In JSON
(:func:`dumps`) the same characters are written as ``\\uXXXX`` escapes, which decode to the same text.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from perdure import ErrorDetails, OrchestrationState, WorkerInfo
from perdure.engine.events import (
    TERMINAL_EVENTS,
    ActivityFailed,
    ActivityScheduled,
    Completion,
    HistoryEvent,
    SubOrchestrationFailed,
    SubOrchestrationScheduled,
    TaskCancelled,
    TimerCreated,
)

__all__ = [
    "describe_event",
    "dumps",
    "error_json",
    "event_json",
    "format_offset",
    "history_json",
    "history_table",
    "inert",
    "inert_lines",
    "instance_json",
    "instances_table",
    "show_text",
    "table",
    "timeline_json",
    "worker_json",
    "workers_table",
]


def dumps(value: Any) -> str:
    """Indented JSON with sorted keys: stable output for scripts and diffs.

    Inert in a terminal: the characters JSON may leave raw that a terminal would obey (C1
    controls, bidirectional overrides) are written as ``\\uXXXX``, which decodes to the same text.
    """
    return _inert_json(json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False, default=_default))


def _inert_json(text: str) -> str:
    return _UNSAFE_IN_JSON.sub(lambda match: f"\\u{ord(match.group()):04x}", text)


def _default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def error_json(error: ErrorDetails | None) -> dict[str, Any] | None:
    """The JSON object of an error, or ``None``."""
    if error is None:
        return None
    return {"type": error.type, "message": error.message, "traceback": error.traceback}


def instance_json(state: OrchestrationState) -> dict[str, Any]:
    """The stable JSON shape of an instance."""
    return {
        "instance_id": state.instance_id,
        "name": state.name,
        "version": state.version,
        "status": state.status.value,
        "execution_id": state.execution_id,
        "input": state.input,
        "output": state.output,
        "error": error_json(state.error),
        "custom_status": state.custom_status,
        "parent_instance_id": state.parent_instance_id,
        "created_at": _iso(state.created_at),
        "updated_at": _iso(state.updated_at),
        "waiting_for": [
            {
                "name": w.name,
                "since": _iso(w.since),
                "timeout_at": _iso(w.timeout_at),
                "timer_event_id": w.timer_event_id,
            }
            for w in state.waiting_for
        ],
    }


def _field_json(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, ErrorDetails):
        return error_json(value)
    return value


def event_json(event: HistoryEvent, start: datetime) -> dict[str, Any]:
    """The stable JSON shape of a history event; ``start`` is the execution's first timestamp."""
    details = {
        f.name: _field_json(getattr(event, f.name))
        for f in dataclasses.fields(event)
        if f.name not in ("event_id", "timestamp")
    }
    return {
        "event_id": event.event_id,
        "type": type(event).__name__,
        "timestamp": event.timestamp.isoformat(),
        "offset_seconds": round((event.timestamp - start).total_seconds(), 6),
        "details": details,
    }


def history_json(history: Sequence[HistoryEvent]) -> list[dict[str, Any]]:
    """Every event of one execution, times relative to its first event."""
    if not history:
        return []
    start = history[0].timestamp
    return [event_json(e, start) for e in history]


def timeline_json(history: Sequence[HistoryEvent]) -> list[dict[str, Any]]:
    """The activities, timers and children of one execution as spans, in the order they were scheduled."""
    spans: dict[int, dict[str, Any]] = {}
    for event in history:
        if isinstance(event, ActivityScheduled):
            label = event.name if event.attempt == 1 else f"{event.name} (attempt {event.attempt})"
            spans[event.event_id] = _span("activity", label, event)
        elif isinstance(event, TimerCreated):
            spans[event.event_id] = _span("timer", f"timer until {event.fire_at:%H:%M:%S}", event)
            spans[event.event_id]["fire_at"] = event.fire_at.isoformat()
        elif isinstance(event, SubOrchestrationScheduled):
            spans[event.event_id] = _span("child", f"{event.name} · {event.instance_id}", event)
            spans[event.event_id]["instance_id"] = event.instance_id
        elif isinstance(event, Completion) and event.source_event_id in spans:
            span = spans[event.source_event_id]
            span["end"] = event.timestamp.isoformat()
            span["outcome"] = _outcome(event)
    ended = next((e for e in history if isinstance(e, TERMINAL_EVENTS)), None)
    if ended is not None:  # what was still open then never completes: the end of the execution dropped it
        for span in spans.values():
            if span["outcome"] == "pending":
                span["outcome"] = _LEFT_OPEN[span["kind"]]
                span["end"] = ended.timestamp.isoformat()
    return list(spans.values())


_LEFT_OPEN = {"activity": "cancelled", "timer": "withdrawn", "child": "abandoned"}


def _outcome(event: Completion) -> str:
    if isinstance(event, TaskCancelled):
        return "cancelled"
    return "failed" if isinstance(event, ActivityFailed | SubOrchestrationFailed) else "completed"


def _span(kind: str, label: str, event: HistoryEvent) -> dict[str, Any]:
    return {
        "kind": kind,
        "label": label,
        "event_id": event.event_id,
        "start": event.timestamp.isoformat(),
        "end": None,
        "outcome": "pending",
        "instance_id": None,
    }


# --- text --------------------------------------------------------------------------------------

# C0 controls, then DEL, C1 controls and the invisible characters that reorder or break a line
# (bidirectional marks, overrides and isolates; line and paragraph separators).
_BEYOND_C0 = "\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069"
_UNSAFE = re.compile(f"[\x00-\x1f{_BEYOND_C0}]")
_UNSAFE_IN_JSON = re.compile(f"[{_BEYOND_C0}]")  # JSON escapes C0 controls itself
_NAMED = {"\t": "\\t", "\n": "\\n", "\r": "\\r"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    code = ord(char)
    return _NAMED.get(char) or (f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}")


def inert(text: str) -> str:
    """``text`` with every character a terminal would obey rather than show escaped, line breaks too.

    ``"\\x1b]0;title\\x07"`` becomes ``"\\\\x1b]0;title\\\\x07"``; ``"\\x9b"`` becomes ``"\\\\x9b"``,
    ``"\\u202e"`` ``"\\\\u202e"``. Backslashes are kept as they are, so escaping twice changes nothing.
    """
    return _UNSAFE.sub(_escape, text)


def inert_lines(text: str) -> str:
    """Like :func:`inert`, but keeps the line breaks: for text of several lines."""
    return "\n".join(inert(line) for line in text.split("\n"))


def table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table with aligned columns (the last column is not padded); every cell :func:`inert`."""
    headers = [inert(h) for h in headers]
    rows = [[inert(cell) for cell in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in rows:
        for i, cell in enumerate(row):
            widths[i] = max(widths[i], len(cell))

    def line(cells: Sequence[str]) -> str:
        padded = [c.ljust(widths[i]) if i < len(cells) - 1 else c for i, c in enumerate(cells)]
        return "  ".join(padded).rstrip()

    out = [line(headers), line(["-" * w for w in widths])]
    out += [line(row) for row in rows]
    return "\n".join(out)


def _short(value: Any, width: int = 60) -> str:
    """One inert line of at most ``width`` characters."""
    text = value if isinstance(value, str) else _inert_json(json.dumps(value, ensure_ascii=False, default=_default))
    text = inert(text.replace("\n", " "))
    return text if len(text) <= width else text[: width - 1] + "…"


def _when(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def instances_table(states: Sequence[OrchestrationState]) -> str:
    """Instances as a table: id, name, version, status, created, updated."""
    rows = [
        [s.instance_id, s.name, s.version or "-", s.status.value, _when(s.created_at), _when(s.updated_at)]
        for s in states
    ]
    return table(["INSTANCE", "NAME", "VERSION", "STATUS", "CREATED (UTC)", "UPDATED (UTC)"], rows)


def worker_json(worker: WorkerInfo) -> dict[str, Any]:
    """The stable JSON shape of a worker record."""
    return {
        "worker_id": worker.worker_id,
        "host": worker.host,
        "pid": worker.pid,
        "started_at": _iso(worker.started_at),
        "last_seen": _iso(worker.last_seen),
        "alive": worker.alive,
        "orchestrations": list(worker.orchestrations),
        "activities": list(worker.activities),
        "queues": list(worker.queues),
    }


def workers_table(workers: Sequence[WorkerInfo]) -> str:
    """Workers as a table: id, host, pid, started, last seen, and what each serves."""
    rows = []
    for w in workers:
        serves = [
            f"orchestrations: {', '.join(w.orchestrations)}" if w.orchestrations else "",
            f"activities: {', '.join(w.activities)} (queues {', '.join(w.queues)})" if w.activities else "",
        ]
        seen = _when(w.last_seen) + ("" if w.alive else " (dead)")
        rows.append([w.worker_id, w.host, str(w.pid), _when(w.started_at), seen, "; ".join(p for p in serves if p)])
    return table(["WORKER", "HOST", "PID", "STARTED (UTC)", "LAST SEEN (UTC)", "SERVES"], rows)


def format_offset(seconds: float) -> str:
    """``+0.004s``, ``+12.500s``, ``+3m05.2s``, ``+2h03m``: a time relative to the start."""
    if seconds < 60:
        return f"+{seconds:.3f}s"
    if seconds < 3600:
        minutes, rest = divmod(seconds, 60)
        return f"+{int(minutes)}m{rest:04.1f}s"
    hours, rest = divmod(seconds, 3600)
    return f"+{int(hours)}h{int(rest // 60):02d}m"


_SKIP_DETAILS = {"queue": "default", "attempt": 1}


def describe_event(event: dict[str, Any]) -> str:
    """The details of an event (as :func:`event_json` shapes it) on one line."""
    parts = []
    for key, value in event["details"].items():
        if value is None or _SKIP_DETAILS.get(key, object()) == value:
            continue
        if key == "error" and isinstance(value, dict):
            parts.append(f"error={value['type']}: {_short(value['message'], 50)}")
        else:
            parts.append(f"{key}={_short(value, 50)}")
    return " ".join(parts)


def history_table(events: Sequence[dict[str, Any]]) -> str:
    """A history (as :func:`history_json` shapes it) as a table with times relative to the start."""
    rows = [[str(e["event_id"]), format_offset(e["offset_seconds"]), e["type"], describe_event(e)] for e in events]
    return table(["#", "TIME", "EVENT", "DETAILS"], rows)


def show_text(
    state: OrchestrationState,
    events: Sequence[dict[str, Any]],
    children: Sequence[OrchestrationState],
    execution: int | None = None,
) -> str:
    """Everything ``perdure instances show`` prints about one instance (``events``: of ``execution``).

    Every value is :func:`inert`; only the traceback spans several lines.
    """
    lines = [
        f"Instance:      {inert(state.instance_id)}",
        f"Name:          {inert(state.name)}" + (f" @ {inert(state.version)}" if state.version else ""),
        f"Status:        {state.status.value}",
        f"Execution:     {state.execution_id}",
        f"Created:       {state.created_at.isoformat()}",
        f"Updated:       {state.updated_at.isoformat()}",
    ]
    if state.parent_instance_id:
        lines.append(f"Parent:        {inert(state.parent_instance_id)}")
    lines.append(f"Input:         {_short(state.input, 100)}")
    if state.output is not None:
        lines.append(f"Output:        {_short(state.output, 100)}")
    if state.custom_status is not None:
        lines.append(f"Custom status: {_short(state.custom_status, 100)}")
    for awaited in state.waiting_for:
        timeout = f", timeout at {awaited.timeout_at.isoformat()}" if awaited.timeout_at else ""
        lines.append(f"Waiting for:   event {inert(repr(awaited.name))} since {awaited.since.isoformat()}{timeout}")
    if state.error is not None:
        lines.append(f"Error:         {inert(state.error.type)}: {inert(state.error.message)}")
        if state.error.traceback:
            lines.append("Traceback:")
            lines += ["    " + inert(t) for t in state.error.traceback.rstrip().split("\n")]
    if children:
        lines.append("Children:")
        lines += ["    " + line for line in instances_table(children).splitlines()]
    lines.append("")
    lines.append(f"History (execution {execution or state.execution_id}):")
    lines.append(history_table(events) if events else "    (no events yet)")
    return "\n".join(lines)
