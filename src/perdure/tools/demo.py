"""``perdure demo``: provision a small cloud environment durably, and survive a killed worker.

The orchestration creates a resource group, then a virtual network and a storage account in
parallel (the storage API is flaky: its first attempt fails and a retry policy handles it), then
a virtual machine, and finally waits durably for an operator's approval.

The demo runs the worker in a separate process and kills it (SIGKILL) while the virtual machine
is being created. A new worker takes over from the history: the finished steps are not run again.
Each activity appends a line to a run log beside the database, which the demo reads at the end to
show how often each step really ran.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Registry,
    RetryPolicy,
    Runtime,
    RuntimeOptions,
    SqliteProvider,
)
from perdure.engine.events import ActivityCompleted, ActivityFailed, ActivityScheduled, HistoryEvent

__all__ = ["registry", "run_demo"]

registry = Registry()
_STEP_SECONDS = float(os.environ.get("PERDURE_DEMO_STEP_SECONDS", "0.6"))


def _run_log(ctx: ActivityContext, detail: str) -> None:
    """Record that an activity really ran (the demo counts these lines at the end)."""
    log = os.environ.get("PERDURE_DEMO_RUN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{ctx.name}\t{ctx.attempt}\t{detail}\t{os.getpid()}\n")


@registry.activity("CreateResourceGroup")
async def create_resource_group(ctx: ActivityContext, spec: dict[str, Any]) -> str:
    _run_log(ctx, "start")
    await asyncio.sleep(_STEP_SECONDS)
    return f"/subscriptions/demo/resourceGroups/{spec['name']}"


@registry.activity("CreateVirtualNetwork")
def create_virtual_network(ctx: ActivityContext, group: str) -> str:
    _run_log(ctx, "start")
    time.sleep(_STEP_SECONDS * 1.5)  # a blocking SDK call: plain `def` activities run in a thread pool
    return f"{group}/providers/Network/virtualNetworks/vnet-demo"


@registry.activity("CreateStorageAccount")
async def create_storage_account(ctx: ActivityContext, group: str) -> str:
    _run_log(ctx, "start")
    await asyncio.sleep(_STEP_SECONDS)
    if ctx.attempt == 1:
        raise ConnectionError("storage API answered 503 Service Unavailable")
    return f"{group}/providers/Storage/storageAccounts/stdemo"


@registry.activity("CreateVirtualMachine")
async def create_virtual_machine(ctx: ActivityContext, spec: dict[str, Any]) -> str:
    _run_log(ctx, "start")
    await asyncio.sleep(_STEP_SECONDS * 3)
    return f"{spec['group']}/providers/Compute/virtualMachines/vm-demo"


@registry.orchestration("ProvisionEnvironment")
async def provision_environment(ctx: OrchestrationContext, spec: dict[str, Any]) -> dict[str, Any]:
    """Resource group → (virtual network ‖ storage account) → VM → approval."""
    ctx.set_custom_status("creating resource group")
    group = await ctx.call_activity("CreateResourceGroup", spec)
    ctx.set_custom_status("creating network and storage")
    retry = RetryPolicy(max_attempts=4, initial_interval=0.5, backoff_coefficient=2.0)
    network, storage = await ctx.when_all(
        [
            ctx.call_activity("CreateVirtualNetwork", group),
            ctx.call_activity("CreateStorageAccount", group, retry=retry),
        ]
    )
    ctx.set_custom_status("creating virtual machine")
    vm = await ctx.call_activity("CreateVirtualMachine", {"group": group, "network": network, "storage": storage})
    ctx.set_custom_status("waiting for approval")
    approval = ctx.wait_for_event("Approval")
    timeout = ctx.create_timer(3600)
    if await ctx.when_any([approval, timeout]) is timeout:
        raise TimeoutError("nobody approved the environment within an hour")
    return {"group": group, "network": network, "storage": storage, "vm": vm, "approved_by": approval.result()}


# --- the worker process ------------------------------------------------------------------------------


async def _work(db: str) -> None:
    provider = await SqliteProvider.open(db)
    # Short locks, so the replacement worker takes over the killed one's work within seconds.
    options = RuntimeOptions(lock_seconds=2.0, activity_lock_seconds=2.0)
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Runtime(provider, registry, options):
        await stop.wait()  # until SIGTERM (graceful) or SIGKILL (the crash the demo shows)
    await provider.close()


# --- the show ----------------------------------------------------------------------------------------


class _Screen:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:5.1f}s] {text}", flush=True)


def _start_worker(db: Path, run_log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PERDURE_DEMO_RUN_LOG": str(run_log)}
    return subprocess.Popen([sys.executable, "-m", "perdure.tools.demo", "--worker", str(db)], env=env)


def _describe(event: HistoryEvent, names: dict[int, str]) -> str | None:
    if isinstance(event, ActivityScheduled):
        names[event.event_id] = event.name
        retry = f" (attempt {event.attempt})" if event.attempt > 1 else ""
        return f"→ {event.name} scheduled{retry}"
    if isinstance(event, ActivityCompleted):
        return f"✔ {names.get(event.source_event_id, '?')} done: {event.result}"
    if isinstance(event, ActivityFailed):
        return (
            f"✘ {names.get(event.source_event_id, '?')} failed: {event.error.message} — retrying after a durable timer"
        )
    return None


async def run_demo(db: Path) -> int:
    """Run the whole demo on the SQLite file ``db``; returns the process exit code."""
    for suffix in ("", "-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    run_log = db.with_name(db.name + ".runs.log")
    run_log.unlink(missing_ok=True)
    screen = _Screen()
    provider = await SqliteProvider.open(db)
    client = Client(provider)
    instance_id = "provision-demo"
    screen.say(f"perdure demo — orchestrations stored in {db}")
    worker = _start_worker(db, run_log)
    screen.say(f"worker process {worker.pid} started")
    await client.start_orchestration(instance_id, "ProvisionEnvironment", {"name": "rg-demo", "region": "westeurope"})
    screen.say(f"started orchestration {instance_id!r}")
    shown, names = 0, dict[int, str]()
    killed = approved = False
    try:
        while True:
            # State first, then history: the history shown is then at least as new as the state acted on.
            state = await client.get_status(instance_id)
            assert state is not None
            history = await client.get_history(instance_id)
            for event in history[shown:]:
                line = _describe(event, names)
                if line:
                    screen.say(line)
            shown = len(history)
            if state.status.is_terminal:
                break
            runs = run_log.read_text(encoding="utf-8") if run_log.exists() else ""
            if not killed and "CreateVirtualMachine" in runs:
                await asyncio.sleep(_STEP_SECONDS)  # let it get well into the step
                worker.send_signal(signal.SIGKILL)
                worker.wait()
                killed = True
                screen.say(f"💥 killed worker {worker.pid} (SIGKILL) in the middle of CreateVirtualMachine")
                worker = _start_worker(db, run_log)
                screen.say(f"worker process {worker.pid} started; it resumes from the history once the lock expires")
            if state.custom_status == "waiting for approval" and not approved:
                screen.say("⏸ the orchestration waits durably for approval; approving as 'operator'")
                await client.raise_event(instance_id, "Approval", "operator")
                approved = True
            await provider.wait_for_state_change(instance_id, 0.2)
        final = await client.get_status(instance_id)
        assert final is not None
        if final.status is not OrchestrationStatus.COMPLETED:
            screen.say(f"orchestration ended {final.status.value}: {final.error}")
            return 1
        screen.say(f"✔ orchestration COMPLETED: {final.output}")
        counts = Counter(line.split("\t")[0] for line in run_log.read_text(encoding="utf-8").splitlines())
        screen.say("how often each step really ran:")
        for step in ("CreateResourceGroup", "CreateVirtualNetwork", "CreateStorageAccount", "CreateVirtualMachine"):
            why = {
                "CreateStorageAccount": "its first attempt failed and was retried",
                "CreateVirtualMachine": "the crash interrupted it, so it ran again: activities run at least once",
            }.get(step, "finished before the crash, never repeated")
            screen.say(f"   {step:22s} {counts[step]}×  ({why})")
        return 0
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            worker.kill()
        await provider.close()


if __name__ == "__main__":  # the worker process the demo starts
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        asyncio.run(_work(sys.argv[2]))
