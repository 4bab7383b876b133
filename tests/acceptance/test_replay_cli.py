"""``perdure replay`` as CI runs it before a deploy: a store snapshot, a changed registry, an exit code."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path

import pytest
from tests.acceptance.operator_support import cli
from tests.integration import replay_app
from tests.integration.runtime_support import FAST

from perdure import Client, Runtime, SqliteProvider
from perdure.tools._replay import read_history

APP = "tests.integration.replay_app"


async def _seed(path: Path) -> None:
    provider = await SqliteProvider.open(path)
    try:
        async with Runtime(provider, replay_app.original, FAST):
            await replay_app.seed(Client(provider))
    finally:
        await provider.close()


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("replay") / "snapshot.db"
    asyncio.run(_seed(path))
    return path


@pytest.fixture
def db(template: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "snapshot.db"
    shutil.copy(template, copy)
    return copy


def rows(text: str) -> dict[str, list[str]]:
    """The table of diverging instances: instance id → [orchestration, event, why]."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("INSTANCE"))
    return {line.split()[0]: line.split(maxsplit=3)[1:] for line in lines[start + 2 :] if line.strip()}


@pytest.mark.parametrize(("variant", "event_id"), sorted(replay_app.DIVERGES_AT.items()))
async def test_a_breaking_change_exits_1_naming_each_instance_and_the_first_differing_event(
    db: Path, variant: str, event_id: int
) -> None:
    result = await cli("replay", f"{APP}:{variant}", db=db)
    assert result.code == 1, result.err
    assert result.out.startswith("2 of 2 instances do not replay with this code:"), result.out
    table = rows(result.out)
    assert sorted(table) == ["done", "waiting"]
    for orchestration, at, why in table.values():
        assert (orchestration, at) == ("Order@1.0.0", str(event_id))
        assert why.startswith("NonDeterminismError: ") and f"(event {event_id})" in why


@pytest.mark.parametrize("variant", ["original", "unchanged", "patched"])
async def test_unchanged_or_correctly_patched_code_exits_0(db: Path, variant: str) -> None:
    result = await cli("replay", f"{APP}:{variant}", db=db)
    assert (result.code, result.out.strip()) == (0, "All 2 instances replay with this code."), result.err


async def test_json_lists_every_instance_with_the_differing_event(db: Path) -> None:
    result = await cli("replay", f"{APP}:renamed", "--json", db=db)
    assert result.code == 1, result.err
    data = json.loads(result.out)
    assert (data["replayed"], data["diverged"]) == (2, 2)
    first = data["instances"][0]
    assert (first["instance_id"], first["name"], first["version"], first["ok"]) == ("done", "Order", "1.0.0", False)
    assert first["error"]["type"] == "perdure.NonDeterminismError"
    assert "ActivityScheduled 'Hold'" in first["error"]["message"]
    assert first["event"]["event_id"] == 2 and first["event"]["type"] == "ActivityScheduled"
    assert first["event"]["details"]["name"] == "Reserve"
    assert first["event"]["description"] == "ActivityScheduled 'Reserve' with input 'done' (event 2)"


async def test_filters_choose_the_instances(db: Path) -> None:
    result = await cli("replay", f"{APP}:reordered", "--status", "running", "--json", db=db)
    assert [i["instance_id"] for i in json.loads(result.out)["instances"]] == ["waiting"]
    result = await cli("replay", f"{APP}:reordered", "--name", "Other", db=db)
    assert (result.code, result.out.strip()) == (0, "No instances to replay.")


async def test_a_history_file_from_instances_show_is_accepted(db: Path, tmp_path: Path) -> None:
    shown = await cli("instances", "show", "waiting", "--json", db=db)
    assert shown.code == 0, shown.err
    snapshot = tmp_path / "waiting.json"
    snapshot.write_text(shown.out, encoding="utf-8")
    # No store needed: the file is the whole input.
    diverging = await cli("replay", f"{APP}:removed", "--history", str(snapshot))
    assert diverging.code == 1, diverging.err
    assert rows(diverging.out)["waiting"][:2] == ["Order@1.0.0", "6"]
    passing = await cli("replay", f"{APP}:patched", "--history", str(snapshot))
    assert (passing.code, passing.out.strip()) == (0, "All 1 instance replay with this code."), passing.err
    # The events alone (a list) do as well; the file's name stands in for the instance id.
    events = tmp_path / "events-only.json"
    events.write_text(json.dumps(json.loads(shown.out)["history"]), encoding="utf-8")
    result = await cli("replay", f"{APP}:timer", "--history", str(events), "--json")
    assert [(i["instance_id"], i["event"]["event_id"]) for i in json.loads(result.out)["instances"]] == [
        ("events-only", 4)
    ]


async def test_an_unregistered_pinned_version_is_reported_and_exits_1(db: Path, tmp_path: Path) -> None:
    module = tmp_path / "newer_app.py"
    module.write_text(
        "from perdure import Registry\n"
        "from tests.integration.replay_app import _original\n"
        "registry = Registry()\n"
        "registry.orchestrations.add('Order', _original, '2.0.0')\n",
        encoding="utf-8",
    )
    result = await cli("replay", "newer_app:registry", db=db, env={"PYTHONPATH": _path_with(tmp_path)})
    assert result.code == 1, result.err
    assert "UnregisteredOrchestrationError: orchestration Order@1.0.0 is not registered" in result.out


def _path_with(directory: Path) -> str:
    return os.pathsep.join([str(directory), os.environ.get("PYTHONPATH", "")])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((f"{APP}:original",), "nothing to replay: give --db URL"),
        (("no_such_module:registry", "--history", "x.json"), "cannot load the registry no_such_module:registry"),
        ((f"{APP}:original", "--history", "missing.json"), "cannot read missing.json"),
    ],
)
async def test_usage_errors_exit_2(args: tuple[str, ...], message: str) -> None:
    result = await cli("replay", *args)
    assert result.code == 2, (result.out, result.err)
    assert result.err.startswith("perdure: error: ") and message in result.err


async def test_a_file_that_holds_no_history_is_a_usage_error(tmp_path: Path) -> None:
    for content in ("{}", '[{"type": "Nope"}]', "not json"):
        path = tmp_path / "bad.json"
        path.write_text(content, encoding="utf-8")
        result = await cli("replay", f"{APP}:original", "--history", str(path))
        assert result.code == 2, (content, result.err)
        assert str(path) in result.err


def test_a_history_file_names_its_instance_and_execution(tmp_path: Path) -> None:
    path = tmp_path / "shown.json"
    document = {"instance": {"instance_id": "order-9", "execution_id": 3}, "execution_id": 2, "history": []}
    path.write_text(json.dumps(document), encoding="utf-8")
    assert read_history(path) == ("order-9", 2, [])  # an earlier execution, shown with --execution 2
    path.write_text("[]", encoding="utf-8")
    assert read_history(path) == ("shown", 1, [])
