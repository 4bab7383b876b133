"""Replay cost against history length: it must grow linearly, not quadratically.

Builds the history of one orchestration that runs N sequential activities (2N + 2 events), the
way the runtime would, turn by turn. Then times a full replay of that history (``replay`` with
no new events), which is what every turn of a long-running instance pays, and checks the replay
reproduces the right output.

    python benchmarks/replay.py [--runs 7]
"""

from __future__ import annotations

import argparse
import gc
import platform
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from perdure import OrchestrationContext, OrchestrationStatus
from perdure.engine import replay
from perdure.engine.events import (
    ActivityCompleted,
    ActivityScheduled,
    HistoryEvent,
    OrchestrationCompleted,
    OrchestrationStarted,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)


async def sequential(ctx: OrchestrationContext, count: int) -> int:
    total = 0
    for i in range(count):
        total += await ctx.call_activity("Add", i)
    return total


def expected_output(count: int) -> int:
    return sum(i * 2 for i in range(count))


def build_history(count: int) -> list[HistoryEvent]:
    """The history the engine records for ``count`` activities, one turn per completion.

    It is written out directly, since running the turns would cost a replay each (quadratic in
    all); ``check_build`` compares it with turns actually run, for a small count.
    """
    history: list[HistoryEvent] = []

    def add(event_type: type[HistoryEvent], turn: datetime, **fields: Any) -> None:
        history.append(event_type(event_id=len(history) + 1, timestamp=turn, **fields))

    add(OrchestrationStarted, T0, name="Sequential", version="1.0.0", input=count)
    for i in range(count):
        turn = T0 + timedelta(milliseconds=i)
        if i:  # the turn of each completion schedules the next activity
            add(ActivityCompleted, turn, source_event_id=len(history), result=(i - 1) * 2)
        add(ActivityScheduled, turn, name="Add", input=i)
    end = T0 + timedelta(milliseconds=count)
    add(ActivityCompleted, end, source_event_id=len(history), result=(count - 1) * 2)
    add(OrchestrationCompleted, end, output=expected_output(count))
    return history


def check_build(count: int) -> None:
    """``build_history`` writes exactly what running the turns records."""
    history: list[HistoryEvent] = []
    messages: list[HistoryEvent] = [OrchestrationStarted(name="Sequential", version="1.0.0", input=count)]
    for i in range(count + 1):
        result = replay(
            sequential,
            instance_id="bench",
            execution_id=1,
            history=history,
            new_events=messages,
            now=T0 + timedelta(milliseconds=i),
        )
        history.extend(result.new_events)
        for decision in result.decisions:
            if isinstance(decision, ActivityScheduled):
                messages = [ActivityCompleted(source_event_id=decision.event_id, result=decision.input * 2)]
    assert history == build_history(count)


def time_replay(history: list[HistoryEvent], count: int, runs: int) -> float:
    """Median seconds of a full replay; each replay is checked."""
    timings = []
    for _ in range(runs):
        gc.collect()
        start = time.perf_counter()
        result = replay(
            sequential, instance_id="bench", execution_id=1, history=history, new_events=[], now=history[-1].timestamp
        )
        timings.append(time.perf_counter() - start)
        assert result.status is OrchestrationStatus.COMPLETED, result.error
        assert result.output == expected_output(count), result.output
        assert result.new_events == []
    return statistics.median(timings)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=7, help="replays per size (the median is reported)")
    args = parser.parse_args(argv)

    print(f"Python {platform.python_version()} on {platform.machine()}, {args.runs} runs per size (median)")
    check_build(50)
    figures: dict[int, float] = {}
    for events in (1_000, 10_000):
        count = (events - 2) // 2  # Started + N × (Scheduled, Completed) + Completed
        history = build_history(count)
        assert len(history) == 2 * count + 2
        seconds = time_replay(history, count, args.runs)
        figures[events] = seconds
        print(
            f"{len(history):>6} events ({count:>5} activities): {seconds * 1000:8.2f} ms"
            f"  ({seconds / len(history) * 1e6:.2f} µs/event)"
        )
    ratio = figures[10_000] / figures[1_000]
    print(f"ratio 10,000 / 1,000 events: {ratio:.1f}x (linear replay: about 10x; quadratic: about 100x)")
    if ratio > 20:
        print("replay cost is not linear in history length", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
