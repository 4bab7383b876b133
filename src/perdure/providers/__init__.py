"""Storage providers: the contract, the embedded SQLite provider, and the URL factory."""

from perdure.providers._base import Provider
from perdure.providers._open import open_provider
from perdure.providers.sqlite import SqliteProvider

__all__ = ["Provider", "SqliteProvider", "open_provider"]
