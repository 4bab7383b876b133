"""The execution cache's rules, without a store: when a kept execution is resumed, and when it is not."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from perdure import OrchestrationContext, OrchestrationState, OrchestrationStatus
from perdure._payloads import Payloads
from perdure.codecs import FernetCodec
from perdure.engine import HistoryEvent, encode_event
from perdure.engine._payload_fields import open_event, seal_event
from perdure.engine._replay import LiveExecution, replay, resume
from perdure.engine.events import ActivityCompleted, EventRaised, OrchestrationStarted
from perdure.providers import OrchestrationItem
from perdure.runtime._cache import ExecutionCache

T0 = datetime(2026, 1, 1, tzinfo=UTC)
CREATED = T0 - timedelta(minutes=1)


async def steps(ctx: OrchestrationContext, count: int) -> int:
    total = 0
    for n in range(count):
        total += await ctx.call_activity("Step", n)
    return total


def run_turns(turns: int) -> tuple[LiveExecution, list[HistoryEvent]]:
    """An execution kept after ``turns`` turns (the start, then one completion each), and its history."""
    started = OrchestrationStarted(name="steps", version="1.0.0", input=100)
    result = replay(steps, instance_id="i", execution_id=1, history=[], new_events=[started], now=T0, keep=True)
    history = list(result.new_events)
    for n in range(1, turns):
        assert result.live is not None
        done = ActivityCompleted(source_event_id=history[-1].event_id, result=n)
        result = resume(result.live, new_events=[done], now=T0 + timedelta(seconds=n))
        history += result.new_events
    assert result.live is not None
    return result.live, history


def item(history: list[HistoryEvent] | None, start: int = 1, **state: Any) -> OrchestrationItem:
    fields: dict[str, Any] = {"execution_id": 1, "created_at": CREATED, **state}
    instance = OrchestrationState(
        instance_id="i", name="steps", version="1.0.0", status=OrchestrationStatus.RUNNING, updated_at=T0, **fields
    )
    return OrchestrationItem(
        instance_id="i", lock_token="t", messages=[], state=instance, history=history, history_from=start
    )


def kept(turns: int = 3, size: int = 10) -> tuple[ExecutionCache, LiveExecution, list[HistoryEvent]]:
    cache = ExecutionCache(size, 60.0)
    live, history = run_turns(turns)
    held: list[HistoryEvent] = []
    assert cache.keep("i", live, held, history, CREATED) == 0
    return cache, live, held


def test_the_store_holding_exactly_what_was_seen_resumes_the_kept_state() -> None:
    cache, live, held = kept()
    assert cache.marks["i"].event_id == len(held) and held == run_turns(3)[1]
    taken = cache.take(item(held[-1:], start=len(held)))
    assert taken.outcome == "hit" and taken.live is live
    assert taken.item is not None and taken.item.history is held and taken.item.history_from == 1
    assert "i" not in cache.marks and len(cache) == 0, "out of the cache for the length of the turn"


def test_a_whole_history_equal_to_the_one_seen_resumes_too() -> None:
    cache, live, held = kept()
    taken = cache.take(item(list(held)))
    assert taken.outcome == "hit" and taken.live is live


@pytest.mark.parametrize(
    "changed",
    [
        {"created_at": CREATED + timedelta(seconds=1)},  # purged, and created again under the same id
        {"execution_id": 2},  # continue-as-new, rewind or restart
    ],
)
def test_another_instance_row_or_execution_is_not_resumed(changed: dict[str, Any]) -> None:
    cache, live, held = kept()
    taken = cache.take(item(list(held), **changed))
    assert taken.outcome == "stale" and taken.live is None and not live.code.running
    assert taken.item is not None and taken.item.history == held, "replayed from what the store returned"
    cache, live, held = kept()
    partial = cache.take(item(held[-1:], start=len(held), **changed))
    assert partial.item is None, "only a tail came, and it is not this entry's: read the whole history"


def test_a_history_that_went_on_elsewhere_is_replayed_from_the_events_held_and_the_tail() -> None:
    cache, live, held = kept(turns=3)
    _, longer = run_turns(5)  # another worker ran two more turns
    taken = cache.take(item(longer[len(held) - 1 :], start=len(held)))
    assert taken.outcome == "stale" and taken.live is None and not live.code.running
    assert taken.item is not None and taken.item.history == longer and taken.item.history_from == 1


def test_a_different_event_where_the_entry_holds_one_is_not_trusted() -> None:
    cache, _, held = kept()
    other = replace(held[-1], timestamp=T0 + timedelta(days=1))
    assert cache.take(item([other], start=len(held))).item is None
    cache, _, held = kept()
    rewritten = [*held[:-1], EventRaised(event_id=len(held), timestamp=T0, name="x")]
    taken = cache.take(item(rewritten))
    assert taken.outcome == "stale" and taken.live is None


def test_without_an_entry_a_tail_must_be_completed_by_a_read() -> None:
    cache = ExecutionCache(10, 60.0)
    assert cache.take(item([], start=1)).outcome == "miss"
    assert cache.take(item([], start=4)).item is None


def test_the_least_recently_used_entries_go_first_and_are_closed() -> None:
    cache = ExecutionCache(2, 60.0)
    states = []
    for instance_id in ("a", "b", "c"):
        live, history = run_turns(2)
        states.append(live)
        evicted = cache.keep(instance_id, live, [], history, CREATED)
    assert evicted == 1 and sorted(cache.marks) == ["b", "c"]
    assert not states[0].code.running and states[1].code.running and states[2].code.running
    cache.clear()
    assert len(cache) == 0 and not any(s.code.running for s in states)


def test_idle_entries_expire() -> None:
    now = [0.0]
    cache = ExecutionCache(10, 30.0, clock=lambda: now[0])
    first, history = run_turns(2)
    cache.keep("old", first, [], history, CREATED)
    now[0] = 20.0
    second, history = run_turns(2)
    cache.keep("new", second, [], history, CREATED)
    now[0] = 40.0
    assert cache.expire() == 1 and list(cache.marks) == ["new"] and not first.code.running
    now[0] = 60.0
    assert cache.expire() == 1 and len(cache) == 0


def test_only_a_running_kept_execution_can_be_resumed() -> None:
    live, _ = run_turns(2)
    live.close()
    with pytest.raises(RuntimeError, match="only an execution kept"):
        resume(live, new_events=[], now=T0)


def sealed_turns(payloads: Payloads, turns: int = 3) -> tuple[LiveExecution, list[HistoryEvent]]:
    """``run_turns`` under a payload codec: the history holds every payload encrypted."""
    started = OrchestrationStarted(name="steps", version="1.0.0", input=100)
    result = replay(
        steps, instance_id="i", execution_id=1, history=[], new_events=[started], now=T0, keep=True, payloads=payloads
    )
    history = list(result.new_events)
    for n in range(1, turns):
        assert result.live is not None
        done = ActivityCompleted(source_event_id=history[-1].event_id, result=payloads.seal(n))
        result = resume(result.live, new_events=[done], now=T0 + timedelta(seconds=n))
        history += result.new_events
    assert result.live is not None
    return result.live, history


def resealed(events: list[HistoryEvent], payloads: Payloads) -> list[HistoryEvent]:
    """The same events encrypted again, as another encoding of them reads: Fernet never repeats itself."""
    return [seal_event(open_event(event, payloads), payloads) for event in events]


def test_under_an_encrypting_codec_the_same_events_encrypted_afresh_still_resume() -> None:
    payloads = Payloads(codec=FernetCodec([FernetCodec.generate_key()]))
    cache = ExecutionCache(10, 60.0, payloads=payloads)
    live, history = sealed_turns(payloads)
    held: list[HistoryEvent] = []
    cache.keep("i", live, held, history, CREATED)
    stored = resealed(held, payloads)
    assert encode_event(stored[-1]) != encode_event(held[-1]), "the stored form differs"
    taken = cache.take(item(stored[-1:], start=len(held)))
    assert taken.outcome == "hit" and taken.live is live, "compared decoded, as replay matches decisions"


def test_under_a_codec_a_different_value_or_one_that_cannot_be_decoded_is_not_trusted() -> None:
    payloads = Payloads(codec=FernetCodec([FernetCodec.generate_key()]))
    live, history = sealed_turns(payloads)
    cache = ExecutionCache(10, 60.0, payloads=payloads)
    held: list[HistoryEvent] = []
    cache.keep("i", live, held, history, CREATED)
    other = replace(held[-1], input=payloads.seal(12345))  # the same activity, another input
    assert cache.take(item([other], start=len(held))).item is None
    # A cache whose process has no key for the store's payloads: never a hit, never an error.
    live, history = sealed_turns(payloads)
    keyless = ExecutionCache(10, 60.0)
    held = []
    keyless.keep("i", live, held, history, CREATED)
    taken = keyless.take(item(resealed(held, payloads)[-1:], start=len(held)))
    assert taken.outcome == "stale" and taken.item is None and not live.code.running
