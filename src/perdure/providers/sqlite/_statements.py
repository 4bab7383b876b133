"""The SQLite provider's transactions. Each takes the connection first and runs inside a group
commit (writes) or on its own (reads); times are seconds since the epoch, from this process's
clock: the provider's ``clock``, passed in (``_clock``: the wall clock without its jumps, unless a test
environment's virtual clock)."""

from __future__ import annotations

import math
import sqlite3
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from perdure import _json
from perdure.engine import encode_event
from perdure.providers._base import (
    Heartbeat,
    HistoryMark,
    InstanceFilter,
    InstanceUpdate,
    Message,
    OrchestrationItem,
    QueueKind,
    TurnCommit,
    WorkerInfo,
    WorkItem,
)
from perdure.providers._clock import TimeSource
from perdure.providers._codec import (
    activity_items,
    encode_error,
    encode_request,
    encode_value,
    encode_waits,
    message_kind,
    to_epoch,
    worker_serves,
)
from perdure.providers._sql import SqlStyle, instance_query
from perdure.providers._sql_hooks import Claim, LockedInstance, WorkRow
from perdure.providers.sqlite._connection import Q, transaction

__all__ = [
    "beat_worker",
    "commit_turn",
    "complete_work_item",
    "count_work_deliveries",
    "delete_instances",
    "delete_worker",
    "earliest_due",
    "insert_instance",
    "insert_messages",
    "lock_instance",
    "lock_work_items",
    "mark_rewinding",
    "move_clock",
    "orchestration_ready",
    "queue_depths",
    "release_instance",
    "replace_instance",
    "select_history",
    "select_history_from",
    "select_state",
    "select_states",
    "select_held_work_items",
    "select_work_item_locks",
    "select_workers",
    "update_work_item",
    "waiting_until",
]

_STYLE = SqlStyle(placeholder=":{}", instance_id="instance_id", time=to_epoch)
# The queries that delete the rows an instance owns besides its own: purged or restarted, it has none.
_OWNED_ROWS = ("purge_history", "purge_messages", "purge_work_items", "purge_lock")


def _message_row(message: Message, now: float) -> dict[str, Any]:
    return {
        "instance_id": message.instance_id,
        "execution_id": message.execution_id,
        "kind": message_kind(message),
        "event": encode_event(message.event),
        "visible_at": now if message.visible_at is None else to_epoch(message.visible_at),
    }


def _instance_row(message: Message, now: float) -> dict[str, Any]:
    new = message.new_instance
    assert new is not None
    return {
        "instance_id": message.instance_id,
        "name": new.name,
        "input": encode_value(new.input),
        "parent_instance_id": new.parent_instance_id,
        "now": now,
    }


def _enqueue(db: sqlite3.Connection, messages: Sequence[Message], now: float) -> None:
    # An empty ``executemany`` still costs a statement lookup: most calls create no instance.
    instances = [_instance_row(m, now) for m in messages if m.new_instance is not None]
    if instances:
        db.executemany(Q["insert_instance"], instances)
    if messages:
        db.executemany(Q["insert_message"], [_message_row(m, now) for m in messages])


def insert_messages(db: sqlite3.Connection, clock: TimeSource, messages: Sequence[Message]) -> None:
    with transaction(db):
        _enqueue(db, messages, clock.now())


def insert_instance(db: sqlite3.Connection, clock: TimeSource, start: Message) -> bool:
    now = clock.now()
    with transaction(db):
        if db.execute(Q["insert_instance"], _instance_row(start, now)).rowcount == 0:
            return False
        db.execute(Q["insert_message"], _message_row(start, now))
    return True


def replace_instance(db: sqlite3.Connection, clock: TimeSource, start: Message) -> int:
    now = clock.now()
    key = {"instance_id": start.instance_id}
    with transaction(db):
        execution_id = int(db.execute(Q["restart_instance"], _instance_row(start, now)).fetchone()[0])
        for query in _OWNED_ROWS:
            db.execute(Q[query], key)
        db.execute(Q["insert_message"], {**_message_row(start, now), "execution_id": execution_id})
    return execution_id


def mark_rewinding(db: sqlite3.Connection, clock: TimeSource, request: Message) -> bool:
    now = clock.now()
    with transaction(db):
        key = {"instance_id": request.instance_id, "execution_id": request.execution_id, "now": now}
        if db.execute(Q["mark_rewinding"], key).rowcount == 0:
            return False
        db.execute(Q["insert_message"], _message_row(request, now))
    return True


def select_state(db: sqlite3.Connection, instance_id: str) -> Sequence[Any] | None:
    row: Sequence[Any] | None = db.execute(Q["select_state"], {"instance_id": instance_id}).fetchone()
    return row


def select_history(db: sqlite3.Connection, instance_id: str, execution_id: int | None) -> list[str]:
    if execution_id is None:
        rows = db.execute(Q["select_current_history"], {"instance_id": instance_id})
    else:
        rows = db.execute(Q["select_history"], {"instance_id": instance_id, "execution_id": execution_id})
    return [text for (text,) in rows]


def select_states(db: sqlite3.Connection, where: InstanceFilter) -> list[Sequence[Any]]:
    sql, params = instance_query(Q["select_state"], where, _STYLE)
    rows: list[Sequence[Any]] = db.execute(sql, params).fetchall()
    return rows


def delete_instances(db: sqlite3.Connection, instance_ids: list[str]) -> int:
    purged = 0
    with transaction(db):
        for instance_id in instance_ids:
            key = {"instance_id": instance_id}
            if db.execute(Q["purge_instance"], key).rowcount:
                purged += 1
                for query in _OWNED_ROWS:
                    db.execute(Q[query], key)
    return purged


def lock_instance(
    db: sqlite3.Connection,
    clock: TimeSource,
    lock_seconds: float,
    token: str,
    worker_id: str | None,
    held: Mapping[str, HistoryMark],
    only: str | None = None,
) -> LockedInstance | None:
    """Lock the next fetchable instance (``only``: this one, if fetchable and none of its work items
    is queued or running) and read it."""
    now = clock.now()
    with transaction(db):
        if only is None:
            row = db.execute(Q["next_orchestration_instance"], {"now": now}).fetchone()
        else:  # eager dispatch: that instance, if a fetch could take it now
            row = db.execute(Q["orchestration_instance_fetchable"], {"now": now, "instance_id": only}).fetchone()
        if row is None:
            return None
        instance_id = row[0]
        lock = {"instance_id": instance_id, "lock_token": token, "locked_until": now + lock_seconds}
        db.execute(Q["lock_instance"], {**lock, "worker_id": worker_id})
        key = {"instance_id": instance_id, "now": now}
        messages = sorted(db.execute(Q["take_visible_messages"], key).fetchall())
        state = db.execute(Q["select_state"], key).fetchone()
        if state is None:
            return LockedInstance(instance_id, messages, state, [])
        mark = held.get(instance_id)
        if mark is not None and mark.execution_id == state[4]:
            # Only what the caller does not hold yet, from the event it says it holds last.
            tail = select_history_from(db, instance_id, mark.execution_id, mark.event_id, with_ids=True)
            if tail and tail[0][0] == mark.event_id:
                return LockedInstance(instance_id, messages, state, [text for _, text in tail], mark.event_id)
        history = select_history(db, instance_id, state[4])
    return LockedInstance(instance_id, messages, state, history)


def orchestration_ready(db: sqlite3.Connection, clock: TimeSource) -> bool:
    """Whether :func:`lock_instance` would find an instance to lock now (read outside any transaction)."""
    return db.execute(Q["next_orchestration_instance"], {"now": clock.now()}).fetchone() is not None


def select_history_from(
    db: sqlite3.Connection, instance_id: str, execution_id: int, event_id: int, *, with_ids: bool = False
) -> list[Any]:
    """The events of an execution from ``event_id`` on; with ``with_ids``, ``(event id, event)`` pairs."""
    key = {"instance_id": instance_id, "execution_id": execution_id, "event_id": event_id}
    rows = db.execute(Q["select_history_from"], key).fetchall()
    return rows if with_ids else [text for _, text in rows]


def commit_turn(
    db: sqlite3.Connection, clock: TimeSource, item: OrchestrationItem, commit: TurnCommit, claim: Claim | None = None
) -> tuple[bool, list[WorkRow], Sequence[Any] | None]:
    """Write the turn if the lock is still ``item``'s; with ``claim``, then lock for this process's
    loops up to its count of the work items the turn queued, as their fetch would (see ``_handoff``).
    Whether it was written, the items claimed, and the instance's row as the turn left it (if it
    updated the row: the ``select_state`` columns)."""
    now = clock.now()
    instance_id = item.instance_id
    with transaction(db):
        # First: a lost lock writes nothing.
        if db.execute(Q["delete_lock"], {"instance_id": instance_id, "lock_token": item.lock_token}).rowcount == 0:
            return False, [], None
        execution = {"instance_id": instance_id, "execution_id": commit.execution_id}
        events = [{**execution, "event_id": e.event_id, "event": encode_event(e)} for e in commit.history]
        db.executemany(Q["insert_history"], events)
        if commit.activity_items:
            db.executemany(
                Q["insert_work_item"],
                [
                    {"queue": r.queue, "instance_id": r.instance_id, "request": encode_request(r), "now": now}
                    for r in commit.activity_items
                ],
            )
        if commit.cancelled_activities:
            rows = db.execute(Q["select_instance_work_items"], {"instance_id": instance_id}).fetchall()
            cancelled = activity_items(rows, commit.execution_id, commit.cancelled_activities)
            db.executemany(Q["cancel_work_item"], [{"item_id": item_id} for item_id in cancelled])
        _enqueue(db, commit.messages, now)
        row = None
        if commit.state is not None:
            rows = db.execute(Q["update_instance"], _state_row(instance_id, commit.state, now)).fetchall()
            row = rows[0] if rows else None
        if commit.consumed:
            db.executemany(Q["delete_message"], [{"message_id": m} for m in commit.consumed])
        db.execute(Q["reset_dequeue"], {"instance_id": instance_id})
        # Not when the turn cancels activities: an item it queues could be among them.
        claimed = _claim(db, now, instance_id, claim) if claim and not commit.cancelled_activities else []
    return True, claimed, row


def _claim(db: sqlite3.Connection, now: float, instance_id: str, claim: Claim) -> list[WorkRow]:
    """Lock up to the claim's count of the instance's unlocked visible work items, as a fetch would."""
    (queues, lock_seconds, worker_id), token, count = claim
    key = {"instance_id": instance_id, "queues": _json.dumps(list(queues)), "now": now, "count": count}
    rows = db.execute(Q["claim_work_items"], key).fetchall()
    if rows:
        lock = {"lock_token": token, "locked_until": now + lock_seconds, "worker_id": worker_id}
        db.executemany(Q["lock_work_item"], [{**lock, "item_id": row[0]} for row in rows])
    return [(row[0], row[1], row[2], row[3], row[4]) for row in rows]


def _state_row(instance_id: str, state: InstanceUpdate, now: float) -> dict[str, Any]:
    return {
        "instance_id": instance_id,
        "name": state.name,
        "version": state.version,
        "status": state.status.value,
        "execution_id": state.execution_id,
        "input": encode_value(state.input),
        "output": encode_value(state.output),
        "error": encode_error(state.error),
        "custom_status": encode_value(state.custom_status),
        "parent_instance_id": state.parent_instance_id,
        "waiting_for": encode_waits(state.waiting_for),
        "now": now,
    }


def release_instance(
    db: sqlite3.Connection, clock: TimeSource, item: OrchestrationItem, delay: float, undo_delivery: bool
) -> None:
    key = {"instance_id": item.instance_id, "lock_token": item.lock_token, "locked_until": clock.now() + delay}
    with transaction(db):
        if undo_delivery:
            db.executemany(Q["undo_delivery"], [{**key, "message_id": m.message_id} for m in item.messages])
        # A delay holds the whole instance back, not just these messages: what arrives meanwhile
        # must not overtake them.
        db.execute(Q["hold_instance" if delay > 0 else "delete_lock"], key)


def lock_work_items(
    db: sqlite3.Connection,
    clock: TimeSource,
    queues: list[str],
    lock_seconds: float,
    token: str,
    worker_id: str | None,
    count: int,
) -> list[WorkRow]:
    now = clock.now()
    with transaction(db):
        found = db.execute(Q["next_work_item"], {"queues": _json.dumps(queues), "now": now, "count": count}).fetchall()
        lock = {"lock_token": token, "locked_until": now + lock_seconds, "worker_id": worker_id}
        db.executemany(Q["lock_work_item"], [{**lock, "item_id": row[0]} for row in found])
    return [(row[0], row[1], row[2], row[3], row[4]) for row in found]


def complete_work_item(db: sqlite3.Connection, clock: TimeSource, item: WorkItem, completion: Message) -> bool:
    now = clock.now()
    with transaction(db):
        if db.execute(Q["delete_work_item"], {"item_id": item.item_id, "lock_token": item.lock_token}).rowcount == 0:
            return False
        _enqueue(db, [completion], now)
    return True


def update_work_item(db: sqlite3.Connection, clock: TimeSource, query: str, item: WorkItem, seconds: float) -> bool:
    """Release (``release_work_item``) or renew (``renew_work_item``) the item's lock, ``seconds`` from now."""
    until = clock.now() + seconds
    params = {"item_id": item.item_id, "lock_token": item.lock_token, "visible_at": until, "locked_until": until}
    with transaction(db):
        return bool(db.execute(Q[query], params).rowcount)


def count_work_deliveries(db: sqlite3.Connection, held: list[tuple[int, str]], change: int) -> None:
    params = [{"item_id": item_id, "lock_token": token, "change": change} for item_id, token in held]
    with transaction(db):
        db.executemany(Q["count_work_delivery"], params)


def select_work_item_locks(db: sqlite3.Connection, item_ids: list[int]) -> list[tuple[int, str | None]]:
    rows = db.execute(Q["select_work_item_locks"], {"item_ids": _json.dumps(item_ids)})
    return [(int(item_id), token) for item_id, token in rows]


def select_held_work_items(db: sqlite3.Connection, clock: TimeSource, instance_id: str) -> list[Sequence[Any]]:
    rows: list[Sequence[Any]] = db.execute(
        Q["select_held_work_items"], {"instance_id": instance_id, "now": clock.now()}
    ).fetchall()
    return rows


def select_workers(db: sqlite3.Connection, clock: TimeSource) -> list[Sequence[Any]]:
    rows: list[Sequence[Any]] = db.execute(Q["select_workers"], {"now": clock.now()}).fetchall()
    return rows


def queue_depths(db: sqlite3.Connection, clock: TimeSource) -> dict[str, int]:
    now = clock.now()
    depths = {"orchestrator": int(db.execute(Q["orchestrator_queue_depth"], {"now": now}).fetchone()[0])}
    for queue, count in db.execute(Q["worker_queue_depths"], {"now": now}):
        depths[f"activity:{queue}"] = int(count)
    return depths


def earliest_due(db: sqlite3.Connection, clock: TimeSource, kind: QueueKind, queues: list[str]) -> float | None:
    """Seconds until the earliest message or work item becomes fetchable (it may be past: negative)."""
    if kind == "orchestrator":
        row = db.execute(Q["earliest_orchestrator_due"]).fetchone()
    else:
        row = db.execute(Q["earliest_worker_due"], {"queues": _json.dumps(queues)}).fetchone()
    return None if row is None or row[0] is None else float(row[0]) - clock.now()


# --- worker records: run by the worker's liveness thread, on its own connection ------------------


def beat_worker(
    db: sqlite3.Connection, clock: TimeSource, worker: WorkerInfo, timeout: float, heartbeats: Sequence[Heartbeat]
) -> None:
    """Renew the worker's record and every lock it holds, and store its activities' heartbeats."""
    now = clock.now()
    expires_at = now + timeout
    key = {"worker_id": worker.worker_id, "expires_at": expires_at}
    record = {
        **key,
        "host": worker.host,
        "pid": worker.pid,
        "serves": worker_serves(worker),
        "started_at": to_epoch(worker.started_at),
        "now": now,
    }
    beats = [
        {"item_id": h.item_id, "lock_token": h.lock_token, "details": encode_value(h.details), "now": now}
        for h in heartbeats
    ]
    with transaction(db):
        db.execute(Q["beat_worker"], record)
        db.execute(Q["extend_instance_locks"], key)
        db.execute(Q["extend_work_items"], key)
        db.executemany(Q["store_heartbeat"], beats)
        db.execute(Q["sweep_workers"], {"now": now})


def delete_worker(db: sqlite3.Connection, worker_id: str) -> None:
    with transaction(db):
        db.execute(Q["delete_worker"], {"worker_id": worker_id})


# --- a test environment's virtual clock (``perdure.testing``) ------------------------------------


def waiting_until(db: sqlite3.Connection, clock: TimeSource) -> float | None:
    """``None`` if anything runs or could run now; else when the next message or work item is due
    (``math.inf``: nothing is). In flight means held by a worker: it needs a store with worker records."""
    now = clock.now()
    if db.execute(Q["running_or_due"], {"now": now}).fetchone()[0]:
        return None
    if db.execute(Q["next_orchestration_instance"], {"now": now}).fetchone() is not None:
        return None
    dues = [db.execute(Q[query]).fetchone()[0] for query in ("earliest_orchestrator_due", "earliest_work_due")]
    return min((float(due) for due in dues if due is not None), default=math.inf)


def move_clock(db: sqlite3.Connection, clock: TimeSource, advance: Callable[[float], None], until: float) -> float:
    """If everything waits, move a virtual clock on to the next due time, but not past ``until``
    (``math.inf``: no bound); returns by how many seconds it moved (``0``: it did not).

    It moves only while nothing is in flight, so no lock can expire for it; the records of live
    workers move with it.
    """
    due = waiting_until(db, clock)
    if due is None:
        return 0.0
    seconds = min(due, until) - clock.now()
    if not 0 < seconds < math.inf:
        return 0.0
    advance(seconds)
    with transaction(db):
        db.execute(Q["shift_workers"], {"seconds": seconds})
    return seconds
