"""Helpers of the operator-tool tests: a small registry, a store seeded with one instance per status, the CLI."""

from __future__ import annotations

import asyncio
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Registry,
    Runtime,
    RuntimeOptions,
    SqliteProvider,
)

FAST = RuntimeOptions(idle_timeout=1.0, dispatch_backoff=0.01, max_dispatch_backoff=0.05)

# Flipped by a test to make "Flaky" succeed after it has failed once (the runtime runs in the test process).
FLAKY = {"fail": True}

registry = Registry()


@registry.activity("Greet")
async def greet(ctx: ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


@registry.activity("Charge")
async def charge(ctx: ActivityContext, amount: int) -> str:
    if FLAKY["fail"]:
        raise RuntimeError(f"card declined for {amount}")
    return f"charged {amount}"


@registry.orchestration("Greeting")
async def greeting(ctx: OrchestrationContext, name: str) -> str:
    ctx.set_custom_status({"step": "greeting"})
    text = str(await ctx.call_activity("Greet", name))
    await ctx.create_timer(0.05)
    return text


@registry.orchestration("Flaky")
async def flaky(ctx: OrchestrationContext, amount: int) -> list[str]:
    first = str(await ctx.call_activity("Greet", "shop"))
    return [first, str(await ctx.call_activity("Charge", amount))]


@registry.orchestration("Waiter")
async def waiter(ctx: OrchestrationContext, _: Any) -> Any:
    ctx.set_custom_status("waiting for approval")
    return await ctx.wait_for_event("approve")


@registry.orchestration("Parent")
async def parent(ctx: OrchestrationContext, names: list[str]) -> list[str]:
    results = []
    for n, name in enumerate(names):
        child = f"{ctx.instance_id}-child-{n}"
        results.append(str(await ctx.call_sub_orchestration("Greeting", name, instance_id=child)))
    return results


@registry.orchestration("Boss")
async def boss(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.call_sub_orchestration("Waiter", instance_id=f"{ctx.instance_id}-worker")


@dataclass
class Seeded:
    """The seeded instance id of each status."""

    completed: str = "order-completed"
    failed: str = "order-failed"
    running: str = "order-running"
    suspended: str = "order-suspended"
    terminated: str = "order-terminated"
    pending: str = "order-pending"
    parent: str = "family"


async def wait_status(client: Client, instance_id: str, status: OrchestrationStatus, timeout: float = 10.0) -> None:
    """Wait until the instance reaches ``status`` (or fail with what it is instead)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        state = await client.get_status(instance_id)
        if state is not None and state.status is status:
            return
        if loop.time() > deadline:
            raise AssertionError(f"{instance_id} is {state and state.status}, not {status} after {timeout} s")
        await client.provider.wait_for_state_change(instance_id, 0.05)


def create_store(path: Path) -> None:
    """An empty store at ``path`` (the operator tools open only a store that exists), from any thread."""

    async def create() -> None:
        provider = await SqliteProvider.open(path)
        await provider.close()

    # On a thread of its own: the caller's thread may be running an event loop already.
    with ThreadPoolExecutor(1) as thread:
        thread.submit(asyncio.run, create()).result()


async def seed(path: Path) -> Seeded:
    """Fill a new SQLite store with one instance of each status and a parent with two children."""
    ids = Seeded()
    FLAKY["fail"] = True
    provider = await SqliteProvider.open(path)
    try:
        client = Client(provider)
        async with Runtime(provider, registry, FAST):
            await client.start_orchestration(ids.completed, "Greeting", "Ada")
            await client.start_orchestration(ids.failed, "Flaky", 42)
            for instance_id in (ids.running, ids.suspended, ids.terminated):
                await client.start_orchestration(instance_id, "Waiter")
            await client.start_orchestration(ids.parent, "Parent", ["Bo", "Cy"])
            await client.wait_for_orchestration(ids.completed, timeout=10)
            await client.wait_for_orchestration(ids.failed, timeout=10)
            await client.wait_for_orchestration(ids.parent, timeout=10)
            for instance_id in (ids.running, ids.suspended, ids.terminated):
                await wait_status(client, instance_id, OrchestrationStatus.RUNNING)
            await client.suspend(ids.suspended, "maintenance")
            await client.terminate(ids.terminated, "customer cancelled")
            await wait_status(client, ids.suspended, OrchestrationStatus.SUSPENDED)
            await client.wait_for_orchestration(ids.terminated, timeout=10)
        # No runtime runs any more: this one stays PENDING.
        await client.start_orchestration(ids.pending, "Greeting", "Dee")
    finally:
        await provider.close()
    return ids


@dataclass
class Result:
    code: int
    out: str
    err: str


async def cli(*args: str, db: Path | None = None, env: dict[str, str] | None = None, timeout: float = 30) -> Result:
    """Run ``python -m perdure ARGS`` (the real entry point) with ``PERDURE_DB`` pointing at ``db``."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith("PERDURE_")}
    if db is not None:
        environment["PERDURE_DB"] = f"sqlite:///{db}"
    environment.update(env or {})
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "perdure",
        *args,
        env=environment,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout)
    assert process.returncode is not None
    return Result(process.returncode, out.decode(), err.decode())
