"""Commits per second from 1 to 8 connections, with and without a NOTIFY in each transaction.

Run: ``python benchmarks/pg_notify_commits.py [--url postgresql://postgres@127.0.0.1:5432/test]``.
Each connection commits one-row inserts into a table of a throw-away schema as fast as it can
(``synchronous_commit`` as the server has it); the second variant also calls ``pg_notify`` in the
same statement, as perdure's writing calls do. PostgreSQL flushes the WAL of concurrent commits
together, but a notifying transaction holds a database-wide lock from before its commit until
after its flush, so notifying commits of the whole database take turns. Every inserted row is
counted back, so the figures count only commits that happened.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import time
import uuid

import psycopg
from psycopg import sql


async def commits(url: str, schema: str, connections: int, notify: bool, seconds: float) -> float:
    statement = sql.SQL("WITH row AS (INSERT INTO {}.rows (conn) VALUES (%s) RETURNING 1) SELECT {} FROM row").format(
        sql.Identifier(schema),
        sql.SQL("pg_notify({}, 'x')").format(sql.Literal(f"bench_{schema}")) if notify else sql.SQL("1"),
    )
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        await admin.execute(sql.SQL("TRUNCATE {}.rows").format(sql.Identifier(schema)))
    deadline = time.perf_counter() + seconds

    async def loop(n: int) -> int:
        done = 0
        async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
            while time.perf_counter() < deadline:
                await conn.execute(statement, (n,))
                done += 1
        return done

    began = time.perf_counter()
    done = sum(await asyncio.gather(*(loop(n) for n in range(connections))))
    elapsed = time.perf_counter() - began
    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as admin:
        cursor = await admin.execute(sql.SQL("SELECT count(*) FROM {}.rows").format(sql.Identifier(schema)))
        row = await cursor.fetchone()
    if row is None or row[0] != done:
        raise SystemExit(f"counted {row} rows, committed {done}")
    return done / elapsed


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--url", default=os.environ.get("PERDURE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 2, 4, 8])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each figure; the best is printed")
    args = parser.parse_args()
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    async with await psycopg.AsyncConnection.connect(args.url, autocommit=True) as admin:
        await admin.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier(schema)))
        await admin.execute(sql.SQL("CREATE TABLE {}.rows (conn integer)").format(sql.Identifier(schema)))
        cursor = await admin.execute("SELECT current_setting('synchronous_commit'), current_setting('fsync')")
        settings = await cursor.fetchone()
    print(
        f"synchronous_commit={settings[0] if settings else '?'}, fsync={settings[1] if settings else '?'}, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    try:
        for connections in args.connections:
            runs: dict[bool, list[float]] = {False: [], True: []}
            for run in range(args.repeat):
                for notify in (False, True) if run % 2 == 0 else (True, False):
                    runs[notify].append(await commits(args.url, schema, connections, notify, args.seconds))
            figures = {notify: max(found) for notify, found in runs.items()}
            print(
                f"{connections} connection(s): {figures[False]:.0f} commits/s plain, "
                f"{figures[True]:.0f} with NOTIFY ({figures[True] / figures[False]:.2f}×)",
                flush=True,
            )
    finally:
        async with await psycopg.AsyncConnection.connect(args.url, autocommit=True) as admin:
            await admin.execute(sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(schema)))


if __name__ == "__main__":
    asyncio.run(main())
