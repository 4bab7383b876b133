"""``perdure schedules``: create, list, show, pause, resume, trigger and delete, as an operator does; exit codes."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from tests.acceptance.operator_support import FAST, cli, registry

from perdure import Client, Runtime, SqliteProvider


async def _until(client: Client, schedule_id: str, state: str) -> None:
    deadline = time.monotonic() + 15
    while (await client.get_schedule(schedule_id)).state != state:
        assert time.monotonic() < deadline, f"schedule {schedule_id} never became {state}"
        await asyncio.sleep(0.05)


async def test_an_operator_manages_a_schedule_from_the_command_line(tmp_path: Path) -> None:
    db = tmp_path / "perdure.db"
    provider = await SqliteProvider.open(db)
    try:
        async with Runtime(provider, registry, FAST):
            client = Client(provider)
            created = await cli(
                "schedules", "create", "hello", "Greeting", "--every", "1h", "--input", '"ops"', "--json", db=db
            )
            assert created.code == 0, created.err
            assert json.loads(created.out)["schedule"]["every_seconds"] == 3600
            cron = await cli(
                "schedules", "create", "nightly", "Greeting", "--cron", "0 2 * * *", "--timezone", "Europe/Paris", db=db
            )
            assert cron.code == 0 and "cron 0 2 * * * (Europe/Paris); first run at" in cron.out, cron.err

            listed = await cli("schedules", "list", db=db)
            assert listed.code == 0, listed.err
            header, _, *rows = listed.out.splitlines()
            assert header.split()[:3] == ["SCHEDULE", "ORCHESTRATION", "WHEN"]
            assert [row.split()[0] for row in rows] == ["hello", "nightly"]
            assert "every 1h" in rows[0] and "active" in rows[0]

            assert (await cli("schedules", "pause", "hello", "--note", "quiet hours", db=db)).code == 0
            await _until(client, "hello", "paused")
            assert (await cli("schedules", "trigger", "hello", db=db)).code == 0
            run = await _triggered_run(client)
            assert (await client.wait_for_orchestration(run, timeout=15)).output == "Hello, ops!"
            shown = await cli("schedules", "show", "hello", db=db)
            assert shown.code == 0, shown.err
            assert "Schedule hello: paused (quiet hours)" in shown.out and run in shown.out
            data = json.loads((await cli("schedules", "show", "hello", "--json", db=db)).out)
            assert data["schedule"]["fires"] == 1 and [r["instance_id"] for r in data["runs"]] == [run]

            assert (await cli("schedules", "resume", "hello", db=db)).code == 0
            await _until(client, "hello", "active")
            assert (await cli("schedules", "delete", "hello", db=db)).code == 0
            deadline = time.monotonic() + 15
            while "hello" in (await cli("schedules", "list", db=db)).out:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.1)
    finally:
        await provider.close()


async def _triggered_run(client: Client) -> str:
    deadline = time.monotonic() + 15
    while (run := (await client.get_schedule("hello")).last_run_id) is None:
        assert time.monotonic() < deadline, "the triggered run never started"
        await asyncio.sleep(0.05)
    return run


async def test_schedule_commands_fail_with_one_line_and_the_documented_exit_code(tmp_path: Path) -> None:
    db = tmp_path / "perdure.db"
    await (await SqliteProvider.open(db)).close()
    assert (await cli("schedules", "create", "s", "Greeting", "--every", "1m", db=db)).code == 0
    cases = [
        (("schedules", "show", "nope"), 3, "no schedule with id 'nope'"),
        (("schedules", "pause", "nope"), 3, "no schedule with id 'nope'"),
        (("schedules", "create", "s", "Greeting", "--every", "5m"), 5, "a schedule with id 's' exists"),
        (("schedules", "create", "t", "Greeting"), 2, "give exactly one of --cron and --every"),
        (("schedules", "create", "t", "Greeting", "--cron", "0 25 * * *"), 2, "not a valid cron expression"),
        (("schedules", "create", "t", "Greeting", "--every", "soon"), 2, "is not a duration"),
        (
            ("schedules", "create", "t", "Greeting", "--every", "1s", "--timezone", "Nowhere/City"),
            2,
            "unknown time zone",
        ),
        (("schedules", "create", "t", "Greeting", "--every", "1m", "--overlap", "queue"), 2, "invalid choice"),
        (("schedules", "create", "a@b", "Greeting", "--every", "1m"), 2, "must not contain '@'"),
    ]
    for args, code, words in cases:
        result = await cli(*args, db=db)
        assert result.code == code, (args, result.out, result.err)
        assert words in result.err and result.err.count("\n") <= 1 + ("usage" in result.err) * 3, result.err
