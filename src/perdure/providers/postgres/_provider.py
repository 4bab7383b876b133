"""``PostgresProvider``: many worker processes on many hosts share one PostgreSQL database.

- Every contract method is one short transaction, and nearly always one round trip: the fetch and
  the ack of a turn are PL/pgSQL functions (see ``schema.sql``), the others single statements.
- Queue fetches use ``FOR UPDATE SKIP LOCKED`` (work items) or an advisory try-lock plus the
  ``instance_locks`` row (instances), so concurrent workers never wait on each other.
- Times come from the database clock, so hosts with skewed clocks agree about locks and timers.
- Writes that create work ``NOTIFY`` a channel of the schema; one listening connection per
  provider wakes the idle dispatchers and waiting clients of its process (see ``_notify``). A slow
  fallback poll (``poll_interval``) makes a lost notification a delay, never a stall.
- Connection loss and server restarts are retried here with backoff (the pool reconnects);
  when retries run out the driver error is translated to :class:`~perdure.ProviderError`. A
  failure about the call itself (its data, a constraint, a limit) is never retried: it raises
  at once (``_errors``).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

from psycopg_pool import AsyncConnectionPool

from perdure._errors import ProviderError
from perdure.providers._base import (
    HistoryMark,
    InstanceFilter,
    Message,
    OrchestrationItem,
    QueueKind,
    TurnCommit,
    WorkerInfo,
    WorkerLiveness,
    WorkItem,
)
from perdure.providers._codec import activity_items
from perdure.providers._sql import SqlStyle, instance_query, load_queries
from perdure.providers._sql_hooks import Claim, Committed, LockedInstance, WorkRow
from perdure.providers._sql_provider import SqlProvider
from perdure.providers.postgres._batch import Batch
from perdure.providers.postgres._connection import Connection, migrate, open_pool, resolve_schema, run_retrying
from perdure.providers.postgres._liveness import PostgresWorkerLiveness
from perdure.providers.postgres._notify import Listener
from perdure.providers.postgres._params import (
    completion_params,
    instance_params,
    message_arrays,
    message_params,
    release_params,
    turn_params,
)

__all__ = ["PostgresProvider"]

T = TypeVar("T")
Row = tuple[Any, ...]

_log = logging.getLogger("perdure.providers.postgres")
_SQL = load_queries("perdure.providers.postgres")
_Q = {name: text.encode() for name, text in _SQL.items()}
# The fetch function cannot look up what a caller holds: to a caller with a cache, a history longer
# than this comes back as its last event, which the caller most likely holds (the template reads the
# rest if it does not); a shorter one comes back whole, as decoding it costs less than a second read.
_TAIL_OVER = 32


# The parameters of a turn's ack that hold the select_state columns before its times, in their order.
_STATE_PARAMS = (
    "instance_id",
    "name",
    "version",
    "status",
    "state_execution_id",
    "input",
    "output",
    "error",
    "custom_status",
    "parent_instance_id",
)


def _as_is(value: datetime) -> datetime:
    return value


# Instance ids compare bytewise (collation "C"), so a prefix is a range of the primary key.
_STYLE = SqlStyle(placeholder="%({})s", instance_id='instance_id COLLATE "C"', time=_as_is)


class PostgresProvider(SqlProvider):
    """Stores everything in one schema of a PostgreSQL database.

    Open it with :meth:`connect`. Any number of providers, in any number of processes and hosts,
    may share one schema; separate schemas are separate tenants.
    """

    def __init__(
        self,
        pool: AsyncConnectionPool[Connection],
        conninfo: str,
        schema: str,
        *,
        poll_interval: float,
        retry_seconds: float,
    ) -> None:
        super().__init__()
        self.schema = schema
        """The schema holding this provider's tables."""
        self._pool = pool
        self._conninfo = conninfo
        self._retry_seconds = retry_seconds
        self._listener = Listener(conninfo, schema, self._signals)
        self._batch = Batch(self._run)
        # Every committed state change notifies, so the fallback poll of a waiting client can be
        # slow: thousands of them must not re-read their state every poll_interval.
        self._work_poll_seconds = poll_interval
        self._state_poll_seconds = poll_interval * 5
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        schema: str | None = None,
        create: bool = True,
        min_size: int = 1,
        max_size: int = 10,
        poll_interval: float = 1.0,
        retry_seconds: float = 60.0,
    ) -> PostgresProvider:
        """Connect, create the schema or bring it up to date, and start listening for notifications.

        Args:
            url: A libpq URL, ``postgresql://user:password@host:port/dbname``; a ``schema=name``
                query parameter chooses the schema too.
            schema: The schema to use (default ``"perdure"``): one per tenant or application.
                A plain identifier: letters, digits and ``_``, at most 63 characters.
            create: Create the schema if it is missing (the default). ``False`` uses an existing
                perdure schema only, and creates nothing: what tools that read or manage a store
                use, so that a mistyped schema is an error rather than an empty store.
            min_size: Connections the pool keeps open.
            max_size: The most connections the pool opens.
            poll_interval: Seconds between fallback checks for work when no notification comes.
            retry_seconds: How long a call keeps retrying through connection loss before it
                raises :class:`~perdure.ProviderError`.

        Raises:
            ValueError: for a bad URL or schema name.
            StoreNotFoundError: without ``create``, if the schema does not hold a perdure store.
            ProviderError: if the database cannot be reached or migrated.
        """
        conninfo, schema = resolve_schema(url, schema)
        if min_size < 1 or max_size < min_size:
            raise ValueError("need 1 <= min_size <= max_size")
        if poll_interval <= 0 or retry_seconds < 0:
            raise ValueError("poll_interval must be positive and retry_seconds not negative")
        await migrate(conninfo, schema, create=create)
        pool = await open_pool(conninfo, schema, min_size, max_size)
        provider = cls(pool, conninfo, schema, poll_interval=poll_interval, retry_seconds=retry_seconds)
        await provider._listener.start(f"perdure-postgres-listener-{schema}")
        return provider

    # --- plumbing ----------------------------------------------------------------------------------

    async def _run(self, function: Callable[[Connection, int], Awaitable[T]], *, retry: bool = True) -> T:
        """Run ``function(connection, attempt)`` through :func:`run_retrying` (connection failures are retried)."""
        return await run_retrying(self._pool, function, self._retry_seconds if retry else None, lambda: self._closed)

    async def _fetchone(self, query: bytes, params: dict[str, Any] | None = None, *, retry: bool = True) -> Row | None:
        async def tx(conn: Connection, attempt: int) -> Row | None:
            cursor = await conn.execute(query, params)
            return await cursor.fetchone()

        return await self._run(tx, retry=retry)

    async def _fetchall(self, query: bytes, params: dict[str, Any] | None = None) -> list[Row]:
        async def tx(conn: Connection, attempt: int) -> list[Row]:
            cursor = await conn.execute(query, params)
            return await cursor.fetchall()

        return await self._run(tx)

    # --- dialect hooks -----------------------------------------------------------------------------

    async def _insert_instance(self, start: Message) -> bool:
        params = {**instance_params(start), "notify": self._listener.notice(orchestrator=1)}
        row, attempt = await self._batch.fetchone(_Q["create_instance"], params)
        if row is not None:
            return True
        if attempt == 0:
            return False
        # A retry after a lost connection: the first attempt may have committed. Same start: done.
        found = await self._fetchone(_Q["select_start"], {"instance_id": start.instance_id})
        return found is not None and found[0] == params["name"] and found[1] == params["input"]

    async def _replace_instance(self, start: Message) -> int:
        params = instance_params(start)
        notify = self._listener.notice(orchestrator=1, instance=start.instance_id)

        async def tx(conn: Connection, attempt: int) -> int:
            async with conn.transaction():
                # The advisory lock a fetch takes: no fetch of the old run is half done while it is
                # replaced. Then its lock goes (waiting out an ack in progress): no old turn commits.
                await conn.execute(_Q["hold_instance"], params)
                await conn.execute(_Q["delete_instance_lock"], params)
                cursor = await conn.execute(_Q["restart_instance"], params)
                row = await cursor.fetchone()
                assert row is not None
                await conn.execute(_Q["queue_start"], {**params, "execution_id": row[0], "notify": notify})
                return int(row[0])

        return await self._run(tx)

    async def _mark_rewinding(self, request: Message) -> bool:
        notify = self._listener.notice(orchestrator=1, instance=request.instance_id)
        params = {**message_params(request), "notify": notify}

        async def tx(conn: Connection, attempt: int) -> bool:
            cursor = await conn.execute(_Q["request_rewind"], params)
            if await cursor.fetchone() is not None:
                return True
            # A retry after a lost connection: the first attempt may have committed.
            return attempt > 0 and await _rewind_queued(conn, request)

        return await self._run(tx)

    async def _insert_messages(self, messages: list[Message]) -> None:
        params = message_arrays(messages)
        params["notify"] = self._listener.notice(orchestrator=len(messages))
        params["receipt"] = uuid.uuid4().hex  # the same for every retry of this call
        await self._batch.fetchone(_Q["enqueue_messages"], params)

    async def _select_state(self, instance_id: str) -> Sequence[Any] | None:
        row, _ = await self._batch.fetchone(_Q["select_state"], {"instance_id": instance_id})
        return row

    async def _select_history(self, instance_id: str, execution_id: int | None) -> list[str]:
        params = {"instance_id": instance_id, "execution_id": execution_id}
        rows = await self._fetchall(_Q["select_current_history" if execution_id is None else "select_history"], params)
        return [str(row[0]) for row in rows]

    async def _select_history_from(self, instance_id: str, execution_id: int, event_id: int) -> list[str]:
        params = {"instance_id": instance_id, "execution_id": execution_id, "event_id": event_id}
        return [str(row[0]) for row in await self._fetchall(_Q["select_history_from"], params)]

    async def _select_states(self, where: InstanceFilter) -> list[Sequence[Any]]:
        query, params = instance_query(_SQL["select_state"], where, _STYLE)
        return list(await self._fetchall(query.encode(), params))

    async def _delete_instances(self, instance_ids: list[str]) -> int:
        row = await self._fetchone(_Q["purge_instances"], {"instance_ids": instance_ids})
        return 0 if row is None else int(row[0])

    async def _lock_instance(
        self, lock_seconds: float, token: str, worker_id: str | None, held: Mapping[str, HistoryMark]
    ) -> LockedInstance | None:
        params = {"lock_seconds": float(lock_seconds), "lock_token": token, "worker_id": worker_id}
        params["tail_over"] = _TAIL_OVER if held else None
        row, attempt = await self._batch.fetchone(_Q["fetch_orchestration_item"], params)
        if attempt > 0:
            await self._put_back_lost(
                "release_lost_instance_lock", "orchestrator", lock_token=token, kept=row and row[0]
            )
        return None if row is None else _locked_instance(row)

    async def _claim_instance(
        self, instance_id: str, key: tuple[float, str | None], token: str, held: Mapping[str, HistoryMark]
    ) -> LockedInstance | None:
        params = {"instance_id": instance_id, "lock_seconds": key[0], "lock_token": token, "worker_id": key[1]}
        params["tail_over"] = _TAIL_OVER if held else None
        row, _ = await self._batch.fetchone(_Q["claim_orchestration_item"], params)
        return None if row is None else _locked_instance(row)

    async def _commit_turn(self, item: OrchestrationItem, commit: TurnCommit) -> bool:
        return (await self._commit_turn_claiming(item, commit, None)).committed

    async def _commit_turn_claiming(
        self, item: OrchestrationItem, commit: TurnCommit, claim: Claim | None
    ) -> Committed:
        if commit.cancelled_activities:
            claim = None  # an item the turn queues could be among those it cancels
        params = turn_params(item, commit, claim)
        # Other processes are woken only for the items left unlocked (the ack locks the first
        # claim_count of them: new rows, which no one else can see before the commit).
        params["notify"] = self._listener.notice(
            orchestrator=len(commit.messages),
            worker=len(commit.activity_items) - params["claim_count"],
            instance=item.instance_id if commit.state is not None else None,
        )
        if not commit.cancelled_activities:
            row, attempt = await self._batch.fetchone(_Q["ack_orchestration_item"], params)
            done = _acked(row, params)
            if attempt > 0 and not done.committed and params["claim_count"]:
                token = params["claim_token"]
                await self._put_back_lost(
                    "release_claimed_work_items", "activity", instance_id=item.instance_id, lock_token=token
                )
            return done
        return await self._run(lambda conn, _: _ack_cancelling(conn, params, item, commit))

    async def _release_instance(self, item: OrchestrationItem, delay: float, undo_delivery: bool) -> None:
        params = release_params(item, delay, undo_delivery, self._listener.notice(orchestrator=1))
        await self._batch.fetchone(_Q["abandon_orchestration_item"], params)

    async def _lock_work_items(
        self, queues: list[str], lock_seconds: float, token: str, worker_id: str | None, count: int
    ) -> list[WorkRow]:
        params = {"lock_token": token, "lock_seconds": float(lock_seconds), "worker_id": worker_id, "count": count}
        if len(queues) == 1:  # the usual case, and the cheapest statement
            query, params["queue"] = _Q["fetch_work_item"], queues[0]
        else:
            query, params["queues"] = _Q["fetch_work_item_of_queues"], queues
        found, attempt = await self._batch.fetchone(query, params)  # one row of arrays, by item id
        rows: list[WorkRow] = [] if found is None or found[0] is None else list(zip(*found, strict=True))
        if attempt > 0:
            await self._put_back_lost("release_lost_work_item_lock", "activity", lock_token=token, kept=_ids(rows))
        return rows

    async def _put_back_lost(self, query: str, kind: QueueKind, **params: Any) -> None:
        """Put back what a call retried after a lost connection may have locked in its first attempt,
        which committed but whose answer was lost (see ``query``). Kept locked, this worker's beats
        would hold it, with no loop to run it, for as long as the worker lives."""
        notice = self._listener.notice(orchestrator=1) if kind == "orchestrator" else self._listener.notice(worker=1)
        try:
            await self._batch.fetchone(_Q[query], {**params, "notify": notice})
        except ProviderError as exc:  # it waits for this worker to stop, then
            _log.warning("could not put back what a call whose answer was lost locked: %s", exc)
        self._signals.work(kind)

    async def _complete_work_item(self, item: WorkItem, completion: Message) -> bool:
        params = {**completion_params(item, completion), "notify": self._listener.notice(orchestrator=1)}
        row, _ = await self._batch.fetchone(_Q["ack_work_item"], params)
        return row is not None

    async def _release_work_item(self, item: WorkItem, delay: float) -> bool:
        return await self._update_work_item("release_work_item", item, delay)

    async def _renew_work_item(self, item: WorkItem, lock_seconds: float) -> bool:
        return await self._update_work_item("renew_work_item", item, lock_seconds)

    async def _update_work_item(self, query: str, item: WorkItem, seconds: float) -> bool:
        params = {"item_id": item.item_id, "lock_token": item.lock_token, "seconds": float(seconds)}
        row, _ = await self._batch.fetchone(_Q[query], {**params, "notify": self._listener.notice(worker=1)})
        return row is not None

    async def _count_work_deliveries(self, held: list[tuple[int, str]], change: int) -> None:
        params = {"item_ids": [i for i, _ in held], "lock_tokens": [t for _, t in held], "change": change}
        # One attempt: after a lost connection it may have committed, and a retry would count twice.
        await self._fetchone(_Q["count_work_deliveries"], params, retry=False)

    async def _select_work_item_locks(self, item_ids: list[int]) -> list[tuple[int, str | None]]:
        rows = await self._fetchall(_Q["select_work_item_locks"], {"item_ids": item_ids})
        return [(int(item_id), token) for item_id, token in rows]

    async def _select_held_work_items(self, instance_id: str) -> list[Sequence[Any]]:
        return list(await self._fetchall(_Q["select_held_work_items"], {"instance_id": instance_id}))

    async def _select_workers(self) -> list[Sequence[Any]]:
        return list(await self._fetchall(_Q["select_workers"]))

    async def _seconds_until_due(self, kind: QueueKind, queues: list[str]) -> float | None:
        if kind == "orchestrator":
            query, params = _Q["earliest_orchestrator_due"], None
        else:
            query, params = _Q["earliest_worker_due"], {"queues": queues}
        try:
            row = await self._fetchone(query, params, retry=False)
        except ProviderError:
            return None  # the database is unreachable: sleep the poll interval, then the caller retries
        return None if row is None or row[0] is None else float(row[0])

    # --- the rest of the contract ------------------------------------------------------------------

    async def queue_depths(self) -> dict[str, int]:
        return {str(queue): int(count) for queue, count in await self._fetchall(_Q["queue_depths"])}

    def worker_liveness(self, worker: WorkerInfo, timeout: float) -> WorkerLiveness | None:
        return PostgresWorkerLiveness(self._conninfo, self.schema, worker, timeout)

    async def close(self) -> None:
        if self._closed:
            return
        await self._handoffs.close()
        await self._turns.kept.close()
        self._closed = True
        await self._batch.close()
        await self._listener.close()
        await self._pool.close()


async def _ack_cancelling(
    conn: Connection, params: dict[str, Any], item: OrchestrationItem, commit: TurnCommit
) -> Committed:
    """A turn's ack that also cancels the work items of the activities it cancels, in one transaction."""
    async with conn.transaction():
        row = await (await conn.execute(_Q["ack_orchestration_item"], params)).fetchone()
        if row is None or not row[0]:
            return Committed(False)
        key = {"instance_id": item.instance_id}
        rows = await (await conn.execute(_Q["select_instance_work_items"], key)).fetchall()
        cancelled = activity_items(rows, commit.execution_id, commit.cancelled_activities)
        if cancelled:
            await conn.execute(_Q["cancel_work_items"], {"item_ids": cancelled})
    return _acked(row, params)


async def _rewind_queued(conn: Connection, request: Message) -> bool:
    """Whether the instance reads as a rewind of ``request``'s execution waiting for its turn."""
    cursor = await conn.execute(_Q["select_state"], {"instance_id": request.instance_id})
    row = await cursor.fetchone()
    return row is not None and row[3] == "PENDING" and row[4] == request.execution_id


def _acked(row: Row | None, params: dict[str, Any]) -> Committed:
    """What ``ack_orchestration_item`` answered for ``params``: whether it committed, the work items it
    claimed (locked by a fetch just now: counted once, no heartbeat yet), and the instance row it
    wrote (its times are the database's)."""
    if row is None or not row[0]:
        return Committed(False)
    claimed = [(item_id, request, 1, None, None) for item_id, request in zip(row[1] or (), row[2] or (), strict=True)]
    state = None
    if params["set_state"] and row[3] is not None:
        state = (
            *(params[key] for key in _STATE_PARAMS),
            row[3],
            row[4],
            params["waiting_for"],
        )
    return Committed(True, claimed, state)


def _ids(rows: list[WorkRow]) -> list[int]:
    return [row[0] for row in rows]


def _locked_instance(row: Row) -> LockedInstance:
    """A row of ``fetch_orchestration_item``: the messages as arrays, the state columns, the history."""
    instance_id, ids, executions, events, dequeues = row[:5]
    messages = list(zip(ids or (), executions or (), events or (), dequeues or (), strict=True))
    state = None if row[5] is None else row[5:17]
    return LockedInstance(instance_id, messages, state, row[17] or (), int(row[18] or 1))
