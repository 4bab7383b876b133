"""Benchmarks of the DESIGN.md §8 shapes on an embedded SQLite file.

Run: ``python benchmarks/sqlite.py [--synchronous NORMAL|FULL] [--quick]``. Every shape checks that
every instance COMPLETED with the right output before it reports a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Registry,
    Runtime,
    SqliteProvider,
)

registry = Registry()


@registry.activity("Echo")
async def echo(ctx: ActivityContext, value: int) -> int:
    return value


@registry.orchestration("One")
async def one(ctx: OrchestrationContext, value: int) -> int:
    return int(await ctx.call_activity("Echo", value))


@registry.orchestration("FanOut")
async def fan_out(ctx: OrchestrationContext, count: int) -> int:
    results = await ctx.when_all([ctx.call_activity("Echo", i) for i in range(count)])
    return sum(results)


@registry.orchestration("Sequence")
async def sequence(ctx: OrchestrationContext, count: int) -> int:
    total = 0
    for i in range(count):
        total += await ctx.call_activity("Echo", i)
    return total


async def _check(client: Client, instance_id: str, expected: int, timeout: float = 600) -> None:
    state = await client.wait_for_orchestration(instance_id, timeout=timeout)
    if state.status is not OrchestrationStatus.COMPLETED or state.output != expected:
        raise AssertionError(f"{instance_id}: {state.status.value} {state.output!r} {state.error}")


async def latency(client: Client, runs: int) -> str:
    samples = []
    for i in range(runs):
        started = time.perf_counter()
        await client.start_orchestration(f"latency-{i}", "One", i)
        await _check(client, f"latency-{i}", i)
        samples.append(time.perf_counter() - started)
    samples.sort()
    p95 = samples[int(len(samples) * 0.95) - 1]
    median = statistics.median(samples) * 1000
    return f"latency, one 1-activity orchestration alone ({runs} runs): median {median:.2f} ms, p95 {p95 * 1000:.2f} ms"


async def throughput(client: Client, count: int) -> str:
    started = time.perf_counter()
    await asyncio.gather(*(client.start_orchestration(f"tp-{i}", "One", i) for i in range(count)))
    await asyncio.gather(*(_check(client, f"tp-{i}", i) for i in range(count)))
    elapsed = time.perf_counter() - started
    rate = count / elapsed
    return f"throughput, {count} 1-activity orchestrations started together: {rate:.0f}/s ({elapsed:.2f} s)"


async def fan_out_shape(client: Client, count: int) -> str:
    started = time.perf_counter()
    await client.start_orchestration(f"fan-{count}", "FanOut", count)
    await _check(client, f"fan-{count}", sum(range(count)))
    elapsed = time.perf_counter() - started
    return f"fan-out, one orchestration with {count} activities: {elapsed:.2f} s ({count / elapsed:.0f} activities/s)"


async def sequence_shape(client: Client, count: int) -> str:
    started = time.perf_counter()
    await client.start_orchestration(f"seq-{count}", "Sequence", count)
    await _check(client, f"seq-{count}", sum(range(count)))
    elapsed = time.perf_counter() - started
    each = elapsed / count * 1000
    return f"sequence, {count} sequential activities in one orchestration: {elapsed:.2f} s ({each:.2f} ms per activity)"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    with tempfile.TemporaryDirectory() as tmp:
        provider = await SqliteProvider.open(Path(tmp) / "bench.db", synchronous=args.synchronous)
        client = Client(provider)
        print(f"SQLite file, WAL, synchronous={args.synchronous}")
        async with Runtime(provider, registry):
            print(await latency(client, 200 // scale))
            print(await throughput(client, 2000 // scale))
            print(await fan_out_shape(client, 1000 // scale))
            for count in (100 // scale, 500 // scale):
                print(await sequence_shape(client, count))
        await provider.close()


if __name__ == "__main__":
    asyncio.run(main())
