"""The embedded SQLite provider."""

from perdure.providers.sqlite._provider import SqliteProvider

__all__ = ["SqliteProvider"]
