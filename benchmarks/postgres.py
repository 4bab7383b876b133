"""The DESIGN.md §8 shapes on PostgreSQL, with 1, 2 and 4 ``perdure worker`` processes.

Run: ``python benchmarks/postgres.py [--url postgresql://postgres@127.0.0.1:5432/test] [--workers 1 2 4]``.
Each worker count gets a fresh schema (dropped afterwards) and real worker subprocesses started
with the console command; the client runs in this process. Every shape checks that every instance
COMPLETED with the right output.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from perdure import ActivityContext, Client, OrchestrationContext, OrchestrationStatus, Registry
from perdure.providers.postgres import PostgresProvider

registry = Registry()


@registry.activity("Inc")
async def inc(ctx: ActivityContext, n: int) -> int:
    return n + 1


@registry.orchestration("One")
async def one(ctx: OrchestrationContext, n: int) -> int:
    return int(await ctx.call_activity("Inc", n))


@registry.orchestration("FanOut")
async def fan_out(ctx: OrchestrationContext, width: int) -> int:
    return sum(await ctx.when_all([ctx.call_activity("Inc", k) for k in range(width)]))


@registry.orchestration("Sequence")
async def sequence(ctx: OrchestrationContext, length: int) -> int:
    n = 0
    for _ in range(length):
        n = await ctx.call_activity("Inc", n)
    return n


def start_workers(url: str, count: int, logs: Path) -> list[subprocess.Popen[bytes]]:
    processes = []
    for n in range(count):
        with (logs / f"worker-{n}.err").open("w") as err:
            processes.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        "-m",
                        "perdure",
                        "worker",
                        "postgres:registry",
                        "--db",
                        url,
                        "--log-level",
                        "WARNING",
                    ],
                    cwd=Path(__file__).parent,
                    stdout=subprocess.DEVNULL,
                    stderr=err,
                )
            )
    return processes


def stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=30)


async def check(client: Client, instance_id: str, expected: Any, timeout: float = 300) -> None:
    state = await client.wait_for_orchestration(instance_id, timeout=timeout)
    if state.status is not OrchestrationStatus.COMPLETED or state.output != expected:
        raise SystemExit(f"{instance_id}: {state.status.value} {state.output!r} (expected {expected!r})")


async def warm_up(client: Client) -> None:
    """Wait until the workers run orchestrations (they have connected and migrated)."""
    await client.start_orchestration("warm-up", "One", 0)
    await check(client, "warm-up", 1, timeout=60)


async def bench(url: str, workers: int, args: argparse.Namespace) -> dict[str, float]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    provider = await PostgresProvider.connect(url, schema=schema, max_size=20)
    client = Client(provider)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as logs:
        processes = start_workers(
            f"{url}?schema={schema}" if "?" not in url else f"{url}&schema={schema}", workers, Path(logs)
        )
        try:
            await warm_up(client)

            samples = []
            for n in range(args.latency_runs):
                began = time.perf_counter()
                await client.start_orchestration(f"latency-{n}", "One", n)
                await check(client, f"latency-{n}", n + 1)
                samples.append(time.perf_counter() - began)
            figures["latency_median_ms"] = statistics.median(samples) * 1000
            figures["latency_p95_ms"] = statistics.quantiles(samples, n=20)[18] * 1000

            began = time.perf_counter()
            for at in range(0, args.throughput, 100):
                await asyncio.gather(
                    *(client.start_orchestration(f"t-{n}", "One", n) for n in range(at, min(at + 100, args.throughput)))
                )
            await asyncio.gather(*(check(client, f"t-{n}", n + 1) for n in range(args.throughput)))
            figures["throughput_per_s"] = args.throughput / (time.perf_counter() - began)

            began = time.perf_counter()
            await client.start_orchestration("fan-out", "FanOut", args.fan_out)
            await check(client, "fan-out", sum(range(1, args.fan_out + 1)))
            figures["fan_out_s"] = time.perf_counter() - began

            began = time.perf_counter()
            await client.start_orchestration("sequence", "Sequence", args.sequence)
            await check(client, "sequence", args.sequence)
            figures["sequence_s"] = time.perf_counter() - began
        finally:
            stop_workers(processes)
            await provider.close()
            import psycopg

            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]
    return figures


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--url", default=os.environ.get("PERDURE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--throughput", type=int, default=1000, help="1-activity orchestrations started together")
    parser.add_argument("--latency-runs", type=int, default=50)
    parser.add_argument("--fan-out", type=int, default=1000, help="activities in one when_all")
    parser.add_argument("--sequence", type=int, default=100, help="sequential activities in one orchestration")
    args = parser.parse_args()
    results = {}
    for count in args.workers:
        results[count] = figures = await bench(args.url, count, args)
        print(
            f"{count} worker(s): latency median {figures['latency_median_ms']:.1f} ms "
            f"(p95 {figures['latency_p95_ms']:.1f} ms); throughput {figures['throughput_per_s']:.0f} orchestrations/s "
            f"({args.throughput}); fan-out {args.fan_out} in {figures['fan_out_s']:.2f} s "
            f"({args.fan_out / figures['fan_out_s']:.0f} activities/s); sequence {args.sequence} in "
            f"{figures['sequence_s']:.2f} s ({figures['sequence_s'] / args.sequence * 1000:.1f} ms per activity)",
            flush=True,
        )
    base = results[args.workers[0]]["throughput_per_s"]
    for count in args.workers[1:]:
        print(
            f"throughput scaling {args.workers[0]} → {count} workers: {results[count]['throughput_per_s'] / base:.2f}×"
        )


if __name__ == "__main__":
    asyncio.run(main())
