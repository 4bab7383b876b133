"""``perdure demo``: provision a small cloud environment durably, and survive a killed worker.

The orchestration creates a resource group, then a virtual network and a storage account in
parallel (the storage API is flaky: its first attempt fails and a retry policy handles it), then
a virtual machine, and finally waits durably for an operator's approval.

The demo runs the worker in a separate process and kills it (SIGKILL) while the virtual machine
is being created. A new worker takes over from the history once the killed one's worker record is
stale (``RuntimeOptions.worker_timeout``, default options throughout), and the demo shows how long
that took; the finished steps are not run again. Each activity appends a line to a run log beside
the database, which the demo reads to see where and how often each step really ran.
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
    OrchestrationState,
    OrchestrationStatus,
    Provider,
    Registry,
    RetryPolicy,
    Runtime,
    RuntimeOptions,
    SqliteProvider,
)
from perdure.engine.events import ActivityCompleted, ActivityFailed, ActivityScheduled, HistoryEvent
from perdure.tools._run import open_store

__all__ = ["registry", "run_demo"]

registry = Registry()
_STEP_SECONDS = float(os.environ.get("PERDURE_DEMO_STEP_SECONDS", "0.6"))


def _run_log(ctx: ActivityContext, detail: str) -> None:
    """Record that an activity really ran (the demo counts these lines at the end)."""
    log = os.environ.get("PERDURE_DEMO_RUN_LOG")
    if log:
        with open(log, "a", encoding="utf-8") as out:
            out.write(f"{ctx.name}\t{ctx.attempt}\t{detail}\t{os.getpid()}\t{time.time():.3f}\n")


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
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    async with Runtime(provider, registry, RuntimeOptions()):
        await stop.wait()  # until SIGTERM (graceful) or SIGKILL (the crash the demo shows)
    await provider.close()


# --- the show ----------------------------------------------------------------------------------------


class _Screen:
    def __init__(self) -> None:
        self.start = time.monotonic()

    def say(self, text: str) -> None:
        print(f"[{time.monotonic() - self.start:5.1f}s] {text}", flush=True)


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


_INSTANCE = "provision-demo"
_WHY = {
    "CreateResourceGroup": "finished before the crash, never repeated",
    "CreateVirtualNetwork": "finished before the crash, never repeated",
    "CreateStorageAccount": "its first attempt failed and was retried",
    "CreateVirtualMachine": "the crash interrupted it, so it ran again: activities run at least once",
}


class _Show:
    """The demo's one instance, followed on screen, with the worker process it kills once."""

    def __init__(self, db: Path, provider: Provider, screen: _Screen) -> None:
        self.db = db
        self.run_log = db.with_name(db.name + ".runs.log")
        self.provider = provider
        self.client = Client(provider)
        self.screen = screen
        self.worker: subprocess.Popen[bytes] | None = None
        self.shown = 0
        self.names: dict[int, str] = {}
        self.killed_at: float | None = None  # when the crash happened (epoch seconds)
        self.recovered = self.approved = False

    def start_worker(self, note: str = "") -> None:
        env = {**os.environ, "PERDURE_DEMO_RUN_LOG": str(self.run_log)}
        command = [sys.executable, "-m", "perdure.tools.demo", "--worker", str(self.db)]
        self.worker = subprocess.Popen(command, env=env)
        self.screen.say(f"worker process {self.worker.pid} started{note}")

    def stop_worker(self) -> None:
        if self.worker is None:
            return
        self.worker.send_signal(signal.SIGTERM)
        try:
            self.worker.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.worker.kill()

    async def follow(self) -> OrchestrationState:
        """Show the history as it grows, crash the worker once and approve, until the instance ends."""
        while True:
            # State first, then history: the history shown is then at least as new as the state acted on.
            state = await self.client.get_status(_INSTANCE)
            assert state is not None
            for event in (await self.client.get_history(_INSTANCE))[self.shown :]:
                self.shown += 1
                line = _describe(event, self.names)
                if line:
                    self.screen.say(line)
            if state.status.is_terminal:
                return state
            await self._crash_once()
            self._show_recovery()
            if state.custom_status == "waiting for approval" and not self.approved:
                self.screen.say("⏸ the orchestration waits durably for approval; approving as 'operator'")
                await self.client.raise_event(_INSTANCE, "Approval", "operator")
                self.approved = True
            await self.provider.wait_for_state_change(_INSTANCE, 0.2)

    def _runs(self) -> list[list[str]]:
        """The run log's lines: activity, attempt, detail, pid, start time."""
        text = self.run_log.read_text(encoding="utf-8") if self.run_log.exists() else ""
        return [line.split("\t") for line in text.splitlines()]

    async def _crash_once(self) -> None:
        if self.killed_at is not None or self.worker is None:
            return
        if not any(run[0] == "CreateVirtualMachine" for run in self._runs()):
            return
        await asyncio.sleep(_STEP_SECONDS)  # let it get well into the step
        self.killed_at = time.time()
        self.worker.send_signal(signal.SIGKILL)
        self.worker.wait()
        self.screen.say(f"💥 killed worker {self.worker.pid} (SIGKILL) in the middle of CreateVirtualMachine")
        timeout = RuntimeOptions().worker_timeout
        self.start_worker(f"; it takes the work over once the dead worker's record is {timeout:g} s stale")

    def _show_recovery(self) -> None:
        """Say, once, how long after the crash the interrupted step ran again."""
        if self.killed_at is None or self.recovered or self.worker is None:
            return
        again = [run for run in self._runs() if run[0] == "CreateVirtualMachine" and run[3] == str(self.worker.pid)]
        if again:
            self.recovered = True
            delay = float(again[0][4]) - self.killed_at
            self.screen.say(
                f"⏱ CreateVirtualMachine running again on worker {self.worker.pid}, {delay:.1f} s after the crash"
            )

    def summary(self, final: OrchestrationState) -> int:
        """How it ended, and how often each step really ran; the exit code."""
        if final.status is not OrchestrationStatus.COMPLETED:
            self.screen.say(f"orchestration ended {final.status.value}: {final.error}")
            return 1
        self.screen.say(f"✔ orchestration COMPLETED: {final.output}")
        counts = Counter(run[0] for run in self._runs())
        self.screen.say("how often each step really ran:")
        for step, why in _WHY.items():
            self.screen.say(f"   {step:22s} {counts[step]}×  ({why})")
        return 0


async def run_demo(db: Path) -> int:
    """Run the whole demo on the SQLite file ``db``; returns the process exit code."""
    for suffix in ("", "-wal", "-shm", ".runs.log"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    screen = _Screen()
    async with open_store(str(db), create=True) as provider:
        show = _Show(db, provider, screen)
        screen.say(f"perdure demo — orchestrations stored in {db}")
        show.start_worker()
        try:
            spec = {"name": "rg-demo", "region": "westeurope"}
            await show.client.start_orchestration(_INSTANCE, "ProvisionEnvironment", spec)
            screen.say(f"started orchestration {_INSTANCE!r}")
            return show.summary(await show.follow())
        finally:
            show.stop_worker()


if __name__ == "__main__":  # the worker process the demo starts
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        asyncio.run(_work(sys.argv[2]))
