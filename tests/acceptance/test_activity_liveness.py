"""Liveness with real worker processes, on SQLite and PostgreSQL.

A worker's locks live as long as its process: an ``async def`` activity that blocks its event loop
far longer than its lock runs exactly once, however many workers wait. A worker that is SIGKILLed
has its activity running again elsewhere within ``worker_timeout``, and the activity resumes from
the last details it reported with a heartbeat.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, NamedTuple

import pytest
from tests.conftest import drop_test_provider, open_test_provider

from perdure import Client, OrchestrationState, OrchestrationStatus, Provider, RuntimeOptions

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


class Line(NamedTuple):
    event: str
    pid: int
    at: float
    details: Any


class Workers:
    """``perdure worker`` processes serving ``liveness_app`` on one store, and the activities' log."""

    def __init__(self, url: str, tmp_path: Path) -> None:
        self.url = url
        self.tmp_path = tmp_path
        self.log = tmp_path / "activities.log"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self, *options: str) -> subprocess.Popen[bytes]:
        stderr = self.tmp_path / f"worker-{len(self.processes)}.err"
        command = [sys.executable, "-m", "perdure", "worker", "tests.acceptance.liveness_app:registry"]
        with stderr.open("w") as err:
            process = subprocess.Popen(
                [*command, "--db", self.url, *options],
                cwd=REPO,
                env={**os.environ, "PERDURE_TEST_LOG": str(self.log)},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.processes.append(process)
        return process

    def output(self) -> str:
        return "\n".join(path.read_text() for path in sorted(self.tmp_path.glob("worker-*.err")))

    async def ready(self) -> None:
        await self.until(lambda: self.output().count(" ready") >= len(self.processes), "the workers to be ready")

    def lines(self, event: str | None = None) -> list[Line]:
        text = self.log.read_text() if self.log.exists() else ""
        found = []
        for raw in text.splitlines():
            name, pid, at, details = raw.split(" ", 3)
            found.append(Line(name, int(pid), float(at), json.loads(details)))
        return [line for line in found if event is None or line.event == event]

    async def until(self, check: Any, what: str, timeout: float = 30.0) -> Any:
        deadline = time.monotonic() + timeout
        while not (value := check()):
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.output()}"
            assert all(p.poll() in (None, -signal.SIGKILL) for p in self.processes), self.output()
            await asyncio.sleep(0.05)
        return value

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture
async def store(provider_kind: str, tmp_path: Path) -> AsyncIterator[tuple[Provider, str]]:
    provider, url = await open_test_provider(provider_kind, tmp_path)
    yield provider, url
    await drop_test_provider(provider_kind, provider)


@pytest.fixture
def workers(store: tuple[Provider, str], tmp_path: Path) -> Iterator[Workers]:
    started = Workers(store[1], tmp_path)
    yield started
    started.stop()


async def _run(client: Client, activity: str, input: Any, timeout: float = 60.0) -> OrchestrationState:
    await client.start_orchestration("job", "Run", {"activity": activity, "input": input})
    state = await client.wait_for_orchestration("job", timeout=timeout)
    assert state.status is OrchestrationStatus.COMPLETED, state
    return state


@pytest.mark.timeout(120)
async def test_an_activity_that_blocks_its_loop_past_its_lock_runs_exactly_once(
    store: tuple[Provider, str], workers: Workers
) -> None:
    # Every lock of a worker lasts one second past its last beat; the activity blocks the loop
    # five times as long. The beats come from a thread, so the lock holds and no one steals it.
    one_second = ("--lock-seconds", "1", "--activity-lock-seconds", "1", "--worker-timeout", "1")
    for _ in range(2):
        workers.start(*one_second)
    await workers.ready()

    state = await _run(Client(store[0]), "BlockTheLoop", 5)

    starts = workers.lines("start")
    assert len(starts) == 1, f"ran {len(starts)} times: {starts}\n{workers.output()}"
    assert state.output == starts[0].pid
    assert "lost the lock" not in workers.output() and "discarded" not in workers.output()


@pytest.mark.timeout(120)
async def test_a_killed_workers_activity_runs_again_elsewhere_within_the_worker_timeout(
    store: tuple[Provider, str], workers: Workers
) -> None:
    # Default options: nothing here is tuned for the test.
    provider, _ = store
    client = Client(provider)
    victim = workers.start()
    await workers.ready()
    await client.start_orchestration("job", "Run", {"activity": "Work", "input": 3})
    await workers.until(lambda: workers.lines("start"), "the activity to start")
    successor = workers.start()
    await workers.ready()

    killed_at = time.time()
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    # Waits longer than the bound, so that a slow take-over fails below with its measured delay.
    restart = await workers.until(
        lambda: [s for s in workers.lines("start") if s.pid == successor.pid], "a restart", timeout=60
    )
    delay = restart[0].at - killed_at
    timeout = RuntimeOptions().worker_timeout
    print(f"\n{store[1].split(':')[0]}: the activity ran again {delay:.1f} s after its worker was killed")
    assert 0 < delay <= timeout + 2, f"taken over after {delay:.1f} s (worker_timeout {timeout:g} s)"

    state = await client.wait_for_orchestration("job", timeout=30)
    assert state.status is OrchestrationStatus.COMPLETED and state.output == successor.pid


@pytest.mark.timeout(120)
async def test_heartbeat_details_reach_the_attempt_after_a_kill(store: tuple[Provider, str], workers: Workers) -> None:
    provider, _ = store
    client = Client(provider)
    for _ in range(2):
        workers.start("--worker-timeout", "2")
    await workers.ready()
    await client.start_orchestration("job", "Run", {"activity": "CountTo", "input": {"to": 60, "pause": 0.1}})
    # Kill whichever worker counts, once it has had time to store a heartbeat (every 0.5 s here).
    first = await workers.until(lambda: [s for s in workers.lines("step") if s.details >= 15], "progress")
    victim = next(p for p in workers.processes if p.pid == first[0].pid)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    reached = max(s.details for s in workers.lines("step") if s.pid == victim.pid)

    state = await client.wait_for_orchestration("job", timeout=60)
    assert state.status is OrchestrationStatus.COMPLETED, state
    starts = workers.lines("start")
    assert len(starts) == 2 and starts[0].details is None, starts
    resumed = starts[1].details
    assert resumed is not None and 10 <= resumed["next"] <= reached, (resumed, reached)
    assert state.output == {"resumed_from": resumed["next"], "pid": starts[1].pid}
