"""The pure replay engine: history events, durable tasks, the orchestration context and ``replay``.

Nothing in this package does I/O or touches an event loop; the runtime drives it.
"""

from perdure.engine._codec import FORMAT_VERSION, decode_event, encode_event
from perdure.engine._context import OrchestrationContext
from perdure.engine._replay import LiveExecution, OrchestrationFunction, ReplayOutcome, describe, replay, resume
from perdure.engine._retry import RetryPolicy
from perdure.engine._tasks import DurableTask
from perdure.engine.events import HistoryEvent

__all__ = [
    "FORMAT_VERSION",
    "DurableTask",
    "HistoryEvent",
    "LiveExecution",
    "OrchestrationContext",
    "OrchestrationFunction",
    "RetryPolicy",
    "ReplayOutcome",
    "decode_event",
    "describe",
    "encode_event",
    "replay",
    "resume",
]
