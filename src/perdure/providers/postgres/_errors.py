"""Which PostgreSQL failures are worth retrying, and the ``ProviderError`` the others become.

Only a failure of the connection or of the server as a whole is retried: it says nothing about
the call, and the same call succeeds once the server is back. A failure about the call's data
(a value the column refuses, a constraint, a limit) would fail every retry the same way, so it
is raised at once, as :class:`~perdure.providers.DataRefusedError`. Everything else (a missing
privilege, a cancelled statement, …) is raised at once as a plain ``ProviderError``.
"""

from __future__ import annotations

import psycopg

from perdure._errors import ProviderError
from perdure.providers._base import DataRefusedError

__all__ = ["is_transient", "provider_error"]

# SQLSTATE classes: 08 connection exception; 53 insufficient resources (too many connections,
# out of memory, disk full), which pass as the server recovers.
_TRANSIENT_CLASSES = frozenset({"08", "53"})
# 57P01-03: the server is shutting down, crashed, or not accepting connections yet (a restart);
# 40001 and 40P01: a serialization failure or deadlock, which a new transaction resolves.
_TRANSIENT_STATES = frozenset({"57P01", "57P02", "57P03", "40001", "40P01"})
# 22 data exception (bad encoding, value out of range), 23 integrity constraint violation,
# 54 program limit exceeded (an index row or a statement too large).
_DATA_CLASSES = frozenset({"22", "23", "54"})
_MESSAGE_CHARS = 500


def is_transient(exc: psycopg.Error, broken: bool) -> bool:
    """Whether a call that failed with ``exc`` may succeed if tried again on another connection.

    ``broken``: the connection the call used is unusable (lost whatever the error says).
    """
    if broken:
        return True
    state = exc.sqlstate
    if state is None:  # raised by the client: the connection failed, or no connection came from the pool
        return isinstance(exc, psycopg.OperationalError)
    return state[:2] in _TRANSIENT_CLASSES or state in _TRANSIENT_STATES


def provider_error(exc: psycopg.Error, retried_for: float = 0.0) -> ProviderError:
    """The error a caller sees for ``exc``: it names the SQLSTATE, and ``exc`` becomes its ``__cause__``."""
    # The primary message only: the detail of a constraint violation quotes the offending values.
    text = (exc.diag.message_primary or str(exc)).strip()
    if len(text) > _MESSAGE_CHARS:
        text = text[:_MESSAGE_CHARS] + "…"
    state = exc.sqlstate
    what = f"SQLSTATE {state} ({type(exc).__name__}): {text}" if state else text
    if (state is None and isinstance(exc, psycopg.DataError)) or (state is not None and state[:2] in _DATA_CLASSES):
        error: ProviderError = DataRefusedError(f"PostgreSQL refused the call: {what}")
    elif retried_for > 0:
        error = ProviderError(f"PostgreSQL failed: {what} (retried for {retried_for:.0f} s)")
    else:
        error = ProviderError(f"PostgreSQL failed: {what}")
    error.__cause__ = exc
    return error
