"""The shapes both sides run, and the results they must produce.

Plain Python with no imports from perdure or a peer: the driver and every side (each in its own
interpreter and virtual environment) share these definitions, so both measure the same thing.

Every step body is trivial (``n + 1``); a workflow's result is a pure function of its input, and a
side checks each one against :func:`expected` before it reports a figure.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

SEQUENCE_LENGTH = 10
"""Steps in each workflow of the two sequence shapes."""


@dataclass(frozen=True, kw_only=True)
class Shape:
    """One benchmark shape.

    Attributes:
        name: Identifier used on the command line and in JSON output.
        title: What the shape does, for the printed table.
        unit: What the figure counts per second (``"workflows"`` or ``"steps"``).
    """

    name: str
    title: str
    unit: str

    def workflows(self, n: int) -> int:
        """How many top-level workflows one run of this shape with size ``n`` starts."""
        if self.name == "sequence_one_at_a_time":
            return max(1, n // SEQUENCE_LENGTH)  # N steps in all, as in the fan-out
        if self.name == "fan_out":
            return 1
        return n

    def units(self, n: int) -> int:
        """How many units (workflows or steps) one run of this shape with size ``n`` completes."""
        if self.name in ("sequence_one_at_a_time", "sequence_together"):
            return self.workflows(n) * SEQUENCE_LENGTH
        return n


SHAPES = {
    shape.name: shape
    for shape in (
        Shape(name="one_at_a_time", title="one 1-step workflow at a time, start → result", unit="workflows"),
        Shape(name="started_together", title="N 1-step workflows started together", unit="workflows"),
        Shape(
            name="sequence_one_at_a_time",
            title=f"one {SEQUENCE_LENGTH}-step workflow at a time (N steps in all)",
            unit="steps",
        ),
        Shape(name="sequence_together", title=f"N {SEQUENCE_LENGTH}-step workflows started together", unit="steps"),
        Shape(name="fan_out", title="one workflow fanning out N steps", unit="steps"),
    )
}


def expected(shape: str, n: int, k: int = 0) -> int:
    """The result of workflow number ``k`` in a run of ``shape`` with size ``n``.

    One-step workflows return their input plus one, sequences their input plus the sequence
    length, and the fan-out the sum of ``k + 1`` over its ``n`` steps.
    """
    if shape in ("one_at_a_time", "started_together"):
        return k + 1
    if shape in ("sequence_one_at_a_time", "sequence_together"):
        return k + SEQUENCE_LENGTH
    if shape == "fan_out":
        return n * (n + 1) // 2
    raise ValueError(f"unknown shape {shape!r}")


class Stopwatch:
    """Wall-clock seconds of a timed section, and the CPU seconds this process spent in it.

    CPU time counts every thread of the side's process (not the database server's); on a shared
    machine it moves much less than wall-clock time when other work competes for the cores.
    """

    seconds = 0.0
    cpu_seconds = 0.0

    def __enter__(self) -> Stopwatch:
        self._wall = time.perf_counter()
        self._cpu = time.process_time()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.seconds = time.perf_counter() - self._wall
        self.cpu_seconds = time.process_time() - self._cpu


def report(shape: str, n: int, watch: Stopwatch, **settings: Any) -> None:
    """Print a side's figure as one JSON line on standard output (the driver reads the last line)."""
    units = SHAPES[shape].units(n)
    figure = {
        "shape": shape,
        "n": n,
        "units": units,
        "seconds": watch.seconds,
        "rate": units / watch.seconds,
        "cpu_seconds": watch.cpu_seconds,
        "cpu_ms_per_unit": watch.cpu_seconds * 1000 / units,
    }
    print(json.dumps(figure | settings), flush=True)
