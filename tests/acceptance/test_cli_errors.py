"""Every command fails the same way: one ``perdure: error: …`` line on stderr, a documented exit code, no traceback."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from tests.acceptance.operator_support import Result, cli

# A registry the worker can import from anywhere: the demo's.
REGISTRY = "perdure.tools.demo:registry"


def assert_one_error_line(result: Result, code: int) -> str:
    """The error line, after checking it is the only output and the exit code is ``code``."""
    assert (result.code, result.out) == (code, ""), result.err
    assert re.fullmatch(r"perdure: error: [^\n]+\n", result.err), result.err
    assert "Traceback" not in result.err
    return result.err


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("no-such-command",), "invalid choice: 'no-such-command'"),
        (("instances",), "required: COMMAND"),
        (("instances", "list", "--limit", "many"), "argument --limit: invalid int value: 'many'"),
        (("instances", "show"), "required: ID"),
        (("start", "Greeting"), "required: --id"),
        (("purge", "--created-before", "yesterday"), "'yesterday' is neither an ISO 8601 time"),
        (("worker",), "required: MODULE:REGISTRY"),
        (("worker", REGISTRY, "--concurrency", "lots"), "argument --concurrency: invalid int value: 'lots'"),
        (("worker", REGISTRY, "--concurrency", "0"), "invalid worker option: activity_concurrency must be"),
        (("worker", REGISTRY, "--log-level", "chatty"), "--log-level: Unknown level: 'CHATTY'"),
        (("worker", "no_such_module:registry"), "cannot load the registry no_such_module:registry"),
        (("worker", "perdure.tools.demo:run_demo"), "is a function, not a perdure Registry"),
        (("dashboard", "--port", "eighty"), "argument --port: invalid int value: 'eighty'"),
        (("dashboard", "--host", "0.0.0.0"), "not a loopback address"),
        (("demo", "--speed", "2"), "unrecognized arguments: --speed 2"),
    ],
)
async def test_a_bad_argument_is_one_line_and_exit_2(tmp_path: Path, args: tuple[str, ...], says: str) -> None:
    result = await cli(*args, db=tmp_path / "perdure.db")
    assert says in assert_one_error_line(result, 2)


async def test_a_bad_option_from_the_environment_is_reported_like_one_on_the_command_line(tmp_path: Path) -> None:
    result = await cli("worker", REGISTRY, db=tmp_path / "perdure.db", env={"PERDURE_CONCURRENCY": "lots"})
    assert "argument --concurrency: invalid int value: 'lots'" in assert_one_error_line(result, 2)


@pytest.mark.parametrize(
    "args",
    [
        ("instances", "list"),
        ("instances", "show", "order-1"),
        ("start", "Greeting", "--id", "order-1"),
        ("terminate", "order-1"),
        ("purge", "--created-before", "1d"),
        ("worker", REGISTRY),
        ("dashboard", "--port", "0"),
    ],
)
@pytest.mark.parametrize("store", ["sqlite-in-a-missing-directory", "postgresql-on-a-closed-port"])
async def test_an_unreachable_store_is_one_line_and_exit_1(tmp_path: Path, args: tuple[str, ...], store: str) -> None:
    if store.startswith("sqlite"):
        url = f"sqlite:///{tmp_path}/no/such/directory/perdure.db"
    else:
        pytest.importorskip("psycopg")
        url = "postgresql://postgres@127.0.0.1:1/perdure"
    result = await cli(*args, env={"PERDURE_DB": url})
    assert "perdure: error: cannot open the database: " in assert_one_error_line(result, 1)


async def test_the_demo_on_an_unusable_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = await cli("demo", "--db", str(tmp_path / "no" / "such" / "directory" / "demo.db"))
    assert "perdure: error: cannot open the database: " in assert_one_error_line(result, 1)


async def test_without_a_database_every_store_command_says_how_to_give_one() -> None:
    for args in (("instances", "list"), ("worker", REGISTRY), ("dashboard",)):
        result = await cli(*args)
        assert assert_one_error_line(result, 2) == "perdure: error: no database: give --db URL or set PERDURE_DB\n"
