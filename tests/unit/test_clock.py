"""The process clock: the wall clock, with its jumps absorbed gradually (``providers/_clock.py``)."""

from __future__ import annotations

import pytest

from perdure.providers._clock import MAX_RATE, MIN_RATE, Clock


class FakeTime:
    """A wall clock and a monotonic clock that a test moves by hand."""

    def __init__(self) -> None:
        self.wall = 1_000_000.0
        self.mono = 50.0

    def tick(self, seconds: float) -> None:
        self.wall += seconds
        self.mono += seconds

    def clock(self) -> Clock:
        return Clock(lambda: self.wall, lambda: self.mono)


def test_it_follows_a_wall_clock_that_does_not_jump() -> None:
    time = FakeTime()
    clock = time.clock()
    assert clock.now() == time.wall
    for _ in range(100):
        time.tick(0.37)
        assert clock.now() == pytest.approx(time.wall)


def test_a_jump_back_never_runs_it_backwards_nor_stretches_a_short_wait_by_the_jump() -> None:
    time = FakeTime()
    clock = time.clock()
    due = clock.now() + 2.0  # a 2 s timer
    time.wall -= 60  # the system clock is set back a minute
    readings = [clock.now()]
    waited = 0.0
    while clock.now() < due:
        time.tick(0.1)
        waited += 0.1
        readings.append(clock.now())
    assert readings == sorted(readings)
    assert waited <= 2.0 / MIN_RATE + 0.1  # not 62 s


def test_a_jump_back_is_absorbed_at_the_slowest_rate_then_the_wall_clock_is_followed_again() -> None:
    time = FakeTime()
    clock = time.clock()
    clock.now()
    time.wall -= 60
    time.tick(10)
    assert clock.now() - time.wall == pytest.approx(60 - 10 * (1 - MIN_RATE))
    time.tick(60 / (1 - MIN_RATE))
    assert clock.now() == pytest.approx(time.wall)
    time.tick(1)
    assert clock.now() == pytest.approx(time.wall)


def test_a_jump_forward_is_absorbed_no_faster_than_the_fastest_rate() -> None:
    time = FakeTime()
    clock = time.clock()
    start = clock.now()
    time.wall += 300  # five minutes forward
    assert clock.now() == pytest.approx(start)  # not at once
    time.tick(10)
    assert clock.now() == pytest.approx(start + 10 * MAX_RATE)
    time.tick(300 / (MAX_RATE - 1))
    assert clock.now() == pytest.approx(time.wall)


def test_a_lock_renewed_every_third_of_its_duration_stays_valid_through_a_jump_forward() -> None:
    time = FakeTime()
    clock = time.clock()
    lock_seconds = 60.0
    locked_until = clock.now() + lock_seconds
    time.wall += 300
    for _ in range(40):  # the work dispatcher renews every lock_seconds / 3
        for _ in range(20):
            time.tick(1.0)
            assert clock.now() < locked_until, "another worker would take the activity over"
        locked_until = clock.now() + lock_seconds


def test_rates_must_bracket_real_time() -> None:
    with pytest.raises(ValueError, match="min_rate"):
        Clock(min_rate=1.1)
    with pytest.raises(ValueError, match="min_rate"):
        Clock(max_rate=0.5)
