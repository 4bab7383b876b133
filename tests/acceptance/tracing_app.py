"""The registry the cross-process tracing test runs in ``perdure worker`` processes.

With ``PERDURE_TEST_SPANS`` set to a file path, importing this module installs an OpenTelemetry
tracer provider whose exporter appends each finished span to that file as one JSON line.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from perdure import ActivityContext, OrchestrationContext, Registry

registry = Registry()


@registry.activity("Leaf")
async def leaf(ctx: ActivityContext, value: str) -> str:
    return f"{value}@{os.getpid()}"


@registry.orchestration("Child")
async def child(ctx: OrchestrationContext, value: str) -> str:
    return str(await ctx.call_activity("Leaf", value))


@registry.orchestration("Parent")
async def parent(ctx: OrchestrationContext, _: Any) -> list[str]:
    first = await ctx.call_activity("Leaf", "parent")
    return [first, await ctx.call_sub_orchestration("Child", "child", instance_id=f"{ctx.instance_id}-child")]


class JsonLinesExporter(SpanExporter):
    """Appends each span as a JSON line: name, ids (hex), parent span id, attributes, process."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._lock = threading.Lock()

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            assert span.context is not None
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "trace_id": f"{span.context.trace_id:032x}",
                        "span_id": f"{span.context.span_id:016x}",
                        "parent_id": f"{span.parent.span_id:016x}" if span.parent is not None else None,
                        "attributes": dict(span.attributes or {}),
                        "pid": os.getpid(),
                    }
                )
            )
        with self._lock, open(self.path, "a") as out:
            out.write("".join(f"{line}\n" for line in lines))
        return SpanExportResult.SUCCESS


def install(path: str) -> TracerProvider:
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(JsonLinesExporter(path)))
    return provider


if os.environ.get("PERDURE_TEST_SPANS"):
    trace.set_tracer_provider(install(os.environ["PERDURE_TEST_SPANS"]))
