"""Fixtures shared by every test layer: a fresh provider of each kind for each test."""

from __future__ import annotations

import importlib
import os
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from perdure import Provider, SqliteProvider

POSTGRES_URL = os.environ.get("PERDURE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")


async def open_test_provider(kind: str, tmp_path: Path) -> tuple[Provider, str]:
    """A new, empty provider of ``kind`` and the URL another process can open it with."""
    if kind == "sqlite":
        path = tmp_path / f"perdure-{uuid.uuid4().hex[:8]}.db"
        return await SqliteProvider.open(path), f"sqlite:///{path}"
    postgres = importlib.import_module("perdure.providers.postgres")
    schema = f"test_{uuid.uuid4().hex[:12]}"
    provider = await postgres.PostgresProvider.connect(POSTGRES_URL, schema=schema)
    return provider, f"{POSTGRES_URL}?schema={schema}"


async def drop_test_provider(kind: str, provider: Provider) -> None:
    """Close the provider and, for PostgreSQL, drop its schema."""
    await provider.close()
    if kind == "postgres":
        import psycopg

        schema = provider.schema  # type: ignore[attr-defined]
        async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
            await conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def _postgres_ready() -> bool:
    try:
        importlib.import_module("perdure.providers.postgres")
    except ImportError:
        return False
    return True


PROVIDER_KINDS = [
    "sqlite",
    pytest.param(
        "postgres",
        marks=[
            pytest.mark.postgres,
            pytest.mark.skipif(not _postgres_ready(), reason="the PostgreSQL provider is not available"),
        ],
    ),
]


@pytest.fixture(params=PROVIDER_KINDS)
def provider_kind(request: pytest.FixtureRequest) -> str:
    """Each test that uses a provider runs once per provider kind."""
    return str(request.param)


@pytest.fixture
async def provider(provider_kind: str, tmp_path: Path) -> AsyncIterator[Provider]:
    """A fresh, empty provider of each kind."""
    opened, _ = await open_test_provider(provider_kind, tmp_path)
    yield opened
    await drop_test_provider(provider_kind, opened)


@pytest.fixture
async def sqlite_provider(tmp_path: Path) -> AsyncIterator[SqliteProvider]:
    """A fresh SQLite provider on a file."""
    opened = await SqliteProvider.open(tmp_path / "perdure.db")
    yield opened
    await opened.close()
