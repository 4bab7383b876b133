"""Versioned migrations: numbered ``.sql`` files applied once per schema, under an advisory lock."""

from __future__ import annotations

import re
from dataclasses import dataclass
from importlib import resources

import psycopg
from psycopg import sql

__all__ = ["Migration", "apply_migrations", "migrations"]

_PACKAGE = "perdure.providers.postgres"
_FILE = re.compile(r"^(\d{4})_(\w+)\.sql$")


@dataclass(frozen=True, kw_only=True, slots=True)
class Migration:
    """One migration file.

    Attributes:
        version: Its number (the file name's prefix); migrations run in this order.
        name: The rest of the file name.
        sql: The statements.
    """

    version: int
    name: str
    sql: str


def migrations() -> list[Migration]:
    """Every migration shipped with perdure, in order."""
    found = []
    for entry in resources.files(_PACKAGE).joinpath("migrations").iterdir():
        match = _FILE.match(entry.name)
        if match:
            found.append(
                Migration(version=int(match[1]), name=match[2], sql=entry.read_text(encoding="utf-8")),
            )
    found.sort(key=lambda m: m.version)
    return found


async def apply_migrations(
    conn: psycopg.AsyncConnection[tuple[object, ...]], schema: str, *, create: bool = True
) -> list[int] | None:
    """Create ``schema`` if needed and apply the migrations it lacks, in one transaction.

    Many workers may start at once: an advisory lock keyed on the schema lets one of them migrate
    while the others wait, then find nothing left to do.

    Returns:
        The versions applied now; ``None`` (having written nothing) if ``create`` is false and
        ``schema`` does not hold a perdure store.
    """
    applied_now: list[int] = []
    ident = sql.Identifier(schema)
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(hashtext('perdure.migrations'), hashtext(%s))", (schema,))
        if not create:
            cursor = await conn.execute("SELECT to_regclass(format('%%I.schema_migrations', %s::text))", (schema,))
            found = await cursor.fetchone()
            if found is None or found[0] is None:
                return None
        await conn.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(ident))
        await conn.execute(sql.SQL("SET LOCAL search_path TO {}").format(ident))
        await conn.execute(
            "CREATE TABLE IF NOT EXISTS schema_migrations ("
            " version integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())"
        )
        cursor = await conn.execute("SELECT version FROM schema_migrations")
        done = {int(str(row[0])) for row in await cursor.fetchall()}
        for migration in migrations():
            if migration.version in done:
                continue
            await conn.execute(migration.sql.encode())  # no parameters: several statements at once
            await conn.execute(
                "INSERT INTO schema_migrations (version, name) VALUES (%s, %s)", (migration.version, migration.name)
            )
            applied_now.append(migration.version)
    return applied_now
