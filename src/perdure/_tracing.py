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
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import Any

from perdure.engine.events import ExecutionRewound, HistoryEvent, OrchestrationStarted

__all__ = [
    "Tracer",
    "execution_parent",
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
    span_id = _derive(64, "span", f"{trace_id:032x}", instance_id, str(execution_id))
    return format_traceparent(trace_id, span_id, sampled)


def execution_parent(
    instance_id: str, execution_id: int, started: OrchestrationStarted, history: list[HistoryEvent]
) -> tuple[str | None, datetime, bool]:
    """``(parent traceparent, start time, rewound)`` of an execution's span.

    A rewound execution's span starts at the rewind and is a child of the failed execution's span
    (the one before it), so the rerun work shows up inside the original trace.
    """
    rewind = next((e for e in reversed(history) if isinstance(e, ExecutionRewound)), None)
    if rewind is not None and execution_id > 1:
        return execution_trace_context(instance_id, execution_id - 1, started), rewind.timestamp, True
    return started.trace_context, started.timestamp, False


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

        parsed = parse_traceparent(traceparent)
        if parsed is None:
            return Context()
        trace_id, span_id, sampled = parsed
        flags = self._api.TraceFlags(self._api.TraceFlags.SAMPLED if sampled else self._api.TraceFlags.DEFAULT)
        parent = self._api.SpanContext(trace_id, span_id, is_remote=True, trace_flags=flags)
        return self._api.set_span_in_context(self._api.NonRecordingSpan(parent), Context())

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
        self,
        name: str,
        traceparent: str,
        parent: str | None,
        start: datetime,
        end: datetime,
        attributes: Mapping[str, Any],
        error: str | None,
    ) -> None:
        """Export the finished span of an execution, with its derived ids and recorded times."""
        parsed = parse_traceparent(traceparent)
        assert parsed is not None
        token = _FORCED_IDS.set(parsed[:2])
        try:
            span = self._tracer.start_span(
                name,
                context=self._context(parent),
                kind=self._api.SpanKind.SERVER,
                attributes=attributes,
                start_time=_nanoseconds(start),
            )
        finally:
            _FORCED_IDS.reset(token)
        if error is not None:
            span.set_status(self._api.Status(self._api.StatusCode.ERROR, error))
        span.end(end_time=max(_nanoseconds(end), _nanoseconds(start)))

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
