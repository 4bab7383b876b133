"""``SyncClient``: every ``Client`` call for code without an event loop (Flask, Django, scripts, notebooks)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import inspect
import threading
from collections.abc import Callable, Coroutine
from types import TracebackType
from typing import Any, Concatenate, ParamSpec, TypeVar

from perdure._payloads import DEFAULT_MAX_PAYLOAD_BYTES, DataConverter, PayloadCodec
from perdure.client._client import Client
from perdure.providers._open import open_provider

__all__ = ["SyncClient"]

_P = ParamSpec("_P")
_T = TypeVar("_T")

_CLOSE_SECONDS = 30.0  # how long close() waits for the provider to close before giving up on it


def _blocking(
    method: Callable[Concatenate[Client, _P], Coroutine[Any, Any, _T]],
) -> Callable[Concatenate[SyncClient, _P], _T]:
    """The blocking form of a ``Client`` coroutine method: same parameters, same result, same errors.

    The signature and docstring are Client's own (through ``functools.wraps``), so the two never
    drift apart, and type checkers see Client's exact parameters.
    """
    name = method.__name__

    @functools.wraps(method)
    def call(self: SyncClient, /, *args: _P.args, **kwargs: _P.kwargs) -> _T:
        return self._call(lambda client: method(client, *args, **kwargs))

    call.__module__ = __name__
    call.__qualname__ = f"SyncClient.{name}"
    client_doc = inspect.cleandoc(method.__doc__ or "")
    call.__doc__ = f"Blocking :meth:`Client.{name}`: waits for its result and raises its errors.\n\n{client_doc}"
    return call


class SyncClient:
    """A :class:`Client` for synchronous code, safe to share between threads.

    The client owns a background thread running an event loop; it opens the provider on that loop
    and runs each call there, blocking the calling thread until the call's result or error comes
    back. Errors are the same perdure exceptions :class:`Client` raises. Open one per process (for
    instance at application start-up) and share it::

        with perdure.SyncClient("sqlite:///app.db") as client:
            instance_id = client.start_orchestration("order-1", "Order", {"sku": "A7"})
            state = client.wait_for_orchestration(instance_id, timeout=30)

    Every call has the signature and documentation of the :class:`Client` method of the same name.
    The client takes a database URL rather than an open :class:`Provider` because a provider
    belongs to the event loop that opened it; in async code, use :class:`Client` directly.

    Do not call a ``SyncClient`` from a coroutine running on an event loop: the call would block
    that loop for its whole duration.

    Args:
        url: ``sqlite:///path.db`` or ``postgresql://…``, as for :func:`open_provider`.
        tracer_provider: An OpenTelemetry tracer provider, as for :class:`Client`.
        payload_codec: As for :class:`Client` (docs/payloads.md).
        data_converter: As for :class:`Client`.
        max_payload_bytes: As for :class:`Client`.
        **options: Passed to :func:`open_provider` (the backend's ``open``/``connect``).
    """

    def __init__(
        self,
        url: str,
        *,
        tracer_provider: Any = None,
        payload_codec: PayloadCodec | None = None,
        data_converter: DataConverter | None = None,
        max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
        **options: Any,
    ) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="perdure-sync-client", daemon=True)
        self._lock = threading.Lock()
        self._closed = False
        self._calls: set[asyncio.Task[Any]] = set()  # touched on the loop thread only
        self._thread.start()
        try:
            provider = asyncio.run_coroutine_threadsafe(open_provider(url, **options), self._loop).result()
        except BaseException:
            self._stop_loop()
            raise
        self._client = Client(
            provider,
            tracer_provider=tracer_provider,
            payload_codec=payload_codec,
            data_converter=data_converter,
            max_payload_bytes=max_payload_bytes,
        )

    start_orchestration = _blocking(Client.start_orchestration)
    raise_event = _blocking(Client.raise_event)
    get_status = _blocking(Client.get_status)
    wait_for_orchestration = _blocking(Client.wait_for_orchestration)
    terminate = _blocking(Client.terminate)
    suspend = _blocking(Client.suspend)
    resume = _blocking(Client.resume)
    rewind = _blocking(Client.rewind)
    purge = _blocking(Client.purge)
    purge_instances = _blocking(Client.purge_instances)
    list_instances = _blocking(Client.list_instances)
    get_history = _blocking(Client.get_history)
    get_orchestration_descriptor = _blocking(Client.get_orchestration_descriptor)
    list_workers = _blocking(Client.list_workers)
    create_schedule = _blocking(Client.create_schedule)
    list_schedules = _blocking(Client.list_schedules)
    get_schedule = _blocking(Client.get_schedule)
    pause_schedule = _blocking(Client.pause_schedule)
    resume_schedule = _blocking(Client.resume_schedule)
    trigger_schedule = _blocking(Client.trigger_schedule)
    delete_schedule = _blocking(Client.delete_schedule)

    @property
    def closed(self) -> bool:
        """Whether :meth:`close` was called."""
        return self._closed

    def close(self) -> None:
        """Cancel calls still running, close the provider and stop the loop thread.

        A call cancelled this way raises ``RuntimeError`` in its thread; whatever it had already
        committed stays committed. Closing again does nothing.
        """
        self._refuse_own_thread()
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            asyncio.run_coroutine_threadsafe(self._shut_down(), self._loop).result(timeout=_CLOSE_SECONDS)
        finally:
            self._stop_loop()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.close()

    def _call(self, make: Callable[[Client], Coroutine[Any, Any, _T]]) -> _T:
        """Run ``make(client)`` on the loop thread and wait for its outcome."""
        self._refuse_own_thread()
        with self._lock:
            if self._closed:
                raise RuntimeError("this SyncClient is closed")
            # Created under the lock, so a coroutine is never made and then left unawaited by close().
            future = asyncio.run_coroutine_threadsafe(self._tracked(make(self._client)), self._loop)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self._closed:
                raise RuntimeError("this SyncClient was closed while the call was running") from None
            raise
        finally:
            # An interrupted caller (KeyboardInterrupt) does not leave its call running on the loop.
            future.cancel()

    def _refuse_own_thread(self) -> None:
        if threading.current_thread() is self._thread:
            # A callback of a call (e.g. purge_instances' progress) would wait for itself forever.
            raise RuntimeError("a SyncClient cannot be called from its own event loop thread")

    async def _tracked(self, call: Coroutine[Any, Any, _T]) -> _T:
        task = asyncio.current_task()
        assert task is not None
        self._calls.add(task)
        try:
            return await call
        finally:
            self._calls.discard(task)

    async def _shut_down(self) -> None:
        # Calls still running end first, so the provider closes under no one.
        for task in self._calls:
            task.cancel()
        await asyncio.gather(*self._calls, return_exceptions=True)
        await self._client.provider.close()

    def _stop_loop(self) -> None:
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()
