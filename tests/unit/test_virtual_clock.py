"""The virtual clock of ``perdure.testing.TestEnvironment``: real time plus an offset that only grows."""

from __future__ import annotations

import math

import pytest

from perdure.testing._environment import VirtualClock


class Ticking:
    """A base clock a test moves by hand."""

    def __init__(self) -> None:
        self.time = 1_000.0

    def now(self) -> float:
        return self.time


def test_it_runs_with_its_base_and_moves_forward_by_what_it_is_told() -> None:
    base = Ticking()
    clock = VirtualClock(base)
    assert clock.now() == 1_000.0
    base.time += 2.5
    assert clock.now() == 1_002.5
    clock.advance(86_400)
    assert clock.now() == 1_002.5 + 86_400
    assert clock.skipped == 86_400
    base.time += 1
    assert clock.now() == 1_003.5 + 86_400


@pytest.mark.parametrize("seconds", [-1.0, math.inf, math.nan])
def test_it_never_moves_back_nor_by_an_unbounded_amount(seconds: float) -> None:
    clock = VirtualClock(Ticking())
    with pytest.raises(ValueError, match="forward by a finite number"):
        clock.advance(seconds)
    assert clock.skipped == 0
