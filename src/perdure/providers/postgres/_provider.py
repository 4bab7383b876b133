"""``PostgresProvider``: many worker processes on many hosts share one PostgreSQL database.

- Every contract method is one short transaction, and nearly always one round trip: the fetch and
  the ack of a turn are PL/pgSQL functions (see ``schema.sql``), the others single statements.
- Queue fetches use ``FOR UPDATE SKIP LOCKED`` (work items) or an advisory try-lock plus the
  ``instance_locks`` row (instances), so concurrent workers never wait on each other.
- Times come from the database clock, so hosts with skewed clocks agree about locks and timers.
- Writes that create work ``NOTIFY`` a channel of the schema; one listening connection per
  provider wakes the idle dispatchers and waiting clients of its process. A slow fallback poll
  (``poll_interval``) makes a lost notification a delay, never a stall.
- Connection loss and server restarts are retried here with backoff (the pool reconnects);
  when retries run out the driver error is translated to :class:`~perdure.ProviderError`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.rows import TupleRow
from psycopg_pool import AsyncConnectionPool

from perdure._errors import HistoryFormatError, InstanceAlreadyExistsError, ProviderError
from perdure._state import OrchestrationState
from perdure.engine._history import HistoryEvent, StartRequested, decode_event, encode_event
from perdure.providers._base import (
    InstanceFilter,
    LockLostError,
    Message,
    OrchestrationItem,
    Provider,
    QueueKind,
    TurnCommit,
    WorkItem,
)
from perdure.providers._codec import (
    decode_request,
    encode_error,
    encode_request,
    encode_value,
    orchestration_item,
    queued_message,
    state_from_row,
)
from perdure.providers._signal import SignalBoard
from perdure.providers._sql import load_queries
from perdure.providers.postgres._migrate import apply_migrations

__all__ = ["PostgresProvider"]

T = TypeVar("T")
Connection = psycopg.AsyncConnection[TupleRow]

_log = logging.getLogger("perdure.providers.postgres")
_Q = {name: text.encode() for name, text in load_queries("perdure.providers.postgres").items()}
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
_MAX_NOTIFY_INSTANCE = 4000  # NOTIFY payloads are limited to 8000 bytes


class PostgresProvider(Provider):
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
        self.schema = schema
        """The schema holding this provider's tables."""
        self._pool = pool
        self._conninfo = conninfo
        self._poll_interval = poll_interval
        self._retry_seconds = retry_seconds
        self._signals = SignalBoard()
        # Notifications carry their sender, so a process ignores its own (it signalled itself already).
        self._origin = uuid.uuid4().hex[:12]
        self._channel = ("perdure_" + schema)[:63]
        self._listener: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._closed = False

    @classmethod
    async def connect(
        cls,
        url: str,
        *,
        schema: str | None = None,
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
            min_size: Connections the pool keeps open.
            max_size: The most connections the pool opens.
            poll_interval: Seconds between fallback checks for work when no notification comes.
            retry_seconds: How long a call keeps retrying through connection loss before it
                raises :class:`~perdure.ProviderError`.

        Raises:
            ValueError: for a bad URL or schema name.
            ProviderError: if the database cannot be reached or migrated.
        """
        conninfo, url_schema = _split_url(url)
        if schema is not None and url_schema is not None and schema != url_schema:
            raise ValueError(f"the URL names schema {url_schema!r} but schema={schema!r} was given")
        if schema is None:
            schema = "perdure" if url_schema is None else url_schema
        if not _SCHEMA_NAME.match(schema):
            raise ValueError(f"invalid schema name {schema!r}: use letters, digits and '_' (at most 63)")
        if min_size < 1 or max_size < min_size:
            raise ValueError("need 1 <= min_size <= max_size")
        if poll_interval <= 0 or retry_seconds < 0:
            raise ValueError("poll_interval must be positive and retry_seconds not negative")
        try:
            async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
                applied = await apply_migrations(conn, schema)
        except psycopg.Error as exc:
            raise ProviderError(f"cannot prepare schema {schema!r} on PostgreSQL: {exc}") from exc
        if applied:
            _log.info("schema %r migrated to version %d", schema, applied[-1])

        set_session = sql.SQL("SET search_path TO {}; SET timezone TO 'UTC'").format(sql.Identifier(schema))

        async def configure(conn: Connection) -> None:
            await conn.execute(set_session)

        pool: AsyncConnectionPool[Connection] = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            kwargs={"autocommit": True},
            configure=configure,
            timeout=10.0,
            reconnect_timeout=0,  # never give up: a server restart must not leave the pool empty
            open=False,
            name=f"perdure-{schema}",
        )
        try:
            await pool.open(wait=True, timeout=30.0)
        except psycopg.Error as exc:
            await pool.close()
            raise ProviderError(f"cannot connect to PostgreSQL: {exc}") from exc
        provider = cls(pool, conninfo, schema, poll_interval=poll_interval, retry_seconds=retry_seconds)
        provider._listener = asyncio.create_task(provider._listen(), name=f"perdure-postgres-listener-{schema}")
        # Start listening before returning, so no notification sent after connect() is missed.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                await provider._listening.wait()
        return provider

    # --- plumbing ----------------------------------------------------------------------------------

    async def _run(self, function: Callable[[Connection, int], Awaitable[T]], *, retry: bool = True) -> T:
        """Run ``function(connection, attempt)``, retrying transient failures with backoff.

        ``attempt`` counts from 0; a retried call may find its earlier attempt committed after all
        (the connection died after the commit), which idempotent-looking callers take into account.
        """
        deadline = time.monotonic() + self._retry_seconds
        pause = 0.05
        attempt = 0
        while True:
            if self._closed:
                raise ProviderError("the PostgreSQL provider is closed")
            conn: Connection | None = None
            try:
                async with self._pool.connection() as conn:
                    return await function(conn, attempt)
            except psycopg.OperationalError as exc:  # connection lost, server restarting, pool timeout, deadlock
                if not retry or self._closed or time.monotonic() + pause > deadline:
                    raise ProviderError(f"PostgreSQL failed: {exc}") from exc
                _log.warning("PostgreSQL call failed (%s); retrying in %.2f s", str(exc).strip(), pause)
                if conn is not None and conn.broken:
                    # After a server restart every idle connection is dead too: drop them all at once
                    # rather than discovering them one failed call at a time.
                    with contextlib.suppress(psycopg.Error):
                        await self._pool.check()
            except psycopg.Error as exc:
                raise ProviderError(f"PostgreSQL failed: {exc}") from exc
            await asyncio.sleep(pause)
            pause = min(pause * 2, 2.0)
            attempt += 1

    def _notice(self, orchestrator: int = 0, worker: int = 0, instance: str | None = None) -> str:
        """The payload telling other processes what changed (see :meth:`_on_notify`)."""
        if instance is not None and len(instance.encode()) > _MAX_NOTIFY_INSTANCE:
            instance = "*"
        return f"{self._origin} {orchestrator} {worker} {instance or ''}"

    def _on_notify(self, payload: str) -> None:
        try:
            origin, orchestrator, worker, instance = payload.split(" ", 3)
            if origin == self._origin:
                return
            self._signals.work("orchestrator", int(orchestrator))
            self._signals.work("worker", int(worker))
        except ValueError:
            self._signals.everything()
            return
        if instance == "*":
            self._signals.everything()
        elif instance:
            self._signals.instance(instance)

    async def _listen(self) -> None:
        """Keep one connection outside the pool listening to the schema's channel; reconnect if it drops."""
        pause = 0.1
        while not self._closed:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    if self._listening.is_set():
                        self._signals.everything()  # notifications may have been lost while disconnected
                    self._listening.set()
                    pause = 0.1
                    while not self._closed:
                        async for note in conn.notifies(timeout=30.0):
                            self._on_notify(note.payload)
                        await conn.execute("SELECT 1")  # a quiet channel: check the connection is alive
            except psycopg.Error as exc:
                if self._closed:
                    return
                _log.warning("the PostgreSQL listener lost its connection (%s); reconnecting", str(exc).strip())
                self._signals.everything()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)

    # --- instances and history ---------------------------------------------------------------------

    async def create_instance(self, start: Message) -> None:
        event = start.event
        if not isinstance(event, StartRequested):
            raise TypeError("create_instance needs a StartRequested message")
        params = {
            "instance_id": start.instance_id,
            "name": event.name,
            "input": encode_value(event.input),
            "execution_id": start.execution_id,
            "kind": type(event).__name__,
            "event": encode_event(event),
            "visible_at": start.visible_at,
            "notify": self._notice(orchestrator=1),
        }

        async def tx(conn: Connection, attempt: int) -> bool:
            cursor = await conn.execute(_Q["create_instance"], params)
            if await cursor.fetchone() is not None:
                return True
            if attempt == 0:
                return False
            # A retry after a lost connection: the first attempt may have committed. Same start: done.
            cursor = await conn.execute(_Q["select_start"], {"instance_id": start.instance_id})
            row = await cursor.fetchone()
            return row is not None and row[0] == event.name and row[1] == params["input"]

        if not await self._run(tx):
            raise InstanceAlreadyExistsError(f"an instance with id {start.instance_id!r} already exists")
        self._signals.work("orchestrator")

    async def enqueue_messages(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        params = _message_arrays(messages)
        params["notify"] = self._notice(orchestrator=len(messages))
        params["receipt"] = uuid.uuid4().hex  # the same for every retry of this call

        async def tx(conn: Connection, attempt: int) -> None:
            await conn.execute(_Q["enqueue_messages"], params)

        await self._run(tx)
        self._signals.work("orchestrator", len(messages))

    async def get_state(self, instance_id: str) -> OrchestrationState | None:
        async def tx(conn: Connection, attempt: int) -> OrchestrationState | None:
            cursor = await conn.execute(_Q["select_state"], {"instance_id": instance_id})
            row = await cursor.fetchone()
            return None if row is None else state_from_row(row)

        return await self._run(tx)

    async def get_history(self, instance_id: str, execution_id: int | None = None) -> list[HistoryEvent]:
        async def tx(conn: Connection, attempt: int) -> list[str]:
            if execution_id is None:
                cursor = await conn.execute(_Q["select_current_history"], {"instance_id": instance_id})
            else:
                cursor = await conn.execute(
                    _Q["select_history"], {"instance_id": instance_id, "execution_id": execution_id}
                )
            return [str(row[0]) for row in await cursor.fetchall()]

        return [decode_event(text) for text in await self._run(tx)]

    async def list_instances(self, where: InstanceFilter) -> list[OrchestrationState]:
        clauses: list[str] = []
        params: dict[str, Any] = {"limit": where.limit}
        if where.status:
            clauses.append("status = ANY (%(status)s::text[])")
            params["status"] = [s.value for s in where.status]
        if where.name is not None:
            clauses.append("name = %(name)s")
            params["name"] = where.name
        if where.created_after is not None:
            clauses.append("created_at > %(created_after)s")
            params["created_after"] = where.created_after
        if where.created_before is not None:
            clauses.append("created_at < %(created_before)s")
            params["created_before"] = where.created_before
        if where.instance_id_prefix:
            # A range on the primary key, so a prefix search uses the index (collation "C" for bytewise order).
            clauses.append('instance_id COLLATE "C" >= %(prefix)s AND instance_id COLLATE "C" < %(prefix_end)s')
            params["prefix"] = where.instance_id_prefix
            params["prefix_end"] = where.instance_id_prefix + "\U0010ffff"
        if where.parent_instance_id is not None:
            clauses.append("parent_instance_id = %(parent)s")
            params["parent"] = where.parent_instance_id
        if where.after is not None:
            clauses.append('instance_id COLLATE "C" > %(after)s')
            params["after"] = where.after
        query = _Q["select_state"].decode().split(" WHERE ")[0]
        if clauses:
            query += " WHERE " + " AND ".join(clauses)
        query += ' ORDER BY instance_id COLLATE "C" LIMIT %(limit)s'

        async def tx(conn: Connection, attempt: int) -> list[OrchestrationState]:
            cursor = await conn.execute(query.encode(), params)
            return [state_from_row(row) for row in await cursor.fetchall()]

        return await self._run(tx)

    async def purge_instances(self, instance_ids: Sequence[str]) -> int:
        if not instance_ids:
            return 0
        params = {"instance_ids": list(instance_ids)}

        async def tx(conn: Connection, attempt: int) -> int:
            cursor = await conn.execute(_Q["purge_instances"], params)
            row = await cursor.fetchone()
            return 0 if row is None else int(row[0])

        return await self._run(tx)

    # --- orchestrator queue --------------------------------------------------------------------------

    async def fetch_orchestration_item(self, lock_seconds: float) -> OrchestrationItem | None:
        token = uuid.uuid4().hex
        params = {"lock_seconds": float(lock_seconds), "lock_token": token}

        async def tx(conn: Connection, attempt: int) -> tuple[Any, ...] | None:
            cursor = await conn.execute(_Q["fetch_orchestration_item"], params)
            return await cursor.fetchone()

        row = await self._run(tx)
        if row is None:
            return None
        instance_id, ids, executions, events, dequeues = row[:5]
        state = None if row[5] is None else state_from_row(row[5:17])
        messages = [
            queued_message(m, instance_id, e, text, d)
            for m, e, text, d in zip(ids or (), executions or (), events or (), dequeues or (), strict=True)
        ]
        return orchestration_item(instance_id, token, messages, state, row[17] or ())

    async def ack_orchestration_item(self, item: OrchestrationItem, commit: TurnCommit) -> None:
        instance_id = item.instance_id
        params = _message_arrays(commit.messages)
        params.update(
            instance_id=instance_id,
            lock_token=item.lock_token,
            execution_id=commit.execution_id,
            event_ids=[e.event_id for e in commit.history],
            events=[encode_event(e) for e in commit.history],
            work_queues=[r.queue for r in commit.worker_items],
            work_requests=[encode_request(r) for r in commit.worker_items],
            consumed=list(commit.consumed),
            notify=self._notice(
                orchestrator=len(commit.messages),
                worker=len(commit.worker_items),
                instance=instance_id if commit.state is not None else None,
            ),
        )
        s = commit.state
        params.update(
            set_state=s is not None,
            name=None if s is None else s.name,
            version=None if s is None else s.version,
            status=None if s is None else s.status.value,
            state_execution_id=None if s is None else s.execution_id,
            input=None if s is None else encode_value(s.input),
            output=None if s is None else encode_value(s.output),
            error=None if s is None else encode_error(s.error),
            custom_status=None if s is None else encode_value(s.custom_status),
            parent_instance_id=None if s is None else s.parent_instance_id,
        )

        async def tx(conn: Connection, attempt: int) -> bool:
            cursor = await conn.execute(_Q["ack_orchestration_item"], params)
            row = await cursor.fetchone()
            return row is not None and bool(row[0])

        if not await self._run(tx):
            raise LockLostError(f"the lock on instance {instance_id!r} expired and was taken over")
        self._signals.instance(instance_id)
        self._signals.work("orchestrator", len(commit.messages))
        self._signals.work("worker", len(commit.worker_items))

    async def abandon_orchestration_item(self, item: OrchestrationItem, delay: float = 0.0) -> None:
        params = {
            "instance_id": item.instance_id,
            "lock_token": item.lock_token,
            "delay": float(delay),
            "notify": self._notice(orchestrator=1),
        }

        async def tx(conn: Connection, attempt: int) -> None:
            await conn.execute(_Q["abandon_orchestration_item"], params)

        await self._run(tx)
        self._signals.work("orchestrator")

    # --- worker queues ---------------------------------------------------------------------------------

    async def fetch_work_item(self, queues: Sequence[str], lock_seconds: float) -> WorkItem | None:
        token = uuid.uuid4().hex
        params = {"queues": list(queues), "lock_token": token, "lock_seconds": float(lock_seconds)}

        async def tx(conn: Connection, attempt: int) -> tuple[Any, ...] | None:
            cursor = await conn.execute(_Q["fetch_work_item"], params)
            return await cursor.fetchone()

        row = await self._run(tx)
        if row is None:
            return None
        item_id, text, dequeue_count = row
        try:
            return WorkItem(
                item_id=item_id, lock_token=token, request=decode_request(text), dequeue_count=dequeue_count
            )
        except HistoryFormatError as exc:
            return WorkItem(
                item_id=item_id, lock_token=token, request=None, dequeue_count=dequeue_count, error=str(exc)
            )

    async def ack_work_item(self, item: WorkItem, completion: Message) -> None:
        if isinstance(completion.event, StartRequested):
            raise TypeError("an activity completion cannot start an instance")
        params = {
            "item_id": item.item_id,
            "lock_token": item.lock_token,
            "instance_id": completion.instance_id,
            "execution_id": completion.execution_id,
            "kind": type(completion.event).__name__,
            "event": encode_event(completion.event),
            "visible_at": completion.visible_at,
            "notify": self._notice(orchestrator=1),
        }

        async def tx(conn: Connection, attempt: int) -> bool:
            cursor = await conn.execute(_Q["ack_work_item"], params)
            return await cursor.fetchone() is not None

        if not await self._run(tx):
            raise LockLostError(f"the lock on work item {item.item_id} expired and was taken over")
        self._signals.work("orchestrator")

    async def abandon_work_item(self, item: WorkItem, delay: float = 0.0) -> None:
        await self._update_work_item("release_work_item", item, delay)
        self._signals.work("worker")

    async def renew_work_item(self, item: WorkItem, lock_seconds: float) -> None:
        await self._update_work_item("renew_work_item", item, lock_seconds)

    async def _update_work_item(self, query: str, item: WorkItem, seconds: float) -> None:
        params = {
            "item_id": item.item_id,
            "lock_token": item.lock_token,
            "seconds": float(seconds),
            "notify": self._notice(worker=1),
        }

        async def tx(conn: Connection, attempt: int) -> bool:
            cursor = await conn.execute(_Q[query], params)
            return await cursor.fetchone() is not None

        if not await self._run(tx):
            raise LockLostError(f"the lock on work item {item.item_id} expired and was taken over")

    # --- observability ---------------------------------------------------------------------------------

    async def queue_depths(self) -> dict[str, int]:
        async def tx(conn: Connection, attempt: int) -> dict[str, int]:
            cursor = await conn.execute(_Q["queue_depths"])
            return {str(queue): int(count) for queue, count in await cursor.fetchall()}

        return await self._run(tx)

    # --- waiting ---------------------------------------------------------------------------------------

    async def wait_for_work(self, kind: QueueKind, timeout: float, queues: Sequence[str] = ()) -> None:
        timeout = min(timeout, self._poll_interval)
        if kind == "orchestrator":
            query, params = _Q["earliest_orchestrator_due"], {}
        else:
            query, params = _Q["earliest_worker_due"], {"queues": list(queues)}

        async def tx(conn: Connection, attempt: int) -> float | None:
            cursor = await conn.execute(query, params)
            row = await cursor.fetchone()
            return None if row is None or row[0] is None else float(row[0])

        with self._signals.queues[kind].waiter() as waiter:  # before the read, so no wake-up falls between
            try:
                due = await self._run(tx, retry=False)
            except ProviderError:
                due = None  # the database is unreachable: sleep the poll interval, then the caller retries
            if due is not None:
                timeout = min(timeout, max(0.0, due))
            await waiter.wait(timeout)

    async def wait_for_state_change(self, instance_id: str, timeout: float) -> None:
        # Every committed state change notifies, so the fallback poll can be slow; thousands of
        # waiting clients must not re-read their state every poll_interval.
        await self._signals.wait_instance(instance_id, min(timeout, self._poll_interval * 5))

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        await self._pool.close()


# --- helpers ------------------------------------------------------------------------------------------


def _split_url(url: str) -> tuple[str, str | None]:
    """The libpq URL without perdure's own ``schema`` parameter, and that parameter."""
    if not isinstance(url, str) or not url.startswith(("postgresql://", "postgres://")):
        raise ValueError(f"not a PostgreSQL URL: {url!r} (expected postgresql://user@host:port/dbname)")
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    schemas = [value for key, value in query if key == "schema"]
    rest = [(key, value) for key, value in query if key != "schema"]
    if len(schemas) > 1:
        raise ValueError("the URL names more than one schema")
    return urlunsplit(parts._replace(query=urlencode(rest))), (schemas[0] if schemas else None)


def _message_arrays(messages: Sequence[Message]) -> dict[str, Any]:
    """Columns of orchestrator messages (and of the instances their starts create) as arrays."""
    starts = [m for m in messages if isinstance(m.event, StartRequested)]
    return {
        "instances": [m.instance_id for m in messages],
        "executions": [m.execution_id for m in messages],
        "kinds": [type(m.event).__name__ for m in messages],
        "msg_events": [encode_event(m.event) for m in messages],
        "visible": [m.visible_at for m in messages],
        "start_instances": [m.instance_id for m in starts],
        "start_names": [m.event.name for m in starts if isinstance(m.event, StartRequested)],
        "start_inputs": [encode_value(m.event.input) for m in starts if isinstance(m.event, StartRequested)],
        "start_parents": [m.event.parent_instance for m in starts if isinstance(m.event, StartRequested)],
    }
