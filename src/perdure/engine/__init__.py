"""The pure replay engine: history events, durable tasks, the orchestration context and ``run_turn``.

Nothing in this package does I/O or touches an event loop; the runtime drives it.
"""

from perdure.engine._codec import FORMAT_VERSION, decode_event, encode_event
from perdure.engine._context import OrchestrationContext
from perdure.engine._replay import OrchestrationFunction, TurnResult, describe, run_turn
from perdure.engine._retry import RetryPolicy
from perdure.engine._tasks import DurableTask
from perdure.engine.events import HistoryEvent

__all__ = [
    "FORMAT_VERSION",
    "DurableTask",
    "HistoryEvent",
    "OrchestrationContext",
    "OrchestrationFunction",
    "RetryPolicy",
    "TurnResult",
    "decode_event",
    "describe",
    "encode_event",
    "run_turn",
]
