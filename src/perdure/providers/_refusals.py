"""The errors a provider raises when a call cannot be done as asked (``_base`` re-exports them)."""

from __future__ import annotations

from perdure._errors import PerdureError, ProviderError

__all__ = ["DataRefusedError", "LockLostError", "StoreNotFoundError"]


class LockLostError(PerdureError):
    """The peek-lock expired and another worker took the item over; this worker's result is discarded."""


class StoreNotFoundError(ProviderError):
    """A provider opened without ``create`` found no perdure store where it was told to look.

    Raised by ``SqliteProvider.open(path, create=False)`` (no such file, or a file without perdure's
    tables), ``PostgresProvider.connect(url, create=False)`` (no such schema, or one without
    perdure's tables) and ``open_provider(url, create=False)``; nothing is created.
    """


class DataRefusedError(ProviderError):
    """The store refused what one call asked of it: its data, not the connection, is the problem.

    A constraint, a value out of range, a limit of the store (PostgreSQL SQLSTATE classes 22, 23,
    54; SQLite constraint and size errors). Retrying the same call fails the same way, so it is
    raised at once; the dispatcher fails the one instance whose turn the store refused.
    """


DataRefusedError.__module__ = "perdure.providers"  # recorded errors name it where users import it
