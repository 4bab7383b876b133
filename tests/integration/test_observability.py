"""Observability: OpenTelemetry spans, runtime metrics and structured, switchable turn logging."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from tests.integration.runtime_support import FAST, wait_until

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    Registry,
    Runtime,
    RuntimeOptions,
)
from perdure._tracing import Tracer
from perdure.engine.events import OrchestrationStarted


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def tracer_provider(exporter: InMemorySpanExporter) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider


def traced(tracer_provider: TracerProvider, **options: Any) -> RuntimeOptions:
    return RuntimeOptions(
        idle_timeout=1.0, dispatch_backoff=0.01, max_dispatch_backoff=0.05, tracer_provider=tracer_provider, **options
    )


def steps_registry(broken: set[str] | None = None) -> Registry:
    """``Steps`` runs activities A, B and C in sequence; an activity fails while its name is in ``broken``."""
    registry = Registry()
    broken = broken if broken is not None else set()

    @registry.activity("Step")
    async def step(ctx: ActivityContext, name: str) -> str:
        if name in broken:
            raise ConnectionError(f"{name} is down")
        return name.lower()

    @registry.orchestration("Steps")
    async def steps(ctx: OrchestrationContext, names: list[str]) -> str:
        return "".join([await ctx.call_activity("Step", name) for name in names])

    @registry.orchestration("Parent")
    async def parent(ctx: OrchestrationContext, _: Any) -> str:
        first = await ctx.call_activity("Step", "P")
        return first + await ctx.call_sub_orchestration("Steps", ["X", "Y"], instance_id="child-1")

    return registry


def by_name(spans: list[ReadableSpan], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def linked(span: ReadableSpan) -> list[int]:
    """The span ids ``span`` links to."""
    return [link.context.span_id for link in span.links]


def trace_ids(spans: list[ReadableSpan]) -> set[int]:
    return {s.context.trace_id for s in spans if s.context is not None}


async def spans_named(exporter: InMemorySpanExporter, name: str, count: int) -> list[ReadableSpan]:
    """The finished spans, once ``count`` spans called ``name`` are among them."""

    def ready() -> list[ReadableSpan] | None:
        spans = list(exporter.get_finished_spans())
        return spans if len(by_name(spans, name)) >= count else None

    spans: list[ReadableSpan] = await wait_until(ready, what=f"{count} {name} spans")
    return spans


# --- tracing ---------------------------------------------------------------------------------------


async def test_a_run_is_one_trace_client_then_orchestration_then_activities(
    provider: Provider, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with Runtime(provider, steps_registry(), traced(tracer_provider)):
        client = Client(provider, tracer_provider=tracer_provider)
        await client.start_orchestration("run-1", "Steps", ["A", "B", "C"])
        state = await client.wait_for_orchestration("run-1")
        assert state.output == "abc"
        spans = await spans_named(exporter, "orchestration:Steps", 1)

    assert sorted(s.name for s in spans) == [
        "activity:Step",
        "activity:Step",
        "activity:Step",
        "create_orchestration:Steps",
        "orchestration:Steps",
    ]
    assert len(trace_ids(spans)) == 1
    [create] = by_name(spans, "create_orchestration:Steps")
    [orchestration] = by_name(spans, "orchestration:Steps")
    activities = by_name(spans, "activity:Step")
    assert create.parent is None and create.kind is SpanKind.CLIENT
    assert parent_id(orchestration) == span_id(create)
    assert all(parent_id(a) == span_id(orchestration) for a in activities)
    assert orchestration.attributes == {
        "perdure.type": "orchestration",
        "perdure.name": "Steps",
        "perdure.version": "1.0.0",
        "perdure.instance_id": "run-1",
        "perdure.execution_id": 1,
        "perdure.status": "completed",
    }
    assert orchestration.status.status_code is StatusCode.UNSET
    # The execution span covers the run: from the recorded start to the terminal event.
    assert orchestration.start_time is not None and orchestration.end_time is not None
    assert all(orchestration.start_time <= a.start_time <= orchestration.end_time for a in activities)  # type: ignore[operator]
    assert sorted(a.attributes["perdure.event_id"] for a in activities) == [2, 4, 6]  # type: ignore[index]
    assert {a.attributes["perdure.instance_id"] for a in activities} == {"run-1"}  # type: ignore[index]
    # The start carried the client span's context into history.
    [started, *_] = await client.get_history("run-1")
    assert isinstance(started, OrchestrationStarted)
    assert started.trace_context == f"00-{create.context.trace_id:032x}-{span_id(create):016x}-01"  # type: ignore[union-attr]


async def test_a_child_execution_is_a_child_of_its_parents_execution_span(
    provider: Provider, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with Runtime(provider, steps_registry(), traced(tracer_provider)):
        client = Client(provider, tracer_provider=tracer_provider)
        await client.start_orchestration("parent-1", "Parent")
        assert (await client.wait_for_orchestration("parent-1")).output == "pxy"
        spans = await spans_named(exporter, "orchestration:Parent", 1)

    assert len(trace_ids(spans)) == 1
    [parent] = by_name(spans, "orchestration:Parent")
    [child] = by_name(spans, "orchestration:Steps")
    assert parent_id(child) == span_id(parent)
    assert child.attributes["perdure.parent_instance_id"] == "parent-1"  # type: ignore[index]
    under_child = [s for s in by_name(spans, "activity:Step") if parent_id(s) == span_id(child)]
    under_parent = [s for s in by_name(spans, "activity:Step") if parent_id(s) == span_id(parent)]
    assert len(under_child) == 2 and len(under_parent) == 1


async def test_a_rewound_run_gets_a_new_span_in_the_original_trace_with_only_the_rerun_work(
    provider: Provider, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    broken = {"B"}
    async with Runtime(provider, steps_registry(broken), traced(tracer_provider)):
        client = Client(provider, tracer_provider=tracer_provider)
        await client.start_orchestration("rw-1", "Steps", ["A", "B", "C"])
        assert (await client.wait_for_orchestration("rw-1")).status is OrchestrationStatus.FAILED
        await spans_named(exporter, "orchestration:Steps", 1)
        broken.clear()
        await client.rewind("rw-1", "B is back")

        async def completed() -> bool:
            state = await client.get_status("rw-1")
            return state is not None and state.status is OrchestrationStatus.COMPLETED

        await wait_until(completed, what="the rewound run to complete")
        spans = await spans_named(exporter, "orchestration:Steps", 2)

    assert len(trace_ids(spans)) == 1
    [create] = by_name(spans, "create_orchestration:Steps")
    first, second = sorted(by_name(spans, "orchestration:Steps"), key=lambda s: s.start_time or 0)
    assert parent_id(first) == span_id(create)
    assert first.attributes["perdure.status"] == "failed"  # type: ignore[index]
    assert first.status.status_code is StatusCode.ERROR
    assert "B is down" in (first.status.description or "")
    # The rerun is a sibling of the failed run in the original trace, linked to it rather than its child.
    assert parent_id(second) == span_id(create)
    assert linked(second) == [span_id(first)] and linked(first) == []
    assert second.attributes["perdure.rewound"] is True  # type: ignore[index]
    assert second.attributes["perdure.execution_id"] == 2  # type: ignore[index]
    assert second.attributes["perdure.status"] == "completed"  # type: ignore[index]

    def inputs_under(span: ReadableSpan) -> list[tuple[int, str]]:
        children = [a for a in by_name(spans, "activity:Step") if parent_id(a) == span_id(span)]
        return sorted((a.attributes["perdure.event_id"], a.status.status_code.name) for a in children)  # type: ignore[misc]

    assert inputs_under(first) == [(2, "UNSET"), (4, "ERROR")]  # A, then B failed
    assert inputs_under(second) == [(4, "UNSET"), (7, "UNSET")]  # only B again, then C (after the rewind marker)


async def test_a_rewound_child_hangs_under_its_parents_rewound_run(
    provider: Provider, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    broken = {"Y"}
    async with Runtime(provider, steps_registry(broken), traced(tracer_provider)):
        client = Client(provider, tracer_provider=tracer_provider)
        await client.start_orchestration("rw-parent", "Parent")
        assert (await client.wait_for_orchestration("rw-parent")).status is OrchestrationStatus.FAILED
        await spans_named(exporter, "orchestration:Parent", 1)
        broken.clear()
        execution = await client.rewind("rw-parent", "Y is back")
        assert (await client.wait_for_orchestration("rw-parent", execution_id=execution)).output == "pxy"
        spans = await spans_named(exporter, "orchestration:Parent", 2)

    assert len(trace_ids(spans)) == 1
    [create] = by_name(spans, "create_orchestration:Parent")
    parent_1, parent_2 = sorted(by_name(spans, "orchestration:Parent"), key=lambda s: s.start_time or 0)
    child_1, child_2 = sorted(by_name(spans, "orchestration:Steps"), key=lambda s: s.start_time or 0)

    def under(span: ReadableSpan) -> list[str]:
        """What hangs under ``span``: orchestrations by execution, activities by input and outcome."""
        found = []
        for s in spans:
            if parent_id(s) == span_id(span):
                attributes: Any = s.attributes
                if s.name.startswith("orchestration:"):
                    found.append(f"{s.name} {attributes['perdure.execution_id']}")
                else:
                    found.append(f"{s.name} {attributes['perdure.event_id']} {s.status.status_code.name}")
        return sorted(found)

    # The failed run, as it was: P, then the child that failed at Y.
    assert parent_id(parent_1) == span_id(create)
    assert under(parent_1) == ["activity:Step 2 UNSET", "orchestration:Steps 1"]
    assert under(child_1) == ["activity:Step 2 UNSET", "activity:Step 4 ERROR"]
    # The rewound parent: a new span beside the failed one, linked to it; only the rerun under it.
    assert parent_id(parent_2) == span_id(create)
    assert linked(parent_2) == [span_id(parent_1)]
    assert under(parent_2) == ["orchestration:Steps 2"]
    # The child it rewound hangs under it, not under the child's failed execution, which it links to.
    assert parent_id(child_2) == span_id(parent_2)
    assert linked(child_2) == [span_id(child_1)]
    assert under(child_2) == ["activity:Step 4 UNSET"]  # only Y again; X is not redone
    for span, execution, status in ((parent_2, 2, "completed"), (child_2, 2, "completed")):
        assert span.attributes["perdure.rewound"] is True  # type: ignore[index]
        assert span.attributes["perdure.execution_id"] == execution  # type: ignore[index]
        assert span.attributes["perdure.status"] == status  # type: ignore[index]
    assert "perdure.rewound" not in (parent_1.attributes or {}) and "perdure.rewound" not in (child_1.attributes or {})
    # Each rerun starts at its rewind, after the failed run ended.
    assert parent_1.end_time <= parent_2.start_time <= child_2.start_time  # type: ignore[operator]


async def test_a_traced_worker_roots_the_trace_of_an_untraced_start(
    provider: Provider, tracer_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    async with Runtime(provider, steps_registry(), traced(tracer_provider)):
        client = Client(provider)  # no tracer provider, and none is set globally
        await client.start_orchestration("root-1", "Steps", ["A"])
        await client.wait_for_orchestration("root-1")
        spans = await spans_named(exporter, "orchestration:Steps", 1)

    [orchestration] = by_name(spans, "orchestration:Steps")
    [activity] = by_name(spans, "activity:Step")
    assert orchestration.parent is None
    assert parent_id(activity) == span_id(orchestration)
    assert len(trace_ids(spans)) == 1


async def test_without_a_tracer_provider_nothing_is_traced_or_stored(provider: Provider) -> None:
    assert Tracer.create() is None  # OpenTelemetry is installed, but no provider is set globally
    async with Runtime(provider, steps_registry(), FAST):
        client = Client(provider)
        await client.start_orchestration("plain-1", "Steps", ["A"])
        assert (await client.wait_for_orchestration("plain-1")).output == "a"
    [started, *_] = await client.get_history("plain-1")
    assert isinstance(started, OrchestrationStarted) and started.trace_context is None


# --- metrics ---------------------------------------------------------------------------------------


async def test_the_metrics_of_a_known_workload(provider: Provider) -> None:
    """5 orchestrations of 3 activities each, where the 2nd activity of one of them fails (and fails it)."""
    registry = Registry()

    @registry.activity("Work")
    async def work(ctx: ActivityContext, step: int) -> int:
        if ctx.instance_id == "m-3" and step == 2:
            raise ValueError("step 2 of m-3 fails")
        return step

    @registry.orchestration("ThreeSteps")
    async def three_steps(ctx: OrchestrationContext, _: Any) -> int:
        return sum([await ctx.call_activity("Work", step) for step in (1, 2, 3)])

    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    runtime = Runtime(
        provider,
        registry,
        RuntimeOptions(idle_timeout=1.0, dispatch_backoff=0.01, meter_provider=meter_provider, queue_depth_interval=0),
    )
    async with runtime:
        client = Client(provider)
        for n in range(1, 6):
            await client.start_orchestration(f"m-{n}", "ThreeSteps")
        for n in range(1, 6):
            await client.wait_for_orchestration(f"m-{n}")

        def settled() -> dict[str, Any] | None:  # the dispatcher counts right after its commit
            snapshot = runtime.metrics.snapshot()
            finished = snapshot.get("orchestrations.completed", 0) + snapshot.get("orchestrations.failed", 0)
            return snapshot if finished == 5 else None

        snapshot = await wait_until(settled, what="5 finished orchestrations counted")

    # 4 turns for each orchestration that completes (start, then one per activity); 3 for the one that fails.
    # Every turn after the first resumes the execution the cache kept: no replay.
    counts = {k: v for k, v in snapshot.items() if isinstance(v, int)}
    assert counts == {
        "cache.hit": 14,
        "cache.miss": 5,
        "activities.completed": 13,
        "activities.failed": 1,
        "orchestrations.completed": 4,
        "orchestrations.failed": 1,
        "turns.committed": 19,
    }
    assert snapshot["turn.duration"]["count"] == 19
    assert snapshot["activity.duration"]["count"] == 14
    assert 0 < snapshot["turn.duration"]["min"] <= snapshot["turn.duration"]["max"]

    exported: dict[tuple[str, tuple[tuple[str, Any], ...]], Any] = {}
    data = reader.get_metrics_data()
    assert data is not None
    for resource_metrics in data.resource_metrics:
        for scope_metrics in resource_metrics.scope_metrics:
            assert scope_metrics.scope.name == "perdure"
            for metric in scope_metrics.metrics:
                for point in metric.data.data_points:
                    value = getattr(point, "value", None)
                    if value is None:
                        value = point.count  # type: ignore[union-attr]
                    exported[(metric.name, tuple(sorted(point.attributes.items())))] = value  # type: ignore[union-attr]
    assert exported[("perdure.activities", (("outcome", "completed"),))] == 13
    assert exported[("perdure.activities", (("outcome", "failed"),))] == 1
    assert exported[("perdure.orchestrations", (("status", "completed"),))] == 4
    assert exported[("perdure.orchestrations", (("status", "failed"),))] == 1
    assert exported[("perdure.turns", (("outcome", "committed"),))] == 19
    assert exported[("perdure.cache", (("outcome", "hit"),))] == 14
    assert exported[("perdure.turn.duration", ())] == 19
    assert exported[("perdure.activity.duration", ())] == 14


async def test_queue_depths_count_the_work_waiting_by_queue(provider: Provider) -> None:
    registry = Registry()

    @registry.activity("Later")
    async def later(ctx: ActivityContext, _: Any) -> None:
        return None

    @registry.orchestration("Waits")
    async def waits(ctx: OrchestrationContext, queue: str) -> None:
        await ctx.call_activity("Later", queue=queue)

    # Orchestrations only: the activities they schedule stay queued.
    runtime = Runtime(
        provider, registry, RuntimeOptions(idle_timeout=1.0, run_activities=False, queue_depth_interval=0.05)
    )
    async with runtime:
        client = Client(provider)
        for n, queue in enumerate(["default", "default", "default", "slow"]):
            await client.start_orchestration(f"q-{n}", "Waits", queue)
        expected = {"orchestrator": 0, "activity:default": 3, "activity:slow": 1}
        await wait_until(lambda: runtime.metrics.snapshot()["queue.depth"] == expected, what=f"depths {expected}")
    await client.raise_event("q-0", "nobody-waits")
    assert (await provider.queue_depths())["orchestrator"] == 1


# --- logging ---------------------------------------------------------------------------------------


async def test_perdure_log_debug_logs_each_turns_history_and_decisions(
    provider: Provider, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERDURE_LOG", "debug")
    caplog.set_level(logging.DEBUG, logger="perdure.turn")
    async with Runtime(provider, steps_registry(), FAST):
        client = Client(provider)
        await client.start_orchestration("log-1", "Steps", ["A", "B"])
        await client.wait_for_orchestration("log-1")

    turns = [r for r in caplog.records if r.name == "perdure.turn" and r.instance_id == "log-1"]  # type: ignore[attr-defined]
    assert len(turns) == 3
    assert all(r.levelno == logging.DEBUG and r.execution_id == 1 for r in turns)  # type: ignore[attr-defined]
    first, _, last = (r.getMessage().splitlines() for r in turns)
    assert first == [
        "turn of instance 'log-1' execution 1: replayed 0 events, 2 new, 1 decisions, status RUNNING",
        "  replayed: none",
        "  new:",
        "    OrchestrationStarted (event 1)",
        "    ActivityScheduled 'Step' with input 'A' (event 2)",
        "  decisions:",
        "    ActivityScheduled 'Step' with input 'A' (event 2)",
    ]
    assert last[0] == "turn of instance 'log-1' execution 1: replayed 4 events, 2 new, 1 decisions, status COMPLETED"
    assert "    ActivityCompleted for event 4 (event 5)" in last
    assert "    OrchestrationCompleted (event 6)" in last
    assert turns[-1].event_ids == [5, 6]  # type: ignore[attr-defined]


async def test_turns_are_not_logged_without_the_switch(
    provider: Provider, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PERDURE_LOG", "debug")
    caplog.set_level(logging.DEBUG, logger="perdure")
    async with Runtime(provider, steps_registry(), RuntimeOptions(idle_timeout=1.0, log_turns=False)):
        client = Client(provider)
        await client.start_orchestration("quiet-1", "Steps", ["A"])
        await client.wait_for_orchestration("quiet-1")
    assert not [r for r in caplog.records if r.name == "perdure.turn"]


async def test_log_records_carry_the_instance_execution_and_event_ids(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="perdure")
    registry = steps_registry({"B"})

    @registry.orchestration("Logs")
    async def logs(ctx: OrchestrationContext, _: Any) -> None:
        ctx.logger.info("before")
        await ctx.call_activity("Step", "A")
        ctx.logger.info("after")
        await ctx.call_activity("Step", "B")

    async with Runtime(provider, registry, FAST):
        client = Client(provider)
        await client.start_orchestration("ids-1", "Logs")
        await client.wait_for_orchestration("ids-1")

    mine = [r for r in caplog.records if getattr(r, "instance_id", None) == "ids-1"]
    # The replay-safe orchestration logger logs each line once, however often the code is replayed.
    assert [r.getMessage() for r in mine if r.name == "perdure.orchestration"] == ["before", "after"]
    [failure] = [r for r in mine if r.name == "perdure.runtime" and getattr(r, "activity", None) == "Step"]
    assert failure.execution_id == 1 and failure.event_id == 4  # type: ignore[attr-defined]
    assert "ConnectionError: B is down" in failure.getMessage()


async def test_a_failed_instance_is_logged_as_a_warning_with_its_name_version_and_error(
    provider: Provider, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="perdure")
    registry = Registry()

    @registry.orchestration("Refund", version="2.1.0")
    async def refund(ctx: OrchestrationContext, amount: int) -> int:
        if amount < 0:
            raise ValueError(f"cannot refund {amount}")
        return amount

    async with Runtime(provider, registry, FAST):
        client = Client(provider)
        await client.start_orchestration("refund-ok", "Refund", 5)
        await client.start_orchestration("refund-bad", "Refund", -5)
        await client.wait_for_orchestration("refund-ok")
        await client.wait_for_orchestration("refund-bad")

    warnings = [r for r in caplog.records if r.name == "perdure.runtime" and r.levelno >= logging.WARNING]
    [failure] = warnings  # one line for the failed instance, none for the completed one
    assert failure.levelno == logging.WARNING
    assert failure.getMessage() == "instance 'refund-bad' of Refund@2.1.0 failed: ValueError: cannot refund -5"
    fields = ("instance_id", "execution_id", "orchestration", "version", "error_type", "error_message")
    assert {field: getattr(failure, field) for field in fields} == {
        "instance_id": "refund-bad",
        "execution_id": 1,
        "orchestration": "Refund",
        "version": "2.1.0",
        "error_type": "ValueError",
        "error_message": "cannot refund -5",
    }
