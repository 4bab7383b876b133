"""perdure: durable orchestrations for Python.

Orchestrations are plain ``async def`` functions that call activities, sleep on durable timers,
wait for external events and start child orchestrations. Every decision is recorded in an
append-only history and replayed deterministically, so a crash or a redeploy never loses progress.
"""

from typing import TYPE_CHECKING

from perdure._errors import (
    ActivityFailedError,
    ErrorDetails,
    HistoryFormatError,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    InvalidInstanceStateError,
    NonDeterminismError,
    NonDeterministicCallError,
    NonDurableAwaitError,
    PerdureError,
    PoisonMessageError,
    ProviderError,
    RegistrationError,
    ScheduleAlreadyExistsError,
    ScheduleNotFoundError,
    SerializationError,
    SubOrchestrationFailedError,
    TaskCancelledError,
    TaskFailedError,
    UnregisteredActivityError,
    UnregisteredOrchestrationError,
)
from perdure._payloads import DataConverter, PayloadCodec
from perdure._state import AwaitedEvent, OrchestrationDescriptor, OrchestrationState, OrchestrationStatus
from perdure.client import Client, SyncClient
from perdure.engine import DurableTask, OrchestrationContext, RetryPolicy
from perdure.providers import Provider, SqliteProvider, WorkerInfo, open_provider
from perdure.runtime import ActivityContext, ActivityRegistry, OrchestrationRegistry, Registry, Runtime, RuntimeOptions
from perdure.schedules import ScheduleInfo

if TYPE_CHECKING:
    from perdure.providers.postgres import PostgresProvider

__version__ = "0.1.0"

__all__ = [
    "ActivityContext",
    "ActivityFailedError",
    "ActivityRegistry",
    "AwaitedEvent",
    "Client",
    "DataConverter",
    "DurableTask",
    "ErrorDetails",
    "HistoryFormatError",
    "InstanceAlreadyExistsError",
    "InstanceNotFoundError",
    "InvalidInstanceStateError",
    "NonDeterminismError",
    "NonDeterministicCallError",
    "NonDurableAwaitError",
    "OrchestrationContext",
    "OrchestrationDescriptor",
    "OrchestrationRegistry",
    "OrchestrationState",
    "OrchestrationStatus",
    "PayloadCodec",
    "PerdureError",
    "PoisonMessageError",
    "PostgresProvider",
    "Provider",
    "ProviderError",
    "Registry",
    "RegistrationError",
    "RetryPolicy",
    "Runtime",
    "RuntimeOptions",
    "ScheduleAlreadyExistsError",
    "ScheduleInfo",
    "ScheduleNotFoundError",
    "SerializationError",
    "SqliteProvider",
    "SubOrchestrationFailedError",
    "SyncClient",
    "TaskCancelledError",
    "TaskFailedError",
    "UnregisteredActivityError",
    "UnregisteredOrchestrationError",
    "WorkerInfo",
    "__version__",
    "open_provider",
]


def __getattr__(name: str) -> object:
    # PostgresProvider needs psycopg, an optional extra: import it only when asked for.
    if name == "PostgresProvider":
        from perdure.providers.postgres import PostgresProvider

        return PostgresProvider
    raise AttributeError(f"module 'perdure' has no attribute {name!r}")
