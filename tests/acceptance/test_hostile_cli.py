"""The CLI prints what the store holds without letting a terminal obey it.

Outputs, errors, custom statuses, event data and inputs are whatever orchestrations and callers
put there; ids and names are checked by the client, but a store written by another program (or
an older version) may hold anything. None of it may reach a terminal as an escape sequence.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.operator_support import FAST

from perdure import ActivityContext, Client, OrchestrationContext, Registry, Runtime, SqliteProvider
from perdure.engine.events import StartRequested
from perdure.providers import Message, NewInstance

# Sets the window title, clears the screen, then a C1 CSI (a one-byte ESC [) and a right-to-left override.
HOSTILE = "\x1b]0;pwned\x07\x1b[2J\x9b6n\u202e"
# What a terminal could obey: every control character but the line feed, C1 controls, bidi overrides.
UNSAFE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
GHOST = "ghost" + HOSTILE  # an id the client would refuse, written straight into the store

registry = Registry()


@registry.activity("Echo")
async def echo(ctx: ActivityContext, text: str) -> str:
    return text


@registry.orchestration("Loud")
async def loud(ctx: OrchestrationContext, text: str) -> Any:
    ctx.set_custom_status({"said": text})
    event = await ctx.wait_for_event("go")
    return [await ctx.call_activity("Echo", text), event]


@registry.orchestration("Broken")
async def broken(ctx: OrchestrationContext, text: str) -> None:
    raise RuntimeError(f"cannot go on: {text}\nsecond line {text}")


async def fill(path: Path) -> None:
    provider = await SqliteProvider.open(path)
    try:
        client = Client(provider)
        async with Runtime(provider, registry, FAST):
            await client.start_orchestration("loud", "Loud", HOSTILE)
            await client.raise_event("loud", "go", {"note": HOSTILE})
            await client.start_orchestration("broken", "Broken", HOSTILE)
            await client.wait_for_orchestration("loud", timeout=10)
            await client.wait_for_orchestration("broken", timeout=10)
        start = StartRequested(name="Ghost" + HOSTILE, input=HOSTILE)
        new = NewInstance(name=start.name, input=start.input)
        await provider.create_instance(Message(instance_id=GHOST, execution_id=None, event=start, new_instance=new))
    finally:
        await provider.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    db = tmp_path_factory.mktemp("hostile") / "perdure.db"
    asyncio.run(fill(db))
    return db


@dataclass
class Output:
    code: int
    out: bytes
    err: bytes


def run(store: Path, *args: str) -> Output:
    """The real ``perdure`` entry point, its output as bytes."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERDURE_")}
    env["PERDURE_DB"] = f"sqlite:///{store}"
    done = subprocess.run([sys.executable, "-m", "perdure", *args], env=env, capture_output=True, timeout=60)
    return Output(done.returncode, done.stdout, done.stderr)


def assert_inert(data: bytes) -> str:
    """``data`` as text, after checking that no byte of it is one a terminal would obey."""
    assert b"\x1b" not in data and b"\x07" not in data and b"\x9b" not in data
    text = data.decode("utf-8")
    found = UNSAFE.search(text)
    assert found is None, f"{found.group()!r} in {text[max(0, found.start() - 40) : found.start() + 40]!r}"
    return text


SHOWN = r"\x1b]0;pwned\x07\x1b[2J\x9b6n\u202e"  # how the text output writes HOSTILE


def test_list_escapes_an_id_and_a_name_the_store_holds(store: Path) -> None:
    result = run(store, "instances", "list")
    out = assert_inert(result.out)
    assert result.code == 0, result.err
    assert f"ghost{SHOWN}" in out and f"Ghost{SHOWN}" in out
    # The columns still line up: each row's status starts under STATUS.
    header, _, *rows = out.splitlines()
    column = header.index("STATUS")
    assert rows and all(re.match(r"(COMPLETED|FAILED|PENDING) ", row[column:]) for row in rows), out


def test_list_json_stays_exact_and_inert(store: Path) -> None:
    result = run(store, "instances", "list", "--json")
    instances = json.loads(assert_inert(result.out))["instances"]
    ghost = next(i for i in instances if i["instance_id"] == GHOST)
    assert (ghost["name"], ghost["input"]) == ("Ghost" + HOSTILE, HOSTILE)


def test_show_escapes_input_output_custom_status_and_event_data(store: Path) -> None:
    result = run(store, "instances", "show", "loud")
    out = assert_inert(result.out)
    assert result.code == 0, result.err
    assert f"Input:         {SHOWN}" in out
    # A JSON value is shown as JSON, so with JSON's escapes.
    assert r'Custom status: {"said": "\u001b]0;pwned\u0007\u001b[2J\u009b6n\u202e"}' in out
    history = out.split("History (execution 1):")[1]
    assert "EventRaised" in history and r"\x1b]0;pwn" in history


def test_show_escapes_the_error_and_keeps_the_traceback_on_its_lines(store: Path) -> None:
    result = run(store, "instances", "show", "broken")
    out = assert_inert(result.out)
    assert f"Error:         RuntimeError: cannot go on: {SHOWN}\\nsecond line {SHOWN}" in out
    traceback = out.split("Traceback:\n")[1].split("\n\nHistory")[0].splitlines()
    assert traceback[0].strip() == "Traceback (most recent call last):"
    assert traceback[-2:] == [f"    RuntimeError: cannot go on: {SHOWN}", f"    second line {SHOWN}"]


def test_show_json_stays_exact_and_inert(store: Path) -> None:
    result = run(store, "instances", "show", "broken", "--json")
    error = json.loads(assert_inert(result.out))["instance"]["error"]
    assert error["message"] == f"cannot go on: {HOSTILE}\nsecond line {HOSTILE}"


@pytest.mark.parametrize(
    "args",
    [
        ("start", "Loud", "--id", "x", HOSTILE),  # an unexpected argument, echoed by the usage error
        ("start", "Loud" + HOSTILE, "--id", "x"),
        ("start", "Loud", "--id", "x" + HOSTILE),
        ("start", "Loud", "--id", "x", "--version", "1.0.0" + HOSTILE),
        ("start", "Loud", "--id", "x", "--input", "{" + HOSTILE),
        ("raise-event", "loud", "go" + HOSTILE),
        ("instances", "show", GHOST),
        ("instances", "list", "--status", HOSTILE),
        ("instances", "list", "--created-after", HOSTILE),
        # Numbers and times too large for the store are refused before they reach it.
        ("instances", "list", "--created-after", "99999999999w"),
        ("instances", "show", "loud", "--execution", "99999999999999999999999"),
        ("instances", "show", "loud", "--execution", "2"),
    ],
)
def test_hostile_arguments_are_inert_usage_errors(store: Path, args: tuple[str, ...]) -> None:
    result = run(store, *args)
    assert result.out == b""
    err = assert_inert(result.err)
    assert result.code == 2 and err.startswith("perdure: error: ") and "Traceback" not in err, err


def test_start_prints_only_inert_text(store: Path) -> None:
    result = run(store, "start", "Loud", "--id", "started", "--input", json.dumps(HOSTILE))
    assert (result.code, assert_inert(result.out)) == (0, "Started Loud as started.\n")
