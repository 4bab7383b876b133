"""Runtime metrics: plain counters readable in-process, mirrored to OpenTelemetry when it is configured.

Every count is kept in a small dict that :meth:`Metrics.snapshot` copies, so tests and health
checks read them without OpenTelemetry. When a meter provider is given or set globally, each
update is also recorded on the ``perdure`` meter. Updates happen on the runtime's event loop only,
so they need no lock.

Instruments (on the ``perdure`` meter) and the snapshot keys they correspond to:

- ``perdure.turns`` (counter, attribute ``outcome``): ``turns.committed``, ``turns.abandoned``
  (put back), ``turns.discarded`` (the lock was lost);
- ``perdure.orchestrations`` (counter, ``status``): ``orchestrations.completed``, ``.failed``,
  ``.terminated``, ``.continued_as_new`` — executions that ended;
- ``perdure.activities`` (counter, ``outcome``): ``activities.completed``, ``.failed`` (time-outs
  included), ``.abandoned``, ``.cancelled`` (stopped because the orchestration no longer wants it);
- ``perdure.cache`` (counter, ``outcome``): ``cache.hit`` (a turn resumed the execution kept in
  memory), ``cache.miss`` (nothing kept: replayed), ``cache.stale`` (kept, but the store had moved
  on: replayed), ``cache.evicted`` (over ``cache_size``), ``cache.expired`` (idle too long);
- ``perdure.turn.duration`` and ``perdure.activity.duration`` (histograms, seconds):
  ``turn.duration`` and ``activity.duration`` (count, sum, min, max);
- ``perdure.queue.depth`` (gauge, ``queue``): ``queue.depth``, the last sample by queue.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from perdure.providers._base import Provider

__all__ = ["Metrics"]

_VERSION = "0.1.0"
_COUNTERS = {
    "turns": ("outcome", "Orchestration turns, by outcome: committed, abandoned (put back) or discarded (lock lost)"),
    "orchestrations": ("status", "Executions that ended, by how they ended"),
    "activities": ("outcome", "Activity attempts, by outcome: completed, failed, abandoned (put back) or cancelled"),
    "cache": ("outcome", "Execution cache lookups (hit, miss, stale) and entries closed early (evicted, expired)"),
}
_HISTOGRAMS = {
    "turn.duration": "Seconds from fetching an instance to committing its turn",
    "activity.duration": "Seconds an activity ran",
}


class _Histogram:
    __slots__ = ("count", "max", "min", "sum")

    def __init__(self) -> None:
        self.count = 0
        self.sum = 0.0
        self.min = float("inf")
        self.max = 0.0

    def record(self, value: float) -> None:
        self.count += 1
        self.sum += value
        self.min = min(self.min, value)
        self.max = max(self.max, value)

    def summary(self) -> dict[str, float]:
        return {
            "count": self.count,
            "sum": self.sum,
            "min": self.min if self.count else 0.0,
            "max": self.max,
        }


class Metrics:
    """The counters, histograms and queue depths of one runtime."""

    def __init__(self, meter_provider: Any = None) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._histograms = {name: _Histogram() for name in _HISTOGRAMS}
        self._depths: dict[str, int] = {}
        self._otel = _Instruments.create(self, meter_provider)

    def count(self, counter: str, label: str, value: int = 1) -> None:
        """Add ``value`` to ``counter`` for ``label`` (``count("activities", "failed")``)."""
        key = (counter, label)
        self._counts[key] = self._counts.get(key, 0) + value
        if self._otel is not None:
            self._otel.count(counter, label, value)

    def record(self, histogram: str, seconds: float) -> None:
        """Record one duration."""
        self._histograms[histogram].record(seconds)
        if self._otel is not None:
            self._otel.histograms[histogram].record(seconds)

    async def sample_queue_depths(self, provider: Provider) -> dict[str, int]:
        """Ask ``provider`` how many messages and work items are due, and keep the answer."""
        self._depths = await provider.queue_depths()
        return self._depths

    def snapshot(self) -> dict[str, Any]:
        """A copy of every metric: ``{"turns.committed": 12, …, "turn.duration": {"count": …}, "queue.depth": {…}}``.

        Counters that never moved are absent (read them with ``.get(key, 0)``).
        """
        out: dict[str, Any] = {f"{counter}.{label}": value for (counter, label), value in sorted(self._counts.items())}
        for name, histogram in self._histograms.items():
            out[name] = histogram.summary()
        out["queue.depth"] = dict(self._depths)
        return out

    def _observe_depths(self) -> Iterable[tuple[int, dict[str, str]]]:
        return [(depth, {"queue": queue}) for queue, depth in self._depths.items()]


class _Instruments:
    """The OpenTelemetry side: one instrument per metric on the ``perdure`` meter."""

    def __init__(self, metrics_api: Any, meter: Any, metrics: Metrics) -> None:
        self.counters = {
            name: meter.create_counter(f"perdure.{name}", unit="1", description=description)
            for name, (_, description) in _COUNTERS.items()
        }
        self.histograms = {
            name: meter.create_histogram(f"perdure.{name}", unit="s", description=description)
            for name, description in _HISTOGRAMS.items()
        }
        self._attributes: dict[tuple[str, str], dict[str, str]] = {}

        def observe(options: Any) -> Iterable[Any]:
            return [metrics_api.Observation(value, attributes) for value, attributes in metrics._observe_depths()]

        meter.create_observable_gauge(
            "perdure.queue.depth", callbacks=[observe], unit="1", description="Messages and work items due, by queue"
        )

    @classmethod
    def create(cls, metrics: Metrics, meter_provider: Any) -> _Instruments | None:
        try:
            from opentelemetry import metrics as metrics_api
        except ImportError:
            return None
        provider = meter_provider if meter_provider is not None else metrics_api.get_meter_provider()
        if type(provider).__name__ in ("_ProxyMeterProvider", "NoOpMeterProvider"):
            return None  # nobody configured metrics
        return cls(metrics_api, provider.get_meter("perdure", _VERSION), metrics)

    def count(self, counter: str, label: str, value: int) -> None:
        key = (counter, label)
        attributes = self._attributes.get(key)
        if attributes is None:
            attributes = self._attributes[key] = {_COUNTERS[counter][0]: label}
        self.counters[counter].add(value, attributes)
