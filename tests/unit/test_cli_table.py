"""The table of ``perdure`` commands: how it parses, where the worker's defaults come from, what the docs list."""

from __future__ import annotations

import argparse
import inspect
import os
import re
from pathlib import Path

import pytest

from perdure import OrchestrationStatus, RuntimeOptions
from perdure.tools import _run
from perdure.tools._parser import build_parser
from perdure.tools._worker import GRACE_SECONDS, runtime_options
from perdure.tools.cli import COMMANDS

OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"


@pytest.fixture(autouse=True)
def no_perdure_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    # Options read PERDURE_* variables when the parser is built: start each test without any.
    for name in [n for n in os.environ if n.startswith("PERDURE_")]:
        monkeypatch.delenv(name)


def parse(*argv: str) -> argparse.Namespace:
    return build_parser(COMMANDS, description="test").parse_args(argv)


def test_every_command_has_an_async_handler_and_every_group_comes_before_its_commands() -> None:
    groups: set[str] = set()
    for command in COMMANDS:
        group, _, _ = command.name.rpartition(" ")
        assert group == "" or group in groups, command.name
        if command.handler is None:
            groups.add(command.name)
        else:
            assert inspect.iscoroutinefunction(command.handler), command.name


def test_each_command_carries_its_own_handler() -> None:
    handlers = {command.name: command.handler for command in COMMANDS}
    assert parse("instances", "show", "x").handler is handlers["instances show"]
    assert parse("worker", "m:r").handler is handlers["worker"]
    assert parse("demo").handler is handlers["demo"]


def test_the_worker_takes_its_defaults_from_runtime_options() -> None:
    args = parse("worker", "m:r")
    assert runtime_options(args) == RuntimeOptions()
    assert (args.grace, args.log_level) == (GRACE_SECONDS, "INFO")


def test_the_worker_options_set_their_runtime_options() -> None:
    args = parse(
        "worker",
        "m:r",
        "--no-activities",
        "--queue",
        "gpu",
        "--queue",
        "cpu,io",
        "--concurrency",
        "3",
        "--orchestration-concurrency",
        "2",
        "--lock-seconds",
        "5",
        "--activity-lock-seconds",
        "7.5",
        "--worker-timeout",
        "4",
        "--cache-size",
        "0",
    )
    assert runtime_options(args) == RuntimeOptions(
        run_activities=False,
        activity_queues=("gpu", "cpu", "io"),
        activity_concurrency=3,
        orchestration_concurrency=2,
        lock_seconds=5.0,
        activity_lock_seconds=7.5,
        worker_timeout=4.0,
        cache_size=0,
    )


def test_worker_options_come_from_the_environment_and_the_command_line_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERDURE_QUEUE", "gpu,cpu")
    monkeypatch.setenv("PERDURE_ORCHESTRATIONS", "0")
    monkeypatch.setenv("PERDURE_CONCURRENCY", "8")
    options = runtime_options(parse("worker", "m:r", "--concurrency", "2"))
    assert (options.activity_queues, options.run_orchestrations) == (("gpu", "cpu"), False)
    assert options.activity_concurrency == 2
    assert runtime_options(parse("worker", "m:r", "--queue", "io")).activity_queues == ("io",)


def test_environment_defaults_are_converted_like_the_command_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERDURE_STATUS", "failed,Terminated")
    monkeypatch.setenv("PERDURE_LIMIT", "5")
    monkeypatch.setenv("PERDURE_ID", "from-env")
    listing = parse("instances", "list")
    assert listing.status == [OrchestrationStatus.FAILED, OrchestrationStatus.TERMINATED]
    assert listing.limit == 5
    assert parse("start", "Greeting").instance_id == "from-env"
    monkeypatch.setenv("PERDURE_DEMO_DB", "elsewhere.db")
    assert parse("demo").db == "elsewhere.db"


def test_the_operations_guide_lists_every_command_and_every_exit_code() -> None:
    text = OPERATIONS.read_text(encoding="utf-8")
    table = text.split("| command | what it does |", 1)[1].split("\n\n", 1)[0]
    for command in COMMANDS:
        if command.handler is not None:
            assert re.search(rf"`{command.name}\b", table), command.name
    codes = text.split("### Exit codes", 1)[1].split("\n\n", 2)[1]
    documented = {int(code) for code in re.findall(r"^\| (\d+) \|", codes, re.MULTILINE)}
    assert documented == {value for name, value in vars(_run).items() if name.startswith("EXIT_")}
