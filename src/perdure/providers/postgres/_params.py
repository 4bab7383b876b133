"""Parameters of the PostgreSQL provider's statements, built from the contract's records.

Several rows travel as parallel arrays (one per column), so a statement inserts any number of
them in one round trip.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from perdure.engine import encode_event
from perdure.providers import _clock
from perdure.providers._base import Message, NewInstance, OrchestrationItem, TurnCommit, WorkItem
from perdure.providers._codec import encode_error, encode_request, encode_value, encode_waits, message_kind
from perdure.providers._handoff import FetchKey

__all__ = [
    "completion_params",
    "delay",
    "instance_params",
    "message_arrays",
    "message_params",
    "release_params",
    "turn_params",
]


def delay(visible_at: datetime | None) -> float | None:
    """Seconds from now until ``visible_at`` by this process's clock (``None``: at once).

    The database adds them to its own clock: a due time is the database's, whatever this host's
    clock says, and a timer of five minutes fires five minutes after its turn committed.
    """
    return None if visible_at is None else visible_at.timestamp() - _clock.now()


def instance_params(start: Message) -> dict[str, Any]:
    """A new instance and its start message (``create_instance``)."""
    new = start.new_instance
    assert new is not None
    return {
        "instance_id": start.instance_id,
        "name": new.name,
        "input": encode_value(new.input),
        "parent_instance_id": new.parent_instance_id,
        **message_params(start),
    }


def completion_params(item: WorkItem, completion: Message) -> dict[str, Any]:
    """A locked work item and the completion that replaces it (``ack_work_item``)."""
    return {"item_id": item.item_id, "lock_token": item.lock_token, **message_params(completion)}


def message_params(message: Message) -> dict[str, Any]:
    """One orchestrator message."""
    return {
        "instance_id": message.instance_id,
        "execution_id": message.execution_id,
        "kind": message_kind(message),
        "event": encode_event(message.event),
        "delay": delay(message.visible_at),
    }


def message_arrays(messages: Sequence[Message]) -> dict[str, Any]:
    """Columns of orchestrator messages, and of the instances they create, as arrays."""
    starts: list[tuple[str, NewInstance]] = [(m.instance_id, m.new_instance) for m in messages if m.new_instance]
    return {
        "instances": [m.instance_id for m in messages],
        "executions": [m.execution_id for m in messages],
        "kinds": [message_kind(m) for m in messages],
        "msg_events": [encode_event(m.event) for m in messages],
        "delays": [delay(m.visible_at) for m in messages],
        "start_instances": [instance_id for instance_id, _ in starts],
        "start_names": [new.name for _, new in starts],
        "start_inputs": [encode_value(new.input) for _, new in starts],
        "start_parents": [new.parent_instance_id for _, new in starts],
    }


def turn_params(
    item: OrchestrationItem, commit: TurnCommit, claim: tuple[FetchKey, str, int] | None = None
) -> dict[str, Any]:
    """Everything ``ack_orchestration_item`` writes for one turn (but the notification), and the work
    items it locks for a fetch (``claim``: what the fetch asks for, the lock token, at most how many).

    ``claim_count`` is how many it will lock: the first of the turn's items in the fetch's queues.
    """
    s = commit.state
    queues, lock_seconds, worker_id = claim[0] if claim is not None else ((), 0.0, None)
    eligible = sum(1 for r in commit.activity_items if r.queue in queues)
    return {
        **message_arrays(commit.messages),
        "instance_id": item.instance_id,
        "lock_token": item.lock_token,
        "execution_id": commit.execution_id,
        "event_ids": [e.event_id for e in commit.history],
        "events": [encode_event(e) for e in commit.history],
        "work_queues": [r.queue for r in commit.activity_items],
        "work_requests": [encode_request(r) for r in commit.activity_items],
        "consumed": list(commit.consumed),
        "set_state": s is not None,
        "name": None if s is None else s.name,
        "version": None if s is None else s.version,
        "status": None if s is None else s.status.value,
        "state_execution_id": None if s is None else s.execution_id,
        "input": None if s is None else encode_value(s.input),
        "output": None if s is None else encode_value(s.output),
        "error": None if s is None else encode_error(s.error),
        "custom_status": None if s is None else encode_value(s.custom_status),
        "parent_instance_id": None if s is None else s.parent_instance_id,
        "waiting_for": None if s is None else encode_waits(s.waiting_for),
        "claim_queues": list(queues),
        "claim_count": 0 if claim is None else min(claim[2], eligible),
        "claim_token": None if claim is None else claim[1],
        "claim_seconds": lock_seconds,
        "claim_worker": worker_id,
    }


def release_params(item: OrchestrationItem, delay: float, undo_delivery: bool, notify: str) -> dict[str, Any]:
    """An instance put back (``abandon_orchestration_item``)."""
    return {
        "instance_id": item.instance_id,
        "lock_token": item.lock_token,
        "delay": float(delay),
        "undone": [m.message_id for m in item.messages] if undo_delivery else [],
        "notify": notify,
    }
