"""Every command fails the same way: one ``perdure: error: …`` line on stderr, a documented exit code, no traceback."""

from __future__ import annotations

import re
import socket
import uuid
from importlib.util import find_spec
from pathlib import Path

import pytest
from tests.acceptance.operator_support import Result, cli, create_store
from tests.conftest import POSTGRES_URL

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
        (("start", "Greeting", "--version", "banana"), "argument --version: 'banana' is not a semantic version"),
        (("start", "Greeting", "--id", " "), "argument --id: must not be empty or only whitespace"),
        (("start", "Greeting", "--if-exists", "replace"), "argument --if-exists: invalid choice: 'replace'"),
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
    assert not (tmp_path / "perdure.db").exists(), "a bad argument touches no store"


async def test_a_bad_option_from_the_environment_is_reported_like_one_on_the_command_line(tmp_path: Path) -> None:
    result = await cli("worker", REGISTRY, db=tmp_path / "perdure.db", env={"PERDURE_CONCURRENCY": "lots"})
    assert "argument --concurrency: invalid int value: 'lots'" in assert_one_error_line(result, 2)


# Every command that reads or manages a store; none of them may create one.
STORE_COMMANDS = [
    ("instances", "list"),
    ("instances", "show", "order-1"),
    ("start", "Greeting", "--id", "order-1"),
    ("raise-event", "order-1", "approve"),
    ("terminate", "order-1"),
    ("suspend", "order-1"),
    ("resume", "order-1"),
    ("rewind", "order-1"),
    ("purge", "order-1"),
    ("purge", "--created-before", "1d"),
    ("dashboard", "--port", "0"),
]
MISSING_SCHEMA = f"test_missing_{uuid.uuid4().hex[:8]}"
POSTGRES = [pytest.mark.postgres, pytest.mark.skipif(find_spec("psycopg") is None, reason="needs psycopg")]
STORES = [
    "a-missing-file",
    "a-missing-directory",
    pytest.param("a-missing-schema", marks=POSTGRES),
    pytest.param("a-refused-port", marks=POSTGRES),
]


def url_of(store: str, tmp_path: Path) -> str:
    return {
        "a-missing-file": f"sqlite:///{tmp_path}/typo.db",
        "a-missing-directory": f"sqlite:///{tmp_path}/no/such/directory/perdure.db",
        "a-missing-schema": f"{POSTGRES_URL}?schema={MISSING_SCHEMA}",
        "a-refused-port": "postgresql://postgres:secret@127.0.0.1:1/perdure",
    }[store]


async def schema_exists(name: str) -> bool:
    import psycopg

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        cursor = await conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s", (name,))
        return await cursor.fetchone() is not None


def files_in(directory: Path) -> list[Path]:
    return sorted(directory.rglob("*"))


@pytest.mark.parametrize("args", STORE_COMMANDS, ids=" ".join)
@pytest.mark.parametrize("store", STORES)
async def test_no_command_creates_a_store_and_each_says_why_in_one_line(
    tmp_path: Path, args: tuple[str, ...], store: str
) -> None:
    result = await cli(*args, env={"PERDURE_DB": url_of(store, tmp_path)})
    if store == "a-refused-port":
        line = assert_one_error_line(result, 1)
        assert line.startswith("perdure: error: cannot open the database: ") and "secret" not in line
    else:
        line = assert_one_error_line(result, 3)
        assert line.startswith("perdure: error: no perdure store at ")
    assert files_in(tmp_path) == [], "nothing was created on disk"
    if store == "a-missing-schema":
        assert f"?schema={MISSING_SCHEMA}: " in line
        assert not await schema_exists(MISSING_SCHEMA), "nothing was created in the database"


@pytest.mark.parametrize(
    ("args", "store"),
    [
        (("worker", REGISTRY), "a-missing-directory"),
        (("worker", REGISTRY), "a-refused-port"),
        (("start", "Greeting", "--id", "order-1", "--create"), "a-missing-directory"),
        (("start", "Greeting", "--id", "order-1", "--create"), "a-refused-port"),
    ],
)
async def test_a_store_that_cannot_be_created_is_one_line_and_exit_1(
    tmp_path: Path, args: tuple[str, ...], store: str
) -> None:
    if store == "a-refused-port" and find_spec("psycopg") is None:
        pytest.skip("needs psycopg")
    result = await cli(*args, env={"PERDURE_DB": url_of(store, tmp_path)})
    assert "perdure: error: cannot open the database: " in assert_one_error_line(result, 1)
    assert files_in(tmp_path) == []


async def test_the_demo_on_an_unusable_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    result = await cli("demo", "--db", str(tmp_path / "no" / "such" / "directory" / "demo.db"))
    assert "perdure: error: cannot open the database: " in assert_one_error_line(result, 1)


async def test_a_dashboard_on_a_port_in_use_is_one_line_and_exit_1(tmp_path: Path) -> None:
    create_store(tmp_path / "perdure.db")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = await cli("dashboard", "--port", str(port), db=tmp_path / "perdure.db")
    line = assert_one_error_line(result, 1)
    assert line.startswith(f"perdure: error: cannot listen on 127.0.0.1:{port}: ")


async def test_without_a_database_every_store_command_says_how_to_give_one() -> None:
    for args in (("instances", "list"), ("worker", REGISTRY), ("dashboard",)):
        result = await cli(*args)
        assert assert_one_error_line(result, 2) == "perdure: error: no database: give --db URL or set PERDURE_DB\n"
