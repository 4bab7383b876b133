"""A turn for an instance whose row is corrupted, or whose turn the store refused: it fails that instance."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from perdure import ErrorDetails, OrchestrationContext, OrchestrationState, OrchestrationStatus, Registry
from perdure.engine.events import (
    ActivityScheduled,
    EventRaised,
    HistoryEvent,
    OrchestrationCompleted,
    OrchestrationFailed,
    OrchestrationStarted,
)
from perdure.providers import DataRefusedError
from perdure.providers._base import OrchestrationItem, QueuedMessage
from perdure.runtime import RuntimeOptions
from perdure.runtime._turn import TurnPlan, plan_failure, plan_turn

T = datetime(2026, 1, 1, tzinfo=UTC)
RUNNING_HISTORY: list[HistoryEvent] = [
    OrchestrationStarted(event_id=1, timestamp=T, name="o", version="1.0.0", parent_instance="p", parent_id=7),
    ActivityScheduled(event_id=2, timestamp=T, name="A"),
]
CORRUPT = "column 'input': Expecting value: line 1 column 1 (char 0)"

registry = Registry()


@registry.orchestration("o", version="1.0.0")
async def o(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.call_activity("A")


def item(status: OrchestrationStatus, history: list[HistoryEvent], state_error: str | None) -> OrchestrationItem:
    state = OrchestrationState(
        instance_id="i", name="o", version="1.0.0", status=status, execution_id=1, created_at=T, updated_at=T
    )
    message = QueuedMessage(
        message_id=9, instance_id="i", execution_id=None, event=EventRaised(name="e"), dequeue_count=1
    )
    return OrchestrationItem(
        instance_id="i", lock_token="t", messages=[message], state=state, history=history, state_error=state_error
    )


def planned(of: OrchestrationItem) -> TurnPlan:
    result = plan_turn(of, registry.orchestrations, RuntimeOptions(), T)
    assert isinstance(result, TurnPlan)
    return result


@pytest.mark.parametrize(
    ("status", "history"),
    [
        (OrchestrationStatus.RUNNING, RUNNING_HISTORY),
        (OrchestrationStatus.PENDING, []),
        # A garbage status reads as FAILED; the history shows the execution is still running.
        (OrchestrationStatus.FAILED, RUNNING_HISTORY),
    ],
)
def test_a_corrupted_row_of_an_unfinished_execution_fails_the_instance_without_running_it(
    status: OrchestrationStatus, history: list[HistoryEvent]
) -> None:
    plan = planned(item(status, history, CORRUPT))
    commit = plan.commit
    assert commit.state is not None and commit.state.status is OrchestrationStatus.FAILED
    assert commit.state.error is not None and commit.state.error.type == "perdure.HistoryFormatError"
    assert commit.state.error.message == f"the stored instance row is corrupted: {CORRUPT}"
    assert commit.consumed == [9]
    assert plan.result is None, "the code did not run"
    if history:
        # The failure, then the event it consumed, kept for a rewind (docs/turns.md).
        assert isinstance(commit.history[0], OrchestrationFailed)
        assert [type(e).__name__ for e in commit.history[1:]] == ["EventRaised"]
        assert [m.instance_id for m in commit.messages] == ["p"], "the parent is told"


@pytest.mark.parametrize(
    ("status", "history"),
    [
        (OrchestrationStatus.COMPLETED, [*RUNNING_HISTORY, OrchestrationCompleted(event_id=3, timestamp=T)]),
        (OrchestrationStatus.FAILED, []),  # failed before it ever ran: failing it again would change nothing
    ],
)
def test_a_corrupted_row_of_an_ended_execution_is_not_failed_again(
    status: OrchestrationStatus, history: list[HistoryEvent]
) -> None:
    commit = planned(item(status, history, CORRUPT)).commit
    assert commit.state is None and commit.consumed == [9]
    # A FAILED instance keeps the event for a rewind (docs/turns.md); a COMPLETED one drops it.
    kept = [type(e).__name__ for e in commit.history]
    assert kept == (["EventRaised"] if status is OrchestrationStatus.FAILED else [])


def test_a_refused_turn_is_replaced_by_the_instances_failure() -> None:
    error = DataRefusedError("PostgreSQL refused the call: SQLSTATE 54000 (ProgramLimitExceeded): too large")
    failure = plan_failure(
        item(OrchestrationStatus.RUNNING, RUNNING_HISTORY, None), registry.orchestrations, RuntimeOptions(), T, error
    )
    assert failure.commit.state is not None
    assert failure.commit.state.error == ErrorDetails(type="perdure.providers.DataRefusedError", message=str(error))
    assert [type(e) for e in failure.commit.history] == [OrchestrationFailed]
    assert failure.commit.consumed == [9]


def test_once_the_execution_ended_a_refused_turn_only_drops_what_came() -> None:
    # A refused rewind, say: dropping it is the only way not to retry it for ever.
    ended = item(
        OrchestrationStatus.COMPLETED, [*RUNNING_HISTORY, OrchestrationCompleted(event_id=3, timestamp=T)], None
    )
    plan = plan_failure(ended, registry.orchestrations, RuntimeOptions(), T, DataRefusedError("refused"))
    assert plan.commit.state is None and list(plan.commit.history) == []
    assert plan.commit.consumed == [9]
    assert any("the store refused its turn: refused" in warning for warning in plan.warnings)
