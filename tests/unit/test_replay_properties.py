"""Property: replaying any prefix of a recorded history makes exactly the decisions that follow it.

Hypothesis generates orchestration programs from the primitives (activities that succeed or fail,
retries, timers, events, ``when_all``/``when_any`` groups, children, custom status, guids, sends and
detached starts). One interpreter orchestration runs a program given as its input. Each program
runs to its end under the fake runtime with completions, events and duplicate deliveries in a
random order. Then every prefix ``history[:k]``, decoded from its stored JSON, is replayed with no
new events: it must not fail, and must decide exactly ``history[k:]`` up to the next non-decision
event; the full history must reproduce the final outcome.
"""

from __future__ import annotations

import contextlib
import random
from typing import Any

from engine_harness import T0, ActivityCall, Driver, replay
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from perdure import OrchestrationContext, OrchestrationStatus, RetryPolicy, TaskFailedError
from perdure.engine import DurableTask, decode_event, encode_event
from perdure.engine.events import Completion, Decision, HistoryEvent

Ctx = OrchestrationContext

# --- the interpreter ---------------------------------------------------------------------------


def task_of(ctx: Ctx, step: list[Any]) -> DurableTask[Any]:
    kind = step[0]
    if kind == "act":
        return ctx.call_activity("echo", step[1])
    if kind == "fail":
        return ctx.call_activity("boom", step[1])
    if kind == "retry":
        return ctx.call_activity("flaky", step[1], retry=RetryPolicy(max_attempts=3, initial_interval=1))
    if kind == "timer":
        return ctx.create_timer(step[1])
    if kind == "event":
        return ctx.wait_for_event(step[1])
    assert kind == "child", step
    return ctx.call_sub_orchestration("interpret", step[1])


def outcome(task: DurableTask[Any]) -> Any:
    try:
        return task.result()
    except TaskFailedError as exc:
        return ["failed", exc.details.type, exc.details.message]


async def interpret(ctx: Ctx, program: list[list[Any]]) -> list[Any]:
    out: list[Any] = []
    for step in program:
        kind = step[0]
        if kind in ("act", "fail", "retry", "timer", "event", "child"):
            task = task_of(ctx, step)
            with contextlib.suppress(TaskFailedError):
                await task
            out.append(outcome(task))
        elif kind == "all":
            tasks = [task_of(ctx, s) for s in step[1]]
            try:
                out.append(await ctx.when_all(tasks))
            except TaskFailedError as exc:
                out.append(["all failed", exc.details.message])
        elif kind == "any":
            tasks = [task_of(ctx, s) for s in step[1]]
            winner = await ctx.when_any(tasks)
            out.append([tasks.index(winner), outcome(winner)])
        elif kind == "status":
            ctx.set_custom_status(step[1])
        elif kind == "guid":
            out.append(str(ctx.new_guid()))
        elif kind == "now":
            out.append(ctx.now().isoformat())
        elif kind == "send":
            ctx.send_event("peer", f"note-{step[1]}", step[1])
        elif kind == "chain":
            out.append(ctx.start_orchestration("Other", step[1]))
        elif kind == "raise":
            raise ValueError(f"program failed after {len(out)} steps")
        else:
            raise AssertionError(step)
    return out


def echo(_: ActivityCall, value: Any) -> Any:
    return value


def boom(_: ActivityCall, value: Any) -> Any:
    raise RuntimeError(f"boom {value}")


def flaky(ctx: ActivityCall, succeed_at: int) -> str:
    if ctx.attempt < succeed_at:
        raise RuntimeError(f"attempt {ctx.attempt}")
    return f"ok at {ctx.attempt}"


ACTIVITIES = {"echo": echo, "boom": boom, "flaky": flaky}

# --- programs ----------------------------------------------------------------------------------

small = st.integers(0, 9)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=5,
)
child_task = st.one_of(
    st.tuples(st.just("act"), small),
    st.tuples(st.just("fail"), small),
    st.tuples(st.just("timer"), st.integers(0, 60)),
)
child_step = st.one_of(
    child_task,
    st.tuples(st.just("retry"), st.integers(1, 4)),
    st.tuples(st.just("all"), st.lists(child_task, min_size=1, max_size=3)),
    st.tuples(st.just("status"), json_values),
    st.just(("guid",)),
)
task = st.one_of(
    child_task,
    st.just(("event",)),  # a unique name is given afterwards
    st.tuples(st.just("child"), st.lists(child_step, max_size=4)),
)
step = st.one_of(
    task,
    st.tuples(st.just("retry"), st.integers(1, 4)),
    st.tuples(st.just("all"), st.lists(task, min_size=1, max_size=5)),
    st.tuples(st.just("any"), st.lists(task, min_size=1, max_size=4)),
    st.tuples(st.just("status"), json_values),
    st.just(("guid",)),
    st.just(("now",)),
    st.tuples(st.just("send"), small),
    st.tuples(st.just("chain"), small),
)
programs = st.tuples(st.lists(step, min_size=1, max_size=12), st.booleans())


def as_program(steps: Any, fails: bool) -> tuple[list[Any], list[str]]:
    """JSON lists, with a unique name for every event wait (and the names, to raise them)."""
    names: list[str] = []

    def convert(value: Any) -> Any:
        if isinstance(value, tuple) and value == ("event",):
            names.append(f"e{len(names)}")
            return ["event", names[-1]]
        if isinstance(value, tuple | list):
            return [convert(v) for v in value]
        return value

    program = convert(steps)
    if fails:
        program.append(["raise"])
    return program, names


# --- driving and checking ----------------------------------------------------------------------


def run_randomly(program: list[Any], events: list[str], rng: random.Random) -> Driver:
    driver = Driver(interpret, activities=ACTIVITIES, children={"interpret": interpret}, rng=rng)
    driver.start(program).turn()
    delivered: list[HistoryEvent] = []
    for _ in range(1_000):
        if driver.status.is_terminal:
            return driver
        choices = (["complete"] if driver.outstanding else []) + (["raise"] if events else [])
        assert choices, "the program waits for nothing that can come"
        if rng.choice(choices) == "complete":
            for event_id in rng.sample(list(driver.outstanding), rng.randint(1, len(driver.outstanding))):
                driver.complete(event_id)
        else:
            driver.raise_event(events.pop(rng.randrange(len(events))), rng.randint(0, 99))
        if delivered and rng.random() < 0.2:
            driver.send(rng.choice(delivered))  # at-least-once delivery: a duplicate comes again
        delivered += [m for m in driver.queue if isinstance(m, Completion)]
        rng.shuffle(driver.queue)
        driver.turn()
    raise AssertionError("the program did not finish")


def check_every_prefix(history: list[HistoryEvent], final: Any, instance_id: str = "inst") -> None:
    stored = [decode_event(encode_event(e)) for e in history]
    for k in range(len(history) + 1):
        result = replay(interpret, stored[:k], instance_id=instance_id, now=history[k - 1].timestamp if k else T0)
        following: list[HistoryEvent] = []
        for event in history[k:]:
            if not isinstance(event, Decision):
                break
            following.append(event)
        assert result.new_events == following, f"replaying history[:{k}]"
        assert result.consumed == []
        if result.status is OrchestrationStatus.FAILED:
            assert k + len(following) == len(history)
            assert result.error == final.error
    result = replay(interpret, stored, instance_id=instance_id)
    assert (result.status, result.output, result.error, result.custom_status) == (
        final.status,
        final.output,
        final.error,
        final.custom_status,
    )


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, st.randoms(use_true_random=False))
def test_replay_of_every_prefix_repeats_the_recorded_decisions(generated: Any, rng: random.Random) -> None:
    program, events = as_program(*generated)
    driver = run_randomly(program, events, rng)
    final = driver.result
    if program and program[-1] == ["raise"]:
        assert final.status is OrchestrationStatus.FAILED
        assert final.error is not None
        assert final.error.message.startswith("program failed after")
    else:
        assert final.status is OrchestrationStatus.COMPLETED, final.error
        assert len(final.output) == sum(s[0] not in ("status", "send") for s in program)
    check_every_prefix(driver.history, final)
    for child in driver.child_drivers.values():
        check_every_prefix(child.history, child.result, child.instance_id)


def test_one_fixed_program_end_to_end() -> None:
    """A readable example of what the property runs, with its outcome spelled out."""
    program, events = as_program(
        [
            ("act", 1),
            ("all", [("act", 2), ("timer", 5), ("event",)]),
            ("any", [("timer", 60), ("fail", 3)]),
            ("child", [("act", 4), ("status", "child")]),
            ("retry", 2),
            ("status", {"done": True}),
        ],
        False,
    )
    assert events == ["e0"]
    driver = Driver(interpret, activities=ACTIVITIES, children={"interpret": interpret})
    driver.start(program).raise_event("e0", "E")
    final = driver.run()
    assert final.status is OrchestrationStatus.COMPLETED
    assert final.output == [
        1,
        [2, None, "E"],
        [0, None],  # in scheduling order the timer's completion comes first
        [4],
        "ok at 2",
    ]
    assert final.custom_status == {"done": True}
    check_every_prefix(driver.history, final)
