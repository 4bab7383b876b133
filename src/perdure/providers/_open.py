"""``open_provider``: pick the backend from a URL."""

from __future__ import annotations

import importlib
from typing import Any

from perdure.providers._base import Provider

__all__ = ["open_provider"]


async def open_provider(url: str, *, create: bool = True, **options: Any) -> Provider:
    """Open the provider a URL names.

    - ``sqlite:///relative/path.db``, ``sqlite:////absolute/path.db``, ``sqlite:///:memory:``
      (a plain file path is taken as SQLite too);
    - ``postgresql://user@host:port/dbname`` (needs the ``postgres`` extra).

    With ``create`` (the default) a missing SQLite file or PostgreSQL schema is created; without
    it only an existing perdure store is opened and nothing is created
    (:class:`~perdure.providers.StoreNotFoundError` otherwise). Extra keyword ``options`` go to
    the backend's ``open``/``connect``.
    """
    if not isinstance(url, str) or not url:
        raise ValueError("the database URL must be a non-empty string")
    if url.startswith(("postgresql://", "postgres://")):
        # Imported on demand: the PostgreSQL driver is an optional extra.
        postgres = importlib.import_module("perdure.providers.postgres")
        provider: Provider = await postgres.PostgresProvider.connect(url, create=create, **options)
        return provider
    from perdure.providers.sqlite import SqliteProvider

    if url.startswith("sqlite://"):
        path = url.removeprefix("sqlite://")
        path = path[1:] if path.startswith("/") else path
        if not path:
            raise ValueError(f"{url!r} names no database file; use sqlite:///path/to/file.db")
        return await SqliteProvider.open(path, create=create, **options)
    if "://" in url:
        raise ValueError(f"unsupported database URL {url!r}: use sqlite:///path.db or postgresql://…")
    return await SqliteProvider.open(url, create=create, **options)
