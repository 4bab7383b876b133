"""The client: start, signal, inspect and manage instances."""

from perdure.client._client import Client

__all__ = ["Client"]
