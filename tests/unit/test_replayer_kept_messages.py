"""The replayer and what a failed execution keeps after its end (for a rewind): the code never saw it."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from perdure import ErrorDetails, NonDeterminismError, OrchestrationContext, Registry
from perdure.engine.events import EventRaised, HistoryEvent, OrchestrationFailed, OrchestrationStarted
from perdure.testing import Replayer

AT = datetime(2026, 11, 1, tzinfo=UTC)
BAD_DEPLOY = "perdure.NonDeterminismError"


def _registry() -> Registry:
    registry = Registry()

    @registry.orchestration("Job")
    async def job(ctx: OrchestrationContext, _: Any) -> Any:
        await ctx.wait_for_event("go")
        raise ValueError("boom")

    return registry


def _history(failure: ErrorDetails) -> list[HistoryEvent]:
    return [
        OrchestrationStarted(event_id=1, timestamp=AT, name="Job", version="1.0.0"),
        EventRaised(event_id=2, timestamp=AT, name="go"),
        OrchestrationFailed(event_id=3, timestamp=AT, error=failure),
        EventRaised(event_id=4, timestamp=AT, name="late"),  # kept for a rewind
    ]


def test_a_failure_of_the_code_replays_with_what_the_execution_kept_after_it() -> None:
    history = _history(ErrorDetails(type="ValueError", message="boom"))
    assert Replayer(_registry()).replay(history, instance_id="job").ok


def test_a_failure_the_runtime_recorded_is_left_out_with_the_event_kept_after_it() -> None:
    # A bad deploy failed the instance in the turn the event "go" woke it for; the fix waits for it.
    history = [
        OrchestrationStarted(event_id=1, timestamp=AT, name="Job", version="1.0.0"),
        OrchestrationFailed(event_id=2, timestamp=AT, error=ErrorDetails(type=BAD_DEPLOY, message="")),
        EventRaised(event_id=3, timestamp=AT, name="go"),
    ]
    result = Replayer(_registry()).replay(history, instance_id="job")
    assert result.ok, result.error


def test_code_that_does_not_make_the_recorded_decisions_still_diverges() -> None:
    history = _history(ErrorDetails(type="ValueError", message="boom"))
    history.insert(1, EventRaised(event_id=0, timestamp=AT, name="unrelated"))
    history = [replace(e, event_id=n) for n, e in enumerate(history, 1)]
    registry = Registry()

    @registry.orchestration("Job")
    async def job(ctx: OrchestrationContext, _: Any) -> Any:
        return "done at once"

    result = Replayer(registry).replay(history, instance_id="job")
    assert not result.ok and isinstance(result.error, NonDeterminismError)
