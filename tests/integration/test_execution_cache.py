"""The execution cache never changes a result: runs with it off, on, dropped at random, and with two workers.

Hypothesis generates orchestration programs (activities that succeed or fail, timers, external
events, children, ``when_all``/``when_any``, custom status, guids, continue-as-new, a failure at the
end). One interpreter orchestration runs a program given as its input. A lockstep harness drives
real ``OrchestrationDispatcher`` objects over a real store: it runs every turn there is, then
completes a random part of the waiting activities (or raises one of the program's events), and
again, until the program ends. The choices come from one seeded random generator, so every mode
sees the same sequence of messages; each mode must then leave the same histories (every
execution of every instance) and the same outcomes:

- ``off``: ``cache_size=0``, every turn replays the stored history;
- ``on``: one worker with the default cache;
- ``dropping``: the cache loses entries at random before turns (eviction, idle expiry);
- ``two workers``: two dispatchers with caches of their own take turns at random, so each one's
  entries go stale whenever the other runs a turn of the instance: stale state must never be applied.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import random
import tempfile
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.conftest import drop_test_provider, open_test_provider

from perdure import (
    Client,
    ErrorDetails,
    OrchestrationContext,
    OrchestrationStatus,
    PayloadCodec,
    Registry,
    RuntimeOptions,
    SqliteProvider,
    TaskFailedError,
)
from perdure._payloads import Payloads
from perdure.codecs import FernetCodec
from perdure.engine import DurableTask, encode_event
from perdure.engine._payload_fields import open_event
from perdure.engine.events import ActivityCompleted, ActivityFailed
from perdure.providers import InstanceFilter, Message, Provider
from perdure.runtime._orchestration_dispatcher import OrchestrationDispatcher

registry = Registry()


def task_of(ctx: OrchestrationContext, step: list[Any]) -> DurableTask[Any]:
    kind = step[0]
    if kind in ("act", "fail"):
        return ctx.call_activity(kind, step[1])
    if kind == "timer":
        return ctx.create_timer(0)  # due at once: its firing is a message like any other
    if kind == "event":
        return ctx.wait_for_event(step[1])
    assert kind == "child", step
    return ctx.call_sub_orchestration("interpret", {"program": step[1], "out": []})


def outcome(task: DurableTask[Any]) -> Any:
    try:
        return task.result()
    except TaskFailedError as exc:
        return ["failed", exc.details.message]


@registry.orchestration("interpret")
async def interpret(ctx: OrchestrationContext, state: dict[str, Any]) -> list[Any]:
    program, out = state["program"], list(state["out"])
    for at, step in enumerate(program):
        kind = step[0]
        if kind in ("act", "fail", "timer", "event", "child"):
            task = task_of(ctx, step)
            with contextlib.suppress(TaskFailedError):
                await task
            out.append(outcome(task))
        elif kind == "all":
            try:
                out.append(await ctx.when_all([task_of(ctx, s) for s in step[1]]))
            except TaskFailedError as exc:
                out.append(["all failed", exc.details.message])
        elif kind == "any":
            tasks = [task_of(ctx, s) for s in step[1]]
            winner = await ctx.when_any(tasks)
            out.append([tasks.index(winner), outcome(winner)])
        elif kind == "status":
            ctx.set_custom_status(step[1])
        elif kind == "guid":
            out.append([str(ctx.new_guid()), ctx.random().randint(0, 1000)])
            ctx.logger.info("step %d of %s", at, ctx.instance_id)  # once per run of the step, not per replay
        elif kind == "can":
            ctx.continue_as_new({"program": program[at + 1 :], "out": out})
        elif kind == "raise":
            raise ValueError(f"program failed after {len(out)} steps")
    return out


# --- programs ----------------------------------------------------------------------------------

small = st.integers(0, 9)
leaf = st.one_of(st.tuples(st.just("act"), small), st.tuples(st.just("fail"), small), st.just(("timer",)))
child_step = st.one_of(leaf, st.tuples(st.just("all"), st.lists(leaf, min_size=1, max_size=3)), st.just(("guid",)))
task = st.one_of(leaf, st.just(("event",)), st.tuples(st.just("child"), st.lists(child_step, max_size=3)))
step = st.one_of(
    task,
    st.tuples(st.just("all"), st.lists(task, min_size=1, max_size=4)),
    st.tuples(st.just("any"), st.lists(task, min_size=1, max_size=3)),
    st.tuples(st.just("status"), small),
    st.just(("guid",)),
    st.just(("can",)),
)
programs = st.tuples(st.lists(step, min_size=1, max_size=10), st.booleans())


def as_program(steps: Any, fails: bool) -> tuple[list[Any], list[str]]:
    """JSON lists, with a unique name for every event wait (and the names, to raise them)."""
    names: list[str] = []

    def convert(value: Any) -> Any:
        if value == ("event",):
            names.append(f"e{len(names)}")
            return ["event", names[-1]]
        return [convert(v) for v in value] if isinstance(value, tuple | list) else value

    program = convert(steps)
    return [*program, ["raise"]] if fails else program, names


# --- the lockstep harness ------------------------------------------------------------------------


class Lockstep:
    """Dispatchers over one store, driven turn by turn; activities are completed by the harness."""

    def __init__(self, provider: Provider, mode: str, seed: int, codec: PayloadCodec | None = None) -> None:
        self.provider = provider
        self.mode = mode
        size = 0 if mode == "off" else 1000
        count = 2 if mode == "two workers" else 1
        options = RuntimeOptions(cache_size=size, payload_codec=codec)
        self.workers = [OrchestrationDispatcher(provider, registry.orchestrations, options) for _ in range(count)]
        self.chance = random.Random(seed + 1)  # which worker, what to drop: differs between modes
        self.turns = 0

    async def drain(self) -> None:
        """Run turns until no instance has a visible message."""
        while True:
            worker = self.chance.choice(self.workers)
            if self.mode == "dropping" and worker.cache is not None and self.chance.random() < 0.3:
                worker.cache.clear()
            item = await worker.fetch()
            if item is None:
                return
            await worker.process(item)
            self.turns += 1

    async def complete_some(self, choose: random.Random) -> bool:
        """Complete a random part of the visible activities (the others are put back); whether any was."""
        items = []
        while (item := await self.provider.fetch_work_item(["default"], 30)) is not None:
            items.append(item)
        items.sort(key=lambda i: (i.request.instance_id, i.request.execution_id, i.request.source_event_id))  # type: ignore[union-attr]
        chosen = choose.sample(items, choose.randint(1, len(items))) if items else []
        for item in items:
            request = item.request
            assert request is not None
            if item not in chosen:
                await self.provider.abandon_work_item(item)
                continue
            if request.name == "fail":
                error = ErrorDetails(type="RuntimeError", message=f"boom {request.input}")
                event: Any = ActivityFailed(source_event_id=request.source_event_id, error=error)
            else:
                event = ActivityCompleted(source_event_id=request.source_event_id, result=request.input)
            completion = Message(instance_id=request.instance_id, execution_id=request.execution_id, event=event)
            await self.provider.ack_work_item(item, completion)
        return bool(chosen)

    def cache_counts(self) -> Counter[str]:
        """Cache lookups of every worker, by outcome (``hit``, ``miss``, ``stale``)."""
        counts: Counter[str] = Counter()
        for worker in self.workers:
            for key, value in worker.metrics.snapshot().items():
                if key.startswith("cache."):
                    counts[key.removeprefix("cache.")] += value
        return counts

    def close(self) -> None:
        for worker in self.workers:
            if worker.cache is not None:
                worker.cache.clear()


async def run_program(
    open_store: Callable[[], Awaitable[Provider]], program: list[Any], events: list[str], seed: int, mode: str
) -> tuple[dict[str, Any], int]:
    """Run ``program`` in ``mode`` on a new store: every instance's outcome and histories, and the turn count."""
    provider = await open_store()
    try:
        return await run_on(provider, program, events, seed, mode)
    finally:
        await provider.close()


async def run_on(
    provider: Provider,
    program: list[Any],
    events: list[str],
    seed: int,
    mode: str,
    cached: Counter[str] | None = None,
    codec: PayloadCodec | None = None,
) -> tuple[dict[str, Any], int]:
    """``run_program`` on ``provider`` (payloads encoded by ``codec``); what the caches did is added to ``cached``."""
    cached = Counter() if cached is None else cached
    harness = Lockstep(provider, mode, seed, codec)
    choose = random.Random(seed)  # what the harness does next: the same in every mode
    pending = list(events)
    client = Client(provider, payload_codec=codec)
    try:
        await client.start_orchestration("root", "interpret", {"program": program, "out": []})
        for _ in range(500):
            await harness.drain()
            root = await client.get_status("root")
            assert root is not None
            if root.status.is_terminal:
                break
            if pending and (choose.random() < 0.3 or not await harness.complete_some(choose)):
                await client.raise_event("root", pending.pop(choose.randrange(len(pending))), choose.randint(0, 9))
            elif not pending and not await harness.complete_some(choose):
                break  # waits for nothing that can come (an event a when_any gave up on)
        return await snapshot(provider, Payloads(codec=codec)), harness.turns
    finally:
        harness.close()
        cached.update(harness.cache_counts())


async def snapshot(provider: Provider, payloads: Payloads) -> dict[str, Any]:
    """Every instance's state and every execution's history (payloads decoded), without what the clock decides."""
    found: dict[str, Any] = {}
    for state in await provider.list_instances(InstanceFilter(limit=1000)):
        executions = [
            [
                _timeless(json.loads(encode_event(open_event(e, payloads))))
                for e in await provider.get_history(state.instance_id, n)
            ]
            for n in range(1, state.execution_id + 1)
        ]
        error = None if state.error is None else [state.error.type, state.error.message]
        output, custom = (payloads.open(v, "payload") for v in (state.output, state.custom_status))
        found[state.instance_id] = [state.status.value, output, error, custom, executions]
    return found


def _timeless(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _timeless(v) for k, v in value.items() if k not in ("timestamp", "fire_at", "traceback")}
    if isinstance(value, list):
        return [_timeless(v) for v in value]
    return value


MODES = ("off", "on", "dropping", "two workers")


def sqlite_file() -> Callable[[], Awaitable[Provider]]:
    directory = tempfile.mkdtemp(prefix="perdure-cache-")
    counter = iter(range(1_000_000))

    async def open_store() -> Provider:
        return await SqliteProvider.open(str(Path(directory) / f"run-{next(counter)}.db"))

    return open_store


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(programs, st.integers(0, 2**32))
async def test_the_cache_off_on_dropped_or_shared_leaves_identical_histories(generated: Any, seed: int) -> None:
    program, events = as_program(*generated)
    open_store = sqlite_file()
    results = {mode: await run_program(open_store, program, events, seed, mode) for mode in MODES}
    reference, _ = results["off"]
    assert reference["root"][0] != OrchestrationStatus.PENDING.value
    for mode in MODES[1:]:
        assert results[mode][0] == reference, mode


def test_a_fixed_program_shows_what_the_property_compares(caplog: pytest.LogCaptureFixture) -> None:
    """One program spelled out, with what every mode must agree on; the replay-safe logger logs once."""
    program, events = as_program(
        [
            ("act", 1),
            ("all", [("act", 2), ("timer",), ("event",)]),
            ("guid",),
            ("can",),
            ("any", [("fail", 3), ("act", 4)]),
            ("child", [("act", 5), ("guid",)]),
            ("guid",),
        ],
        False,
    )
    assert events == ["e0"]

    async def all_modes() -> dict[str, Any]:
        open_store = sqlite_file()
        found = {}
        for mode in MODES:
            caplog.clear()
            with caplog.at_level(logging.INFO, logger="perdure.orchestration"):
                snapshot, _ = await run_program(open_store, program, events, 7, mode)
            found[mode] = snapshot, sorted(r.getMessage() for r in caplog.records if r.msg.startswith("step"))
        return found

    results = asyncio.run(all_modes())
    root = results["off"][0]["root"]
    assert root[0] == "COMPLETED" and len(root[4]) == 2, "two executions: continue-as-new"
    assert root[1][:2] == [1, [2, None, root[1][1][2]]]
    assert results["off"][1] == ["step 1 of root:2:1", "step 2 of root", "step 2 of root"]
    for mode in MODES[1:]:
        assert results[mode] == results["off"], mode


async def test_long_runs_agree_with_and_without_the_cache_on_both_stores(provider_kind: str, tmp_path: Path) -> None:
    """Histories longer than PostgreSQL sends whole to a worker with a cache: the tail path, and two workers."""
    program = [
        *(["act", n] for n in range(20)),
        ["all", [["act", 1], ["timer"], ["event", "e0"], ["child", [["act", 2], ["guid"]]]]],
        ["guid"],
        *(["any", [["act", n], ["fail", n]]] for n in range(10)),
        ["can"],
        *(["act", n] for n in range(5)),
    ]
    results = {}
    cached = {mode: Counter[str]() for mode in MODES}
    for mode in MODES:
        provider, _ = await open_test_provider(provider_kind, tmp_path)
        try:
            results[mode] = await run_on(provider, program, ["e0"], 11, mode, cached[mode])
        finally:
            await drop_test_provider(provider_kind, provider)
    reference, turns = results["off"]
    assert reference["root"][0] == "COMPLETED" and len(reference["root"][4][0]) > 60
    for mode in MODES[1:]:
        assert results[mode][0] == reference, mode
        assert results[mode][1] == turns, mode
    assert cached["off"] == Counter()
    # One worker: only the first turn of each execution (2 of root, 1 of the child) is not resumed.
    assert cached["on"] == Counter(hit=turns - 3, miss=3)
    assert cached["dropping"]["miss"] > 3 and cached["dropping"]["hit"] > 0
    # Two workers: an instance that moves to the other worker and back finds that worker's entry stale.
    assert cached["two workers"]["stale"] > 0 and cached["two workers"]["hit"] > 0


async def test_an_encrypted_run_resumes_from_the_cache_and_agrees_with_a_plain_one(
    provider_kind: str, tmp_path: Path
) -> None:
    """Under Fernet no payload is ever encrypted twice alike: the cache keeps a turn's events as
    stored (encrypted once), compares them decoded where the stored forms differ, resumes with
    payloads decoded for the code, and never changes a result."""
    program = [*(["act", n] for n in range(40)), ["all", [["act", 1], ["event", "e0"]]], ["can"], ["act", 7]]
    codec = FernetCodec([FernetCodec.generate_key()])
    results = {}
    cached = {mode: Counter[str]() for mode in MODES}
    for mode in MODES:
        provider, _ = await open_test_provider(provider_kind, tmp_path)
        try:
            chosen = None if mode == "off" else codec
            results[mode] = await run_on(provider, program, ["e0"], 5, mode, cached[mode], chosen)
            if chosen is not None:  # the store really holds them encrypted
                stored = await provider.get_history("root", 1)
                assert all("perdure:encoded" in encode_event(e) for e in stored[:2])
        finally:
            await drop_test_provider(provider_kind, provider)
    reference, turns = results["off"]
    assert reference["root"][0] == "COMPLETED"
    for mode in MODES[1:]:
        assert results[mode] == results["off"], mode
    assert cached["on"] == Counter(hit=turns - 2, miss=2)
    assert cached["two workers"]["stale"] > 0 and cached["two workers"]["hit"] > 0
