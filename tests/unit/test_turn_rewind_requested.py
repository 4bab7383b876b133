"""A rewind a client requested reads PENDING at once; its turn treats the instance as the FAILED one it is."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from perdure import ErrorDetails, OrchestrationContext, OrchestrationState, OrchestrationStatus, Registry
from perdure.engine.events import (
    ActivityFailed,
    ActivityScheduled,
    ExecutionRewound,
    HistoryEvent,
    OrchestrationFailed,
    OrchestrationStarted,
    SubOrchestrationFailed,
    SubOrchestrationScheduled,
    TimerFired,
)
from perdure.providers._base import OrchestrationItem, QueuedMessage
from perdure.runtime import RuntimeOptions
from perdure.runtime._rewind import children_to_rewind, rewind_requested
from perdure.runtime._turn import Abandon, TurnPlan, plan_turn

T = datetime(2026, 1, 1, tzinfo=UTC)
ESCAPED = ErrorDetails(type="perdure.ActivityFailedError", message="activity failed: ConnectionError: down")
OPTIONS = RuntimeOptions()
PENDING, FAILED = OrchestrationStatus.PENDING, OrchestrationStatus.FAILED

registry = Registry()


@registry.orchestration("o", version="1.0.0")
async def o(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.call_activity("A")


FAILED_RUN: list[HistoryEvent] = [
    OrchestrationStarted(event_id=1, timestamp=T, name="o", version="1.0.0"),
    ActivityScheduled(event_id=2, timestamp=T, name="A"),
    ActivityFailed(event_id=3, timestamp=T, source_event_id=2, error=ESCAPED),
    OrchestrationFailed(event_id=4, timestamp=T, error=ESCAPED),
]


def item(
    history: list[HistoryEvent],
    *events: HistoryEvent,
    status: OrchestrationStatus = PENDING,
    name: str = "o",
    deliveries: int = 1,
) -> OrchestrationItem:
    """A locked instance that failed with ESCAPED and now reads ``status``, with ``events`` queued."""
    state = OrchestrationState(
        instance_id="i",
        name=name,
        version="1.0.0",
        status=status,
        execution_id=1,
        error=ESCAPED,
        created_at=T,
        updated_at=T,
    )
    messages = [
        QueuedMessage(message_id=n, instance_id="i", execution_id=1, event=event, dequeue_count=deliveries)
        for n, event in enumerate(events, start=1)
    ]
    return OrchestrationItem(instance_id="i", lock_token="t", messages=messages, state=state, history=history)


def planned(locked: OrchestrationItem) -> TurnPlan:
    plan = plan_turn(locked, registry.orchestrations, OPTIONS, T)
    assert isinstance(plan, TurnPlan)
    return plan


def test_only_a_pending_instance_with_an_error_is_one_whose_rewind_waits() -> None:
    assert rewind_requested(item(FAILED_RUN).state)
    assert not rewind_requested(item(FAILED_RUN, status=FAILED).state)
    fresh = OrchestrationState(
        instance_id="i", name="o", version=None, status=PENDING, execution_id=1, created_at=T, updated_at=T
    )
    assert not rewind_requested(fresh)
    assert not rewind_requested(None)


def test_the_pending_instance_is_rewound_exactly_as_the_failed_one_would_be() -> None:
    request = ExecutionRewound(reason="fixed")
    from_pending = planned(item(FAILED_RUN, request))
    from_failed = planned(item(FAILED_RUN, request, status=FAILED))

    assert from_pending.rewound and from_pending.commit == from_failed.commit
    assert from_pending.commit.execution_id == 2
    assert from_pending.commit.state is not None
    assert (from_pending.commit.state.status, from_pending.commit.state.error) == (OrchestrationStatus.RUNNING, None)


def test_a_rewind_of_a_run_that_never_started_starts_it_from_its_row() -> None:
    plan = planned(item([], ExecutionRewound(reason="fixed")))
    assert isinstance(plan.commit.history[0], OrchestrationStarted)
    assert plan.commit.state is not None and plan.commit.state.status is OrchestrationStatus.RUNNING


def test_a_rewind_that_cannot_run_is_put_back_then_refused_visibly_in_the_next_execution() -> None:
    unregistered = [replace(FAILED_RUN[0], name="gone"), *FAILED_RUN[1:]]
    request = ExecutionRewound(reason="fixed")
    assert isinstance(plan_turn(item(unregistered, request, name="gone"), registry.orchestrations, OPTIONS, T), Abandon)

    # In the end the rewind is refused: the execution it was to start fails, saying why (docs/rewind.md).
    plan = planned(item(unregistered, request, name="gone", deliveries=OPTIONS.max_dispatch_attempts))
    assert plan.commit.consumed == [1] and plan.commit.execution_id == 2
    state = plan.commit.state
    assert state is not None and (state.status, state.execution_id) == (FAILED, 2)
    assert state.error is not None and "the rewind was refused" in state.error.message


def test_without_its_rewind_message_the_instance_goes_back_to_failed() -> None:
    late_timer = TimerFired(source_event_id=9, fire_at=T)
    plan = planned(item(FAILED_RUN, late_timer))
    # The late message is kept with the failed execution, for a rewind to use (docs/rewind.md).
    assert plan.commit.consumed == [1] and [type(e) for e in plan.commit.history] == [TimerFired]
    assert plan.commit.state is not None and (plan.commit.state.status, plan.commit.state.error) == (FAILED, ESCAPED)


def test_the_dispatcher_reads_the_failed_children_of_a_pending_rewind_too() -> None:
    child_failed = ErrorDetails(type="perdure.SubOrchestrationFailedError", message="child failed")
    history: list[HistoryEvent] = [
        OrchestrationStarted(event_id=1, timestamp=T, name="o", version="1.0.0"),
        SubOrchestrationScheduled(event_id=2, timestamp=T, name="c", version="1.0.0", instance_id="kid"),
        SubOrchestrationFailed(event_id=3, timestamp=T, source_event_id=2, error=child_failed),
        OrchestrationFailed(event_id=4, timestamp=T, error=child_failed),
    ]
    request = ExecutionRewound(reason="fixed")
    assert children_to_rewind(item(history, request)) == children_to_rewind(item(history, request, status=FAILED))
    assert children_to_rewind(item(history, request)) == ["kid"]
