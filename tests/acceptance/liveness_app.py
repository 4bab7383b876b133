"""The registry the liveness tests run in ``perdure worker`` processes.

Each activity appends ``<event> <pid> <time.time()> <details>`` lines to the file named by
``PERDURE_TEST_LOG``, so a test can tell which process ran what, when, and from where it resumed.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from perdure import ActivityContext, OrchestrationContext, Registry

registry = Registry()


def log(event: str, details: Any = None) -> None:
    line = f"{event} {os.getpid()} {time.time():.3f} {json.dumps(details)}\n".encode()
    fd = os.open(os.environ["PERDURE_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one short write: lines of several processes never mix
    finally:
        os.close(fd)


@registry.activity("BlockTheLoop")
async def block_the_loop(ctx: ActivityContext, seconds: float) -> int:
    """An ``async def`` that calls something blocking: its event loop stalls for ``seconds``."""
    log("start")
    time.sleep(seconds)  # noqa: ASYNC251 - the mistake this test is about
    log("end")
    return os.getpid()


@registry.activity("Work")
async def work(ctx: ActivityContext, seconds: float) -> int:
    log("start")
    await asyncio.sleep(seconds)
    log("end")
    return os.getpid()


@registry.activity("CountTo")
async def count_to(ctx: ActivityContext, spec: dict[str, Any]) -> dict[str, Any]:
    """Count to ``spec["to"]``, a step every ``spec["pause"]`` seconds, resuming where a dead run got to."""
    resumed = ctx.heartbeat_details
    log("start", resumed)
    first = resumed["next"] if resumed else 0
    for n in range(first, spec["to"]):
        await asyncio.sleep(spec["pause"])
        ctx.heartbeat({"next": n + 1})
        log("step", n + 1)
    return {"resumed_from": first, "pid": os.getpid()}


@registry.orchestration("Run")
async def run(ctx: OrchestrationContext, spec: dict[str, Any]) -> Any:
    return await ctx.call_activity(spec["activity"], spec["input"])
