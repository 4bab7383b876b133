"""A real crash test: a worker process is SIGKILLed again and again, and nothing is lost or doubled.

200 orchestrations (sync and async activities, a fan-out, a timer, a child each) run on a SQLite
file in a worker process that kills itself mid-activity, between a fetch and its ack, and right
after an ack; the test restarts it until every instance has completed.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pytest

from perdure import OrchestrationStatus, SqliteProvider
from perdure.client import Client
from perdure.engine.events import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    HistoryEvent,
    OrchestrationCompleted,
    OrchestrationStarted,
    SubOrchestrationCompleted,
    SubOrchestrationFailed,
    SubOrchestrationScheduled,
    TimerCreated,
    TimerFired,
)
from perdure.providers._base import InstanceFilter

pytestmark = pytest.mark.slow

WORKER = Path(__file__).with_name("crash_worker.py")
INSTANCES = 200
# Where each worker run dies: mid-activity, between fetch and ack, right after an ack.
CRASHES = [
    *("activity:30", "fetch:150", "ack:200", "activity:90", "fetch:40", "ack:450", "ack:17", "activity:1"),
    *("fetch:1", "ack:1", "activity:5", "fetch:300", "ack:120"),
]
_ANSWERS = {ActivityScheduled: (ActivityCompleted, ActivityFailed), TimerCreated: (TimerFired,)}
_ANSWERS[SubOrchestrationScheduled] = (SubOrchestrationCompleted, SubOrchestrationFailed)


def _expected(n: int) -> list[int]:
    a = n + 1
    return [a, a * a, a * a * a, a * a + 1]


def _tail(output: Path) -> str:
    return output.read_text()[-3000:]


def _spawn(db: Path, log: Path, crash: str, output: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PERDURE_CRASH": crash}
    with output.open("ab") as out:
        return subprocess.Popen([sys.executable, str(WORKER), str(db), str(log)], env=env, stdout=out, stderr=out)


async def _completed(provider: SqliteProvider) -> int:
    where = InstanceFilter(status=[OrchestrationStatus.COMPLETED], limit=10_000)
    return len(await provider.list_instances(where))


async def _run_until_exit_or_done(
    proc: subprocess.Popen[bytes], provider: SqliteProvider, total: int, timeout: float, output: Path
) -> bool:
    """Wait for the worker to die or for every instance to complete; True when all completed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        if await _completed(provider) == total:
            return True
        await asyncio.sleep(0.05)
    proc.kill()
    proc.wait()
    done = await _completed(provider)
    raise AssertionError(
        f"the worker neither died nor finished within {timeout} s ({done}/{total} completed):\n" + _tail(output)
    )


def _check_history(instance_id: str, history: list[HistoryEvent]) -> None:
    ids = [e.event_id for e in history]
    assert ids == list(range(1, len(history) + 1)), f"{instance_id}: event ids {ids}"
    assert isinstance(history[0], OrchestrationStarted)
    assert isinstance(history[-1], OrchestrationCompleted)
    assert sum(isinstance(e, OrchestrationStarted | OrchestrationCompleted) for e in history) == 2
    scheduled = {e.event_id: e for e in history if type(e) in _ANSWERS}
    answers = Counter(getattr(e, "source_event_id", None) for e in history if hasattr(e, "source_event_id"))
    for event_id, event in scheduled.items():
        assert answers[event_id] == 1, f"{instance_id}: {event} answered {answers[event_id]} times"
    for event in history:
        source = getattr(event, "source_event_id", None)
        if source is not None:
            assert isinstance(event, _ANSWERS[type(scheduled[source])]), f"{instance_id}: {event}"


@pytest.mark.timeout(150)
async def test_repeated_sigkills_lose_nothing_and_duplicate_no_history_event(tmp_path: Path) -> None:
    db, log, output = tmp_path / "crash.db", tmp_path / "activities.log", tmp_path / "worker-output.txt"
    provider = await SqliteProvider.open(db)
    client = Client(provider)
    try:
        for n in range(INSTANCES):
            await client.start_orchestration(f"pipeline-{n:03}", "Pipeline", n)
        total = 2 * INSTANCES  # every pipeline has one child

        exit_codes: list[int] = []
        done = False
        for crash in CRASHES:
            proc = _spawn(db, log, crash, output)
            done = await _run_until_exit_or_done(proc, provider, total, timeout=30, output=output)
            if done:
                proc.kill()
                proc.wait()
                break
            exit_codes.append(proc.returncode)
        if not done:
            proc = _spawn(db, log, "", output)  # the last run never crashes on its own
            try:
                done = await _run_until_exit_or_done(proc, provider, total, timeout=60, output=output)
            finally:
                proc.kill()
                proc.wait()
        assert done, _tail(output)
        assert exit_codes == [-signal.SIGKILL] * len(CRASHES), _tail(output)

        states = await provider.list_instances(InstanceFilter(limit=10_000))
        assert len(states) == total
        assert all(s.status is OrchestrationStatus.COMPLETED for s in states)
        for n in range(INSTANCES):
            state = await client.get_status(f"pipeline-{n:03}")
            assert state is not None
            assert state.output == _expected(n), state

        runs = Counter(tuple(line.split("\t")) for line in log.read_text().splitlines())
        for state in states:
            history = await client.get_history(state.instance_id)
            _check_history(state.instance_id, history)
            kinds = Counter(type(e).__name__ for e in history)
            if state.name == "Pipeline":
                assert kinds["ActivityScheduled"] == 3
                assert kinds["TimerCreated"] == kinds["SubOrchestrationScheduled"] == 1
            else:
                assert state.parent_instance_id is not None
                assert kinds["ActivityScheduled"] == 1
            for event in history:
                if isinstance(event, ActivityScheduled):
                    key = (state.instance_id, event.name, json.dumps(event.input))
                    assert runs[key] >= 1, f"{key} never ran"
        assert sum(runs.values()) >= 4 * INSTANCES
        # The activities killed mid-run ran again: at least once, and here more than once.
        assert max(runs.values()) >= 2
    finally:
        await provider.close()
