"""Schedules as pure functions of time: due times (DST included), validation, overlap, catch-up, commands."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from perdure import SerializationError
from perdure.schedules import ScheduleSpec, ScheduleState
from perdure.schedules._machine import MAX_STARTS_PER_TURN, after_run, apply_command, fire_due

T0 = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")
PARIS = ZoneInfo("Europe/Paris")


def spec(**fields: Any) -> ScheduleSpec:
    values: dict[str, Any] = {"schedule_id": "s", "name": "Job", "created_at": T0, **fields}
    if "cron" not in values and "every" not in values:
        values["every"] = timedelta(seconds=10)
    return ScheduleSpec(**values)


def dues(s: ScheduleSpec, count: int) -> list[datetime]:
    found: list[datetime] = []
    due = s.first_due()
    while due is not None and len(found) < count:
        found.append(due)
        due = s.next_due(due)
    return found


def local(moments: list[datetime], zone: ZoneInfo) -> list[str]:
    return [m.astimezone(zone).strftime("%m-%d %H:%M %Z") for m in moments]


# --- every ---------------------------------------------------------------------------------------


def test_an_interval_counts_from_creation_and_keeps_its_rhythm_from_any_moment() -> None:
    s = spec(every=timedelta(seconds=2))
    assert dues(s, 3) == [T0 + timedelta(seconds=2), T0 + timedelta(seconds=4), T0 + timedelta(seconds=6)]
    # Asked late (after downtime), the next due time is still on the grid, not "now + 2 s".
    assert s.next_due(T0 + timedelta(seconds=7.5)) == T0 + timedelta(seconds=8)
    assert s.next_due(T0 + timedelta(seconds=8)) == T0 + timedelta(seconds=10)


def test_an_interval_starts_at_start_at_and_stops_at_end_at() -> None:
    start = T0 + timedelta(hours=1)
    s = spec(every=timedelta(minutes=30), start_at=start, end_at=start + timedelta(hours=1))
    assert dues(s, 10) == [start, start + timedelta(minutes=30), start + timedelta(hours=1)]


def test_an_interval_ignores_dst_it_counts_real_time() -> None:
    created = datetime(2026, 3, 8, 5, 0, tzinfo=UTC)  # midnight in New York, the night clocks spring forward
    s = spec(every=timedelta(hours=1), timezone="America/New_York", created_at=created)
    assert [d - created for d in dues(s, 3)] == [timedelta(hours=h) for h in (1, 2, 3)]
    assert local(dues(s, 3), NEW_YORK) == ["03-08 01:00 EST", "03-08 03:00 EDT", "03-08 04:00 EDT"]


# --- cron and time zones -------------------------------------------------------------------------


def test_a_cron_fires_at_the_same_local_time_on_both_sides_of_a_dst_change() -> None:
    created = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)  # Paris springs forward on Sunday 29 March
    s = spec(cron="0 9 * * *", timezone="Europe/Paris", created_at=created)
    found = dues(s, 4)
    assert local(found, PARIS) == ["03-28 09:00 CET", "03-29 09:00 CEST", "03-30 09:00 CEST", "03-31 09:00 CEST"]
    assert [d.hour for d in found] == [8, 7, 7, 7]  # in UTC the run moves an hour earlier


def test_a_local_time_the_spring_change_skips_fires_shifted_by_the_gap() -> None:
    created = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)  # New York: 02:00 → 03:00 on 8 March
    s = spec(cron="30 2 * * *", timezone="America/New_York", created_at=created)
    assert local(dues(s, 3), NEW_YORK) == ["03-08 03:30 EDT", "03-09 02:30 EDT", "03-10 02:30 EDT"]


def test_a_local_time_the_fall_change_repeats_fires_once_at_its_first_occurrence() -> None:
    created = datetime(2026, 10, 31, 12, 0, tzinfo=UTC)  # New York: 02:00 → 01:00 on 1 November
    s = spec(cron="30 1 * * *", timezone="America/New_York", created_at=created)
    found = dues(s, 3)
    assert local(found, NEW_YORK) == ["11-01 01:30 EDT", "11-02 01:30 EST", "11-03 01:30 EST"]
    # Asked during the repeated hour, after its first 01:30, it waits for the next day.
    second_pass = datetime(2026, 11, 1, 6, 0, tzinfo=UTC)  # 01:00 EST
    assert s.next_due(second_pass) == found[1]


def test_an_hourly_cron_across_both_changes_matches_wall_clock_hours() -> None:
    spring = spec(cron="0 * * * *", timezone="America/New_York", created_at=datetime(2026, 3, 8, 5, 30, tzinfo=UTC))
    assert local(dues(spring, 3), NEW_YORK) == ["03-08 01:00 EST", "03-08 03:00 EDT", "03-08 04:00 EDT"]
    fall = spec(cron="0 * * * *", timezone="America/New_York", created_at=datetime(2026, 11, 1, 4, 30, tzinfo=UTC))
    assert local(dues(fall, 3), NEW_YORK) == ["11-01 01:00 EDT", "11-01 02:00 EST", "11-01 03:00 EST"]


def test_cron_aliases_and_utc_by_default() -> None:
    s = spec(cron="@daily")
    assert dues(s, 2) == [datetime(2026, 1, 6, tzinfo=UTC), datetime(2026, 1, 7, tzinfo=UTC)]


def test_a_cron_that_matches_no_date_has_no_due_time() -> None:
    assert spec(cron="0 0 30 2 *").first_due() is None


# --- validation ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "error", "words"),
    [
        ({"cron": "61 * * * *"}, ValueError, "not a valid cron"),
        ({"cron": "* * * *"}, ValueError, "five fields"),
        ({"cron": "0 0 * * * *"}, ValueError, "five fields"),
        ({"cron": 5}, TypeError, "cron must be a string"),
        ({"cron": "* * * * *", "every": timedelta(seconds=5)}, ValueError, "exactly one of cron= and every="),
        ({"every": None}, ValueError, "exactly one of cron= and every="),
        ({"every": timedelta(milliseconds=500)}, ValueError, "at least 1 second"),
        ({"timezone": "Mars/Olympus"}, ValueError, "unknown time zone 'Mars/Olympus'"),
        ({"timezone": "../etc/passwd"}, ValueError, "unknown time zone"),
        ({"overlap": "queue"}, ValueError, "overlap must be one of 'skip', 'buffer_one', 'allow'"),
        ({"start_at": datetime(2026, 1, 1)}, ValueError, "start_at must be an aware datetime"),
        ({"start_at": T0, "end_at": T0}, ValueError, "end_at"),
        ({"catchup_window": timedelta(0)}, ValueError, "catchup_window must be positive"),
        ({"schedule_id": "a@b"}, ValueError, "must not contain '@'"),
        ({"schedule_id": "x" * 250}, ValueError, "at most"),
        ({"schedule_id": " "}, ValueError, "empty"),
        ({"name": "perdure.Schedule"}, ValueError, "schedules' own orchestration"),
    ],
)
def test_bad_specs_are_refused_with_a_clear_error(fields: dict[str, Any], error: type[Exception], words: str) -> None:
    with pytest.raises(error, match=words.replace("(", r"\(").replace(".", r"\.")):
        spec(**fields)


def test_an_input_that_is_not_json_is_refused() -> None:
    with pytest.raises(SerializationError):
        spec(input={"when": object()})


def test_the_spec_and_state_survive_their_json_round_trip() -> None:
    s = spec(cron="*/5 * * * *", timezone="Europe/Paris", overlap="buffer_one", start_at=T0, input={"a": [1]})
    assert ScheduleSpec.from_json(s.to_json()) == s
    state = ScheduleState(spec=s, next_due=s.first_due(), paused=True, note="why", fires=3, skipped=1)
    state = replace(state, buffered=apply_command(state, T0, {"command": "trigger"}, running=False)[1][0])
    assert ScheduleState.from_json(state.to_json()) == state


# --- overlap, catch-up and commands --------------------------------------------------------------


def state_of(**fields: Any) -> ScheduleState:
    s = spec(**fields)
    return ScheduleState(spec=s, next_due=s.first_due())


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def test_allow_starts_every_due_time_even_while_runs_run() -> None:
    state, runs = fire_due(state_of(overlap="allow"), at(35), running=True)
    assert [r.due for r in runs] == [at(10), at(20), at(30)]
    assert runs[0].instance_id == "s@2026-01-05T12:00:10Z"
    assert (state.fires, state.skipped, state.next_due) == (3, 0, at(40))


def test_skip_starts_one_run_and_skips_the_due_times_that_come_while_it_runs() -> None:
    state, runs = fire_due(state_of(overlap="skip"), at(10), running=False)
    assert [r.due for r in runs] == [at(10)]
    state, runs = fire_due(state, at(20), running=True)
    assert runs == [] and state.skipped == 1
    # The run ends at 35 s: the due time at 30 s came while it ran, so it is skipped too.
    state, runs = after_run(state, at(35), None)
    assert runs == [] and state.skipped == 2 and state.next_due == at(40)


def test_buffer_one_keeps_one_due_time_and_starts_it_when_the_run_ends() -> None:
    state, runs = fire_due(state_of(overlap="buffer_one"), at(10), running=False)
    assert len(runs) == 1
    assert state.wants_timer(running=True)  # room in the buffer: it wakes at the next due time
    state, runs = fire_due(state, at(20), running=True)
    assert runs == [] and state.buffered is not None and state.buffered.due == at(20)
    assert not state.wants_timer(running=True)
    state, runs = after_run(state, at(45), "boom")
    assert [r.due for r in runs] == [at(20)]
    assert (state.fires, state.skipped, state.buffered, state.last_error) == (2, 2, None, None)


def test_catch_up_fires_what_the_window_allows_and_counts_the_rest_as_missed() -> None:
    state, runs = fire_due(state_of(overlap="allow", catchup_window=timedelta(seconds=25)), at(60), running=False)
    assert [r.due for r in runs] == [at(40), at(50), at(60)]
    assert (state.missed, state.fires, state.next_due) == (3, 3, at(70))


def test_skip_catches_up_with_one_run() -> None:
    state, runs = fire_due(state_of(overlap="skip"), at(60), running=False)
    assert [r.due for r in runs] == [at(10)]
    assert (state.fires, state.skipped) == (1, 5)


def test_a_long_catch_up_is_spread_over_turns() -> None:
    state, runs = fire_due(state_of(overlap="allow", every=timedelta(seconds=1)), at(1000), running=False)
    assert len(runs) == MAX_STARTS_PER_TURN and state.next_due == at(MAX_STARTS_PER_TURN + 1)


def test_pause_passes_over_due_times_and_resume_goes_on_from_now() -> None:
    state = state_of()
    state, _ = apply_command(state, at(5), {"command": "pause", "note": "maintenance"}, running=False)
    assert state.paused and state.note == "maintenance" and not state.wants_timer(running=False)
    assert fire_due(state, at(100), running=False)[1] == []
    state, _ = apply_command(state, at(100), {"command": "resume"}, running=False)
    assert not state.paused and state.next_due == at(110) and state.note is None


def test_trigger_starts_now_under_the_overlap_rule() -> None:
    state, runs = apply_command(state_of(), at(3), {"command": "trigger"}, running=False)
    assert [r.instance_id for r in runs] == ["s@2026-01-05T12:00:03Z~1"] and state.fires == 1
    state, runs = apply_command(state, at(4), {"command": "trigger"}, running=True)
    assert runs == [] and state.skipped == 1
    state, runs = apply_command(state_of(overlap="buffer_one"), at(4), {"command": "trigger"}, running=True)
    assert runs == [] and state.buffered is not None


def test_delete_finishes_and_unknown_commands_change_nothing() -> None:
    state = state_of()
    assert apply_command(state, at(1), {"command": "dance"}, running=False) == (state, [])
    assert apply_command(state, at(1), "pause", running=False) == (state, [])
    deleted, _ = apply_command(state, at(1), {"command": "delete"}, running=False)
    assert deleted.finished and deleted.to_json()["state"] == "deleted"


def test_a_schedule_past_its_end_is_finished() -> None:
    state, runs = fire_due(state_of(end_at=at(15)), at(30), running=False)
    assert len(runs) == 1 and state.next_due is None and state.finished
    assert state.to_json()["state"] == "ended"


# --- the schedule orchestration itself, replayed with injected times and the determinism guards ---


def schedule_turn(history: list[Any], new_events: list[Any], now: datetime) -> Any:
    from perdure.engine import replay
    from perdure.schedules import run_schedule

    return replay(
        run_schedule,
        instance_id="schedule:s",
        execution_id=1,
        history=history,
        new_events=new_events,
        now=now,
        determinism_guards=True,
    )


def test_the_orchestration_sleeps_until_the_dst_shifted_due_time_and_fires_it() -> None:
    from perdure.engine.events import (
        OrchestrationContinuedAsNew,
        OrchestrationStarted,
        SubOrchestrationScheduled,
        TimerCreated,
        TimerFired,
    )
    from perdure.schedules import SCHEDULE_ORCHESTRATION, SCHEDULE_VERSION

    created = datetime(2026, 3, 7, 12, 0, tzinfo=UTC)
    s = spec(cron="30 2 * * *", timezone="America/New_York", created_at=created, input={"k": 1})
    state = ScheduleState(spec=s, next_due=s.first_due())
    started = OrchestrationStarted(name=SCHEDULE_ORCHESTRATION, version=SCHEDULE_VERSION, input=state.to_json())
    first = schedule_turn([], [started], created)
    [timer] = [e for e in first.new_events if isinstance(e, TimerCreated)]
    assert timer.fire_at.astimezone(NEW_YORK).strftime("%m-%d %H:%M %Z") == "03-08 03:30 EDT"
    assert first.custom_status["next_due"] == "2026-03-08T07:30:00Z"

    fired_at = timer.fire_at + timedelta(milliseconds=40)
    fired = TimerFired(source_event_id=timer.event_id, fire_at=timer.fire_at)
    second = schedule_turn(first.new_events, [fired], fired_at)
    [run] = [e for e in second.new_events if isinstance(e, SubOrchestrationScheduled)]
    assert (run.name, run.instance_id, run.input) == ("Job", "s@2026-03-08T07:30:00Z", {"k": 1})
    assert not any(isinstance(e, OrchestrationContinuedAsNew) for e in second.new_events)  # it follows the run
    assert second.custom_status["running"] == run.instance_id
    assert second.custom_status["next_due"] == "2026-03-09T06:30:00Z"  # 02:30 EDT the next night
