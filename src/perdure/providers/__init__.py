"""Storage providers: the contract and its records, the embedded SQLite provider, and the URL factory.

Everything a provider takes and returns is exported here, so a provider can be written (or
wrapped) from public names alone; ``perdure.engine.events`` holds the history event types.
"""

from perdure.providers._base import (
    ActivityRequest,
    DataRefusedError,
    Heartbeat,
    HistoryMark,
    InstanceFilter,
    InstanceUpdate,
    LockLostError,
    Message,
    NewInstance,
    OrchestrationItem,
    Provider,
    QueuedMessage,
    QueueKind,
    StoreNotFoundError,
    TurnCommit,
    WorkerInfo,
    WorkerLiveness,
    WorkItem,
)
from perdure.providers._open import open_provider
from perdure.providers.sqlite import SqliteProvider

__all__ = [
    "ActivityRequest",
    "DataRefusedError",
    "Heartbeat",
    "HistoryMark",
    "InstanceFilter",
    "InstanceUpdate",
    "LockLostError",
    "Message",
    "NewInstance",
    "OrchestrationItem",
    "Provider",
    "QueueKind",
    "QueuedMessage",
    "SqliteProvider",
    "StoreNotFoundError",
    "TurnCommit",
    "WorkItem",
    "WorkerInfo",
    "WorkerLiveness",
    "open_provider",
]
