"""``SyncClient``: Client's calls from threads without an event loop, while a runtime runs elsewhere."""

from __future__ import annotations

import asyncio
import inspect
import threading
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import POSTGRES_URL, PROVIDER_KINDS
from tests.integration.runtime_support import FAST

from perdure import (
    ActivityContext,
    Client,
    InstanceAlreadyExistsError,
    InstanceNotFoundError,
    InvalidInstanceStateError,
    OrchestrationContext,
    OrchestrationStatus,
    Registry,
    Runtime,
    SerializationError,
    SyncClient,
    open_provider,
)

registry = Registry()


@registry.activity("Double")
def double(ctx: ActivityContext, value: int) -> int:
    return value * 2


@registry.orchestration("Sum")
async def sum_of_doubles(ctx: OrchestrationContext, values: list[int]) -> int:
    doubled = await ctx.when_all([ctx.call_activity("Double", v) for v in values])
    return sum(doubled)


@registry.orchestration("AwaitApproval")
async def await_approval(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.wait_for_event("Approval")


@pytest.fixture(params=PROVIDER_KINDS)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of a fresh, empty store of each kind (created by whoever opens it first)."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sync.db'}"
        return
    import psycopg

    schema = f"test_{uuid.uuid4().hex[:12]}"
    yield f"{POSTGRES_URL}?schema={schema}"
    with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@contextmanager
def runtime_in_thread(url: str) -> Iterator[None]:
    """A runtime on its own event loop in another thread, serving the store at ``url``."""
    ready = threading.Event()
    loop: asyncio.AbstractEventLoop | None = None
    stop: asyncio.Event | None = None

    async def serve() -> None:
        nonlocal loop, stop
        loop, stop = asyncio.get_running_loop(), asyncio.Event()
        provider = await open_provider(url)
        try:
            async with Runtime(provider, registry, FAST):
                ready.set()
                await stop.wait()
        finally:
            await provider.close()

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(30), "the runtime did not start"
        yield
    finally:
        if loop is not None and stop is not None:
            loop.call_soon_threadsafe(stop.set)
        thread.join(30)
        assert not thread.is_alive()


def _client_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "perdure-sync-client"]


def test_eight_threads_share_one_client_while_a_runtime_runs_on_another_loop(store_url: str) -> None:
    with runtime_in_thread(store_url), SyncClient(store_url) as client:

        def start_and_wait(worker: int) -> list[int]:
            outputs = []
            for round_ in range(3):
                values = [worker, round_, 1]
                instance_id = client.start_orchestration(f"sum-{worker}-{round_}", "Sum", values)
                state = client.wait_for_orchestration(instance_id, timeout=60)
                assert state.status is OrchestrationStatus.COMPLETED, state
                outputs.append(state.output)
            return outputs

        with ThreadPoolExecutor(max_workers=8) as pool:
            results = list(pool.map(start_and_wait, range(8)))

        assert results == [[2 * (w + r + 1) for r in range(3)] for w in range(8)]
        finished = client.list_instances(status=OrchestrationStatus.COMPLETED, limit=100)
        assert len(finished) == 24


def test_events_history_and_management_calls_go_through(store_url: str) -> None:
    with runtime_in_thread(store_url), SyncClient(store_url) as client:
        client.start_orchestration("approve-1", "AwaitApproval")
        client.raise_event("approve-1", "Approval", {"by": "ana"})
        state = client.wait_for_orchestration("approve-1", timeout=30)
        assert state.output == {"by": "ana"}
        assert [type(e).__name__ for e in client.get_history("approve-1")][-1] == "OrchestrationCompleted"
        descriptor = client.get_orchestration_descriptor("approve-1")
        assert descriptor is not None and descriptor.name == "AwaitApproval"

        client.start_orchestration("approve-2", "AwaitApproval")
        assert client.terminate("approve-2", "not needed") is True
        assert client.wait_for_orchestration("approve-2", timeout=30).status is OrchestrationStatus.TERMINATED
        assert client.purge("approve-2") == 1
        assert client.get_status("approve-2") is None


def test_errors_are_the_same_perdure_exceptions(store_url: str) -> None:
    with SyncClient(store_url) as client:
        client.start_orchestration("dup", "AwaitApproval")
        with pytest.raises(InstanceAlreadyExistsError):
            client.start_orchestration("dup", "AwaitApproval")
        with pytest.raises(InstanceNotFoundError):
            client.raise_event("missing", "Approval")
        with pytest.raises(SerializationError):
            client.start_orchestration("bad-input", "AwaitApproval", {1j, 2})
        with pytest.raises(InvalidInstanceStateError):
            client.resume("dup")
        with pytest.raises(TimeoutError):
            client.wait_for_orchestration("dup", timeout=0.1)  # no runtime serves it


def test_close_is_idempotent_stops_the_thread_and_refuses_later_calls(tmp_path: Path) -> None:
    before = len(_client_threads())
    client = SyncClient(f"sqlite:///{tmp_path / 'close.db'}")
    assert len(_client_threads()) == before + 1
    client.start_orchestration("one", "AwaitApproval")
    client.close()
    client.close()
    assert client.closed
    assert len(_client_threads()) == before
    with pytest.raises(RuntimeError, match="closed"):
        client.get_status("one")


def test_close_ends_a_call_still_waiting_in_another_thread(tmp_path: Path) -> None:
    client = SyncClient(f"sqlite:///{tmp_path / 'waiting.db'}")
    client.start_orchestration("never-runs", "AwaitApproval")
    errors: list[BaseException] = []

    def wait() -> None:
        try:
            client.wait_for_orchestration("never-runs", timeout=60)
        except BaseException as exc:
            errors.append(exc)

    waiter = threading.Thread(target=wait)
    waiter.start()
    time.sleep(0.3)  # the waiter is inside wait_for_orchestration
    started = time.monotonic()
    client.close()
    waiter.join(10)
    assert time.monotonic() - started < 10
    assert len(errors) == 1 and isinstance(errors[0], RuntimeError), errors
    assert "closed while the call was running" in str(errors[0])


def test_a_bad_url_raises_and_leaves_no_thread_behind() -> None:
    before = len(_client_threads())
    with pytest.raises(ValueError, match="unsupported database URL"):
        SyncClient("mysql://somewhere/db")
    assert len(_client_threads()) == before


def test_a_callback_on_the_client_thread_is_refused_rather_than_deadlocking(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'callback.db'}"
    with runtime_in_thread(url), SyncClient(url) as client:
        client.start_orchestration("gone", "AwaitApproval")
        client.terminate("gone")
        client.wait_for_orchestration("gone", timeout=30)
        # purge_instances calls ``progress`` on the client's loop thread: a blocking call there would wait forever.
        with pytest.raises(RuntimeError, match="own event loop thread"):
            client.purge_instances(
                created_before=datetime.now(UTC) + timedelta(days=1), progress=lambda _: client.get_status("gone")
            )
        assert client.get_status("gone") is None  # the batch before the callback was purged


def test_every_client_coroutine_has_a_blocking_twin_with_its_signature() -> None:
    public = {
        name for name, member in inspect.getmembers(Client, inspect.iscoroutinefunction) if not name.startswith("_")
    }
    for name in public:
        twin = getattr(SyncClient, name, None)
        assert twin is not None, f"SyncClient has no {name}"
        assert not inspect.iscoroutinefunction(twin), name
        assert inspect.signature(twin) == inspect.signature(getattr(Client, name)), name
        assert f"Client.{name}" in (twin.__doc__ or ""), name
