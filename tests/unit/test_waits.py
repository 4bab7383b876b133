"""What an unfinished instance waits for (the dashboard's "Waiting for"), read from state, history and workers."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from perdure import AwaitedEvent, ErrorDetails, OrchestrationState, OrchestrationStatus, WorkerInfo
from perdure.engine.events import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    HistoryEvent,
    OrchestrationCompleted,
    OrchestrationStarted,
    OrchestrationSuspended,
    SubOrchestrationScheduled,
    TaskCancelled,
    TimerCreated,
    TimerFired,
)
from perdure.tools._format import timeline_json
from perdure.tools._waits import Wait, wait_json, waits

T0 = datetime(2026, 11, 29, 14, 0, 0, tzinfo=UTC)
ERROR = ErrorDetails(type="RuntimeError", message="card declined")


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def state(status: OrchestrationStatus, **changes: Any) -> OrchestrationState:
    fields: dict[str, Any] = {
        "instance_id": "order-1",
        "name": "Checkout",
        "version": "1.0.0",
        "status": status,
        "execution_id": 1,
        "created_at": T0,
        "updated_at": at(5),
    }
    return OrchestrationState(**{**fields, **changes})


def worker(worker_id: str, **changes: Any) -> WorkerInfo:
    fields: dict[str, Any] = {
        "worker_id": worker_id,
        "host": "web-1",
        "pid": 4711,
        "orchestrations": ("Checkout@1.0.0",),
        "activities": ("Charge", "Greet"),
        "queues": ("default",),
        "started_at": T0,
        "last_seen": at(4),
    }
    return WorkerInfo(**{**fields, **changes})


STARTED = OrchestrationStarted(event_id=1, timestamp=T0, name="Checkout", version="1.0.0")
RUNNING = OrchestrationStatus.RUNNING


def test_a_running_activity_names_its_attempt_and_the_worker_that_serves_it() -> None:
    history: list[HistoryEvent] = [
        STARTED,
        ActivityScheduled(event_id=2, timestamp=at(1), name="Charge", input=42),
        ActivityFailed(event_id=3, timestamp=at(2), source_event_id=2, error=ERROR),
        TimerCreated(event_id=4, timestamp=at(2), fire_at=at(3)),
        TimerFired(event_id=5, timestamp=at(3), source_event_id=4, fire_at=at(3)),
        ActivityScheduled(event_id=6, timestamp=at(3), name="Charge", input=42, attempt=2),
    ]
    [wait] = waits(state(RUNNING), history, [worker("w-1"), worker("w-2", activities=("Greet",))])
    assert wait == Wait(
        kind="activity",
        text="activity Charge, attempt 2, scheduled at 2026-11-29 14:00:03 UTC; "
        "served by worker w-1 on web-1 (pid 4711)",
        since=at(3),
        event_id=6,
        served_by=("w-1",),
    )


def test_a_running_activity_names_the_worker_running_it_by_host_and_pid() -> None:
    history: list[HistoryEvent] = [
        STARTED,
        ActivityScheduled(event_id=2, timestamp=at(1), name="Charge", input=42, attempt=2),
        ActivityScheduled(event_id=3, timestamp=at(1), name="Greet"),
    ]
    workers = [worker("w-1"), worker("w-2", host="web-2", pid=99)]
    charge, greet = waits(state(RUNNING), history, workers, {2: "w-2"})
    assert charge.text == (
        "activity Charge, attempt 2, scheduled at 2026-11-29 14:00:01 UTC; running on worker w-2 (web-2, pid 99)"
    )
    assert (charge.running_on, charge.served_by) == ("w-2", ("w-1", "w-2"))
    assert (greet.running_on, greet.text.endswith("; served by 2 live workers")) == (None, True)
    # The holder's record may be gone (it died after taking the item, and the record was swept).
    [gone] = waits(state(RUNNING), history[:2], workers, {2: "w-9"})
    assert gone.text.endswith("; running on worker w-9")


def test_an_activity_no_live_worker_serves_says_so() -> None:
    history = [STARTED, ActivityScheduled(event_id=2, timestamp=at(1), name="Render", queue="gpu", deadline=at(60))]
    dead = worker("w-dead", activities=("Render",), queues=("gpu",), alive=False)
    wrong_queue = worker("w-cpu", activities=("Render",), queues=("cpu",))
    [wait] = waits(state(RUNNING), history, [dead, wrong_queue])
    assert wait.text == (
        "activity Render on queue gpu, scheduled at 2026-11-29 14:00:01 UTC, deadline 2026-11-29 14:01:00 UTC; "
        "no live worker serves activity Render on queue gpu"
    )
    assert (wait.due, wait.served_by) == (at(60), ())
    two = waits(state(RUNNING), history, [worker("a", activities=("Render",), queues=("gpu",))] * 2)
    assert two[0].text.endswith("; served by 2 live workers")


def test_open_timers_and_children_are_listed_in_the_order_they_were_scheduled() -> None:
    history = [
        STARTED,
        SubOrchestrationScheduled(event_id=2, timestamp=at(1), name="Ship", instance_id="order-1-ship"),
        TimerCreated(event_id=3, timestamp=at(1), fire_at=at(3600)),
    ]
    child, timer = waits(state(RUNNING), history, [])
    assert (child.kind, child.instance_id, child.event_id) == ("child", "order-1-ship", 2)
    assert child.text == "child orchestration Ship (order-1-ship) since 2026-11-29 14:00:01 UTC"
    assert (timer.kind, timer.text, timer.due) == ("timer", "timer due at 2026-11-29 15:00:00 UTC", at(3600))


def test_completed_and_cancelled_tasks_are_not_waited_for() -> None:
    history = [
        STARTED,
        ActivityScheduled(event_id=2, timestamp=at(1), name="Greet"),
        ActivityCompleted(event_id=3, timestamp=at(2), source_event_id=2, result="hi"),
        TimerCreated(event_id=4, timestamp=at(2), fire_at=at(900)),
        TaskCancelled(event_id=5, timestamp=at(2), source_event_id=4),
    ]
    [wait] = waits(state(RUNNING), history, [])
    assert wait.kind == "event"
    assert wait.text == (
        "an external event (nothing it scheduled is open since 2026-11-29 14:00:02 UTC; "
        "which event is not recorded: its last turn ran before perdure stored event waits)"
    )


def test_an_event_wait_names_the_event_and_its_timeout_replaces_the_timers_line() -> None:
    history = [
        STARTED,
        TimerCreated(event_id=2, timestamp=at(1), fire_at=at(3600)),  # the timeout of "approved"
        TimerCreated(event_id=3, timestamp=at(1), fire_at=at(60)),  # a timer of its own
    ]
    awaited = (
        AwaitedEvent(name="approved", since=at(1), timeout_at=at(3600), timer_event_id=2),
        AwaitedEvent(name="Comment", since=at(1)),
    )
    approved, comment, timer = waits(state(RUNNING, waiting_for=awaited), history, [])
    assert approved.text == "event 'approved' since 2026-11-29 14:00:01 UTC, timeout at 2026-11-29 15:00:00 UTC"
    assert (approved.kind, approved.event, approved.since, approved.due, approved.event_id) == (
        "event",
        "approved",
        at(1),
        at(3600),
        2,
    )
    assert (comment.text, comment.due, comment.event_id) == (
        "event 'Comment' since 2026-11-29 14:00:01 UTC",
        None,
        None,
    )
    assert (timer.kind, timer.event_id) == ("timer", 3), "only the timeout's timer is folded into its event line"


def test_a_suspended_instance_still_shows_the_events_it_waits_for() -> None:
    history = [STARTED, OrchestrationSuspended(event_id=2, timestamp=at(2))]
    awaited = (AwaitedEvent(name="approved", since=at(1)),)
    resume, event = waits(state(OrchestrationStatus.SUSPENDED, waiting_for=awaited), history, [])
    assert (resume.kind, event.kind, event.event) == ("resume", "event", "approved")


def test_a_pending_instance_waits_for_a_worker_that_serves_its_orchestration() -> None:
    pending = state(OrchestrationStatus.PENDING, version=None)
    [nobody] = waits(pending, [], [worker("w-1", orchestrations=("Other@1.0.0",))])
    assert nobody.text == (
        "a worker to run its first turn (pending since 2026-11-29 14:00:05 UTC); "
        "no live worker serves orchestration Checkout"
    )
    [served] = waits(pending, [], [worker("w-1")])
    assert served.served_by == ("w-1",) and "served by worker w-1" in served.text
    rewinding = state(OrchestrationStatus.PENDING, error=ERROR, execution_id=2)
    [rewind] = waits(rewinding, [], [worker("w-1", orchestrations=("Checkout@2.0.0",))])
    assert rewind.text.startswith("a worker to run the turn that applies its rewind")
    assert rewind.text.endswith("no live worker serves orchestration Checkout@1.0.0")


def test_a_suspended_instance_waits_for_an_operator_and_still_for_its_tasks() -> None:
    history = [
        STARTED,
        TimerCreated(event_id=2, timestamp=at(1), fire_at=at(60)),
        OrchestrationSuspended(event_id=3, timestamp=at(2), reason="maintenance"),
    ]
    resume, timer = waits(state(OrchestrationStatus.SUSPENDED), history, [])
    assert (resume.kind, resume.since) == ("resume", at(2))
    assert resume.text == "an operator to resume it (suspended since 2026-11-29 14:00:02 UTC)"
    assert timer.kind == "timer"


@pytest.mark.parametrize(
    "status", [OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED]
)
def test_a_finished_instance_waits_for_nothing(status: OrchestrationStatus) -> None:
    history = [
        STARTED,
        TimerCreated(event_id=2, timestamp=at(1), fire_at=at(60)),
        OrchestrationCompleted(event_id=3, timestamp=at(2)),
    ]
    assert waits(state(status), history, [worker("w-1")]) == []


def test_the_json_shape() -> None:
    wait = Wait(kind="timer", text="timer due at …", since=at(1), due=at(60), event_id=2)
    assert wait_json(wait) == {
        "kind": "timer",
        "text": "timer due at …",
        "since": "2026-11-29T14:00:01+00:00",
        "due": "2026-11-29T14:01:00+00:00",
        "event_id": 2,
        "instance_id": None,
        "served_by": [],
        "event": None,
        "running_on": None,
    }


# --- the timeline says what happened to the tasks an ended execution left open ----------------


def outcomes(history: list[HistoryEvent]) -> dict[str, tuple[str, str | None]]:
    return {span["label"]: (span["outcome"], span["end"]) for span in timeline_json(history)}


def test_an_ended_execution_withdraws_its_open_timers_and_cancels_its_open_activities() -> None:
    history: list[HistoryEvent] = [
        STARTED,
        TimerCreated(event_id=2, timestamp=at(1), fire_at=at(3600)),  # the timeout of an event that came in time
        ActivityScheduled(event_id=3, timestamp=at(1), name="Audit"),
        SubOrchestrationScheduled(event_id=4, timestamp=at(1), name="Ship", instance_id="order-1-ship"),
        ActivityScheduled(event_id=5, timestamp=at(1), name="Greet"),
        ActivityCompleted(event_id=6, timestamp=at(2), source_event_id=5, result="hi"),
        TimerCreated(event_id=7, timestamp=at(2), fire_at=at(7200)),
        TaskCancelled(event_id=8, timestamp=at(2), source_event_id=7),
    ]
    running = outcomes(history)
    assert running["timer until 15:00:00"] == ("pending", None)
    assert running["Audit"] == ("pending", None) and running["Greet"][0] == "completed"
    ended = outcomes([*history, OrchestrationCompleted(event_id=9, timestamp=at(3), output="ok")])
    end = at(3).isoformat()
    assert ended == {
        "timer until 15:00:00": ("withdrawn", end),
        "Audit": ("cancelled", end),
        "Ship · order-1-ship": ("abandoned", end),
        "Greet": ("completed", at(2).isoformat()),
        "timer until 16:00:00": ("cancelled", at(2).isoformat()),  # cancelled by the code
    }
