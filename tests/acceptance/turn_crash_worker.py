"""The worker process of the crashing-turn test: a Runtime whose "Bad" orchestration kills it.

Usage: ``python turn_crash_worker.py STORE_URL``

"Bad" waits for the event ``go``; the turn that receives it ends the process with ``os._exit(137)``
(as an OOM kill would), unless ``PERDURE_FIXED=1`` says the code was fixed. "Healthy" runs a few
activities and timers, so that some of its turns are in flight whenever "Bad" takes the process
down.
"""

from __future__ import annotations

import asyncio
import os
import sys

from perdure import ActivityContext, OrchestrationContext, Registry, Runtime, RuntimeOptions, open_provider

FIXED = os.environ.get("PERDURE_FIXED") == "1"

# Both providers keep worker records here, so a dead worker's instances and activities come back
# worker_timeout after its last beat (lock_seconds plays no part): each crash costs about that long.
# Shorter would be quicker, but on a loaded machine a live worker's beats could then fall behind,
# and its own work come back to it as if it had died.
OPTIONS = RuntimeOptions(
    worker_timeout=10,
    orchestration_concurrency=8,
    activity_concurrency=8,
    idle_timeout=0.5,
    dispatch_backoff=0.05,
    max_dispatch_backoff=0.2,
    max_dispatch_attempts=4,
)

registry = Registry()


@registry.activity("Step")
async def step(ctx: ActivityContext, n: int) -> int:
    await asyncio.sleep(0.005)
    return n + 1


@registry.orchestration("Healthy")
async def healthy(ctx: OrchestrationContext, n: int) -> int:
    for _ in range(4):
        n = int(await ctx.call_activity("Step", n))
        await ctx.create_timer(0.2)
    return n


@registry.orchestration("Bad")
async def bad(ctx: OrchestrationContext, _: object) -> object:
    value = await ctx.wait_for_event("go")
    if not FIXED:
        os._exit(137)
    return value


async def main(url: str) -> None:
    provider = await open_provider(url)
    async with Runtime(provider, registry, OPTIONS):
        print(f"worker {os.getpid()} running, fixed={FIXED}", flush=True)
        await asyncio.Event().wait()  # until killed, or until "Bad" ends it


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
