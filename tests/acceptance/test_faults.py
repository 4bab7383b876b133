"""Faults of the machine under a real workload: killed workers, a restarted server, a corrupt row, a full disk.

Each case runs many healthy instances through a fault and checks the promise of issue 13: every
healthy instance completes, exactly once and without a lost or repeated history event, and the
fault costs it no more than a few seconds; what the fault broke fails alone, clearly.
"""

from __future__ import annotations

import asyncio
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.crash_worker import expected_output
from tests.acceptance.test_postgres_scale_out import _server, _server_up
from tests.conftest import drop_test_provider, open_test_provider
from tests.integration.runtime_support import assert_history_sound, raw_sql, running, wait_until

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Provider,
    ProviderError,
    Registry,
    RuntimeOptions,
    SqliteProvider,
)
from perdure.engine.events import EventRaised
from perdure.providers import InstanceFilter, Message

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("crash_worker.py")
COMPLETED = [OrchestrationStatus.COMPLETED]


async def _count(provider: Provider, status: OrchestrationStatus) -> int:
    return len(await provider.list_instances(InstanceFilter(status=[status], limit=10_000)))


async def _check_all_completed_once(client: Client, total: int) -> list[str]:
    states = await client.list_instances(limit=10_000)
    assert len(states) == total
    assert [s.instance_id for s in states if s.status is not OrchestrationStatus.COMPLETED] == []
    for state in states:
        assert_history_sound(await client.get_history(state.instance_id))
    return [s.instance_id for s in states]


# --- a storm of SIGKILLs -------------------------------------------------------------------------


class Workers:
    """``crash_worker.py`` processes on one SQLite file, killed and restarted at will."""

    def __init__(self, db: Path, tmp_path: Path) -> None:
        self.db, self.log, self.output = db, tmp_path / "activities.log", tmp_path / "workers.txt"
        self.processes: list[subprocess.Popen[bytes]] = []

    def start(self) -> subprocess.Popen[bytes]:
        env = {**os.environ, "PERDURE_CRASH": ""}  # they never die on their own: the storm kills them
        with self.output.open("ab") as out:
            process = subprocess.Popen(
                [sys.executable, str(WORKER), str(self.db), str(self.log)], env=env, stdout=out, stderr=out
            )
        self.processes.append(process)
        return process

    def live(self) -> list[subprocess.Popen[bytes]]:
        return [p for p in self.processes if p.poll() is None]

    def kill_all(self) -> None:
        for process in self.live():
            process.kill()
            process.wait()


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[Workers]:
    started = Workers(tmp_path / "storm.db", tmp_path)
    yield started
    started.kill_all()


@pytest.mark.timeout(180)
async def test_a_storm_of_sigkills_loses_and_repeats_nothing(workers: Workers) -> None:
    provider = await SqliteProvider.open(workers.db)
    client = Client(provider)
    try:
        pipelines = 1500  # enough that the storm ends before the work does, on a quiet machine too
        for n in range(pipelines):
            await client.start_orchestration(f"pipeline-{n:03}", "Pipeline", n)
        total = 2 * pipelines  # each pipeline starts one child
        workers.start()
        workers.start()
        kills = 0
        rng = random.Random(13)
        while kills < 14:  # two workers on one file, one of them SIGKILLed every 0.1-0.5 s
            await asyncio.sleep(rng.uniform(0.1, 0.5))
            if await _count(provider, OrchestrationStatus.COMPLETED) == total:
                break
            victim = rng.choice(workers.live())
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            assert victim.returncode == -signal.SIGKILL
            kills += 1
            workers.start()
        assert kills >= 10, "the workload ended before the storm did: make it longer"

        deadline = time.monotonic() + 90
        while await _count(provider, OrchestrationStatus.COMPLETED) < total:
            assert time.monotonic() < deadline, workers.output.read_text()[-3000:]
            assert len(workers.live()) == 2, workers.output.read_text()[-3000:]
            await asyncio.sleep(0.1)

        await _check_all_completed_once(client, total)
        for n in range(pipelines):
            state = await client.get_status(f"pipeline-{n:03}")
            assert state is not None and state.output == expected_output(n)
    finally:
        await provider.close()


# --- a PostgreSQL server restarted twice ---------------------------------------------------------


def _steps_registry() -> Registry:
    registry = Registry()

    @registry.activity()
    async def square(ctx: ActivityContext, n: int) -> int:
        await asyncio.sleep(0.05)
        return n * n

    @registry.orchestration()
    async def steps(ctx: OrchestrationContext, n: int) -> int:
        total = 0
        for step in range(6):
            total += await ctx.call_activity("square", n + step)
            await ctx.create_timer(0.1)
        return total

    return registry


def _expected_steps(n: int) -> int:
    return sum((n + step) ** 2 for step in range(6))


@pytest.fixture
async def postgres(tmp_path: Path) -> AsyncIterator[Provider]:
    provider, _ = await open_test_provider("postgres", tmp_path)
    yield provider
    await _server_up()
    await drop_test_provider("postgres", provider)


@pytest.mark.postgres
@pytest.mark.skipif(not os.path.isdir("/etc/postgresql"), reason="needs a local pg_ctlcluster server")
@pytest.mark.timeout(180)
async def test_a_workload_survives_two_postgres_restarts_without_a_failure(postgres: Provider) -> None:
    options = RuntimeOptions(orchestration_concurrency=8, activity_concurrency=16, idle_timeout=1.0)
    async with running(postgres, _steps_registry(), options) as client:
        for n in range(80):
            await client.start_orchestration(f"steps-{n:02}", "steps", n)
        for _ in range(2):
            await asyncio.sleep(1.5)  # well under way, far from done
            assert await _count(postgres, OrchestrationStatus.COMPLETED) < 80, "the restart comes mid-workload"
            try:
                await _server("restart")
            finally:
                await _server_up()
        for n in range(80):
            state = await client.wait_for_orchestration(f"steps-{n:02}", timeout=90)
            assert state.status is OrchestrationStatus.COMPLETED, state
            assert state.output == _expected_steps(n)
        await _check_all_completed_once(client, 80)


# --- corrupt instance rows -----------------------------------------------------------------------


async def test_corrupt_rows_delay_no_healthy_instance_by_more_than_5_s(provider: Provider) -> None:
    """Bad rows, each with messages queued, among thirty healthy instances that each take at least 1 s.

    The same thirty run first without them, which says how long they take on this machine.
    """
    registry = _steps_registry()

    @registry.orchestration()
    async def brief(ctx: OrchestrationContext, n: int) -> int:
        first = await ctx.call_activity("square", n)
        await ctx.create_timer(1.0)
        return first + await ctx.call_activity("square", n + 1)

    @registry.orchestration()
    async def waiter(ctx: OrchestrationContext) -> Any:
        return await ctx.wait_for_event("go")

    sqlite = isinstance(provider, SqliteProvider)
    corruptions = {
        "input": "{not json",
        "custom_status": "[",
        "error": '{"type": []}',
        "status": "¿RUNNING?",
        "created_at": "last week" if sqlite else "infinity",
    }
    param = ":v" if sqlite else "%(v)s"
    options = RuntimeOptions(orchestration_concurrency=2, idle_timeout=1.0, dispatch_backoff=0.05)
    async with running(provider, registry, options) as client:

        async def healthy(instance_id: str, n: int) -> float:
            began = time.monotonic()
            await client.start_orchestration(instance_id, "brief", n)
            state = await client.wait_for_orchestration(instance_id, timeout=60)
            assert state.status is OrchestrationStatus.COMPLETED and state.output == n * n + (n + 1) ** 2
            return time.monotonic() - began

        undisturbed = await asyncio.gather(*(healthy(f"alone-{n:02}", n) for n in range(30)))
        for column in corruptions:
            await client.start_orchestration(f"bad-{column}", "waiter")
            await wait_until(lambda c=column: _waiting(client, f"bad-{c}"), what="the instance waits")  # type: ignore[misc]
        for column, garbage in corruptions.items():  # corrupted while no turn of theirs is in flight
            update = f"UPDATE instances SET {column} = {param} WHERE instance_id = 'bad-{column}'"
            await raw_sql(provider, update, {"v": garbage})
        # Each bad instance has messages queued when its turn comes, sent as another instance would:
        # the client refuses events to one whose status reads FAILED.
        go = [Message(instance_id=f"bad-{c}", execution_id=None, event=EventRaised(name="go")) for c in corruptions]
        for _ in range(3):
            await provider.enqueue_messages(go)
        disturbed = await asyncio.gather(*(healthy(f"among-{n:02}", n) for n in range(30)))
        delay = max(disturbed) - max(undisturbed)
        assert delay < 5.0, f"healthy instances took {max(disturbed):.1f} s, {max(undisturbed):.1f} s undisturbed"

        for column in corruptions:
            state = await client.get_status(f"bad-{column}")
            assert state is not None and state.status is OrchestrationStatus.FAILED
            assert state.error is not None and f"column {column!r}" in state.error.message
            assert await client.purge(f"bad-{column}") == 1
        assert len(await client.list_instances()) == 60


async def _waiting(client: Client, instance_id: str) -> bool:
    state = await client.get_status(instance_id)
    return state is not None and state.status is OrchestrationStatus.RUNNING


# --- a full disk ---------------------------------------------------------------------------------


@pytest.fixture
def small_disk() -> Iterator[Path]:
    """A 16 MiB tmpfs, mounted for the test (needs root and the ``mount`` command)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("mounting a small tmpfs needs root")
    mountpoint = Path(tempfile.mkdtemp(prefix="perdure-full-disk-"))
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mountpoint)], capture_output=True)
    if mounted.returncode != 0:
        mountpoint.rmdir()
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        yield mountpoint
    finally:
        subprocess.run(["umount", "-l", str(mountpoint)], check=False)
        mountpoint.rmdir()


async def _fill(client: Client) -> tuple[int, ProviderError]:
    """Start instances with large inputs until the disk is full: how many were started, and the error."""
    for started in range(1000):
        try:
            await client.start_orchestration(f"big-{started:03}", "echo", "x" * 200_000)
        except ProviderError as exc:
            return started, exc
    raise AssertionError("the disk never filled")


async def test_a_full_disk_fails_writes_clearly_and_its_space_comes_back_once_freed(small_disk: Path) -> None:
    db, wal, ballast = small_disk / "perdure.db", small_disk / "perdure.db-wal", small_disk / "ballast"
    ballast.write_bytes(b"\0" * (10 * 1024 * 1024))  # what an operator deletes to make room
    provider = await SqliteProvider.open(db)
    client = Client(provider)
    try:
        started, full = await _fill(client)
        assert "the disk is full" in str(full)
        assert isinstance(full.__cause__, sqlite3.OperationalError)
        assert started > 5
        assert await client.get_status("big-000") is not None, "reads still work"
        wal_when_full = wal.stat().st_size
        assert wal_when_full > 1024 * 1024

        ballast.unlink()
        await client.start_orchestration("after", "echo", "small")  # writes succeed again…
        assert wal.stat().st_size < wal_when_full // 10, "…and the WAL gave its space back"

        registry = Registry()

        @registry.orchestration()
        async def echo(ctx: OrchestrationContext, value: str) -> int:
            return len(value)

        async with running(provider, registry):
            for instance_id in ("big-000", f"big-{started - 1:03}", "after"):
                state = await client.wait_for_orchestration(instance_id, timeout=20)
                assert state.status is OrchestrationStatus.COMPLETED
        assert await client.get_status(f"big-{started:03}") is None, "the write that failed left nothing behind"
    finally:
        await provider.close()
