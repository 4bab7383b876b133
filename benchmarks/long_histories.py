"""Long histories: the cost of one step as an orchestration's history grows, with and without the execution cache.

Run: ``python benchmarks/long_histories.py [--backend sqlite postgres] [--sequence 100 1000 10000]
[--fan-out 1000 20000] [--throughput 1000] [--held 10000] [--before-limit 1000]``.

Shapes, each with ``cache_size=0`` (every turn replays the whole history: before) and with the
default cache (after), back to back in one run:

- sequence: one orchestration awaiting N activities one after the other; the figure is the
  wall-clock time per activity, and the ratio of that figure at the largest N to the smallest;
- fan-out: one orchestration awaiting N activities in one ``when_all``, per activity, with the CPU
  time of this process per activity beside it (less disturbed by other load than the wall clock);
- throughput: N one-activity orchestrations started together, per second (short histories: the
  cache must not cost them anything);
- held: the peak RSS of a worker process that holds N waiting executions (a child process per
  setting, so that each peak is its own).

``--before-limit`` skips the uncached runs above that size (they are quadratic: 10,000 steps
take many minutes). Every shape checks that every instance COMPLETED with the right output.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    PostgresProvider,
    Registry,
    Runtime,
    RuntimeOptions,
    SqliteProvider,
)
from perdure.providers import Provider

POSTGRES_URL = os.environ.get("PERDURE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

registry = Registry()


@registry.activity("Echo")
async def echo(ctx: ActivityContext, value: int) -> int:
    return value


@registry.orchestration("Sequence")
async def sequence(ctx: OrchestrationContext, count: int) -> int:
    total = 0
    for i in range(count):
        total += await ctx.call_activity("Echo", i)
    return total


@registry.orchestration("FanOut")
async def fan_out(ctx: OrchestrationContext, count: int) -> int:
    return sum(await ctx.when_all([ctx.call_activity("Echo", i) for i in range(count)]))


@registry.orchestration("Waiter")
async def waiter(ctx: OrchestrationContext, value: int) -> int:
    first = await ctx.call_activity("Echo", value)
    return int(first) + int(await ctx.wait_for_event("go"))


@asynccontextmanager
async def store(backend: str) -> AsyncIterator[Provider]:
    """A fresh SQLite file or PostgreSQL schema, removed afterwards."""
    if backend == "sqlite":
        with tempfile.TemporaryDirectory() as directory:
            provider: Provider = await SqliteProvider.open(str(Path(directory) / "bench.db"))
            try:
                yield provider
            finally:
                await provider.close()
        return
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    provider = await PostgresProvider.connect(POSTGRES_URL, schema=schema, max_size=10)
    try:
        yield provider
    finally:
        await provider.close()
        import psycopg

        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]


def options(cache_size: int | None, idle: float = 60.0) -> RuntimeOptions:
    """The default options (``None``), or the cache of that size."""
    if cache_size is None:
        return RuntimeOptions()
    return RuntimeOptions(cache_size=cache_size, cache_idle_timeout=idle)


async def check(client: Client, instance_id: str, expected: Any, timeout: float = 3600) -> None:
    state = await client.wait_for_orchestration(instance_id, timeout=timeout)
    if state.status is not OrchestrationStatus.COMPLETED or state.output != expected:
        raise SystemExit(f"{instance_id}: {state.status.value} {state.output!r} (expected {expected!r})")


async def one_orchestration(backend: str, cache_size: int | None, name: str, count: int) -> tuple[float, float]:
    """Seconds from start to completion of one orchestration of ``count`` activities, and the CPU
    seconds this process (worker and client) spent meanwhile: other load on the machine stretches
    the first much more than the second."""
    async with store(backend) as provider, Runtime(provider, registry, options(cache_size)):
        client = Client(provider)
        began, cpu = time.perf_counter(), time.process_time()
        await client.start_orchestration("run", name, count)
        await check(client, "run", sum(range(count)))
        return time.perf_counter() - began, time.process_time() - cpu


async def throughput(backend: str, cache_size: int | None, count: int) -> float:
    """Orchestrations of one activity each, started together: completed per second (a short history:
    the cache must cost them nothing)."""
    async with store(backend) as provider, Runtime(provider, registry, options(cache_size)):
        client = Client(provider)
        began = time.perf_counter()
        for at in range(0, count, 500):
            await asyncio.gather(
                *(client.start_orchestration(f"t-{n}", "Sequence", 1) for n in range(at, min(at + 500, count)))
            )
        for n in range(count):
            await check(client, f"t-{n}", 0)
        return count / (time.perf_counter() - began)


async def hold(backend: str, cached: bool, count: int) -> dict[str, float]:
    """Run ``count`` instances until each waits for an event, measure, then let them all finish."""
    # With the cache, it must hold every one of them: as large as that, and no idle expiry meanwhile.
    settings = options(count if cached else 0, idle=3600)
    async with store(backend) as provider, Runtime(provider, registry, settings) as runtime:
        client = Client(provider)
        rss_before = _rss_kib("VmRSS")
        for at in range(0, count, 500):
            await asyncio.gather(
                *(client.start_orchestration(f"w-{n}", "Waiter", n) for n in range(at, min(at + 500, count)))
            )
        # Every instance has run its second turn (the activity's result) once no message is queued.
        while True:
            depths = await provider.queue_depths()
            if sum(depths.values()) == 0 and runtime.metrics.snapshot().get("turns.committed", 0) >= 2 * count:
                break
            await asyncio.sleep(0.5)
        rss_held = _rss_kib("VmHWM")
        began = time.perf_counter()
        for at in range(0, count, 500):
            await asyncio.gather(*(client.raise_event(f"w-{n}", "go", 1) for n in range(at, min(at + 500, count))))
        for at in range(0, count, 500):
            await asyncio.gather(*(check(client, f"w-{n}", n + 1) for n in range(at, min(at + 500, count))))
        return {
            "rss_before_mib": rss_before / 1024,
            "rss_held_mib": rss_held / 1024,
            "finish_s": time.perf_counter() - began,
        }


def _rss_kib(field: str) -> float:
    """``VmRSS`` (now) or ``VmHWM`` (peak) of this process in KiB. Not ``ru_maxrss``: on Linux a
    process started by ``fork`` and ``exec`` inherits its parent's peak there."""
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return float(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def hold_in_child(backend: str, cached: bool, count: int) -> dict[str, float]:
    """``hold`` in a fresh process: its peak RSS is its own."""
    argv = [sys.executable, __file__, "--child-hold", backend, str(count), "cached" if cached else "uncached"]
    output = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    return dict(json.loads(output.strip().splitlines()[-1]))


async def run_backend(backend: str, args: argparse.Namespace) -> None:
    print(f"\n== {backend} ==", flush=True)
    await one_orchestration(backend, None, "Sequence", 20)  # warm-up: imports, connections, first queries
    for label, cache_size in (("before (cache_size=0)", 0), ("after (default cache)", None)):
        per_step: dict[int, float] = {}
        for count in args.sequence:
            if cache_size == 0 and count > args.before_limit:
                print(f"{label}: sequence {count}: skipped (above --before-limit)", flush=True)
                continue
            seconds, _ = await one_orchestration(backend, cache_size, "Sequence", count)
            per_step[count] = seconds / count * 1000
            print(f"{label}: sequence {count}: {seconds:.2f} s, {per_step[count]:.2f} ms per step", flush=True)
        if len(per_step) > 1:
            low, high = min(per_step), max(per_step)
            print(f"{label}: sequence per-step cost {high} / {low}: {per_step[high] / per_step[low]:.2f}x", flush=True)
        per_activity: dict[int, float] = {}
        cpu_per_activity: dict[int, float] = {}
        for count in args.fan_out:
            if cache_size == 0 and count > args.before_limit:
                print(f"{label}: fan-out {count}: skipped (above --before-limit)", flush=True)
                continue
            seconds, cpu = await one_orchestration(backend, cache_size, "FanOut", count)
            per_activity[count], cpu_per_activity[count] = seconds / count * 1000, cpu / count * 1000
            print(
                f"{label}: fan-out {count}: {seconds:.2f} s, {per_activity[count]:.3f} ms per activity "
                f"(CPU of this process: {cpu_per_activity[count]:.3f} ms per activity)",
                flush=True,
            )
        if len(per_activity) > 1:
            low, high = min(per_activity), max(per_activity)
            ratio, cpu_ratio = per_activity[high] / per_activity[low], cpu_per_activity[high] / cpu_per_activity[low]
            print(f"{label}: fan-out per-activity cost {high} / {low}: {ratio:.2f}x (CPU {cpu_ratio:.2f}x)", flush=True)
        if args.throughput:
            rate = await throughput(backend, cache_size, args.throughput)
            print(f"{label}: {args.throughput} 1-activity orchestrations started together: {rate:.0f}/s", flush=True)
        if args.held:
            figures = hold_in_child(backend, cache_size != 0, args.held)
            held = "none cached" if cache_size == 0 else "all cached"
            print(
                f"{label}: {args.held} waiting executions ({held}): peak RSS {figures['rss_held_mib']:.0f} MiB "
                f"(RSS at start {figures['rss_before_mib']:.0f} MiB); all finished in {figures['finish_s']:.2f} s",
                flush=True,
            )


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--backend", nargs="+", default=["sqlite", "postgres"], choices=["sqlite", "postgres"])
    parser.add_argument("--sequence", type=int, nargs="*", default=[100, 1000, 10000])
    parser.add_argument("--fan-out", type=int, nargs="*", default=[1000, 20000])
    parser.add_argument("--throughput", type=int, default=1000, help="1-activity orchestrations at once (0: skip)")
    parser.add_argument("--held", type=int, default=10000, help="waiting executions for the RSS figure (0: skip)")
    parser.add_argument("--before-limit", type=int, default=1000, help="largest N run without the cache")
    parser.add_argument("--child-hold", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child_hold:
        backend, count, cached = args.child_hold
        print(json.dumps(await hold(backend, cached == "cached", int(count))))
        return
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, load {os.getloadavg()}")
    for backend in args.backend:
        await run_backend(backend, args)


if __name__ == "__main__":
    asyncio.run(main())
