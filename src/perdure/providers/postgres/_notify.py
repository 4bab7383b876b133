"""Notifications between processes sharing a schema: LISTEN on one channel, wake this process's waiters.

Writes that create work ``NOTIFY`` the schema's channel (in the same transaction, see
``queries.sql``) with a payload saying what changed. Each provider keeps one connection outside
its pool listening to that channel.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid

import psycopg
from psycopg import sql

from perdure.providers._signal import SignalBoard

__all__ = ["Listener"]

_log = logging.getLogger("perdure.providers.postgres")
_MAX_NOTIFY_INSTANCE = 4000  # NOTIFY payloads are limited to 8000 bytes


class Listener:
    """Writes the payloads this process sends, and turns the payloads of other processes into signals."""

    def __init__(self, conninfo: str, schema: str, signals: SignalBoard) -> None:
        self._conninfo = conninfo
        self._signals = signals
        # Notifications carry their sender, so a process ignores its own (it signalled itself already).
        self._origin = uuid.uuid4().hex[:12]
        self._mine = self._origin + " "
        self._channel = ("perdure_" + schema)[:63]
        self._task: asyncio.Task[None] | None = None
        self._listening = asyncio.Event()
        self._closed = False

    def notice(self, orchestrator: int = 0, worker: int = 0, instance: str | None = None) -> str:
        """The payload telling other processes what changed."""
        if instance is not None and len(instance.encode()) > _MAX_NOTIFY_INSTANCE:
            instance = "*"
        return f"{self._origin} {orchestrator} {worker} {instance or ''}"

    async def start(self, name: str) -> None:
        """Start listening; returns once the channel is listened to (or after 10 s of trying)."""
        self._task = asyncio.create_task(self._listen(), name=name)
        # Start listening before returning, so no notification sent after connect() is missed.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(10.0):
                await self._listening.wait()

    async def close(self) -> None:
        """Stop listening."""
        self._closed = True
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _on_notify(self, payload: str) -> None:
        if payload.startswith(self._mine):
            return  # this process signalled itself already, at the commit
        try:
            _, orchestrator, worker, instance = payload.split(" ", 3)
            self._signals.work("orchestrator", int(orchestrator))
            self._signals.work("activity", int(worker))
        except ValueError:
            self._signals.everything()
            return
        if instance == "*":
            self._signals.everything()
        elif instance:
            self._signals.instance(instance)

    async def _listen(self) -> None:
        """Keep one connection outside the pool listening to the schema's channel; reconnect if it drops."""
        pause = 0.1
        while not self._closed:
            try:
                async with await psycopg.AsyncConnection.connect(self._conninfo, autocommit=True) as conn:
                    await conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
                    if self._listening.is_set():
                        self._signals.everything()  # notifications may have been lost while disconnected
                    self._listening.set()
                    pause = 0.1
                    while not self._closed:
                        async for note in conn.notifies(timeout=30.0):
                            self._on_notify(note.payload)
                        await conn.execute("SELECT 1")  # a quiet channel: check the connection is alive
            except psycopg.Error as exc:
                if self._closed:
                    return
                _log.warning("the PostgreSQL listener lost its connection (%s); reconnecting", str(exc).strip())
                self._signals.everything()
            await asyncio.sleep(pause)
            pause = min(pause * 2, 5.0)
