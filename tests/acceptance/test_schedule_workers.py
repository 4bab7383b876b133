"""Schedules across real worker processes: several workers fire each due time once; a SIGKILLed
worker's schedule catches up when a worker comes back. Both providers."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from tests.conftest import PROVIDER_KINDS, drop_test_provider, open_test_provider

from perdure import Client, OrchestrationStatus
from perdure.engine.events import OrchestrationChained
from perdure.schedules._spec import time_text

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


class Workers:
    """``perdure worker`` subprocesses serving ``tests.acceptance.schedule_app`` on one store."""

    def __init__(self, url: str, tmp_path: Path, log: Path) -> None:
        self.url, self.tmp_path, self.log = url, tmp_path, log
        self.processes: list[subprocess.Popen[bytes]] = []
        self.stderr: list[Path] = []

    def start(self) -> subprocess.Popen[bytes]:
        path = self.tmp_path / f"worker-{len(self.processes)}.err"
        command = [sys.executable, "-m", "perdure", "worker", "tests.acceptance.schedule_app:registry"]
        command += ["--db", self.url, "--worker-timeout", "1"]
        with path.open("w") as err:
            process = subprocess.Popen(
                command,
                cwd=REPO,
                env={**os.environ, "PERDURE_TEST_LOG": str(self.log), "PYTHONPATH": f"{REPO / 'src'}:{REPO}"},
                stdout=subprocess.DEVNULL,
                stderr=err,
            )
        self.processes.append(process)
        self.stderr.append(path)
        return process

    def output(self) -> str:
        return "\n".join(path.read_text() for path in self.stderr)

    async def ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        live = [(p, path) for p, path in zip(self.processes, self.stderr, strict=True) if p.poll() is None]
        while not all("ready" in path.read_text() for _, path in live):
            assert all(p.poll() is None for p, _ in live), self.output()
            assert time.monotonic() < deadline, f"workers not ready:\n{self.output()}"
            await asyncio.sleep(0.05)

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


@pytest.fixture(params=PROVIDER_KINDS)
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[Client, str]]:
    provider, url = await open_test_provider(request.param, tmp_path)
    yield Client(provider), url
    await drop_test_provider(request.param, provider)


@pytest.fixture
def workers(store: tuple[Client, str], tmp_path: Path) -> Iterator[Workers]:
    started = Workers(store[1], tmp_path, tmp_path / "runs.log")
    yield started
    started.stop()


def ran(log: Path) -> Counter[str]:
    """How many times each run really ran (its ``Record`` activity), by run instance id."""
    return Counter(line.split()[0] for line in log.read_text().splitlines()) if log.exists() else Counter()


def grid(first: datetime, last: datetime, step: timedelta, schedule_id: str = "every2") -> list[str]:
    """The run ids of a schedule's due times from ``first`` to ``last``, ``step`` apart."""
    found = []
    while first <= last:
        found.append(f"{schedule_id}@{time_text(first)}")
        first += step
    return found


async def wait_for(check: object, timeout: float, what: str, workers: Workers) -> None:
    deadline = time.monotonic() + timeout
    while not await check():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}\n{workers.output()[-3000:]}"
        await asyncio.sleep(0.1)


async def test_two_workers_fire_an_every_two_seconds_schedule_once_per_due_time(
    store: tuple[Client, str], workers: Workers, tmp_path: Path
) -> None:
    client, _ = store
    workers.start(), workers.start()
    await workers.ready()
    created = await client.create_schedule("every2", "Tick", every=2, overlap="allow")
    assert created.next_fire_at is not None
    await asyncio.sleep(11)
    requested_at = datetime.now(UTC)
    await client.delete_schedule("every2")
    await wait_for(lambda: _finished(client, "schedule:every2"), 30, "the schedule to stop", workers)
    schedule = await client.get_status("schedule:every2")
    assert schedule is not None
    stopped_at = schedule.updated_at  # when the delete took effect

    ids = sorted(s.instance_id for s in await client.list_instances(instance_id_prefix="every2@", limit=1000))
    step = timedelta(seconds=2)
    # Every due time before the delete was asked for fired; none after it took effect; none twice.
    assert ids[: len(grid(created.next_fire_at, requested_at, step))] == grid(created.next_fire_at, requested_at, step)
    assert ids == grid(created.next_fire_at, stopped_at, step)[: len(ids)]
    assert len(ids) >= 5, ids  # 11 s at one every 2 s, the first within 2 s of creation
    for run in ids:
        state = await client.wait_for_orchestration(run, timeout=30)
        assert state.status is OrchestrationStatus.COMPLETED
    log = tmp_path / "runs.log"
    assert ran(log) == Counter(dict.fromkeys(ids, 1)), "each run ran exactly once"
    info = await client.get_status("schedule:every2")
    assert info is not None and info.custom_status["fires"] == len(ids)
    assert await started_by_schedule(client, "schedule:every2") == ids
    print(f"runs recorded by worker pids: {Counter(line.split()[1] for line in log.read_text().splitlines())}")


async def started_by_schedule(client: Client, instance_id: str) -> list[str]:
    """Every run the schedule's histories record starting, over all its executions, in order."""
    state = await client.get_status(instance_id)
    assert state is not None
    started = []
    for execution in range(1, state.execution_id + 1):
        history = await client.get_history(instance_id, execution)
        started += [e.instance_id for e in history if isinstance(e, OrchestrationChained)]
    return started


async def _finished(client: Client, instance_id: str) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and state.status.is_terminal


async def test_a_schedule_survives_a_sigkill_of_its_worker_and_catches_up(
    store: tuple[Client, str], workers: Workers, tmp_path: Path
) -> None:
    client, _ = store
    victim = workers.start()
    await workers.ready()
    created = await client.create_schedule("every2", "Tick", every=2, overlap="allow")
    narrow = await client.create_schedule("narrow", "Tick", every=2, overlap="allow", catchup_window=1)
    assert created.next_fire_at is not None
    await wait_for(lambda: _runs_at_least(client, "every2@", 2), 30, "two runs before the kill", workers)
    victim.send_signal(signal.SIGKILL)
    assert victim.wait(timeout=10) == -signal.SIGKILL
    killed_at = datetime.now(UTC)
    await asyncio.sleep(7)  # three or four due times pass with no worker at all
    workers.start()
    await workers.ready()
    restarted_at = datetime.now(UTC)
    # Every due time up to the restart fires: the missed ones at once, on catching up.
    expected = grid(created.next_fire_at, restarted_at, timedelta(seconds=2))
    await wait_for(lambda: _runs_at_least(client, "every2@", len(expected)), 30, "the catch-up", workers)
    # The narrow schedule may have been mid-turn when the worker died: its lock moves only after the
    # dead worker's timeout, later than every2's catch-up. A delete arriving with its overdue timer
    # would end it before it counts what it missed, so wait for the count first.
    await wait_for(lambda: _missed_at_least(client, "schedule:narrow", 2), 30, "the narrow schedule's misses", workers)
    await client.delete_schedule("every2")
    await client.delete_schedule("narrow")
    await wait_for(lambda: _finished(client, "schedule:every2"), 30, "the schedule to stop", workers)
    await wait_for(lambda: _finished(client, "schedule:narrow"), 30, "the narrow schedule to stop", workers)
    ids = sorted(s.instance_id for s in await client.list_instances(instance_id_prefix="every2@", limit=1000))
    assert ids[: len(expected)] == expected and ids == sorted(set(ids))
    for run in ids:
        await client.wait_for_orchestration(run, timeout=30)
    # Activities run at least once: one the kill interrupted may have logged twice; none is missing.
    assert {run for run in ran(tmp_path / "runs.log") if run.startswith("every2@")} == set(ids)
    assert await started_by_schedule(client, "schedule:every2") == ids
    # The narrow window let the due times of the downtime go: counted as missed, not run.
    narrow_state = await client.get_status("schedule:narrow")
    assert narrow_state is not None
    missed = narrow_state.custom_status["missed"]
    assert missed >= 2, narrow_state.custom_status
    narrow_runs = {s.instance_id for s in await client.list_instances(instance_id_prefix="narrow@", limit=1000)}
    assert narrow.next_fire_at is not None
    # Due times between the kill and a second and a half before the restart came too late for the window.
    step, due, late = timedelta(seconds=2), narrow.next_fire_at, []
    while due <= restarted_at - timedelta(seconds=1.5):
        late += [f"narrow@{time_text(due)}"] if due > killed_at else []
        due += step
    assert len(late) >= 2 and not narrow_runs & set(late), (late, narrow_runs)


async def _missed_at_least(client: Client, instance_id: str, count: int) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and isinstance(state.custom_status, dict) and state.custom_status.get("missed", 0) >= count


async def _runs_at_least(client: Client, prefix: str, count: int) -> bool:
    return len(await client.list_instances(instance_id_prefix=prefix, limit=1000)) >= count
