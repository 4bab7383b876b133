"""perdure's side of the peer benchmark: one shape, one fresh database, one JSON line.

Run by ``run.py`` (``python perdure_side.py --shape fan_out --n 300 --sqlite bench.db`` or
``--postgres URL --schema NAME``). The runtime (default ``RuntimeOptions``) and the client share
one process and one provider, as the peer's executor and its caller do. Every result is checked;
a wrong or missing one exits non-zero instead of printing a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import sqlite3
from importlib import metadata
from typing import Any

from shapes import SEQUENCE_LENGTH, SHAPES, Stopwatch, expected, report

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    PostgresProvider,
    Provider,
    Registry,
    Runtime,
    SqliteProvider,
)

registry = Registry()


@registry.activity("Inc")
async def inc(ctx: ActivityContext, n: int) -> int:
    return n + 1


@registry.orchestration("One")
async def one(ctx: OrchestrationContext, n: int) -> int:
    return int(await ctx.call_activity("Inc", n))


@registry.orchestration("Sequence")
async def sequence(ctx: OrchestrationContext, n: int) -> int:
    for _ in range(SEQUENCE_LENGTH):
        n = await ctx.call_activity("Inc", n)
    return n


@registry.orchestration("FanOut")
async def fan_out(ctx: OrchestrationContext, n: int) -> int:
    return sum(await ctx.when_all([ctx.call_activity("Inc", k) for k in range(n)]))


async def _finish(client: Client, instance_id: str, want: Any) -> None:
    state = await client.wait_for_orchestration(instance_id, timeout=600)
    if state.status is not OrchestrationStatus.COMPLETED or state.output != want:
        raise SystemExit(f"{instance_id}: {state.status.value} {state.output!r}, expected {want!r}")


async def _one_by_one(client: Client, name: str, shape: str, n: int) -> None:
    for k in range(SHAPES[shape].workflows(n)):
        await client.start_orchestration(f"{shape}-{k}", name, k)
        await _finish(client, f"{shape}-{k}", expected(shape, n, k))


async def _together(client: Client, name: str, shape: str, n: int) -> None:
    count = SHAPES[shape].workflows(n)
    await asyncio.gather(*(client.start_orchestration(f"{shape}-{k}", name, k) for k in range(count)))
    await asyncio.gather(*(_finish(client, f"{shape}-{k}", expected(shape, n, k)) for k in range(count)))


async def run_shape(client: Client, shape: str, n: int) -> None:
    """Run one shape to completion, checking every result."""
    name = "Sequence" if shape.startswith("sequence") else "One"
    if shape in ("one_at_a_time", "sequence_one_at_a_time"):
        await _one_by_one(client, name, shape, n)
    elif shape in ("started_together", "sequence_together"):
        await _together(client, name, shape, n)
    else:
        await client.start_orchestration(shape, "FanOut", n)
        await _finish(client, shape, expected(shape, n))


async def _open(args: argparse.Namespace) -> Provider:
    if args.sqlite:
        return await SqliteProvider.open(args.sqlite, synchronous=args.synchronous)
    return await PostgresProvider.connect(args.postgres, schema=args.schema)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--shape", choices=sorted(SHAPES), required=True)
    parser.add_argument("--n", type=int, required=True)
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--sqlite", help="a SQLite file path (a fresh file)")
    where.add_argument("--postgres", help="a PostgreSQL URL")
    parser.add_argument("--schema", default="perdure", help="PostgreSQL schema (a fresh one)")
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="FULL")
    args = parser.parse_args()

    provider = await _open(args)
    client = Client(provider)
    try:
        async with Runtime(provider, registry):
            # Connections, caches and first-call costs are paid before the clock starts.
            for k in range(3):
                await client.start_orchestration(f"warm-up-{k}", "One", k)
                await _finish(client, f"warm-up-{k}", k + 1)
            with Stopwatch() as watch:
                await run_shape(client, args.shape, args.n)
    finally:
        await provider.close()
    settings: dict[str, object] = {"versions": _versions()}
    if args.sqlite:
        settings.update(journal_mode="wal", synchronous=args.synchronous)
    report(args.shape, args.n, watch, **settings)


def _versions() -> dict[str, str]:
    return {
        "perdure": metadata.version("perdure"),
        "psycopg": metadata.version("psycopg"),
        "sqlite": sqlite3.sqlite_version,
    }


if __name__ == "__main__":
    asyncio.run(main())
