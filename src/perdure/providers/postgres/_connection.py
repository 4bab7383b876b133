"""Reaching PostgreSQL: the URL and schema, migrations at connect, and the connection pool."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import TypeVar
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import psycopg
from psycopg import sql
from psycopg.abc import Buffer
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow
from psycopg.types.datetime import TimestamptzLoader
from psycopg_pool import AsyncConnectionPool

from perdure._errors import ProviderError
from perdure.providers._base import StoreNotFoundError
from perdure.providers.postgres._errors import is_transient, provider_error
from perdure.providers.postgres._migrate import apply_migrations

__all__ = ["Connection", "describe", "migrate", "open_pool", "resolve_schema", "run_retrying"]

Connection = psycopg.AsyncConnection[TupleRow]

_log = logging.getLogger("perdure.providers.postgres")
T = TypeVar("T")
_SCHEMA_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")


def resolve_schema(url: str, schema: str | None) -> tuple[str, str]:
    """The libpq connection string without perdure's own ``schema`` parameter, and the schema to use.

    Raises:
        ValueError: for a URL that is not PostgreSQL's, or a missing, conflicting or invalid schema name.
    """
    conninfo, url_schema = _split_url(url)
    if schema is not None and url_schema is not None and schema != url_schema:
        raise ValueError(f"the URL names schema {url_schema!r} but schema={schema!r} was given")
    if schema is None:
        schema = "perdure" if url_schema is None else url_schema
    if not _SCHEMA_NAME.match(schema):
        raise ValueError(f"invalid schema name {schema!r}: use letters, digits and '_' (at most 63)")
    return conninfo, schema


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
    return urlunsplit(parts._replace(query=urlencode(rest, quote_via=quote))), (schemas[0] if schemas else None)


def describe(conninfo: str, schema: str) -> str:
    """Where a store is, as a URL without the password: ``postgresql://user@host:port/dbname?schema=name``."""
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.Error:
        parts = {}
    user = f"{parts['user']}@" if parts.get("user") else ""
    port = f":{parts['port']}" if parts.get("port") else ""
    return f"postgresql://{user}{parts.get('host') or ''}{port}/{parts.get('dbname') or ''}?schema={schema}"


async def migrate(conninfo: str, schema: str, *, create: bool = True) -> None:
    """Create the schema (unless ``create`` is false) or bring it up to date (see ``_migrate``).

    Raises:
        StoreNotFoundError: without ``create``, if the schema holds no perdure store.
        ProviderError: if PostgreSQL cannot be reached or the migrations fail.
    """
    try:
        async with await psycopg.AsyncConnection.connect(conninfo, autocommit=True) as conn:
            applied = await apply_migrations(conn, schema, create=create)
    except psycopg.Error as exc:
        raise ProviderError(f"cannot prepare schema {schema!r} on PostgreSQL: {exc}") from exc
    if applied is None:
        raise StoreNotFoundError(f"no perdure store at {describe(conninfo, schema)}: no such schema, or not perdure's")
    if applied:
        _log.info("schema %r migrated to version %d", schema, applied[-1])


class _LenientTimestamptzLoader(TimestamptzLoader):
    """Reads a time Python cannot hold (``infinity``, after year 9999) as ``None``.

    Such a value can only come from a row written by hand; read as ``None``, it makes the row
    decoder report that one row as corrupted, instead of failing the whole fetch or page.
    """

    def load(self, data: Buffer) -> datetime | None:  # type: ignore[override]
        try:
            return super().load(data)
        except psycopg.DataError:
            return None


async def open_pool(conninfo: str, schema: str, min_size: int, max_size: int) -> AsyncConnectionPool[Connection]:
    """An open pool of autocommit connections whose search path is ``schema`` and time zone UTC."""
    set_session = sql.SQL("SET search_path TO {}; SET timezone TO 'UTC'").format(sql.Identifier(schema))

    async def configure(conn: Connection) -> None:
        conn.adapters.register_loader("timestamptz", _LenientTimestamptzLoader)
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
    return pool


async def run_retrying(
    pool: AsyncConnectionPool[Connection],
    function: Callable[[Connection, int], Awaitable[T]],
    retry_seconds: float | None,
    closed: Callable[[], bool],
) -> T:
    """Run ``function(connection, attempt)``, retrying failures of the connection with backoff for up
    to ``retry_seconds`` (``None``: no retry).

    Only a lost connection, a server restarting, a full pool, a deadlock or a serialization
    failure is retried (see ``_errors``); any other failure is about the call and raises at once.
    ``attempt`` counts from 0; a retried call may find its earlier attempt committed after all
    (the connection died after the commit), which idempotent-looking callers take into account.
    """
    began = time.monotonic()
    pause = 0.05
    attempt = 0
    while True:
        if closed():
            raise ProviderError("the PostgreSQL provider is closed")
        conn: Connection | None = None
        try:
            async with pool.connection() as conn:
                return await function(conn, attempt)
        except psycopg.Error as exc:
            broken = conn is not None and conn.broken
            waited = time.monotonic() - began
            if not is_transient(exc, broken):
                raise provider_error(exc) from exc
            if retry_seconds is None or closed() or waited + pause > retry_seconds:
                raise provider_error(exc, waited) from exc
            _log.warning("PostgreSQL call failed (%s); retrying in %.2f s", str(exc).strip()[:500], pause)
            if broken:
                # After a server restart every idle connection is dead too: drop them all at once
                # rather than discovering them one failed call at a time.
                with contextlib.suppress(psycopg.Error):
                    await pool.check()
        await asyncio.sleep(pause)
        pause = min(pause * 2, 2.0)
        attempt += 1
