"""``RuntimeOptions``: how a runtime runs its dispatchers."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from perdure._payloads import DEFAULT_MAX_PAYLOAD_BYTES, DataConverter, PayloadCodec, Payloads
from perdure._validate import check_name

__all__ = ["RuntimeOptions"]


@dataclass(frozen=True, kw_only=True, slots=True)
class RuntimeOptions:
    """Settings of a :class:`~perdure.Runtime`.

    Attributes:
        orchestration_concurrency: Turns processed at once.
        activity_concurrency: Activities run at once (async ones on the loop, sync ones in threads).
        activity_queues: The worker queues this runtime serves.
        run_orchestrations: Whether to run the orchestration dispatcher.
        run_activities: Whether to run the work dispatcher.
        lock_seconds: How long a fetched instance stays locked when the provider keeps no worker
            records (both built-in providers do: then ``worker_timeout`` governs every lock).
        activity_lock_seconds: How long a fetched activity stays locked, renewed while it runs,
            when the provider keeps no worker records.
        worker_timeout: Seconds after which a worker that stopped renewing its record (every
            quarter of this, from a thread, whatever its event loop does) counts as dead, and its
            instances and activities are taken over by other workers.
        max_dispatch_attempts: After this many deliveries without success, a message fails its
            instance (poison message), an unregistered orchestration version fails the instance,
            and an unregistered activity fails the activity.
        dispatch_backoff: Seconds before the first redelivery of an abandoned item; doubles each
            time, up to ``max_dispatch_backoff``.
        max_dispatch_backoff: The longest wait between redeliveries.
        idle_timeout: The longest an idle dispatcher sleeps before looking again (the provider
            usually wakes it sooner).
        log_turns: Log every turn's replayed history, new events and decisions on the
            ``perdure.turn`` logger (DEBUG). ``None`` (the default) turns it on when the
            environment variable ``PERDURE_LOG`` is ``debug`` when the runtime starts.
        tracer_provider: The OpenTelemetry tracer provider for spans; ``None`` uses the global
            one, and without one (or without OpenTelemetry) nothing is traced.
        meter_provider: The OpenTelemetry meter provider for metrics; ``None`` uses the global
            one. ``Runtime.metrics`` counts in-process either way.
        queue_depth_interval: Seconds between samples of the queue depths (``0`` disables them).
        blocked_loop_warning: Log a warning (logger ``perdure.watchdog``) naming the activity or
            turn that blocks the event loop for longer than this many seconds (``0`` disables it).
        determinism_guards: While orchestration code runs, make ``time.time()``, ``datetime.now()``,
            ``random``, ``uuid.uuid4()`` and the like raise :class:`~perdure.NonDeterministicCallError`
            (docs/testing.md says exactly what is guarded). Activities are never affected.
        cache_size: How many running executions the runtime keeps in memory between their turns
            (the suspended code and its tasks), so that the next turn applies only its new events
            instead of replaying the whole history; least recently used ones go first. ``0`` turns
            the cache off. Every turn checks its entry against the stored history and replays from
            the store when they differ, so the cache never changes a result (docs/cache.md).
        cache_idle_timeout: Seconds after which an execution that had no turn leaves the cache, so
            that an idle orchestration costs no memory.
        data_converter: How values are converted to the JSON the store keeps and back
            (a :class:`~perdure.DataConverter`; ``None``: the default one, see docs/payloads.md).
        payload_codec: A :class:`~perdure.PayloadCodec` applied to every payload's JSON before it
            is stored (compression, encryption at rest); every runtime and client of a store needs it.
        max_payload_bytes: The largest payload (its JSON, in bytes) accepted: a larger input,
            output, event or activity result is refused where it is given, never stored.
    """

    orchestration_concurrency: int = 4
    activity_concurrency: int = 16
    activity_queues: Sequence[str] = ("default",)
    run_orchestrations: bool = True
    run_activities: bool = True
    lock_seconds: float = 30.0
    activity_lock_seconds: float = 60.0
    worker_timeout: float = 10.0
    max_dispatch_attempts: int = 10
    dispatch_backoff: float = 0.5
    max_dispatch_backoff: float = 30.0
    idle_timeout: float = 5.0
    log_turns: bool | None = None
    tracer_provider: Any = None
    meter_provider: Any = None
    queue_depth_interval: float = 10.0
    blocked_loop_warning: float = 1.0
    determinism_guards: bool = True
    cache_size: int = 1000
    cache_idle_timeout: float = 60.0
    data_converter: DataConverter | None = None
    payload_codec: PayloadCodec | None = None
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES

    def __post_init__(self) -> None:
        for name in ("orchestration_concurrency", "activity_concurrency", "max_dispatch_attempts"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an int >= 1, got {value!r}")
        if isinstance(self.cache_size, bool) or not isinstance(self.cache_size, int) or self.cache_size < 0:
            raise ValueError(f"cache_size must be an int >= 0 (0 turns the cache off), got {self.cache_size!r}")
        for name in ("lock_seconds", "activity_lock_seconds", "worker_timeout", "idle_timeout", "cache_idle_timeout"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} must be positive")
        for name in ("queue_depth_interval", "blocked_loop_warning"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if isinstance(self.activity_queues, str):
            raise TypeError("activity_queues must be a sequence of queue names, not one string")
        for queue in self.activity_queues:
            check_name(queue, "queue name")
        self.payloads()  # checks the three payload settings

    def payloads(self) -> Payloads:
        """The payload settings together, as the dispatchers use them."""
        return Payloads(self.data_converter, self.payload_codec, self.max_payload_bytes)

    def turn_logging(self) -> bool:
        """Whether turns are logged in full: ``log_turns``, or else ``PERDURE_LOG=debug``."""
        if self.log_turns is not None:
            return self.log_turns
        return os.environ.get("PERDURE_LOG", "").strip().lower() == "debug"

    def backoff(self, attempt: int) -> float:
        """Seconds to wait before redelivering an item that failed ``attempt`` times."""
        return float(min(self.dispatch_backoff * 2 ** max(attempt - 1, 0), self.max_dispatch_backoff))
