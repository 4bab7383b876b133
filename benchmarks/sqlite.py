"""Benchmarks of the DESIGN.md §8 shapes on an embedded SQLite file.

Run: ``python benchmarks/sqlite.py [--synchronous NORMAL|FULL] [--quick]``. Every shape checks that
every instance COMPLETED with the right output before it reports a figure.

``--payload-overhead`` measures instead what the data converter costs for plain JSON inputs: the
throughput, latency and sequence shapes run in alternating rounds with the converter as shipped
and with payloads handled as before it (checked as JSON where given, never converted or decoded),
each round on a fresh file, and the medians are compared.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import statistics
import tempfile
import time
import timeit
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Registry,
    Runtime,
    SqliteProvider,
    _json,
)
from perdure._payloads import Payloads

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


@contextlib.contextmanager
def payloads_as_before() -> Iterator[None]:
    """Payloads handled as before the converter: ``check_json`` where given, nothing converted or decoded."""

    def to_json(self: Payloads, value: Any, what: str) -> Any:
        _json.check_json(value, what)
        return value

    def decode(self: Payloads, data: Any, type_: Any, what: str) -> Any:
        return data

    def receive(self: Payloads, stored: Any, type_: Any, what: str) -> Any:
        return stored

    saved = {name: getattr(Payloads, name) for name in ("to_json", "decode", "receive")}
    Payloads.to_json, Payloads.decode, Payloads.receive = to_json, decode, receive  # type: ignore[method-assign]
    try:
        yield
    finally:
        for name, method in saved.items():
            setattr(Payloads, name, method)


@contextlib.contextmanager
def time_inside_payloads(spent: list[float]) -> Iterator[None]:
    """Add to ``spent[0]`` the seconds spent in the entry points of payload handling (none nests in another)."""
    from perdure._payloads import _payloads
    from perdure.client._payloads import ClientPayloads
    from perdure.engine import _payload_fields
    from perdure.runtime._registry import ResultTypes

    targets: list[tuple[Any, str]] = [
        (Payloads, "to_json"),
        (Payloads, "receive"),
        (Payloads, "seal"),
        (ClientPayloads, "state"),
        (ResultTypes, "activity_result"),
        (ResultTypes, "orchestration_result"),
        (_payload_fields, "parameter_type"),
        (_payloads, "parameter_type"),
    ]
    saved = [(owner, name, getattr(owner, name)) for owner, name in targets]

    def timed(function: Any) -> Any:
        def call(*args: Any, **kwargs: Any) -> Any:
            began = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - began

        return call

    for owner, name, function in saved:
        setattr(owner, name, timed(function))
    try:
        yield
    finally:
        for owner, name, function in saved:
            setattr(owner, name, function)


async def _overhead_round(tmp: str, label: str, round_: int, scale: int) -> dict[str, float]:
    provider = await SqliteProvider.open(Path(tmp) / f"{label}-{round_}.db")
    client = Client(provider)
    figures: dict[str, float] = {}
    async with Runtime(provider, registry):
        started, cpu = time.perf_counter(), time.process_time()
        count = 1000 // scale
        await asyncio.gather(*(client.start_orchestration(f"tp-{i}", "One", i) for i in range(count)))
        await asyncio.gather(*(_check(client, f"tp-{i}", i) for i in range(count)))
        figures["throughput (orchestrations/s)"] = count / (time.perf_counter() - started)
        # CPU time is what the converter adds to; on a shared machine it is also the steadier figure.
        figures["CPU per orchestration (ms)"] = (time.process_time() - cpu) / count * 1000
        samples = []
        for i in range(100 // scale):
            began = time.perf_counter()
            await client.start_orchestration(f"latency-{i}", "One", i)
            await _check(client, f"latency-{i}", i)
            samples.append(time.perf_counter() - began)
        figures["latency median (ms)"] = statistics.median(samples) * 1000
        began = time.perf_counter()
        await client.start_orchestration("seq", "Sequence", 100 // scale)
        await _check(client, "seq", sum(range(100 // scale)))
        figures["sequence of 100 (ms per activity)"] = (time.perf_counter() - began) / (100 // scale) * 1000
    await provider.close()
    return figures


def _per_call() -> None:
    """What one value costs on its own, where the runtime converts and decodes it (steady on a busy machine)."""
    payloads, value, what = Payloads(), {"order": 17, "sku": "A7", "qty": [1, 2]}, "input of activity 'Echo'"
    calls = 100_000
    with payloads_as_before():
        before = timeit.timeit(lambda: payloads.to_json(value, what), number=calls) / calls * 1e6
    after = timeit.timeit(lambda: payloads.to_json(value, what), number=calls) / calls * 1e6
    decode = timeit.timeit(lambda: payloads.receive(value, dict, what), number=calls) / calls * 1e6
    print(
        f"  per value given: check_json {before:.2f} µs, converter {after:.2f} µs; per value received: {decode:.2f} µs"
    )


async def payload_overhead(rounds: int, scale: int) -> None:
    """Alternate rounds with and without the converter; print the medians and their ratios."""
    results: dict[str, list[dict[str, float]]] = {"before": [], "converter": []}
    with tempfile.TemporaryDirectory() as tmp:
        for round_ in range(rounds):
            # Which goes first alternates, so that neither profits from coming second (a warm process).
            for label in ("before", "converter") if round_ % 2 == 0 else ("converter", "before"):
                with payloads_as_before() if label == "before" else contextlib.nullcontext():
                    results[label].append(await _overhead_round(tmp, label, round_, scale))
    print(f"payload overhead, plain JSON inputs, {rounds} rounds of each, in alternating order (medians):")
    _per_call()
    spent = [0.0]
    with tempfile.TemporaryDirectory() as tmp, time_inside_payloads(spent):
        began = time.perf_counter()
        await _overhead_round(tmp, "timed", 0, scale)
        total = time.perf_counter() - began
    share = spent[0] / total
    print(f"  time inside payload handling, one more round: {spent[0] * 1000:.0f} ms of {total:.2f} s ({share:.1%})")
    for name in results["before"][0]:
        before = statistics.median(r[name] for r in results["before"])
        after = statistics.median(r[name] for r in results["converter"])
        # Throughput is better high, the others low: the cost is the ratio that says "slower".
        cost = before / after - 1 if name.startswith("throughput") else after / before - 1
        print(f"  {name}: before {before:.2f}, with the converter {after:.2f}: cost {cost * 100:+.1f} %")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--synchronous", choices=["NORMAL", "FULL"], default="NORMAL")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    parser.add_argument("--payload-overhead", action="store_true", help="the converter's cost on plain JSON")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of each, with --payload-overhead")
    args = parser.parse_args()
    scale = 10 if args.quick else 1
    if args.payload_overhead:
        await payload_overhead(args.rounds, scale)
        return
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
