"""A turn that kills its worker takes no healthy instance down, and loses nothing it consumed.

"Bad" ends its worker process (``os._exit(137)``, as an OOM kill would) in the turn that receives
its event, among 30 healthy instances; the test restarts the worker each time it dies. The healthy
ones all complete; "Bad" alone is failed as poison, with the event it never got to use kept; a
worker with fixed code and a rewind then complete it without anything being sent again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.acceptance.turn_crash_worker import OPTIONS
from tests.conftest import drop_test_provider, open_test_provider

from perdure import Client, OrchestrationStatus, Provider
from perdure.engine.events import EventRaised, OrchestrationFailed
from perdure.providers._base import InstanceFilter

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("turn_crash_worker.py")
COMPLETED = OrchestrationStatus.COMPLETED
HEALTHY = 30
RESTARTS = 12  # "Bad" is poison after 4 deliveries (the worker's max_dispatch_attempts)
# A worker dies or settles once the dead one's locks have expired (worker_timeout), plus its own
# start-up and work: generous, so that a loaded machine is slow, not a failure.
WORKER_DEADLINE = 3 * OPTIONS.worker_timeout + 30


def _spawn(url: str, output: Path, *, fixed: bool) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PERDURE_FIXED": "1" if fixed else "0"}
    with output.open("ab") as out:
        return subprocess.Popen([sys.executable, str(WORKER), url], env=env, stdout=out, stderr=out)


async def _settled(provider: Provider) -> bool:
    """Whether every healthy instance has completed and "Bad" has ended."""
    done = await provider.list_instances(InstanceFilter(status=[COMPLETED], limit=1000))
    bad = await provider.get_state("bad")
    return len(done) == HEALTHY and bad is not None and bad.status.is_terminal


async def _run_until_exit_or_settled(proc: subprocess.Popen[bytes], provider: Provider, output: Path) -> bool:
    deadline = time.monotonic() + WORKER_DEADLINE
    while time.monotonic() < deadline:
        if await _settled(provider):
            return True
        if proc.poll() is not None:
            return False
        await asyncio.sleep(0.05)
    tail = (await asyncio.to_thread(output.read_text))[-3000:]
    raise AssertionError(f"the worker neither died nor finished in {WORKER_DEADLINE} s:\n{tail}")


def _stop(proc: subprocess.Popen[bytes]) -> None:
    proc.kill()
    proc.wait()


@pytest.mark.timeout(600)
async def test_a_crash_looping_turn_fails_alone_and_a_rewind_after_the_fix_completes_it(
    provider_kind: str, tmp_path: Path
) -> None:
    provider, url = await open_test_provider(provider_kind, tmp_path)
    output = tmp_path / "worker-output.txt"
    workers: list[subprocess.Popen[bytes]] = []
    try:
        client = Client(provider)
        await client.start_orchestration("bad", "Bad")
        for n in range(HEALTHY):
            await client.start_orchestration(f"healthy-{n:02}", "Healthy", n)
        workers.append(_spawn(url, output, fixed=False))
        await _wait_running(client, "bad")
        await client.raise_event("bad", "go", "the payload")  # the healthy ones are mid-way

        exit_codes: list[int | None] = []
        while len(exit_codes) < RESTARTS:
            if await _run_until_exit_or_settled(workers[-1], provider, output):
                break
            exit_codes.append(workers[-1].returncode)
            workers.append(_spawn(url, output, fixed=False))
        assert await _settled(provider), await asyncio.to_thread(output.read_text)
        assert len(exit_codes) >= 4 and set(exit_codes) == {137}, exit_codes

        states = {s.instance_id: s for s in await provider.list_instances(InstanceFilter(limit=1000))}
        bad = states.pop("bad")
        unhealthy = [(s.instance_id, s.status, s.error) for s in states.values() if s.status is not COMPLETED]
        assert unhealthy == []
        assert sorted(s.output for s in states.values()) == sorted(n + 4 for n in range(HEALTHY))
        assert bad.status is OrchestrationStatus.FAILED and bad.error is not None
        assert bad.error.type.endswith("PoisonMessageError"), bad.error
        history = await client.get_history("bad")
        assert isinstance(history[-2], OrchestrationFailed)
        kept = history[-1]
        assert isinstance(kept, EventRaised) and (kept.name, kept.data) == ("go", "the payload")

        # The fix is deployed: the worker with the old code goes (it holds nothing now), a fixed one comes.
        _stop(workers[-1])
        workers.append(_spawn(url, output, fixed=True))
        execution = await client.rewind("bad", "the crash is fixed")
        state = await client.wait_for_orchestration("bad", timeout=WORKER_DEADLINE, execution_id=execution)
        assert (state.status, state.output, state.execution_id) == (COMPLETED, "the payload", 2)
    finally:
        for proc in workers:
            _stop(proc)
        await drop_test_provider(provider_kind, provider)


async def _wait_running(client: Client, instance_id: str) -> None:
    deadline = time.monotonic() + WORKER_DEADLINE
    while (state := await client.get_status(instance_id)) is None or state.status is not OrchestrationStatus.RUNNING:
        assert time.monotonic() < deadline, f"{instance_id} did not start"
        await asyncio.sleep(0.02)
