"""Time limits and cancellation with real worker processes, on SQLite and PostgreSQL.

Two ``perdure worker`` processes run ``limits_app``; the test process only starts instances,
raises events and reads histories. Activities note in files when they start and when they learn
they must stop, so the delays measured here cross process boundaries.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from tests.integration.runtime_support import assert_history_sound, drop_test_provider, open_test_provider, wait_until

from perdure import Client, OrchestrationStatus
from perdure.engine.events import ActivityFailed, ActivityScheduled, HistoryEvent, TaskCancelled

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]
TOLD_WITHIN = 1.5  # "within a second": the workers look twice a second; the rest is slack for a loaded machine


@pytest.fixture
async def store(provider_kind: str, tmp_path: Path) -> AsyncIterator[tuple[Client, str]]:
    provider, url = await open_test_provider(provider_kind, tmp_path)
    try:
        yield Client(provider), url
    finally:
        await drop_test_provider(provider_kind, provider)


@contextmanager
def workers(url: str, notes: Path, count: int = 2) -> Iterator[None]:
    env = {**os.environ, "PERDURE_LIMITS_DIR": str(notes)}
    command = [sys.executable, "-m", "perdure", "worker", "tests.acceptance.limits_app:registry", "--db", url]
    processes = []
    for n in range(count):
        with open(notes / f"worker-{n}.log", "wb") as log:
            processes.append(subprocess.Popen([*command, "--grace", "1"], cwd=REPO, env=env, stdout=log, stderr=log))
    try:
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def noted(notes: Path, instance_id: str, activity: str, what: str) -> float | None:
    path = notes / f"{instance_id}.{activity}.{what}"
    return float(path.read_text()) if path.exists() and path.read_text() else None


def logs(notes: Path) -> str:
    return "\n".join(p.read_text()[-2000:] for p in sorted(notes.glob("worker-*.log")))


async def wait_for_state(client: Client, instance_id: str, notes: Path, timeout: float = 30) -> object:
    try:
        return await client.wait_for_orchestration(instance_id, timeout=timeout)
    except TimeoutError:
        raise AssertionError(f"{instance_id} did not finish; worker logs:\n{logs(notes)}") from None


async def test_a_cancelled_when_any_loser_is_told_within_a_second(store: tuple[Client, str], tmp_path: Path) -> None:
    client, url = store
    with workers(url, tmp_path):
        await client.start_orchestration("race", "Race")

        async def cancelled() -> list[HistoryEvent] | None:
            history = await client.get_history("race")
            return history if sum(isinstance(e, TaskCancelled) for e in history) == 2 else None

        history = await wait_until(cancelled, timeout=30, what="the cancellations")
        stops = await wait_until(
            lambda: (
                [noted(tmp_path, "race", a, "stopped") for a in ("Hang", "Spin")]
                if all(noted(tmp_path, "race", a, "stopped") for a in ("Hang", "Spin"))
                else None
            ),
            timeout=10,
            what="both losers learning of it",
        )
        cancelled_at = next(e for e in history if isinstance(e, TaskCancelled)).timestamp.timestamp()
        delays = [stop - cancelled_at for stop in stops]
        print(f"cancellation reached the async and the sync activity after {delays[0]:.2f} s and {delays[1]:.2f} s")
        assert all(0 <= delay < TOLD_WITHIN for delay in delays), delays
        await client.raise_event("race", "finish")
        state = await wait_for_state(client, "race", tmp_path)

    assert state.status is OrchestrationStatus.COMPLETED and state.output == "fast"  # type: ignore[attr-defined]
    assert_history_sound(await client.get_history("race"))


async def test_terminate_cancels_the_running_activities(store: tuple[Client, str], tmp_path: Path) -> None:
    client, url = store
    with workers(url, tmp_path):
        await client.start_orchestration("doomed", "LeaveRunning")
        await wait_until(
            lambda: noted(tmp_path, "doomed", "Hang", "started") and noted(tmp_path, "doomed", "Spin", "started"),
            timeout=30,
            what="both activities starting",
        )
        await client.terminate("doomed", "no longer needed")
        state = await wait_for_state(client, "doomed", tmp_path)
        stops = await wait_until(
            lambda: (
                [noted(tmp_path, "doomed", a, "stopped") for a in ("Hang", "Spin")]
                if all(noted(tmp_path, "doomed", a, "stopped") for a in ("Hang", "Spin"))
                else None
            ),
            timeout=10,
            what="both activities learning of the termination",
        )

    assert state.status is OrchestrationStatus.TERMINATED  # type: ignore[attr-defined]
    terminated_at = state.updated_at.timestamp()  # type: ignore[attr-defined]
    delays = [stop - terminated_at for stop in stops]
    print(f"termination reached the running activities after {delays[0]:.2f} s and {delays[1]:.2f} s")
    assert all(-0.1 < delay < TOLD_WITHIN for delay in delays), delays  # -0.1: the commit's clock is the store's


@pytest.mark.parametrize(("activity", "fails_within"), [("HangOnce", (0.8, 2.5)), ("BlockLoopOnce", (1.8, 3.5))])
async def test_a_hung_attempt_times_out_after_start_to_close_and_the_retry_succeeds(
    store: tuple[Client, str], tmp_path: Path, activity: str, fails_within: tuple[float, float]
) -> None:
    """``HangOnce`` awaits forever: its own worker fails it after 1 s. ``BlockLoopOnce`` blocks its
    worker's event loop for 6 s, so that worker can do nothing: the time-out it queued when the
    attempt started (1 s + 1 s of grace) is recorded by the other worker, which runs the retry."""
    client, url = store
    instance_id = f"limited-{activity}"
    with workers(url, tmp_path):
        await client.start_orchestration(instance_id, "Limited", activity)
        state = await wait_for_state(client, instance_id, tmp_path)
        blocked_still = noted(tmp_path, instance_id, activity, "unblocked") is None

    assert state.status is OrchestrationStatus.COMPLETED, logs(tmp_path)  # type: ignore[attr-defined]
    assert state.output == "attempt 2"  # type: ignore[attr-defined]
    history = await client.get_history(instance_id)
    assert_history_sound(history)
    first = next(e for e in history if isinstance(e, ActivityScheduled))
    [timed_out] = [e for e in history if isinstance(e, ActivityFailed)]
    assert timed_out.error.type == "ActivityTimeoutError"
    assert timed_out.error.message == f"activity {activity!r} exceeded its start_to_close of 1 s"
    took = (timed_out.timestamp - first.timestamp).total_seconds()
    print(f"{activity}: the first attempt failed {took:.2f} s after it was scheduled")
    low, high = fails_within
    assert low < took < high, took
    if activity == "BlockLoopOnce":
        assert blocked_still, "the instance finished while the blocked worker was still blocked"
