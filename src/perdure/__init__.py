"""perdure: durable orchestrations for Python.

Orchestrations are plain ``async def`` functions that call activities, sleep on durable timers,
wait for external events and start child orchestrations. Every decision is recorded in an
append-only history and replayed deterministically, so a crash or a redeploy never loses progress.
"""

from perdure._errors import (
    ActivityFailedError,
    ErrorDetails,
    HistoryFormatError,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    InvalidInstanceStateError,
    NonDeterminismError,
    NonDurableAwaitError,
    PerdureError,
    PoisonMessageError,
    ProviderError,
    RegistrationError,
    SerializationError,
    SubOrchestrationFailedError,
    TaskFailedError,
    UnregisteredActivityError,
    UnregisteredOrchestrationError,
)
from perdure._state import OrchestrationDescriptor, OrchestrationState, OrchestrationStatus
from perdure.client import Client
from perdure.engine import DurableTask, OrchestrationContext, RetryPolicy
from perdure.providers import Provider, SqliteProvider, open_provider
from perdure.runtime import ActivityContext, ActivityRegistry, OrchestrationRegistry, Registry, Runtime, RuntimeOptions

__version__ = "0.1.0"

__all__ = [
    "ActivityContext",
    "ActivityFailedError",
    "ActivityRegistry",
    "Client",
    "DurableTask",
    "ErrorDetails",
    "HistoryFormatError",
    "InstanceAlreadyExistsError",
    "InstanceNotFoundError",
    "InvalidInstanceStateError",
    "NonDeterminismError",
    "NonDurableAwaitError",
    "OrchestrationContext",
    "OrchestrationDescriptor",
    "OrchestrationRegistry",
    "OrchestrationState",
    "OrchestrationStatus",
    "PerdureError",
    "PoisonMessageError",
    "Provider",
    "ProviderError",
    "Registry",
    "RegistrationError",
    "RetryPolicy",
    "Runtime",
    "RuntimeOptions",
    "SerializationError",
    "SqliteProvider",
    "SubOrchestrationFailedError",
    "TaskFailedError",
    "UnregisteredActivityError",
    "UnregisteredOrchestrationError",
    "__version__",
    "open_provider",
]
