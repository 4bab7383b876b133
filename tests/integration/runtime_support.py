"""Helpers of the integration tests: a running runtime, polling with a deadline, history checks."""

from __future__ import annotations

import asyncio
import importlib.util
import inspect
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from perdure import Client, Provider, Registry, Runtime, RuntimeOptions, SqliteProvider
from perdure.engine.events import (
    ActivityCompleted,
    ActivityFailed,
    ActivityScheduled,
    Completion,
    EventRaised,
    HistoryEvent,
    OrchestrationCompleted,
    OrchestrationContinuedAsNew,
    OrchestrationFailed,
    OrchestrationStarted,
    OrchestrationTerminated,
    SubOrchestrationCompleted,
    SubOrchestrationFailed,
    SubOrchestrationScheduled,
    TaskCancelled,
    TimerCreated,
    TimerFired,
)
from perdure.providers._base import (
    Message,
    OrchestrationItem,
    QueueKind,
    TurnCommit,
    WorkItem,
)


def _root_conftest() -> Any:
    """``tests/conftest.py`` as a module: every test directory has a ``conftest``, so it cannot be imported by name."""
    name = "perdure_tests_root_conftest"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).parents[1] / "conftest.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]


open_test_provider = _root_conftest().open_test_provider
drop_test_provider = _root_conftest().drop_test_provider

# Quick redeliveries so that retry and poison paths finish in milliseconds.
FAST = RuntimeOptions(idle_timeout=1.0, dispatch_backoff=0.01, max_dispatch_backoff=0.05)

_COMPLETIONS: dict[type[HistoryEvent], tuple[type[HistoryEvent], ...]] = {
    ActivityScheduled: (ActivityCompleted, ActivityFailed, TaskCancelled),
    TimerCreated: (TimerFired, TaskCancelled),
    SubOrchestrationScheduled: (SubOrchestrationCompleted, SubOrchestrationFailed, TaskCancelled),
}
_TERMINAL = (OrchestrationCompleted, OrchestrationFailed, OrchestrationContinuedAsNew, OrchestrationTerminated)


@asynccontextmanager
async def running(provider: Provider, registry: Registry, options: RuntimeOptions = FAST) -> AsyncIterator[Client]:
    """A runtime serving ``provider`` for the duration of the block, and a client of it."""
    async with Runtime(provider, registry, options):
        yield Client(provider)


async def wait_until(
    check: Callable[[], Any | Awaitable[Any]], *, timeout: float = 10.0, what: str = "the condition"
) -> Any:
    """Poll ``check`` (sync or async) until it returns something truthy, and return that."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if inspect.isawaitable(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} did not happen within {timeout} s")
        await asyncio.sleep(0.01)


async def history_has(client: Client, instance_id: str, kind: type[HistoryEvent], count: int = 1) -> bool:
    """Whether the current execution's history holds at least ``count`` events of ``kind``."""
    history = await client.provider.get_history(instance_id)
    return sum(isinstance(e, kind) for e in history) >= count


def assert_history_sound(history: Sequence[HistoryEvent]) -> None:
    """The structural invariants of one execution's history.

    Event ids are 1..n without gaps or repeats, ``OrchestrationStarted`` comes first and only once,
    every completion answers an earlier scheduling event of the matching kind, no scheduling event
    is answered twice, and a terminal event, if any, is the last event — except that a failed
    execution may go on with the messages it retained: completions and external events.
    """
    assert history, "the history is empty"
    end = next((i for i, e in enumerate(history) if isinstance(e, OrchestrationFailed)), len(history))
    retained = history[end + 1 :]
    assert all(isinstance(e, Completion | EventRaised) for e in retained), f"retained: {retained}"
    history = history[: end + 1]
    ids = [e.event_id for e in history]
    assert ids == list(range(1, len(history) + 1)), f"event ids are not 1..n: {ids}"
    assert isinstance(history[0], OrchestrationStarted)
    assert sum(isinstance(e, OrchestrationStarted) for e in history) == 1
    scheduled: dict[int, HistoryEvent] = {}
    answered: Counter[int] = Counter()
    for event in history:
        if type(event) in _COMPLETIONS:
            scheduled[event.event_id] = event
        source = getattr(event, "source_event_id", None)
        if source is not None:
            assert source in scheduled, f"{event} answers no earlier scheduling event"
            assert isinstance(event, _COMPLETIONS[type(scheduled[source])]), f"{event} does not match its source"
            answered[source] += 1
    assert all(n == 1 for n in answered.values()), f"answered more than once: {answered}"
    terminals = [i for i, e in enumerate(history) if isinstance(e, _TERMINAL)]
    assert terminals in ([], [len(history) - 1]), f"terminal events at {terminals} of {len(history)}"


def events_of(history: Sequence[HistoryEvent], kind: type[HistoryEvent]) -> list[Any]:
    return [e for e in history if isinstance(e, kind)]


class DelegatingProvider(Provider):
    """Forwards every call to ``inner``; subclasses override what they observe or disturb."""

    def __init__(self, inner: Provider) -> None:
        self.inner = inner

    async def create_instance(self, start: Message) -> None:
        await self.inner.create_instance(start)

    async def restart_instance(self, start: Message) -> int:
        return await self.inner.restart_instance(start)

    async def request_rewind(self, request: Message) -> bool:
        return await self.inner.request_rewind(request)

    async def enqueue_messages(self, messages: Sequence[Message]) -> None:
        await self.inner.enqueue_messages(messages)

    async def get_state(self, instance_id: str) -> Any:
        return await self.inner.get_state(instance_id)

    async def get_history(self, instance_id: str, execution_id: int | None = None) -> list[HistoryEvent]:
        return await self.inner.get_history(instance_id, execution_id)

    async def list_instances(self, where: Any) -> Any:
        return await self.inner.list_instances(where)

    async def purge_instances(self, instance_ids: Sequence[str]) -> int:
        return await self.inner.purge_instances(instance_ids)

    async def fetch_orchestration_item(self, lock_seconds: float, **kwargs: Any) -> OrchestrationItem | None:
        return await self.inner.fetch_orchestration_item(lock_seconds, **kwargs)

    async def ack_orchestration_item(self, item: OrchestrationItem, commit: TurnCommit) -> None:
        await self.inner.ack_orchestration_item(item, commit)

    async def abandon_orchestration_item(
        self, item: OrchestrationItem, delay: float = 0.0, *, undo_delivery: bool = False
    ) -> None:
        await self.inner.abandon_orchestration_item(item, delay, undo_delivery=undo_delivery)

    async def fetch_work_item(self, queues: Sequence[str], lock_seconds: float) -> WorkItem | None:
        return await self.inner.fetch_work_item(queues, lock_seconds)

    async def ack_work_item(self, item: WorkItem, completion: Message) -> None:
        await self.inner.ack_work_item(item, completion)

    async def abandon_work_item(self, item: WorkItem, delay: float = 0.0) -> None:
        await self.inner.abandon_work_item(item, delay)

    async def renew_work_item(self, item: WorkItem, lock_seconds: float) -> None:
        await self.inner.renew_work_item(item, lock_seconds)

    async def charge_work_deliveries(self, items: Sequence[WorkItem], *, charged: bool) -> None:
        await self.inner.charge_work_deliveries(items, charged=charged)

    async def work_items_held(self, items: Sequence[WorkItem]) -> set[int]:
        return await self.inner.work_items_held(items)

    async def wait_for_work(self, kind: QueueKind, timeout: float, queues: Sequence[str] = ()) -> None:
        await self.inner.wait_for_work(kind, timeout, queues)

    async def wait_for_state_change(self, instance_id: str, timeout: float, *, until_ended: int | None = None) -> None:
        await self.inner.wait_for_state_change(instance_id, timeout, until_ended=until_ended)

    async def close(self) -> None:
        await self.inner.close()


async def raw_sql(provider: Provider, statement: str, params: dict[str, Any] | None = None) -> None:
    """Run ``statement`` on the provider's store directly, as an operator or a broken disk would."""
    if isinstance(provider, SqliteProvider):
        provider._db.execute(statement, params or {})
        return
    import psycopg
    from tests.conftest import POSTGRES_URL

    async with await psycopg.AsyncConnection.connect(POSTGRES_URL, autocommit=True) as conn:
        await conn.execute(f'SET search_path TO "{provider.schema}"')  # type: ignore[attr-defined]
        await conn.execute(statement.encode() if params is None else statement, params)
