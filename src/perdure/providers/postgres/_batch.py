"""Group commit on PostgreSQL: the calls that become ready in one event-loop iteration share one
transaction, sent in one round trip.

Turns, activity acks, fetches and client calls of one process run concurrently; one at a time,
each would cost a round trip, a pool checkout and a commit of its own, and under load the commits
queue for the server's WAL flush. Batched, the statements go out together in psycopg's pipeline
mode: the server runs them in order as one implicit transaction that commits when the pipeline
syncs, and every caller learns its outcome only after that commit, so durability is the same as
committing one by one (``synchronous_commit`` is never changed).

Each batched call is one statement (a PL/pgSQL function or a single data-modifying query) that
writes nothing it should not when it finds its lock lost, so statements of unrelated calls can
share a transaction. If the batch fails for a reason of its own data (a constraint, a value the
column refuses), nothing of it committed and every call runs again alone, so only the culprit
fails. A failure of the connection is retried for the whole batch, like any call.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import psycopg

from perdure._errors import ProviderError
from perdure.providers.postgres._connection import Connection
from perdure.providers.postgres._errors import is_transient

__all__ = ["Batch", "Row", "Statement"]

Row = tuple[Any, ...]
Statement = tuple[bytes, dict[str, Any] | None]
_Call = tuple[Statement, "asyncio.Future[tuple[Row | None, int]]"]
Runner = Callable[[Callable[[Connection, int], Awaitable[Any]]], Awaitable[Any]]


class Batch:
    """Queues single-statement calls and runs each loop iteration's calls in one pipelined transaction.

    ``run`` is the provider's retrying runner: ``run(function)`` calls ``function(connection,
    attempt)`` until it succeeds or fails for good (then raising ``ProviderError``).
    """

    def __init__(self, run: Runner, max_in_flight: int = 2) -> None:
        self._run = run
        # While this many batches wait for the server, new calls gather into the next one: the
        # busier the process, the more calls share each commit.
        self._max_in_flight = max_in_flight
        self._pending: list[_Call] = []
        self._flush_scheduled = False
        self._tasks: set[asyncio.Task[None]] = set()

    async def fetchone(self, query: bytes, params: dict[str, Any] | None = None) -> tuple[Row | None, int]:
        """Run one statement in the next batch; its first row (or ``None``) once committed, and how
        many times the batch was retried (a retried call may find its first attempt committed)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[tuple[Row | None, int]] = loop.create_future()
        self._pending.append(((query, params), future))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            loop.call_soon(self._flush)
        return await future

    def _flush(self) -> None:
        self._flush_scheduled = False
        if not self._pending or len(self._tasks) >= self._max_in_flight:
            return  # the next batch to finish flushes what gathered meanwhile
        batch, self._pending = self._pending, []
        task = asyncio.get_running_loop().create_task(self._execute(batch))
        self._tasks.add(task)  # keep a reference until it is done
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._pending and not self._flush_scheduled:
            self._flush_scheduled = True
            asyncio.get_running_loop().call_soon(self._flush)

    async def _execute(self, batch: list[_Call]) -> None:
        try:
            outcomes = await self._run(_pipelined([statement for statement, _ in batch]))
        except ProviderError as error:
            if len(batch) > 1 and _about_the_data(error):
                await asyncio.gather(*(self._alone(call) for call in batch))
                return
            _settle(batch, error=error)
            return
        except BaseException as error:  # cancelled at shutdown, or a bug: nobody may wait forever
            _settle(batch, error=ProviderError(f"PostgreSQL batch failed: {error!r}"))
            raise
        for (_, future), outcome in zip(batch, outcomes, strict=True):
            if not future.done():
                future.set_result(outcome)

    async def _alone(self, call: _Call) -> None:
        statement, future = call
        try:
            outcome = await self._run(_pipelined([statement]))
        except ProviderError as error:
            _settle([call], error=error)
            return
        if not future.done():
            future.set_result(outcome[0])

    async def close(self) -> None:
        """Wait for the batches under way (they fail fast once the provider is closed)."""
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


def _pipelined(statements: list[Statement]) -> Callable[[Connection, int], Awaitable[list[tuple[Row | None, int]]]]:
    async def tx(conn: Connection, attempt: int) -> list[tuple[Row | None, int]]:
        if len(statements) == 1:  # alone: no pipeline needed
            query, params = statements[0]
            cursor = await conn.execute(query, params)
            return [(await cursor.fetchone(), attempt)]
        async with conn.pipeline():
            # Up to the pipeline's sync, the statements run as one implicit transaction.
            cursors = [await conn.execute(query, params) for query, params in statements]
        return [(await cursor.fetchone(), attempt) for cursor in cursors]

    return tx


def _about_the_data(error: ProviderError) -> bool:
    """Whether a failed batch may succeed in part: its failure came from a statement, not the connection."""
    cause = error.__cause__
    return isinstance(cause, psycopg.Error) and not is_transient(cause, broken=False)


def _settle(batch: list[_Call], *, error: BaseException) -> None:
    for _, future in batch:
        if not future.done():
            future.set_exception(error)
