"""``Client.list_instances`` over 100,000 instances on SQLite: first pages, filtered pages, deep pages.

Run: ``python benchmarks/list_instances.py [--count 100000]``. The instances are created through
the client in batches (concurrent starts share the loop), then given a mix of statuses by running
nothing but a direct status update, which is what the listing reads.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from perdure import Client, OrchestrationStatus, SqliteProvider

NAMES = ("Billing", "Shipping", "Provisioning", "Reporting")
STATUSES = (OrchestrationStatus.COMPLETED, OrchestrationStatus.RUNNING, OrchestrationStatus.FAILED)


async def timed(call: Callable[[], Awaitable[Any]], runs: int = 20) -> tuple[float, Any]:
    samples, result = [], None
    for _ in range(runs):
        started = time.perf_counter()
        result = await call()
        samples.append(time.perf_counter() - started)
    return statistics.median(samples) * 1000, result


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=100_000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        provider = await SqliteProvider.open(Path(tmp) / "list.db")
        client = Client(provider)
        started = time.perf_counter()
        for batch in range(0, args.count, 1000):
            await asyncio.gather(
                *(
                    client.start_orchestration(f"order-{n:06d}", NAMES[n % len(NAMES)], n)
                    for n in range(batch, min(batch + 1000, args.count))
                )
            )
        # Statuses as a real store would have them (the listing reads only the instances table).
        for index, status in enumerate(STATUSES):
            provider._db.execute(
                "UPDATE instances SET status = ? WHERE CAST(substr(instance_id, 7) AS INTEGER) % 3 = ?",
                (status.value, index),
            )
        print(f"{args.count:,} instances created in {time.perf_counter() - started:.1f} s")

        ms, page = await timed(lambda: client.list_instances(limit=100))
        assert [s.instance_id for s in page] == [f"order-{n:06d}" for n in range(100)]
        print(f"first page (100):                                  {ms:.2f} ms")

        ms, page = await timed(lambda: client.list_instances(status=OrchestrationStatus.FAILED, limit=100))
        assert len(page) == 100 and all(s.status is OrchestrationStatus.FAILED for s in page)
        print(f"filtered page (status=FAILED, 100):                {ms:.2f} ms")

        ms, page = await timed(
            lambda: client.list_instances(status=OrchestrationStatus.FAILED, name="Shipping", limit=100)
        )
        assert len(page) == 100 and all(s.name == "Shipping" and s.status is OrchestrationStatus.FAILED for s in page)
        print(f"filtered page (status=FAILED, name=Shipping, 100): {ms:.2f} ms")

        ms, page = await timed(lambda: client.list_instances(instance_id_prefix="order-0995", limit=100))
        assert len(page) == 100 and all(s.instance_id.startswith("order-0995") for s in page)
        print(f"id prefix page (100):                              {ms:.2f} ms")

        last = f"order-{args.count - 150:06d}"
        ms, page = await timed(lambda: client.list_instances(after=last, limit=100))
        assert page[0].instance_id == f"order-{args.count - 149:06d}" and len(page) == 100
        print(f"deep page (after the 99,850th, 100):               {ms:.2f} ms")

        total, after = 0, None
        started = time.perf_counter()
        while page := await client.list_instances(status=OrchestrationStatus.COMPLETED, limit=1000, after=after):
            total += len(page)
            after = page[-1].instance_id
        assert total == len(range(0, args.count, 3))
        print(f"every COMPLETED instance, 1,000 a page ({total:,}):  {time.perf_counter() - started:.2f} s")
        await provider.close()


if __name__ == "__main__":
    asyncio.run(main())
