"""``Replayer``: does today's code still make the decisions stored histories recorded?"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

from perdure._errors import (
    HistoryFormatError,
    InstanceNotFoundError,
    NonDeterminismError,
    NonDeterministicCallError,
    PerdureError,
    PoisonMessageError,
    UnregisteredOrchestrationError,
)
from perdure._state import OrchestrationState, OrchestrationStatus
from perdure.client import Client
from perdure.engine import replay
from perdure.engine.events import HistoryEvent, OrchestrationFailed, OrchestrationStarted
from perdure.runtime import Registry, RuntimeOptions
from perdure.runtime._registry import ResultTypes

__all__ = ["ReplayResult", "Replayer", "stored_histories"]

# Failures the runtime records in place of a decision of the code: replaying them asks nothing of the code.
_RUNTIME_FAILURES = (
    NonDeterminismError,
    NonDeterministicCallError,
    PoisonMessageError,
    UnregisteredOrchestrationError,
    HistoryFormatError,
)
_PAGE = 500


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """Whether one history replays against today's code.

    Attributes:
        ok: The code makes exactly the decisions the history recorded.
        error: Why not: the :class:`~perdure.NonDeterminismError` (a
            :class:`~perdure.NonDeterministicCallError` for a guarded call), an
            :class:`~perdure.UnregisteredOrchestrationError` when the history's pinned version is
            not registered, or a :class:`~perdure.HistoryFormatError` for a history that cannot be read.
        event: The stored event the replay was at when it diverged, when there is one.
    """

    ok: bool
    error: PerdureError | None = None
    event: HistoryEvent | None = None


class Replayer:
    """Replays stored histories against the orchestrations of ``registry``, as a worker would.

    Each history is replayed with the version it pinned (its ``OrchestrationStarted.version``),
    and nothing is written anywhere. ``options`` are the workers' runtime options: their
    ``determinism_guards`` setting applies here too.

    Example::

        result = Replayer(registry).replay(await client.get_history("order-1"), instance_id="order-1")
        assert result.ok, result.error
    """

    def __init__(self, registry: Registry, options: RuntimeOptions | None = None) -> None:
        self.registry = registry
        self.options = options if options is not None else RuntimeOptions()

    def replay(
        self, history: Sequence[HistoryEvent], *, instance_id: str = "replayed", execution_id: int = 1
    ) -> ReplayResult:
        """Replay one execution's history (a list of events, as ``Client.get_history`` returns it).

        Give the real ``instance_id`` and ``execution_id`` when the code derives anything from
        them (``ctx.new_guid()``, ``ctx.random()``, child ids): they are part of what it decides.
        A failure the runtime recorded (non-determinism, a poison message) is left out, so a
        fixed version of the code replays what the failed one could not; so are the messages a
        failed execution kept after its end for a rewind (the code never saw them).
        """
        events = list(history)
        end = next((i for i, e in enumerate(events) if isinstance(e, OrchestrationFailed)), None)
        if end is not None:
            failure = events[end]
            assert isinstance(failure, OrchestrationFailed)
            by_runtime = any(failure.error.is_type(t) for t in _RUNTIME_FAILURES)
            events = events[: end if by_runtime else end + 1]
        if not events:
            return ReplayResult(ok=True)  # it never ran: there is nothing to check
        started = events[0]
        if not isinstance(started, OrchestrationStarted):
            return ReplayResult(False, HistoryFormatError("history does not begin with OrchestrationStarted"), started)
        function = self.registry.orchestrations.get(started.name, started.version)
        if function is None:
            error = UnregisteredOrchestrationError(f"orchestration {started.name}@{started.version} is not registered")
            return ReplayResult(False, error, started)
        outcome = replay(
            function,
            instance_id=instance_id,
            execution_id=execution_id,
            history=events,
            new_events=[],
            now=events[-1].timestamp,
            determinism_guards=self.options.determinism_guards,
            payloads=self.options.payloads(),
            types=ResultTypes(self.registry.orchestrations, self.registry.activities),
        )
        if outcome.engine_error is not None:
            return ReplayResult(False, outcome.engine_error, outcome.failed_at)
        return ReplayResult(ok=True)

    async def replay_store(
        self,
        client: Client,
        name: str | None = None,
        status: OrchestrationStatus | Sequence[OrchestrationStatus] | None = None,
    ) -> dict[str, ReplayResult]:
        """Replay the current execution of every instance of the store that matches ``name`` and ``status``.

        Returns a result per instance id, in id order. An instance purged meanwhile is left out.
        """
        results: dict[str, ReplayResult] = {}
        async for state, history in stored_histories(client, name, status):
            results[state.instance_id] = self.replay_stored(state, history)
        return results

    def replay_stored(
        self, state: OrchestrationState, history: list[HistoryEvent] | HistoryFormatError
    ) -> ReplayResult:
        """The result for one item of :func:`stored_histories`."""
        if isinstance(history, HistoryFormatError):
            return ReplayResult(False, history)
        return self.replay(history, instance_id=state.instance_id, execution_id=state.execution_id)


async def stored_histories(
    client: Client, name: str | None, status: OrchestrationStatus | Sequence[OrchestrationStatus] | None
) -> AsyncIterator[tuple[OrchestrationState, list[HistoryEvent] | HistoryFormatError]]:
    """Each matching instance, in id order, with its current execution's history (or why it cannot be read)."""
    after: str | None = None
    while True:
        page = await client.list_instances(status=status, name=name, limit=_PAGE, after=after)
        for state in page:
            try:
                yield state, await client.get_history(state.instance_id, state.execution_id)
            except InstanceNotFoundError:
                continue  # purged meanwhile
            except HistoryFormatError as exc:
                yield state, exc
        if len(page) < _PAGE:
            return
        after = page[-1].instance_id
