"""The DESIGN.md §8 shapes on PostgreSQL, with 1, 2 and 4 ``perdure worker`` processes.

Run: ``python benchmarks/postgres.py [--url postgresql://postgres@127.0.0.1:5432/test] [--workers 1 2 4]
[--pin]``. Each worker count gets a fresh schema (dropped afterwards) and real worker subprocesses
started with the console command; the client runs in this process. Every shape checks that every
instance COMPLETED with the right output.

Each shape also reports the CPU time spent per orchestration or activity by the database backends
serving the benchmark (found by their ``application_name``) and by the worker processes: the
database's share is the serial point, and ``cores / ms per unit`` bounds what a machine with
more cores can reach. ``--pin`` pins those backends to the first CPU and the workers and the
client to the others (round robin), so that the two sides do not share a core.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
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


def cpu_seconds(pids: list[int]) -> dict[int, float]:
    """User plus system CPU seconds of each process still alive (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return found


class Cpu:
    """The CPU the database backends of one run (by application name) and its workers spend."""

    def __init__(self, admin_url: str, application: str, workers: list[int], pin: bool) -> None:
        self.admin_url, self.application, self.workers, self.pin = admin_url, application, workers, pin
        self._before: dict[int, float] = {}

    async def backends(self) -> list[int]:
        import psycopg

        async with await psycopg.AsyncConnection.connect(self.admin_url, autocommit=True) as conn:
            cursor = await conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (self.application,)
            )
            return [int(row[0]) for row in await cursor.fetchall()]

    async def start(self) -> None:
        backends = await self.backends()
        if self.pin:
            pin(backends, self.workers)
        self._before = cpu_seconds(backends + self.workers)

    async def spent(self) -> tuple[float, float]:
        """Seconds of CPU since ``start``: (database backends, workers)."""
        backends = await self.backends()
        now = cpu_seconds(backends + self.workers)
        server = sum(now.get(pid, 0.0) - self._before.get(pid, 0.0) for pid in backends)
        workers = sum(now.get(pid, 0.0) - self._before.get(pid, 0.0) for pid in self.workers)
        return server, workers


CPUS = sorted(os.sched_getaffinity(0))
"""The CPUs this benchmark may use, read before it pins itself to some of them."""


def pin(backends: list[int], workers: list[int]) -> None:
    """The database backends on the first CPU; the workers and this process on the others."""
    cpus = CPUS
    if len(cpus) < 2:
        raise SystemExit("--pin needs at least two CPUs")
    for pid in backends:
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {cpus[0]})
    rest = cpus[1:]
    for n, pid in enumerate([os.getpid(), *workers]):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(pid, {rest[n % len(rest)]})


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
    application = f"perdure-{schema}"
    own_url = f"{url}{'&' if '?' in url else '?'}application_name={application}"
    provider = await PostgresProvider.connect(own_url, schema=schema, max_size=20)
    client = Client(provider)
    figures: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as logs:
        processes = start_workers(f"{own_url}&schema={schema}", workers, Path(logs))
        cpu = Cpu(url, application, [p.pid for p in processes], args.pin)
        try:
            await warm_up(client)

            async def measured(name: str, units: int, run: Callable[[], Awaitable[None]]) -> None:
                await cpu.start()
                began = time.perf_counter()
                await run()
                figures[f"{name}_s"] = time.perf_counter() - began
                server, worker = await cpu.spent()
                figures[f"{name}_server_ms"] = server * 1000 / units
                figures[f"{name}_worker_ms"] = worker * 1000 / units

            samples = []

            async def latency() -> None:
                for n in range(args.latency_runs):
                    began = time.perf_counter()
                    await client.start_orchestration(f"latency-{n}", "One", n)
                    await check(client, f"latency-{n}", n + 1)
                    samples.append(time.perf_counter() - began)

            await measured("latency", args.latency_runs, latency)
            figures["latency_median_ms"] = statistics.median(samples) * 1000
            figures["latency_p95_ms"] = statistics.quantiles(samples, n=20)[18] * 1000

            async def throughput() -> None:
                for at in range(0, args.throughput, 100):
                    batch = range(at, min(at + 100, args.throughput))
                    await asyncio.gather(*(client.start_orchestration(f"t-{n}", "One", n) for n in batch))
                await asyncio.gather(*(check(client, f"t-{n}", n + 1) for n in range(args.throughput)))

            await measured("throughput", args.throughput, throughput)
            figures["throughput_per_s"] = args.throughput / figures["throughput_s"]

            async def fan() -> None:
                await client.start_orchestration("fan-out", "FanOut", args.fan_out)
                await check(client, "fan-out", sum(range(1, args.fan_out + 1)))

            await measured("fan_out", args.fan_out, fan)

            async def sequential() -> None:
                await client.start_orchestration("sequence", "Sequence", args.sequence)
                await check(client, "sequence", args.sequence)

            await measured("sequence", args.sequence, sequential)
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
    parser.add_argument("--pin", action="store_true", help="database backends on one CPU, workers on the others")
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
        print(
            "  CPU ms per unit, database backends / workers: "
            + "; ".join(
                f"{name} {figures[f'{name}_server_ms']:.2f} / {figures[f'{name}_worker_ms']:.2f}"
                for name in ("latency", "throughput", "fan_out", "sequence")
            ),
            flush=True,
        )
    base = results[args.workers[0]]["throughput_per_s"]
    for count in args.workers[1:]:
        print(
            f"throughput scaling {args.workers[0]} → {count} workers: {results[count]['throughput_per_s'] / base:.2f}×"
        )


if __name__ == "__main__":
    asyncio.run(main())
