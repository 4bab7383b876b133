"""SQL shared by the SQL providers: named query blocks loaded from ``.sql`` files, and the one
statement perdure builds itself (``list_instances``), written once for every placeholder style."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from importlib import resources
from typing import Any

from perdure.providers._base import InstanceFilter

__all__ = ["SqlStyle", "instance_query", "load_queries", "read_sql"]

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


@dataclass(frozen=True, kw_only=True, slots=True)
class SqlStyle:
    """How a backend's SQL differs where perdure builds a statement itself.

    Attributes:
        placeholder: A named parameter's placeholder, with ``{}`` for the name (``":{}"``, ``"%({})s"``).
        instance_id: The expression instance ids compare and sort by. It must order bytewise, so
            that a prefix is a range of the primary key.
        time: How a time is passed as a parameter.
    """

    placeholder: str
    instance_id: str
    time: Callable[[datetime], Any]


def instance_query(select_state: str, where: InstanceFilter, style: SqlStyle) -> tuple[str, dict[str, Any]]:
    """The ``select_state`` query with its WHERE clause replaced by what ``where`` asks, and its parameters."""
    p, by_id = style.placeholder.format, style.instance_id
    clauses: list[str] = []
    params: dict[str, Any] = {"limit": where.limit}

    def condition(sql: str, **values: Any) -> None:
        clauses.append(sql)
        params.update(values)

    if where.status:
        statuses = {f"status_{i}": status.value for i, status in enumerate(where.status)}
        condition(f"status IN ({', '.join(p(name) for name in statuses)})", **statuses)
    if where.name is not None:
        condition(f"name = {p('name')}", name=where.name)
    if where.created_after is not None:
        condition(f"created_at > {p('created_after')}", created_after=style.time(where.created_after))
    if where.created_before is not None:
        condition(f"created_at < {p('created_before')}", created_before=style.time(where.created_before))
    if where.instance_id_prefix:
        # A range on the primary key, so a prefix search uses the index.
        prefix, prefix_end = where.instance_id_prefix, where.instance_id_prefix + "\U0010ffff"
        condition(f"{by_id} >= {p('prefix')} AND {by_id} < {p('prefix_end')}", prefix=prefix, prefix_end=prefix_end)
    if where.parent_instance_id is not None:
        condition(f"parent_instance_id = {p('parent')}", parent=where.parent_instance_id)
    if where.after is not None:
        condition(f"{by_id} > {p('after')}", after=where.after)
    sql = select_state.split(" WHERE ")[0]
    if clauses:
        sql += " WHERE " + " AND ".join(clauses)
    return f"{sql} ORDER BY {by_id} LIMIT {p('limit')}", params
