"""Which PostgreSQL failures the provider retries, and what the others read as (``postgres/_errors.py``)."""

from __future__ import annotations

import pytest

psycopg = pytest.importorskip("psycopg")
errors = psycopg.errors
pool = pytest.importorskip("psycopg_pool")

from perdure import ProviderError  # noqa: E402
from perdure.providers import DataRefusedError  # noqa: E402
from perdure.providers.postgres._errors import is_transient, provider_error  # noqa: E402

# The server went away, is restarting, is out of connections or resources, or a transaction lost a race.
TRANSIENT = [
    errors.AdminShutdown("terminating connection due to administrator command"),
    errors.CrashShutdown("the database system is in recovery mode"),
    errors.CannotConnectNow("the database system is starting up"),
    errors.ConnectionFailure("connection failure"),
    errors.TooManyConnections("sorry, too many clients already"),
    errors.DiskFull("could not extend file"),
    errors.SerializationFailure("could not serialize access"),
    errors.DeadlockDetected("deadlock detected"),
    psycopg.OperationalError("SSL SYSCALL error: EOF detected"),  # the client lost the connection
    pool.PoolTimeout("couldn't get a connection after 10.00 sec"),
]
# What the call asked for is refused: retrying fails the same way.
REFUSED = [
    errors.ProgramLimitExceeded("index row size 10048 exceeds btree version 4 maximum 2704"),
    errors.UniqueViolation("duplicate key value violates unique constraint"),
    errors.CheckViolation("new row violates check constraint"),
    errors.CharacterNotInRepertoire("invalid byte sequence for encoding UTF8: 0x00"),
    errors.NumericValueOutOfRange("integer out of range"),
    psycopg.DataError("PostgreSQL text fields cannot contain NUL (0x00) bytes"),  # refused by the driver
]
# Neither: a failure of the call that is not about its data.
OTHER = [
    errors.InsufficientPrivilege("permission denied for table instances"),
    errors.QueryCanceled("canceling statement due to statement timeout"),
    errors.UndefinedTable('relation "instances" does not exist'),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_connection_and_server_failures_are_retried(exc: Exception) -> None:
    assert is_transient(exc, broken=False)


@pytest.mark.parametrize("exc", REFUSED + OTHER, ids=lambda e: type(e).__name__)
def test_failures_of_the_call_itself_are_not_retried(exc: Exception) -> None:
    assert not is_transient(exc, broken=False)
    assert is_transient(exc, broken=True), "whatever it says, a connection that broke is worth another try"


@pytest.mark.parametrize("exc", REFUSED, ids=lambda e: type(e).__name__)
def test_a_refused_call_is_a_data_refused_error_naming_the_sqlstate(exc: Exception) -> None:
    error = provider_error(exc)
    assert isinstance(error, DataRefusedError) and isinstance(error, ProviderError)
    assert error.__cause__ is exc
    assert str(error).startswith("PostgreSQL refused the call: ")
    if exc.sqlstate is not None:
        assert f"SQLSTATE {exc.sqlstate} ({type(exc).__name__})" in str(error)


@pytest.mark.parametrize("exc", OTHER + TRANSIENT, ids=lambda e: type(e).__name__)
def test_other_failures_are_plain_provider_errors(exc: Exception) -> None:
    error = provider_error(exc, retried_for=60)
    assert type(error) is ProviderError
    assert error.__cause__ is exc
    assert str(error).startswith("PostgreSQL failed: ") and str(error).endswith("(retried for 60 s)")


def test_the_message_is_short_even_when_the_error_quotes_megabytes() -> None:
    error = provider_error(errors.ProgramLimitExceeded("index row size exceeds maximum: " + "x" * 20_000_000))
    assert len(str(error)) < 700
