"""The DESIGN.md §8 shapes on PostgreSQL, with 1, 2 and 4 ``perdure worker`` processes.

Run: ``python benchmarks/postgres.py [--url postgresql://postgres@127.0.0.1:5432/test] [--workers 1 2 4]
[--pin] [--server-cpus 1]``. Each worker count gets a fresh schema (dropped afterwards) and real
worker subprocesses started with the console command; the client runs in this process. Every
shape checks that every instance COMPLETED with the right output.

Layouts: ``shared`` leaves every process where the kernel puts it. ``--pin`` also runs, for each
worker count right after the shared run, the ``pinned`` layout: the database backends serving
this run (found by their ``application_name``, pinned as they appear; the server and its other
backends are left alone) and the client process on the first ``--server-cpus`` CPUs, and the
worker processes (started with ``taskset``) on the others, round robin.

Each shape reports the CPU time spent per orchestration or activity by those database backends
(the client's and the workers'), the workers and the client, and a sample of what the backends
were doing every 20 ms (``pg_stat_activity``: on a CPU, waiting for a lock, for the WAL, for
their client; which statement): see ``pg_watch.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pg_watch import FUNCTION_STATS, Watch, cpu_busy, cpu_seconds, pin_process

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


def worker_command(url: str, cpu: int | None) -> list[str]:
    command = [sys.executable, "-m", "perdure", "worker", "postgres:registry", "--db", url, "--log-level", "WARNING"]
    return command if cpu is None else ["taskset", "-c", str(cpu), *command]


def start_workers(url: str, count: int, layout: Layout, logs: Path) -> list[subprocess.Popen[bytes]]:
    processes = []
    for n in range(count):
        cpu = None if layout.worker_cpus is None else layout.worker_cpus[n % len(layout.worker_cpus)]
        with (logs / f"worker-{n}.err").open("w") as err:
            processes.append(
                subprocess.Popen(
                    worker_command(url, cpu), cwd=Path(__file__).parent, stdout=subprocess.DEVNULL, stderr=err
                )
            )
    return processes


def stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        process.send_signal(signal.SIGTERM)
    for process in processes:
        process.wait(timeout=30)


@dataclass(frozen=True)
class Layout:
    """Where the processes run: ``None`` leaves them to the kernel."""

    name: str
    server_cpus: set[int] | None = None
    worker_cpus: list[int] | None = None


CPUS = sorted(os.sched_getaffinity(0))
"""The CPUs this benchmark may use, read before it pins itself to some of them."""


def layouts(args: argparse.Namespace) -> list[Layout]:
    found = [Layout("shared")]
    if args.pin:
        if len(CPUS) <= args.server_cpus:
            raise SystemExit(f"--pin needs more than {args.server_cpus} CPUs")
        found.append(Layout("pinned", set(CPUS[: args.server_cpus]), CPUS[args.server_cpus :]))
    return found


async def check(client: Client, instance_id: str, expected: Any, timeout: float = 300) -> None:
    state = await client.wait_for_orchestration(instance_id, timeout=timeout)
    if state.status is not OrchestrationStatus.COMPLETED or state.output != expected:
        raise SystemExit(f"{instance_id}: {state.status.value} {state.output!r} (expected {expected!r})")


async def warm_up(client: Client) -> None:
    """Wait until the workers run orchestrations (they have connected and migrated)."""
    await client.start_orchestration("warm-up", "One", 0)
    await check(client, "warm-up", 1, timeout=60)


class Meter:
    """CPU seconds since ``start``: the run's database backends (by role), its workers and this process."""

    def __init__(self, watch: Watch, workers: list[int]) -> None:
        self.watch, self.workers = watch, workers
        self._before: dict[int, float] = {}
        self._client = 0.0
        self._cores: list[tuple[int, int]] = []

    def _client_cpu(self) -> float:
        times = os.times()
        return times.user + times.system - self.watch.thread_cpu

    def start(self) -> None:
        self._before = cpu_seconds([*self.watch.backends(), *self.workers])
        self._client = self._client_cpu()
        self._cores = cpu_busy()

    def cores(self) -> list[float]:
        """How busy each CPU was since ``start`` (0 to 1), by every process on the machine."""
        return [
            (busy - busy0) / max(total - total0, 1)
            for (busy, total), (busy0, total0) in zip(cpu_busy(), self._cores, strict=True)
        ]

    def spent(self) -> dict[str, float]:
        roles = self.watch.backends()
        now = cpu_seconds([*roles, *self.workers])
        spent = {pid: now[pid] - self._before.get(pid, 0.0) for pid in now}
        return {
            "client_backends": sum(spent.get(pid, 0.0) for pid, role in roles.items() if role == "client"),
            "worker_backends": sum(spent.get(pid, 0.0) for pid, role in roles.items() if role == "worker"),
            "workers": sum(spent.get(pid, 0.0) for pid in self.workers),
            "client": self._client_cpu() - self._client,
        }


def named(url: str, application: str) -> str:
    return f"{url}{'&' if '?' in url else '?'}application_name={application}"


async def bench(url: str, workers: int, layout: Layout, args: argparse.Namespace) -> dict[str, Any]:
    schema = f"bench_{uuid.uuid4().hex[:8]}"
    pin_process(os.getpid(), layout.server_cpus or set(CPUS))
    watch = Watch(url, schema, layout.server_cpus)
    watch.start()
    provider = await PostgresProvider.connect(named(url, f"perdure-{schema}-client"), schema=schema, max_size=20)
    client = Client(provider)
    figures: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as logs:
        worker_url = f"{named(url, f'perdure-{schema}-worker')}&schema={schema}"
        processes = start_workers(worker_url, workers, layout, Path(logs))
        meter = Meter(watch, [p.pid for p in processes])
        try:
            await warm_up(client)

            async def measured(name: str, units: int, run: Callable[[], Awaitable[None]]) -> None:
                meter.start()
                watch.take()
                began = time.perf_counter()
                await run()
                figures[f"{name}_s"] = time.perf_counter() - began
                figures[f"{name}_samples"] = watch.take()
                figures[f"{name}_cpu_ms"] = {side: cpu * 1000 / units for side, cpu in meter.spent().items()}
                figures[f"{name}_cores"] = meter.cores()

            await run_shapes(client, measured, figures, args)
        finally:
            stop_workers(processes)
            await provider.close()
            watch.stop()
            import psycopg

            await asyncio.sleep(0.5)  # backends report their function counts as they exit
            async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                cursor = await conn.execute(FUNCTION_STATS, (schema,))
                figures["functions"] = await cursor.fetchall()
                await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')  # type: ignore[arg-type]
    return figures


Measured = Callable[[str, int, Callable[[], Awaitable[None]]], Awaitable[None]]


async def run_shapes(client: Client, measured: Measured, figures: dict[str, Any], args: argparse.Namespace) -> None:
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
    figures["fan_out_per_s"] = args.fan_out / figures["fan_out_s"]

    async def sequential() -> None:
        await client.start_orchestration("sequence", "Sequence", args.sequence)
        await check(client, "sequence", args.sequence)

    await measured("sequence", args.sequence, sequential)


SHAPES = ("latency", "throughput", "fan_out", "sequence")
UNITS: dict[str, Callable[[argparse.Namespace], int]] = {
    "latency": lambda args: args.latency_runs,
    "throughput": lambda args: args.throughput,
    "fan_out": lambda args: args.fan_out,
    "sequence": lambda args: args.sequence,
}


def report(layout: Layout, count: int, figures: dict[str, Any], args: argparse.Namespace) -> None:
    print(
        f"{layout.name}, {count} worker(s): latency median {figures['latency_median_ms']:.1f} ms "
        f"(p95 {figures['latency_p95_ms']:.1f} ms); throughput {figures['throughput_per_s']:.0f} orchestrations/s "
        f"({args.throughput}); fan-out {args.fan_out} in {figures['fan_out_s']:.2f} s "
        f"({figures['fan_out_per_s']:.0f} activities/s); sequence {args.sequence} in "
        f"{figures['sequence_s']:.2f} s ({figures['sequence_s'] / args.sequence * 1000:.1f} ms per activity)"
    )
    print(
        "  CPU ms per unit, database backends (client's + workers') / workers / client;"
        " cores they kept busy; each CPU's busy share (everyone's work):"
    )
    for name in SHAPES:
        cpu, wall = figures[f"{name}_cpu_ms"], figures[f"{name}_s"]
        server = cpu["client_backends"] + cpu["worker_backends"]
        count = UNITS[name](args)
        busy = " / ".join(f"{ms * count / 1000 / wall:.2f}" for ms in (server, cpu["workers"], cpu["client"]))
        cores = " ".join(f"{share * 100:.0f} %" for share in figures[f"{name}_cores"])
        print(
            f"    {name}: {server:.2f} ({cpu['client_backends']:.2f} + {cpu['worker_backends']:.2f})"
            f" / {cpu['workers']:.2f} / {cpu['client']:.2f} ms; cores {busy}; CPUs {cores}"
        )
    print(
        "  notifications per unit (from at least that many notifying commits);"
        " backends, sampled every 20 ms (mean count per state):"
    )
    for name in SHAPES:
        samples, units = figures[f"{name}_samples"], UNITS[name](args)
        print(
            f"    {name}: {samples.notifications / units:.2f} ({samples.notifying_commits / units:.2f}); "
            f"{samples.describe()}"
        )
    calls = "; ".join(
        f"{name} {count} calls, {total / count:.3f} ms ({own / count:.3f} own)"
        for name, count, total, own in figures["functions"]
        if count
    )
    print(f"  server time per function call, whole run: {calls or 'not counted'}")
    sys.stdout.flush()


def summary(results: dict[tuple[str, int], list[dict[str, Any]]], args: argparse.Namespace) -> None:
    """Medians over the repeats, the scaling with workers in each layout and pinned against shared."""

    def median(name: str, count: int, key: str) -> float:
        return statistics.median(figures[key] for figures in results[name, count])

    first = args.workers[0]
    names = [name for name in ("shared", "pinned") if (name, first) in results]
    print(f"\nsummary, medians of {args.repeat} run(s) of each line:")
    for name in names:
        for key, unit in (
            ("throughput_per_s", "orchestrations/s"),
            ("fan_out_per_s", "activities/s"),
            ("latency_median_ms", "ms"),
        ):
            line = ", ".join(f"{count}: {median(name, count, key):.1f}" for count in args.workers)
            ratios = ", ".join(
                f"{first}→{count} {median(name, count, key) / median(name, first, key):.2f}×"
                for count in args.workers[1:]
            )
            print(f"  {name} {key.removesuffix('_per_s')} ({unit}) by workers: {line}; {ratios}")
    if len(names) == 2:
        for count in args.workers:
            ratios = ", ".join(
                f"{key.removesuffix('_per_s')} {median('pinned', count, key) / median('shared', count, key):.2f}×"
                for key in ("throughput_per_s", "fan_out_per_s", "latency_median_ms")
            )
            print(f"  pinned / shared, {count} worker(s): {ratios}")


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
    parser.add_argument("--pin", action="store_true", help="also run each worker count with pinned processes")
    parser.add_argument("--repeat", type=int, default=1, help="runs of every line; the summary takes medians")
    parser.add_argument("--server-cpus", type=int, default=1, help="CPUs for the database backends and the client")
    args = parser.parse_args()
    # A session setting of this run's own connections (and its workers', which inherit it).
    os.environ["PGOPTIONS"] = f"{os.environ.get('PGOPTIONS', '')} -c track_functions=pl".strip()
    print(
        f"{platform.machine()}, {len(CPUS)} CPUs, Python {platform.python_version()}; "
        f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        flush=True,
    )
    results: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for run in range(args.repeat):
        for count in args.workers:
            # Each layout first in every other run, so that neither always follows the other.
            for layout in layouts(args)[:: -1 if run % 2 else 1]:
                figures = await bench(args.url, count, layout, args)
                results.setdefault((layout.name, count), []).append(figures)
                report(layout, count, figures, args)
    summary(results, args)
    print(f"load average at the end {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    asyncio.run(main())
