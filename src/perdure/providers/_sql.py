"""Named SQL query blocks, loaded once from a backend's ``.sql`` files."""

from __future__ import annotations

import re
from importlib import resources

__all__ = ["load_queries", "read_sql"]

_NAME = re.compile(r"^--\s*name:\s*(\w+)\s*$", re.MULTILINE)


def read_sql(package: str, filename: str) -> str:
    """The text of ``filename`` shipped in ``package``."""
    return resources.files(package).joinpath(filename).read_text(encoding="utf-8")


def load_queries(package: str, filename: str = "queries.sql") -> dict[str, str]:
    """Split a file of ``-- name: <query>`` blocks into a dict of query name to SQL text."""
    parts = _NAME.split(read_sql(package, filename))
    queries = {name: body.strip() for name, body in zip(parts[1::2], parts[2::2], strict=True)}
    if not queries:
        raise ValueError(f"{package}/{filename} has no named queries")
    return queries
