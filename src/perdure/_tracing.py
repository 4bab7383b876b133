"""Tracing with OpenTelemetry: spans for starts, executions and activities, or nothing at all.

OpenTelemetry is optional. Without the ``opentelemetry-api`` package, or without a tracer provider
(none given and none set globally), :meth:`Tracer.create` returns ``None`` and the runtime makes no
tracing calls.

Nothing is kept in memory between turns, so an execution's span cannot stay open from its start
to its end. Instead the span is emitted when the execution ends, with the start time recorded in
history, and its ids are **derived**: the trace id comes from the parent's ``traceparent`` stored in
``OrchestrationStarted.trace_context`` (or, for a root, from the instance id and start time) and
the span id from the trace id, instance id and execution id. Any turn in any process can therefore
compute the execution's span context without storing it, and parent activity spans and child
executions under it before the span itself is exported. The engine never sees any of this: trace
context is data in events and requests.

A rewound execution gets a span of its own in the original trace, where the execution would hang
had it not failed, with a span link to the failed execution's span; a child rewound by its parent
hangs under the parent's rewound execution, derived in the same way from the child's start.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from perdure.engine.events import ExecutionRewound, HistoryEvent, OrchestrationStarted

__all__ = [
    "ExecutionSpan",
    "Tracer",
    "execution_span",
    "execution_trace_context",
    "format_traceparent",
    "parse_traceparent",
]

_VERSION = "0.1.0"
_INVALID_TRACE = "0" * 32
_INVALID_SPAN = "0" * 16

# (trace id, span id) the next span started by our tracer must take, set around one start_span call.
_FORCED_IDS: contextvars.ContextVar[tuple[int, int] | None] = contextvars.ContextVar("perdure_forced_ids", default=None)


def format_traceparent(trace_id: int, span_id: int, sampled: bool = True) -> str:
    """A W3C ``traceparent`` header value."""
    return f"00-{trace_id:032x}-{span_id:016x}-{'01' if sampled else '00'}"


def parse_traceparent(value: str | None) -> tuple[int, int, bool] | None:
    """``(trace id, span id, sampled)`` of a W3C ``traceparent``, or ``None`` if absent or malformed."""
    if not value:
        return None
    parts = value.split("-")
    if len(parts) != 4 or len(parts[1]) != 32 or len(parts[2]) != 16 or len(parts[3]) != 2:
        return None
    if parts[1] == _INVALID_TRACE or parts[2] == _INVALID_SPAN:
        return None
    try:
        return int(parts[1], 16), int(parts[2], 16), bool(int(parts[3], 16) & 1)
    except ValueError:
        return None


def _derive(bits: int, *parts: str) -> int:
    digest = hashlib.sha256("\x1f".join(parts).encode()).digest()
    return int.from_bytes(digest[: bits // 8], "big") or 1  # an all-zero id is invalid


def execution_trace_context(instance_id: str, execution_id: int, started: OrchestrationStarted) -> str:
    """The ``traceparent`` of an execution's span, derived from its start (pure, the same in every process)."""
    parent = parse_traceparent(started.trace_context)
    if parent is None:
        trace_id, sampled = _derive(128, "trace", instance_id, started.timestamp.isoformat()), True
    else:
        trace_id, _, sampled = parent
    return format_traceparent(trace_id, _span_id(trace_id, instance_id, execution_id), sampled)


def _span_id(trace_id: int, instance_id: str, execution_id: int) -> int:
    return _derive(64, "span", f"{trace_id:032x}", instance_id, str(execution_id))


@dataclass(frozen=True, slots=True)
class ExecutionSpan:
    """Where an execution's span goes.

    Attributes:
        context: Its own ``traceparent`` (see :func:`execution_trace_context`).
        parent: The ``traceparent`` it is a child of (``None``: it heads its trace).
        start: When it starts: the execution's start, or the rewind that began it.
        rewound_from: For a rewound execution, the ``traceparent`` of the failed execution's span,
            which it links to.
    """

    context: str
    parent: str | None
    start: datetime
    rewound_from: str | None = None


def execution_span(
    instance_id: str, execution_id: int, started: OrchestrationStarted, history: list[HistoryEvent]
) -> ExecutionSpan:
    """Where the span of the execution with ``history`` goes (pure).

    A rewound execution's span starts at the rewind. It sits in the original trace where the
    execution would sit had it not failed (under the client's span, or the parent's execution),
    not under the failed execution, which it links to instead: a failed span stays a leaf of
    what failed, and the rerun reads as a sibling that picks up from it. A child rewound by its
    parent hangs under the parent's new, rewound execution.
    """
    context = execution_trace_context(instance_id, execution_id, started)
    rewind = next((e for e in history if isinstance(e, ExecutionRewound)), None)  # recorded by the rewind turn
    if rewind is None or execution_id == 1:
        return ExecutionSpan(context, started.trace_context, started.timestamp)
    parent = started.trace_context
    if rewind.parent_execution_id is not None:
        parent = _parent_execution(started, rewind.parent_execution_id) or parent
    failed = execution_trace_context(instance_id, execution_id - 1, started)
    return ExecutionSpan(context, parent, rewind.timestamp, rewound_from=failed)


def _parent_execution(started: OrchestrationStarted, parent_execution_id: int) -> str | None:
    """The span context of execution ``parent_execution_id`` of a child's parent, or ``None`` if
    the child's start carried no trace context (its parent was not traced)."""
    parent = parse_traceparent(started.trace_context)
    if parent is None or started.parent_instance is None:
        return None
    trace_id, _, sampled = parent  # a parent's executions share its trace: the one handed to the child
    return format_traceparent(trace_id, _span_id(trace_id, started.parent_instance, parent_execution_id), sampled)


class Tracer:
    """The spans perdure emits, on an OpenTelemetry tracer. Create it with :meth:`create`."""

    def __init__(self, api: Any, tracer: Any) -> None:
        self._api = api
        self._tracer = tracer
        inner = getattr(tracer, "id_generator", None)
        # The SDK's tracer draws ids from its id generator; ours hands out a derived id when asked to.
        if inner is not None:
            tracer.id_generator = _DerivedIds(inner)

    @classmethod
    def create(cls, tracer_provider: Any = None) -> Tracer | None:
        """A tracer on ``tracer_provider`` (default: the global one), or ``None`` if tracing is off."""
        try:
            from opentelemetry import trace
        except ImportError:
            return None
        provider = tracer_provider if tracer_provider is not None else trace.get_tracer_provider()
        if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
            return None  # nobody configured tracing
        return cls(trace, provider.get_tracer("perdure", _VERSION))

    def _context(self, traceparent: str | None) -> Any:
        from opentelemetry.context import Context

        if parse_traceparent(traceparent) is None:
            return Context()
        parent = self._span_context(traceparent)
        return self._api.set_span_in_context(self._api.NonRecordingSpan(parent), Context())

    def _span_context(self, traceparent: str | None) -> Any:
        parsed = parse_traceparent(traceparent)
        assert parsed is not None
        trace_id, span_id, sampled = parsed
        flags = self._api.TraceFlags(self._api.TraceFlags.SAMPLED if sampled else self._api.TraceFlags.DEFAULT)
        return self._api.SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)

    def _traceparent(self, span: Any) -> str | None:
        context = span.get_span_context()
        if not context.is_valid:
            return None
        return format_traceparent(context.trace_id, context.span_id, context.trace_flags.sampled)

    @contextlib.contextmanager
    def client_span(self, name: str, attributes: Mapping[str, Any]) -> Iterator[str | None]:
        """A span around a client call, in the caller's current trace; yields its ``traceparent``."""
        with self._tracer.start_as_current_span(name, kind=self._api.SpanKind.CLIENT, attributes=attributes) as span:
            yield self._traceparent(span)

    def emit_execution(
        self, name: str, span: ExecutionSpan, end: datetime, attributes: Mapping[str, Any], error: str | None
    ) -> None:
        """Export the finished span of an execution, with its derived ids and recorded times."""
        parsed = parse_traceparent(span.context)
        assert parsed is not None
        links = [self._api.Link(self._span_context(span.rewound_from))] if span.rewound_from is not None else []
        token = _FORCED_IDS.set(parsed[:2])
        try:
            emitted = self._tracer.start_span(
                name,
                context=self._context(span.parent),
                kind=self._api.SpanKind.SERVER,
                attributes=attributes,
                links=links,
                start_time=_nanoseconds(span.start),
            )
        finally:
            _FORCED_IDS.reset(token)
        if error is not None:
            emitted.set_status(self._api.Status(self._api.StatusCode.ERROR, error))
        emitted.end(end_time=max(_nanoseconds(end), _nanoseconds(span.start)))

    @contextlib.contextmanager
    def activity_span(self, name: str, parent: str | None, attributes: Mapping[str, Any]) -> Iterator[Any]:
        """The current span while an activity runs, a child of its execution's span."""
        with self._tracer.start_as_current_span(
            name,
            context=self._context(parent),
            kind=self._api.SpanKind.SERVER,
            attributes=attributes,
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            yield span

    def fail(self, span: Any, error: BaseException) -> None:
        """Mark ``span`` failed by ``error``."""
        span.record_exception(error)
        span.set_status(self._api.Status(self._api.StatusCode.ERROR, f"{type(error).__name__}: {error}"))


class _DerivedIds:
    """Wraps the SDK's id generator: the forced ids while one is set, the inner generator's otherwise."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def generate_span_id(self) -> int:
        forced = _FORCED_IDS.get()
        return forced[1] if forced is not None else int(self._inner.generate_span_id())

    def generate_trace_id(self) -> int:
        forced = _FORCED_IDS.get()
        return forced[0] if forced is not None else int(self._inner.generate_trace_id())

    def is_trace_id_random(self) -> bool:
        if _FORCED_IDS.get() is not None:
            return False
        inner = getattr(self._inner, "is_trace_id_random", None)  # newer SDKs only
        return bool(inner()) if inner is not None else False


def _nanoseconds(value: datetime) -> int:
    return int(value.timestamp() * 1_000_000_000)
