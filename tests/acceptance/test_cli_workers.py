"""``perdure workers``: the worker processes sharing a store and what each serves, as an operator sees them."""

from __future__ import annotations

import asyncio
import json
import os
import socket
from datetime import UTC, datetime
from pathlib import Path

from tests.acceptance.operator_support import FAST, cli, registry

from perdure import Client, Runtime, SqliteProvider, WorkerInfo

WORKER_KEYS = {"worker_id", "host", "pid", "started_at", "last_seen", "alive", "orchestrations", "activities", "queues"}


async def test_workers_lists_each_live_runtime_with_what_it_serves(tmp_path: Path) -> None:
    db = tmp_path / "perdure.db"
    provider = await SqliteProvider.open(db)
    try:
        async with Runtime(provider, registry, FAST) as runtime:
            worker_id = runtime.worker_id
            text = await cli("workers", db=db)
            data = await cli("workers", "--json", db=db)
            [listed] = await Client(provider).list_workers()
        gone = await cli("workers", db=db)
    finally:
        await provider.close()

    assert text.code == 0, text.err
    header, _, row = text.out.splitlines()
    assert header.split()[:3] == ["WORKER", "HOST", "PID"]
    assert row.split()[:3] == [worker_id, socket.gethostname(), str(os.getpid())]
    assert (
        "orchestrations: Boss@1.0.0, Flaky@1.0.0, " in row
        and "activities: Charge, Greet" in row
        and "(queues default)" in row
    )
    assert data.code == 0, data.err
    [worker] = json.loads(data.out)["workers"]
    assert set(worker) == WORKER_KEYS
    assert (worker["worker_id"], worker["pid"], worker["alive"]) == (worker_id, os.getpid(), True)
    assert worker["activities"] == list(listed.activities) and "Greet" in worker["activities"]
    assert datetime.fromisoformat(worker["last_seen"]) == listed.last_seen
    assert (gone.code, gone.out.strip()) == (0, "No live workers."), "a clean shutdown removes the record"
    assert runtime.worker_id is None


async def test_a_dead_worker_is_listed_only_with_all(tmp_path: Path) -> None:
    db = tmp_path / "perdure.db"
    provider = await SqliteProvider.open(db)
    now = datetime.now(UTC)
    dead = WorkerInfo(worker_id="dead-one", host="h", pid=1, activities=("A",), started_at=now, last_seen=now)
    try:
        handle = provider.worker_liveness(dead, timeout=0.1)
        assert handle is not None
        await asyncio.to_thread(handle.beat)
        await asyncio.to_thread(handle.close, remove=False)  # as if killed: the record stays
        await asyncio.sleep(0.2)
        live = await cli("workers", db=db)
        everything = await cli("workers", "--all", "--json", db=db)
        table = await cli("workers", "--all", db=db)
    finally:
        await provider.close()
    assert (live.code, live.out.strip()) == (0, "No live workers.")
    [worker] = json.loads(everything.out)["workers"]
    assert (worker["worker_id"], worker["alive"], worker["activities"]) == ("dead-one", False, ["A"])
    assert "(dead)" in table.out.splitlines()[2]


# --- start says when no live worker will run what it starts ------------------------------------

UNSERVED = "perdure: warning: no live worker serves orchestration"


async def test_start_warns_when_no_live_worker_serves_the_orchestration(tmp_path: Path) -> None:
    db = tmp_path / "perdure.db"
    provider = await SqliteProvider.open(db)
    now = datetime.now(UTC)
    # A dead worker that served Greeting does not count; a live one serving only activities neither.
    dead = WorkerInfo(
        worker_id="dead-one", host="h", pid=1, orchestrations=("Greeting@1.0.0",), started_at=now, last_seen=now
    )
    try:
        handle = provider.worker_liveness(dead, timeout=0.1)
        assert handle is not None
        await asyncio.to_thread(handle.beat)
        await asyncio.to_thread(handle.close, remove=False)
        await asyncio.sleep(0.2)
        nobody = await cli("start", "Greeting", "--id", "a", "--json", db=db)
        versioned = await cli("start", "Greeting", "--id", "b", "--version", "1.0.0", db=db)
        state = await Client(provider).get_status("a")
    finally:
        await provider.close()
    assert nobody.code == 0 and json.loads(nobody.out) == {"instance_id": "a", "name": "Greeting"}
    assert nobody.err == (
        f"{UNSERVED} Greeting (any version): the instance will not run until one does "
        "(perdure workers lists the live workers)\n"
    )
    assert versioned.code == 0 and versioned.out.strip() == "Started Greeting as b."
    assert versioned.err.startswith(f"{UNSERVED} Greeting@1.0.0:")
    assert state is not None and state.name == "Greeting", "the instance is started all the same"


async def test_start_says_nothing_more_when_a_live_worker_serves_it(tmp_path: Path) -> None:
    db = tmp_path / "perdure.db"
    provider = await SqliteProvider.open(db)
    try:
        async with Runtime(provider, registry, FAST):
            served = await cli("start", "Greeting", "--id", "a", "--input", '"Ada"', db=db)
            pinned = await cli("start", "Greeting", "--id", "b", "--input", '"Bo"', "--version", "1.0.0", db=db)
            other_version = await cli("start", "Greeting", "--id", "c", "--version", "2.0.0", db=db)
            unknown = await cli("start", "NoSuchFlow", "--id", "d", db=db)
            output = (await Client(provider).wait_for_orchestration("a", timeout=10)).output
    finally:
        await provider.close()
    assert (served.code, served.err) == (0, ""), served.err
    assert (pinned.code, pinned.err) == (0, ""), pinned.err
    assert output == "Hello, Ada!"
    assert other_version.code == 0 and other_version.err.startswith(f"{UNSERVED} Greeting@2.0.0:")
    assert unknown.code == 0 and unknown.err.startswith(f"{UNSERVED} NoSuchFlow (any version):")
