"""The operator CLI as a user runs it: ``python -m perdure …`` in a subprocess against a seeded SQLite file."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path

import pytest
from tests.acceptance.operator_support import FAST, FLAKY, Seeded, cli, registry, seed, wait_status

from perdure import Client, OrchestrationStatus, Registry, Runtime, RuntimeOptions, SqliteProvider

INSTANCE_KEYS = {
    "instance_id",
    "name",
    "version",
    "status",
    "execution_id",
    "input",
    "output",
    "error",
    "custom_status",
    "parent_instance_id",
    "created_at",
    "updated_at",
    "waiting_for",
}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Seeded]:
    """One seeded store per module; each test works on a copy."""
    path = tmp_path_factory.mktemp("seed") / "template.db"
    return path, asyncio.run(seed(path))


@pytest.fixture
def db(template: tuple[Path, Seeded], tmp_path: Path) -> Path:
    copy = tmp_path / "perdure.db"
    shutil.copy(template[0], copy)
    return copy


@pytest.fixture
def ids(template: tuple[Path, Seeded]) -> Seeded:
    return template[1]


@asynccontextmanager
async def store(db: Path, *, run: bool = False) -> AsyncIterator[Client]:
    """A client of the test's store, with a runtime serving it when ``run``."""
    provider = await SqliteProvider.open(db)
    try:
        if run:
            async with Runtime(provider, registry, FAST):
                yield Client(provider)
        else:
            yield Client(provider)
    finally:
        await provider.close()


def ids_in_table(text: str) -> list[str]:
    return [line.split()[0] for line in text.splitlines()[2:] if line.strip() and not line.startswith("Next page")]


# --- instances list ----------------------------------------------------------------------------


async def test_list_prints_every_instance_with_its_status_as_a_table(db: Path, ids: Seeded) -> None:
    result = await cli("instances", "list", db=db)
    assert result.code == 0, result.err
    header = result.out.splitlines()[0].split()
    assert header[:4] == ["INSTANCE", "NAME", "VERSION", "STATUS"]
    rows = {line.split()[0]: line.split()[3] for line in result.out.splitlines()[2:] if line.strip()}
    assert rows[ids.completed] == "COMPLETED"
    assert rows[ids.failed] == "FAILED"
    assert rows[ids.running] == "RUNNING"
    assert rows[ids.suspended] == "SUSPENDED"
    assert rows[ids.terminated] == "TERMINATED"
    assert rows[ids.pending] == "PENDING"
    assert "Next page" not in result.out


async def test_list_filters_by_status_name_prefix_and_creation_time(db: Path, ids: Seeded) -> None:
    failed = await cli("instances", "list", "--status", "failed", "--json", db=db)
    assert [i["instance_id"] for i in json.loads(failed.out)["instances"]] == [ids.failed]
    several = await cli("instances", "list", "--status", "running,suspended", "--status", "PENDING", db=db)
    assert sorted(ids_in_table(several.out)) == sorted([ids.running, ids.suspended, ids.pending])
    waiters = await cli("instances", "list", "--name", "Waiter", db=db)
    assert sorted(ids_in_table(waiters.out)) == sorted([ids.running, ids.suspended, ids.terminated])
    family = await cli("instances", "list", "--prefix", "family", db=db)
    assert ids_in_table(family.out) == ["family", "family-child-0", "family-child-1"]
    old = await cli("instances", "list", "--created-before", "1h", db=db)
    assert old.out.strip() == "No instances match."
    recent = await cli("instances", "list", "--created-after", "2000-01-01T00:00:00", "--json", db=db)
    assert len(json.loads(recent.out)["instances"]) == 9


async def test_list_pages_with_the_cursor_it_prints(db: Path) -> None:
    seen: list[str] = []
    after: list[str] = []
    for _ in range(5):
        result = await cli("instances", "list", "--limit", "4", "--json", *after, db=db)
        page = json.loads(result.out)
        assert set(page) == {"instances", "next_cursor"}
        seen += [i["instance_id"] for i in page["instances"]]
        if page["next_cursor"] is None:
            break
        after = ["--after", page["next_cursor"]]
    assert len(seen) == 9 and seen == sorted(set(seen))
    text = await cli("instances", "list", "--limit", "4", db=db)
    assert text.out.rstrip().endswith("Next page: --after order-completed")


async def test_list_json_has_the_stable_instance_shape(db: Path, ids: Seeded) -> None:
    result = await cli("instances", "list", "--prefix", ids.completed, "--json", db=db)
    [instance] = json.loads(result.out)["instances"]
    assert set(instance) == INSTANCE_KEYS
    assert instance["status"] == "COMPLETED" and instance["output"] == "Hello, Ada!"
    assert instance["custom_status"] == {"step": "greeting"}
    assert instance["created_at"].endswith("+00:00")


async def test_options_come_from_the_environment(db: Path, ids: Seeded) -> None:
    env = {"PERDURE_JSON": "1", "PERDURE_STATUS": "failed", "PERDURE_LIMIT": "5"}
    result = await cli("instances", "list", db=db, env=env)
    assert [i["instance_id"] for i in json.loads(result.out)["instances"]] == [ids.failed]
    # The command line wins over the environment.
    result = await cli("instances", "list", "--status", "pending", db=db, env=env)
    assert [i["instance_id"] for i in json.loads(result.out)["instances"]] == [ids.pending]


async def test_without_a_database_it_says_how_to_give_one() -> None:
    result = await cli("instances", "list")
    assert result.code == 2
    assert "give --db URL or set PERDURE_DB" in result.err
    assert result.out == ""


async def test_a_bad_status_is_a_usage_error(db: Path) -> None:
    result = await cli("instances", "list", "--status", "sleeping", db=db)
    assert result.code == 2
    assert "unknown status 'sleeping'" in result.err


# --- instances show ----------------------------------------------------------------------------


async def test_show_prints_state_error_traceback_and_history_with_relative_times(db: Path, ids: Seeded) -> None:
    result = await cli("instances", "show", ids.failed, db=db)
    assert result.code == 0, result.err
    out = result.out
    assert "Status:        FAILED" in out
    assert "Error:         perdure.ActivityFailedError: activity 'Charge' failed: RuntimeError: card declined" in out
    assert "Traceback (most recent call last):" in out
    history = out.split("History (execution 1):\n", 1)[1].splitlines()
    assert history[0].split() == ["#", "TIME", "EVENT", "DETAILS"]
    events = [line.split()[2] for line in history[2:]]
    assert events == [
        "OrchestrationStarted",
        "ActivityScheduled",
        "ActivityCompleted",
        "ActivityScheduled",
        "ActivityFailed",
        "OrchestrationFailed",
    ]
    assert history[2].split()[1] == "+0.000s"
    assert all(re.fullmatch(r"\+\d+\.\d{3}s", line.split()[1]) for line in history[2:])


async def test_show_lists_children_and_custom_status(db: Path, ids: Seeded) -> None:
    family = await cli("instances", "show", ids.parent, db=db)
    assert "Children:" in family.out
    assert "family-child-0" in family.out and "family-child-1" in family.out
    child = await cli("instances", "show", "family-child-0", db=db)
    assert "Parent:        family" in child.out
    assert 'Custom status: {"step": "greeting"}' in child.out
    assert "Waiting for:" not in child.out


async def test_show_names_the_event_an_instance_waits_for(db: Path, ids: Seeded) -> None:
    text = await cli("instances", "show", ids.running, db=db)
    assert re.search(r"^Waiting for:   event 'approve' since \d{4}-\d\d-\d\dT[\d:.]+\+00:00$", text.out, re.M)
    data = json.loads((await cli("instances", "show", ids.running, "--json", db=db)).out)
    [awaited] = data["instance"]["waiting_for"]
    assert (awaited["name"], awaited["timeout_at"], awaited["timer_event_id"]) == ("approve", None, None)
    assert datetime.fromisoformat(awaited["since"]).tzinfo is not None


async def test_show_json_has_instance_history_and_children(db: Path, ids: Seeded) -> None:
    result = await cli("instances", "show", ids.parent, "--json", db=db)
    data = json.loads(result.out)
    assert set(data) == {"instance", "execution_id", "history", "children"}
    assert data["execution_id"] == 1
    assert set(data["instance"]) == INSTANCE_KEYS
    first = data["history"][0]
    assert set(first) == {"event_id", "type", "timestamp", "offset_seconds", "details"}
    assert first["type"] == "OrchestrationStarted" and first["offset_seconds"] == 0
    assert first["details"]["input"] == ["Bo", "Cy"]
    assert [c["instance_id"] for c in data["children"]] == ["family-child-0", "family-child-1"]


async def test_show_of_an_unknown_instance_exits_3(db: Path) -> None:
    result = await cli("instances", "show", "no-such-order", db=db)
    assert result.code == 3
    assert result.err.strip() == "perdure: error: no instance with id 'no-such-order'"
    assert result.out == ""


# --- start and raise-event ---------------------------------------------------------------------


async def test_start_creates_an_instance_that_a_worker_runs(db: Path) -> None:
    result = await cli("start", "Greeting", "--id", "cli-1", "--input", '"Eve"', "--json", db=db)
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"instance_id": "cli-1", "name": "Greeting"}
    text = await cli("start", "Greeting", "--id", "cli-2", "--input", '"Fay"', "--version", "1.0.0", db=db)
    assert text.out.strip() == "Started Greeting as cli-2."
    async with store(db, run=True) as client:
        assert (await client.wait_for_orchestration("cli-1", timeout=10)).output == "Hello, Eve!"
        state = await client.wait_for_orchestration("cli-2", timeout=10)
        assert (state.output, state.version) == ("Hello, Fay!", "1.0.0")


async def test_start_without_an_id_prints_the_new_one(db: Path) -> None:
    result = await cli("start", "Greeting", "--input", '"Gus"', "--json", db=db)
    assert result.code == 0, result.err
    started = json.loads(result.out)
    assert re.fullmatch(r"[0-9a-f]{32}", started["instance_id"]) and started["name"] == "Greeting"
    async with store(db, run=True) as client:
        assert (await client.wait_for_orchestration(started["instance_id"], timeout=10)).output == "Hello, Gus!"


async def test_start_if_exists_returns_or_restarts_the_existing_instance(db: Path, ids: Seeded) -> None:
    kept = await cli("start", "Greeting", "--id", ids.completed, "--if-exists", "return", db=db)
    assert (kept.code, kept.out.strip()) == (0, f"Started Greeting as {ids.completed}.")
    async with store(db) as client:
        state = await client.get_status(ids.completed)
        assert state is not None and (state.status, state.execution_id) == (OrchestrationStatus.COMPLETED, 1)
    again = await cli("start", "Greeting", "--id", ids.completed, "--input", '"Ivy"', "--if-exists", "restart", db=db)
    assert again.code == 0, again.err
    async with store(db, run=True) as client:
        state = await client.wait_for_orchestration(ids.completed, timeout=10)
    assert (state.status, state.execution_id, state.output) == (OrchestrationStatus.COMPLETED, 2, "Hello, Ivy!")


async def test_start_creates_a_store_only_when_asked(tmp_path: Path) -> None:
    fresh = tmp_path / "fresh.db"
    refused = await cli("start", "Greeting", "--id", "a", db=fresh)
    assert (refused.code, refused.out) == (3, "")
    assert refused.err == f"perdure: error: no perdure store at '{fresh}': no such file\n"
    assert not fresh.exists()
    created = await cli("start", "Greeting", "--id", "a", "--create", db=fresh)
    assert (created.code, created.out.strip()) == (0, "Started Greeting as a.")
    listed = await cli("instances", "list", "--json", db=fresh)
    assert [i["instance_id"] for i in json.loads(listed.out)["instances"]] == ["a"]


async def test_start_refuses_bad_json_and_taken_ids(db: Path, ids: Seeded) -> None:
    bad = await cli("start", "Greeting", "--id", "cli-3", "--input", "{name: Eve}", db=db)
    assert bad.code == 2
    assert "--input is not valid JSON" in bad.err
    taken = await cli("start", "Greeting", "--id", ids.completed, db=db)
    assert taken.code == 5
    assert f"an instance with id '{ids.completed}' already exists" in taken.err
    async with store(db) as client:
        assert await client.get_status("cli-3") is None


async def test_raise_event_reaches_the_waiting_instance(db: Path, ids: Seeded) -> None:
    result = await cli("raise-event", ids.running, "approve", "--data", '{"by": "ops"}', db=db)
    assert result.code == 0, result.err
    assert result.out.strip() == f"Raised event approve on {ids.running}."
    async with store(db, run=True) as client:
        assert (await client.wait_for_orchestration(ids.running, timeout=10)).output == {"by": "ops"}


async def test_raise_event_errors(db: Path, ids: Seeded) -> None:
    unknown = await cli("raise-event", "ghost", "approve", db=db)
    assert (unknown.code, unknown.err.strip()) == (3, "perdure: error: no instance with id 'ghost'")
    bad = await cli("raise-event", ids.running, "approve", "--data", "[1,", db=db)
    assert bad.code == 2
    assert "--data is not valid JSON" in bad.err


async def test_raise_event_on_a_finished_instance_is_refused_with_exit_4(db: Path, ids: Seeded) -> None:
    for finished, status in ((ids.completed, "COMPLETED"), (ids.failed, "FAILED"), (ids.terminated, "TERMINATED")):
        result = await cli("raise-event", finished, "approve", db=db)
        assert (result.code, result.out) == (4, "")
        assert result.err == f"perdure: error: instance '{finished}' is {status}; it takes no events\n"
    async with store(db) as client:
        assert await client.provider.fetch_orchestration_item(30) is not None  # the pending one's start
        assert await client.provider.fetch_orchestration_item(30) is None, "no event was queued"


# --- terminate, suspend, resume, rewind --------------------------------------------------------


async def test_terminate_with_a_reason(db: Path, ids: Seeded) -> None:
    result = await cli("terminate", ids.running, "--reason", "duplicate order", "--json", db=db)
    assert result.code == 0, result.err
    assert json.loads(result.out) == {"instance_id": ids.running, "action": "terminate"}
    async with store(db, run=True) as client:
        state = await client.wait_for_orchestration(ids.running, timeout=10)
        assert state.status is OrchestrationStatus.TERMINATED
    shown = await cli("instances", "show", ids.running, db=db)
    assert "OrchestrationTerminated" in shown.out and "reason=duplicate order" in shown.out


async def test_terminate_of_a_finished_instance_is_refused_with_exit_4(db: Path, ids: Seeded) -> None:
    result = await cli("terminate", ids.completed, db=db)
    assert result.code == 4
    expected = f"perdure: error: instance '{ids.completed}' is already COMPLETED; nothing to terminate"
    assert result.err.strip() == expected
    unknown = await cli("terminate", "ghost", db=db)
    assert unknown.code == 3


async def test_terminate_no_recursive_leaves_children_running(db: Path) -> None:
    async with store(db, run=True) as client:
        await client.start_orchestration("boss", "Boss")
        await wait_status(client, "boss-worker", OrchestrationStatus.RUNNING)
        result = await cli("terminate", "boss", "--no-recursive", db=db)
        assert result.code == 0, result.err
        await client.wait_for_orchestration("boss", timeout=10)
        # A termination sent to the child would be queued before this event and win; it completes instead.
        await client.raise_event("boss-worker", "approve", "still here")
        state = await client.wait_for_orchestration("boss-worker", timeout=10)
        assert (state.status, state.output) == (OrchestrationStatus.COMPLETED, "still here")


async def test_suspend_and_resume(db: Path, ids: Seeded) -> None:
    async with store(db, run=True) as client:
        suspended = await cli("suspend", ids.running, "--reason", "investigating", db=db)
        assert suspended.out.strip() == f"Suspension requested for {ids.running}."
        await wait_status(client, ids.running, OrchestrationStatus.SUSPENDED)
        again = await cli("suspend", ids.running, db=db)
        assert again.code == 4
        assert "is SUSPENDED; it cannot be suspended" in again.err
        resumed = await cli("resume", ids.running, "--json", db=db)
        assert json.loads(resumed.out) == {"instance_id": ids.running, "action": "resume"}
        await wait_status(client, ids.running, OrchestrationStatus.RUNNING)
    not_suspended = await cli("resume", ids.completed, db=db)
    assert not_suspended.code == 4
    assert "not SUSPENDED" in not_suspended.err
    assert (await cli("suspend", "ghost", db=db)).code == 3


async def test_rewind_makes_a_failed_instance_complete(db: Path, ids: Seeded) -> None:
    FLAKY["fail"] = False
    try:
        result = await cli("rewind", ids.failed, "--reason", "card fixed", "--json", db=db)
        assert result.code == 0, result.err
        assert json.loads(result.out) == {"instance_id": ids.failed, "action": "rewind", "execution_id": 2}
        shown = await cli("instances", "show", ids.failed, "--json", db=db)
        assert json.loads(shown.out)["instance"]["status"] == "PENDING", "in progress as soon as the command returns"
        async with store(db, run=True) as client:
            state = await client.wait_for_orchestration(ids.failed, timeout=10)
        assert (state.status, state.execution_id) == (OrchestrationStatus.COMPLETED, 2)
        assert state.output == ["Hello, shop!", "charged 42"]
    finally:
        FLAKY["fail"] = True


async def test_rewind_says_which_execution_runs_again(db: Path, ids: Seeded) -> None:
    result = await cli("rewind", ids.failed, db=db)
    assert result.out.strip() == f"Rewind requested for {ids.failed}: it runs again as execution 2."


async def test_rewind_of_an_instance_that_has_not_failed_is_refused(db: Path, ids: Seeded) -> None:
    result = await cli("rewind", ids.completed, db=db)
    assert result.code == 4
    assert ids.completed in result.err
    assert (await cli("rewind", "ghost", db=db)).code == 3


async def test_a_refused_rewind_shows_as_a_failed_execution_that_says_why(db: Path, ids: Seeded) -> None:
    assert (await cli("rewind", ids.failed, "--reason", "try again", db=db)).code == 0
    # Only a worker without the orchestration's code runs: the rewind cannot proceed.
    few = RuntimeOptions(idle_timeout=1.0, max_dispatch_attempts=2, dispatch_backoff=0.01, max_dispatch_backoff=0.02)
    provider = await SqliteProvider.open(db)
    try:
        async with Runtime(provider, Registry(), few):
            state = await Client(provider).wait_for_orchestration(ids.failed, execution_id=2, timeout=10)
    finally:
        await provider.close()
    assert (state.status, state.execution_id) == (OrchestrationStatus.FAILED, 2)
    shown = await cli("instances", "show", ids.failed, db=db)
    assert shown.code == 0, shown.err
    assert "Status:        FAILED" in shown.out and "Execution:     2" in shown.out
    assert "the rewind was refused: orchestration Flaky@1.0.0 is not registered" in shown.out
    as_json = json.loads((await cli("instances", "show", ids.failed, "--json", db=db)).out)
    assert as_json["instance"]["error"]["message"].startswith("the rewind was refused")


# --- purge -------------------------------------------------------------------------------------


async def test_purge_one_instance_with_and_without_its_children(db: Path, ids: Seeded) -> None:
    single = await cli("purge", ids.completed, db=db)
    assert single.out.strip() == f"Purged 1 instance ({ids.completed})."
    alone = await cli("purge", "family-child-1", "--no-recursive", "--json", db=db)
    assert json.loads(alone.out) == {"purged": 1}
    family = await cli("purge", ids.parent, "--json", db=db)
    assert json.loads(family.out) == {"purged": 2}
    left = await cli("instances", "list", db=db)
    assert sorted(ids_in_table(left.out)) == sorted(
        [ids.failed, ids.pending, ids.running, ids.suspended, ids.terminated]
    )


async def test_purge_refuses_unfinished_and_unknown_instances(db: Path, ids: Seeded) -> None:
    running = await cli("purge", ids.running, db=db)
    assert running.code == 4
    assert "only finished instances can be purged" in running.err
    assert (await cli("purge", "ghost", db=db)).code == 3
    neither = await cli("purge", db=db)
    assert neither.code == 2
    assert "--created-before" in neither.err


async def test_bulk_purge_shows_progress_and_keeps_what_does_not_match(db: Path, ids: Seeded) -> None:
    result = await cli("purge", "--status", "completed", "--created-before", "0s", "--batch-size", "2", db=db)
    assert result.code == 0, result.err
    assert result.out.strip() == "Purged 4 instances."
    assert result.err.splitlines() == ["purging… 2 purged", "purging… 4 purged"]
    left = await cli("instances", "list", "--json", db=db)
    statuses = sorted(i["status"] for i in json.loads(left.out)["instances"])
    assert statuses == ["FAILED", "PENDING", "RUNNING", "SUSPENDED", "TERMINATED"]
    rest = await cli("purge", "--created-before", "0s", "--json", db=db)
    assert json.loads(rest.out) == {"purged": 2}
    nothing_old = await cli("purge", "--created-before", "1d", "--json", db=db)
    assert json.loads(nothing_old.out) == {"purged": 0}


async def test_bulk_purge_of_unfinished_statuses_is_refused(db: Path) -> None:
    result = await cli("purge", "--status", "running", "--created-before", "0s", db=db)
    assert result.code == 4
    assert "only COMPLETED, FAILED and TERMINATED instances can be purged" in result.err


# --- dashboard (start-up refusals; the pages are tested in a browser) --------------------------


async def test_dashboard_refuses_a_public_address_without_a_token(db: Path) -> None:
    result = await cli("dashboard", "--host", "0.0.0.0", "--port", "0", db=db)
    assert result.code == 2
    assert "not a loopback address" in result.err and "--token" in result.err
    short = await cli("dashboard", "--host", "0.0.0.0", "--port", "0", env={"PERDURE_TOKEN": "short"}, db=db)
    assert short.code == 2
    assert "at least 16 characters" in short.err
