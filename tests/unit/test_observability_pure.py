"""Observability without I/O: trace-context helpers, how a turn hands trace context on, metrics, no OpenTelemetry."""

from __future__ import annotations

import sys
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from perdure import OrchestrationContext, OrchestrationState, OrchestrationStatus, Registry, RuntimeOptions
from perdure._tracing import (
    ExecutionSpan,
    Tracer,
    execution_span,
    execution_trace_context,
    format_traceparent,
    parse_traceparent,
)
from perdure.engine.events import ActivityScheduled, ExecutionRewound, OrchestrationStarted, StartRequested
from perdure.providers._base import ActivityRequest, OrchestrationItem, QueuedMessage
from perdure.providers._codec import decode_request, encode_request
from perdure.runtime._metrics import Metrics
from perdure.runtime._turn import TurnPlan, plan_turn

NOW = datetime(2026, 11, 22, 9, 0, tzinfo=UTC)
CLIENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_traceparent_round_trip_and_malformed_values() -> None:
    assert parse_traceparent(CLIENT) == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True)
    assert format_traceparent(*parse_traceparent(CLIENT)) == CLIENT  # type: ignore[misc]
    assert parse_traceparent(CLIENT[:-2] + "00") == (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, False)
    for bad in (None, "", "00-abc-def-01", "00-" + "0" * 32 + "-b7ad6b7169203331-01", CLIENT.replace("b7", "zz")):
        assert parse_traceparent(bad) is None


def test_an_executions_span_context_is_derived_the_same_everywhere() -> None:
    started = OrchestrationStarted(event_id=1, timestamp=NOW, name="o", version="1.0.0", trace_context=CLIENT)
    first = execution_trace_context("i", 1, started)
    assert first == execution_trace_context("i", 1, started)  # any process, any turn
    trace_id, span_id, sampled = parse_traceparent(first)  # type: ignore[misc]
    assert trace_id == parse_traceparent(CLIENT)[0] and sampled  # type: ignore[index]
    assert span_id != parse_traceparent(CLIENT)[1]  # type: ignore[index]
    others = {execution_trace_context("i", 2, started), execution_trace_context("j", 1, started)}
    assert first not in others and len(others) == 2
    # Without a parent the execution heads a trace of its own, fixed by its instance and start time.
    root = OrchestrationStarted(event_id=1, timestamp=NOW, name="o", version="1.0.0")
    assert execution_trace_context("i", 1, root) == execution_trace_context("i", 1, root)
    assert parse_traceparent(execution_trace_context("i", 1, root))[0] != trace_id  # type: ignore[index]


def test_a_rewound_execution_sits_where_it_would_have_and_links_to_the_failed_one() -> None:
    started = OrchestrationStarted(event_id=1, timestamp=NOW, name="o", version="1.0.0", trace_context=CLIENT)
    scheduled = ActivityScheduled(event_id=2, timestamp=NOW, name="A")
    first = execution_span("i", 1, started, [started, scheduled])
    assert first == ExecutionSpan(execution_trace_context("i", 1, started), CLIENT, NOW)
    later = NOW + timedelta(hours=1)
    rewound = execution_span("i", 2, started, [started, scheduled, ExecutionRewound(event_id=3, timestamp=later)])
    assert rewound == ExecutionSpan(
        context=execution_trace_context("i", 2, started),
        parent=CLIENT,  # the client's span, like the failed run, not the failed run's span
        start=later,
        rewound_from=first.context,
    )


def test_a_child_rewound_by_its_parent_hangs_under_the_parents_rewound_execution() -> None:
    parent = OrchestrationStarted(event_id=1, timestamp=NOW, name="p", version="1.0.0", trace_context=CLIENT)
    child = OrchestrationStarted(
        event_id=1,
        timestamp=NOW,
        name="c",
        version="1.0.0",
        parent_instance="p",
        parent_id=2,
        parent_execution_id=1,
        trace_context=execution_trace_context("p", 1, parent),  # what the parent's first run handed on
    )
    told = ExecutionRewound(event_id=3, timestamp=NOW, parent_execution_id=2)
    span = execution_span("c", 2, child, [child, told])
    # The parent's rewound execution, derived from the child's start alone, as the parent derives it.
    assert span.parent == execution_trace_context("p", 2, parent)
    assert span.rewound_from == execution_trace_context("c", 1, child)
    # Rewound on its own (no parent execution named), it stays under the parent's run that started it.
    alone = execution_span("c", 2, child, [child, ExecutionRewound(event_id=3, timestamp=NOW)])
    assert alone.parent == child.trace_context
    # A child started untraced has no parent span to hang under: it keeps heading its own trace.
    untraced = replace(child, trace_context=None)
    assert execution_span("c", 2, untraced, [untraced, told]).parent is None


def test_an_activity_request_without_trace_context_reads_as_before() -> None:
    request = ActivityRequest(
        instance_id="i",
        execution_id=1,
        source_event_id=2,
        name="A",
        input=None,
        queue="default",
        attempt=1,
        orchestration_name="o",
        orchestration_version="1.0.0",
    )
    assert "trace_context" not in encode_request(request)
    assert decode_request(encode_request(request)) == request
    traced = replace(request, trace_context=CLIENT)
    assert decode_request(encode_request(traced)) == traced


def _first_turn(start: StartRequested, *, tracing: bool) -> TurnPlan:
    registry = Registry()

    @registry.orchestration("o")
    async def o(ctx: OrchestrationContext, _: Any) -> None:
        await ctx.when_all(
            [ctx.call_activity("A"), ctx.call_sub_orchestration("o", instance_id="child"), ctx.create_timer(5)]
        )

    state = OrchestrationState(
        instance_id="i",
        name="o",
        version=None,
        status=OrchestrationStatus.PENDING,
        execution_id=1,
        created_at=NOW,
        updated_at=NOW,
    )
    message = QueuedMessage(message_id=1, instance_id="i", execution_id=None, event=start, dequeue_count=1)
    item = OrchestrationItem(instance_id="i", lock_token="t", messages=[message], state=state, history=[])
    plan = plan_turn(item, registry.orchestrations, RuntimeOptions(), NOW, tracing=tracing)
    assert isinstance(plan, TurnPlan)
    return plan


def test_a_turn_hands_its_execution_span_context_to_activities_and_children() -> None:
    plan = _first_turn(StartRequested(name="o", trace_context=CLIENT), tracing=False)
    started = plan.commit.history[0]
    assert isinstance(started, OrchestrationStarted) and started.trace_context == CLIENT
    mine = execution_trace_context("i", 1, started)
    [activity] = plan.commit.activity_items
    assert activity.trace_context == mine
    starts = {m.instance_id: m.event for m in plan.commit.messages if isinstance(m.event, StartRequested)}
    assert {k: v.trace_context for k, v in starts.items()} == {"child": mine}


def test_an_untraced_start_stays_untraced_unless_the_worker_traces() -> None:
    plan = _first_turn(StartRequested(name="o"), tracing=False)
    assert plan.commit.activity_items[0].trace_context is None
    assert all(getattr(m.event, "trace_context", None) is None for m in plan.commit.messages)
    traced = _first_turn(StartRequested(name="o"), tracing=True)
    started = traced.commit.history[0]
    assert isinstance(started, OrchestrationStarted) and started.trace_context is None
    assert traced.commit.activity_items[0].trace_context == execution_trace_context("i", 1, started)


def test_metrics_count_in_process() -> None:
    metrics = Metrics()
    metrics.count("activities", "failed")
    metrics.count("activities", "completed", 2)
    metrics.count("activities", "completed")
    metrics.record("turn.duration", 0.5)
    metrics.record("turn.duration", 0.25)
    snapshot = metrics.snapshot()
    assert snapshot["activities.completed"] == 3 and snapshot["activities.failed"] == 1
    assert snapshot["turn.duration"] == {"count": 2, "sum": 0.75, "min": 0.25, "max": 0.5}
    assert snapshot["activity.duration"] == {"count": 0, "sum": 0.0, "min": 0.0, "max": 0.0}
    assert snapshot["queue.depth"] == {}
    snapshot["activities.failed"] = 99
    assert metrics.snapshot()["activities.failed"] == 1  # a copy


def test_without_opentelemetry_nothing_is_traced_and_metrics_still_count(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "opentelemetry", None)  # as if it were not installed
    with pytest.raises(ImportError):
        import opentelemetry  # noqa: F401
    assert Tracer.create() is None
    assert Tracer.create(tracer_provider=object()) is None
    metrics = Metrics(meter_provider=object())
    metrics.count("turns", "committed")
    assert metrics.snapshot()["turns.committed"] == 1


def test_perdure_log_debug_switches_turn_logging(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PERDURE_LOG", raising=False)
    assert not RuntimeOptions().turn_logging()
    monkeypatch.setenv("PERDURE_LOG", "DEBUG")
    assert RuntimeOptions().turn_logging()
    assert not RuntimeOptions(log_turns=False).turn_logging()
    monkeypatch.setenv("PERDURE_LOG", "info")
    assert not RuntimeOptions().turn_logging()
    assert RuntimeOptions(log_turns=True).turn_logging()
