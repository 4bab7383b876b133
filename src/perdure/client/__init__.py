"""The client: start, signal, inspect and manage instances."""

from perdure.client._client import Client
from perdure.client._sync import SyncClient

__all__ = ["Client", "SyncClient"]
