"""Activities that take long, hang or lose a race: heartbeats, time limits and cancellation.

- ``Crunch`` reports its progress with ``ctx.heartbeat(done)``; if its worker died, the next run
  would find the last progress in ``ctx.heartbeat_details`` and go on from there.
- ``Fetch`` hangs on its first attempt; ``start_to_close`` fails that attempt after half a second
  (an ``ActivityTimeoutError``) and the retry policy runs a second one.
- ``Slow`` and ``Fast`` race in ``when_any``; the orchestration cancels the loser, which sees an
  ``asyncio.CancelledError`` in its task.

Run it: ``python examples/long_activities.py``.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from perdure import ActivityContext, Client, OrchestrationContext, Registry, RetryPolicy, Runtime, SqliteProvider

registry = Registry()
cancelled: list[str] = []  # what the losing activity saw, for the printout


@registry.activity("Crunch")
def crunch(ctx: ActivityContext, items: int) -> int:
    done = ctx.heartbeat_details or 0  # where an earlier run of this attempt got to, if it died
    total = sum(range(done))
    for item in range(done, items):
        time.sleep(0.005)  # the real work
        total += item
        ctx.heartbeat(item + 1)  # cheap: stored in the background every few seconds
    return total


@registry.activity("Fetch")
async def fetch(ctx: ActivityContext, url: str) -> str:
    if ctx.attempt == 1:
        await asyncio.sleep(3600)  # a call that never answers: start_to_close ends this attempt
    return f"fetched {url} on attempt {ctx.attempt}"


@registry.activity("Slow")
async def slow(ctx: ActivityContext) -> str:
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        cancelled.append(ctx.name)
        raise
    return "slow"


@registry.activity("Fast")
async def fast(ctx: ActivityContext) -> str:
    return "fast"


@registry.orchestration("LongActivities")
async def long_activities(ctx: OrchestrationContext, items: int) -> dict[str, str | int]:
    total = await ctx.call_activity("Crunch", items, start_to_close=60, heartbeat_timeout=10)
    fetched = await ctx.call_activity(
        "Fetch",
        "https://example.org/report",
        start_to_close=0.5,
        retry=RetryPolicy(max_attempts=3, initial_interval=0.1),
    )
    slow_task, fast_task = ctx.call_activity("Slow"), ctx.call_activity("Fast")
    winner = await ctx.when_any([slow_task, fast_task])
    slow_task.cancel()  # the loser is not wanted any more: its worker stops it
    return {"crunch": total, "fetch": fetched, "race": winner.result()}


async def main() -> None:
    with tempfile.TemporaryDirectory() as folder:
        provider = await SqliteProvider.open(Path(folder) / "long.db")
        async with Runtime(provider, registry):
            client = Client(provider)
            await client.start_orchestration("long-1", "LongActivities", 100)
            state = await client.wait_for_orchestration("long-1", timeout=60)
            for _ in range(100):  # the cancellation reaches the running activity within a second
                if cancelled:
                    break
                await asyncio.sleep(0.05)
        await provider.close()
    output = state.output
    print(f"status: {state.status.value}")
    print(f"crunch: {output['crunch']}")
    print(f"fetch: {output['fetch']}")
    print(f"race: {output['race']} won; cancelled: {', '.join(cancelled) or 'nothing'}")


if __name__ == "__main__":
    asyncio.run(main())
