"""The registry the PostgreSQL scale-out tests run in ``perdure worker`` processes.

Activities report which process ran them. With ``PERDURE_TEST_LOG_DIR`` set, each activity also
appends ``start``/``end`` lines to a file named after its process, so a test can tell which work a
killed worker had in hand.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

from perdure import ActivityContext, OrchestrationContext, Registry

registry = Registry()


def _log(event: str, key: str) -> None:
    directory = os.environ.get("PERDURE_TEST_LOG_DIR")
    if directory:
        with open(Path(directory) / f"{os.getpid()}.log", "a") as log:
            log.write(f"{event} {key}\n")


@registry.activity("Square")
async def square(ctx: ActivityContext, job: dict[str, Any]) -> dict[str, Any]:
    key = f"{ctx.instance_id}/{job['n']}"
    _log("start", key)
    if job.get("delay"):
        await asyncio.sleep(job["delay"])
    _log("end", key)
    return {"value": job["n"] * job["n"], "worker": os.getpid()}


@registry.orchestration("FanOut")
async def fan_out(ctx: OrchestrationContext, spec: dict[str, Any]) -> dict[str, Any]:
    """Square ``width`` numbers in parallel, then ``steps`` more one after another."""
    base, delay = spec["base"], spec.get("delay", 0)
    jobs = [ctx.call_activity("Square", {"n": base + k, "delay": delay}) for k in range(spec["width"])]
    results = list(await ctx.when_all(jobs))
    for k in range(spec.get("steps", 0)):
        results.append(await ctx.call_activity("Square", {"n": base + spec["width"] + k, "delay": delay}))
    return {"sum": sum(r["value"] for r in results), "workers": sorted({r["worker"] for r in results})}


def expected_sum(spec: dict[str, Any]) -> int:
    """What ``FanOut`` returns as ``sum`` for ``spec``."""
    return sum((spec["base"] + k) ** 2 for k in range(spec["width"] + spec.get("steps", 0)))
