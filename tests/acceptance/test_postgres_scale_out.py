"""Scale-out on PostgreSQL: several ``perdure worker`` processes share one database.

Workers are real subprocesses started with the console command; one is SIGKILLed mid-run, and the
PostgreSQL server itself is restarted under load. Every orchestration must complete exactly once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("psycopg")

from tests.acceptance.scale_app import expected_sum
from tests.conftest import drop_test_provider, open_test_provider

from perdure import Client, OrchestrationStatus, Provider
from perdure.engine.events import ActivityCompleted, ActivityScheduled, OrchestrationCompleted
from perdure.providers._base import InstanceFilter

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
TERMINAL = [OrchestrationStatus.COMPLETED, OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED]


class Workers:
    """``perdure worker`` subprocesses on one database."""

    def __init__(self, url: str, tmp_path: Path, count: int, *args: str) -> None:
        self.logs = tmp_path / "activity-logs"
        self.logs.mkdir(exist_ok=True)
        env = {**os.environ, "PERDURE_TEST_LOG_DIR": str(self.logs)}
        self.stderr = [tmp_path / f"worker-{n}.err" for n in range(count)]
        command = [sys.executable, "-m", "perdure", "worker", "tests.acceptance.scale_app:registry", "--db", url, *args]
        self.processes = []
        for path in self.stderr:
            with path.open("w") as err:  # the child keeps its own copy of the descriptor
                self.processes.append(
                    subprocess.Popen(
                        command,
                        cwd=REPO,
                        env=env,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                    )
                )

    @property
    def pids(self) -> set[int]:
        return {p.pid for p in self.processes}

    def output(self) -> str:
        return "\n".join(path.read_text() for path in self.stderr)

    async def ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while sum("ready" in path.read_text() for path in self.stderr) < len(self.processes):
            assert all(p.poll() is None for p in self.processes), self.output()
            assert time.monotonic() < deadline, f"workers not ready:\n{self.output()}"
            await asyncio.sleep(0.05)

    def stop(self) -> list[int | None]:
        """SIGTERM every live worker and return the exit codes."""
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        codes = []
        for process in self.processes:
            try:
                codes.append(process.wait(timeout=30))
            except subprocess.TimeoutExpired:
                process.kill()
                codes.append(process.wait())
        return codes

    def started_and_unfinished(self, pid: int) -> set[str]:
        """Activity keys the worker ``pid`` began and never finished."""
        path = self.logs / f"{pid}.log"
        lines = [line.split(" ", 1) for line in path.read_text().splitlines()] if path.exists() else []
        return {key for event, key in lines if event == "start"} - {key for event, key in lines if event == "end"}

    def finished_by_others(self, pid: int) -> set[str]:
        keys: set[str] = set()
        for path in self.logs.glob("*.log"):
            if path.stem != str(pid):
                keys |= {line.split(" ", 1)[1] for line in path.read_text().splitlines() if line.startswith("end ")}
        return keys


@pytest.fixture
async def database(tmp_path: Path) -> AsyncIterator[tuple[Provider, str]]:
    provider, url = await open_test_provider("postgres", tmp_path)
    yield provider, url
    await _server_up()
    await drop_test_provider("postgres", provider)


@pytest.fixture
def workers_to_stop() -> Iterator[list[Workers]]:
    started: list[Workers] = []
    yield started
    for workers in started:
        workers.stop()


async def _start_all(client: Client, specs: dict[str, dict[str, Any]]) -> None:
    items = list(specs.items())
    for at in range(0, len(items), 20):  # a few at a time, as many clients would
        await asyncio.gather(*(client.start_orchestration(i, "FanOut", spec) for i, spec in items[at : at + 20]))


async def _wait_all_finished(provider: Provider, count: int, timeout: float, workers: Workers) -> None:
    deadline = time.monotonic() + timeout
    while (done := len(await provider.list_instances(InstanceFilter(status=TERMINAL, limit=count + 1)))) < count:
        assert time.monotonic() < deadline, f"{done} of {count} finished in time; workers said:\n{workers.output()}"
        await asyncio.sleep(0.1)


async def _check_completed_once(client: Client, specs: dict[str, dict[str, Any]]) -> set[int]:
    """Every instance COMPLETED once with the right sum; returns the workers that ran activities."""
    workers: set[int] = set()
    for instance_id, spec in specs.items():
        state = await client.get_status(instance_id)
        assert state is not None and state.status is OrchestrationStatus.COMPLETED, (instance_id, state)
        assert state.output["sum"] == expected_sum(spec)
        workers.update(state.output["workers"])
        history = await client.get_history(instance_id)
        activities = spec["width"] + spec.get("steps", 0)
        assert sum(isinstance(e, OrchestrationCompleted) for e in history) == 1
        assert sum(isinstance(e, ActivityScheduled) for e in history) == activities
        assert sum(isinstance(e, ActivityCompleted) for e in history) == activities
    return workers


async def test_three_workers_share_500_fan_out_orchestrations(
    database: tuple[Provider, str], tmp_path: Path, workers_to_stop: list[Workers]
) -> None:
    provider, url = database
    workers = Workers(url, tmp_path, 3, "--concurrency", "8")
    workers_to_stop.append(workers)
    await workers.ready()
    specs = {f"fan-{n:03}": {"base": n, "width": 3} for n in range(500)}
    client = Client(provider)

    await _start_all(client, specs)
    await _wait_all_finished(provider, len(specs), timeout=45, workers=workers)

    ran_activities = await _check_completed_once(client, specs)
    assert ran_activities == workers.pids, "the work was spread over every worker"
    assert workers.stop() == [0, 0, 0], "SIGTERM shuts a worker down cleanly"


async def test_a_killed_workers_instances_and_activities_are_taken_over(
    database: tuple[Provider, str], tmp_path: Path, workers_to_stop: list[Workers]
) -> None:
    provider, url = database
    locks = ("--worker-timeout", "2", "--concurrency", "8")
    workers = Workers(url, tmp_path, 3, *locks)
    workers_to_stop.append(workers)
    await workers.ready()
    specs = {f"kill-{n:03}": {"base": n, "width": 2, "steps": 2, "delay": 0.1} for n in range(150)}
    client = Client(provider)
    await _start_all(client, specs)

    victim = workers.processes[0]
    deadline = time.monotonic() + 30
    while not workers.started_and_unfinished(victim.pid):  # kill it with activities in hand
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    in_hand = workers.started_and_unfinished(victim.pid)
    await _wait_all_finished(provider, len(specs), timeout=45, workers=workers)

    await _check_completed_once(client, specs)
    assert in_hand <= workers.finished_by_others(victim.pid), "the killed worker's activities ran elsewhere"
    assert workers.stop()[1:] == [0, 0]


async def _server(action: str) -> None:
    version = os.listdir("/etc/postgresql")[0]
    process = await asyncio.create_subprocess_exec(
        "pg_ctlcluster", "--skip-systemctl-redirect", version, "main", action,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()


async def _server_up() -> None:
    """Start the server if a test left it down."""
    ready = await asyncio.create_subprocess_exec("pg_isready", "-h", "127.0.0.1", "-q")
    if await ready.wait() != 0:
        await _server("start")


@pytest.mark.skipif(not os.path.isdir("/etc/postgresql"), reason="needs a local pg_ctlcluster server")
async def test_every_orchestration_completes_across_a_server_restart(
    database: tuple[Provider, str], tmp_path: Path, workers_to_stop: list[Workers]
) -> None:
    provider, url = database
    workers = Workers(url, tmp_path, 2, "--concurrency", "8")
    workers_to_stop.append(workers)
    await workers.ready()
    specs = {f"restart-{n:03}": {"base": n, "width": 2, "steps": 6, "delay": 0.2} for n in range(100)}
    client = Client(provider)
    await _start_all(client, specs)

    # Restart once the work is under way: all instances advance together, so when the first has
    # finished its first step (of six) most of the work is still ahead.
    deadline = time.monotonic() + 30
    while sum(isinstance(e, ActivityCompleted) for e in await provider.get_history("restart-000")) < 2:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.05)
    try:
        await _server("restart")
    finally:
        await _server_up()
    finished_before = len(await provider.list_instances(InstanceFilter(status=TERMINAL, limit=1000)))
    assert finished_before < len(specs), "the restart happened mid-workload"
    await _wait_all_finished(provider, len(specs), timeout=50, workers=workers)

    await _check_completed_once(client, specs)
    assert all(p.poll() is None for p in workers.processes), "no worker died with the server"
    assert workers.stop() == [0, 0]
