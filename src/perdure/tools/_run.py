"""Running a ``perdure`` command: the exit codes and the one path every expected failure takes.

A command is an ``async`` handler of the parsed arguments that returns an exit code. What it
raises is turned into one line on stderr, ``perdure: error: …``, and an exit code (documented in
``docs/operations.md``):

===  ============================================================================================
0    success
1    any other expected error: the store cannot be reached or fails, a missing optional dependency;
     for ``replay``, a history that does not replay with the code
2    usage: a bad option or argument, no ``--db``, JSON that does not parse, a registry not found
3    not found: no instance or schedule with that id, or no perdure store at ``--db`` (nothing is
     created)
4    refused state change (e.g. suspend a finished instance, rewind a running one, an event
     for a finished instance, a command to an ended schedule)
5    an instance or a live schedule with that id already exists (``start``, ``schedules create``)
130  interrupted (Ctrl-C)
===  ============================================================================================

Anything else is a bug: it keeps its traceback.
"""

from __future__ import annotations

import argparse
import asyncio
import re
import sys
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from typing import Any

from perdure import (
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    InvalidInstanceStateError,
    PerdureError,
    Provider,
    ProviderError,
    RegistrationError,
    SerializationError,
    open_provider,
)
from perdure.providers import StoreNotFoundError
from perdure.tools._format import inert

__all__ = [
    "EXIT_CONFLICT",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_REFUSED",
    "EXIT_USAGE",
    "CommandError",
    "Handler",
    "fail",
    "open_store",
    "require_db",
    "run",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_NOT_FOUND = 3
EXIT_REFUSED = 4
EXIT_CONFLICT = 5
EXIT_INTERRUPTED = 130

Handler = Callable[[argparse.Namespace], Coroutine[Any, Any, int]]
"""A command: takes the parsed arguments, returns the exit code."""


class CommandError(Exception):
    """A command failed in a way the user should read; carries the exit code."""

    def __init__(self, message: str, code: int) -> None:
        super().__init__(message)
        self.code = code


# Most specific first: the first class the error is an instance of gives the exit code.
_EXIT_CODES: tuple[tuple[type[Exception], int], ...] = (
    (InstanceNotFoundError, EXIT_NOT_FOUND),
    (InstanceAlreadyExistsError, EXIT_CONFLICT),
    (InvalidInstanceStateError, EXIT_REFUSED),
    (SerializationError, EXIT_USAGE),
    (RegistrationError, EXIT_USAGE),  # a bad --version
    (ValueError, EXIT_USAGE),
    (StoreNotFoundError, EXIT_NOT_FOUND),
    (ProviderError, EXIT_FAILURE),
    (PerdureError, EXIT_FAILURE),
    (OSError, EXIT_FAILURE),
)


def run(handler: Handler, args: argparse.Namespace) -> int:
    """Run ``handler`` to its exit code; an expected failure becomes one line on stderr."""
    try:
        return asyncio.run(handler(args))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # The reader went away (``perdure … | head``): nothing left to tell anyone.
        return EXIT_FAILURE
    except CommandError as exc:
        return fail(str(exc), exc.code)
    except Exception as exc:
        for kind, code in _EXIT_CODES:
            if isinstance(exc, kind):
                return fail(str(exc), code)
        raise


def fail(message: str, code: int) -> int:
    """Print ``perdure: error: MESSAGE`` on one line of stderr and return ``code``.

    The message is :func:`~perdure.tools._format.inert`: it may quote what the user typed or
    what the store holds.
    """
    print(f"perdure: error: {inert(_LINE_BREAK.sub(' ', message.strip()))}", file=sys.stderr)
    return code


_LINE_BREAK = re.compile(r"\s*\n\s*")


def require_db(args: argparse.Namespace) -> str:
    """The ``--db`` URL, or a usage error saying how to give one."""
    url: str | None = args.db
    if not url:
        raise CommandError("no database: give --db URL or set PERDURE_DB", EXIT_USAGE)
    return url


@asynccontextmanager
async def open_store(url: str, *, create: bool = False) -> AsyncIterator[Provider]:
    """Open the store at ``url`` for the length of a command.

    Only with ``create`` is a missing store created; otherwise it is exit 3, and a store that
    cannot be reached is exit 1.
    """
    try:
        provider = await open_provider(url, create=create)
    except ImportError as exc:
        message = f"PostgreSQL needs the 'postgres' extra: pip install 'perdure[postgres]' ({exc})"
        raise CommandError(message, EXIT_FAILURE) from None
    except StoreNotFoundError as exc:
        raise CommandError(str(exc), EXIT_NOT_FOUND) from None
    except (ProviderError, OSError) as exc:
        # The URL is left out of the message: it may hold a password.
        raise CommandError(f"cannot open the database: {exc}", EXIT_FAILURE) from None
    try:
        yield provider
    finally:
        await provider.close()
