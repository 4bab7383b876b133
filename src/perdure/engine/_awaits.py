"""What the code waits for: tasks it scheduled but never awaited, and tasks nothing can complete.

A task counts as awaited when the code waited for it, or for a combination that listens to it
(``when_all``, ``when_any``, a retry, an event wait with a timeout). Tasks finish only through
the engine, so a task that no open task or event wait leads to can never finish. Both mistakes
are reported as warnings for the runtime to log.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from itertools import chain
from typing import Any

from perdure.engine._tasks import DurableTask
from perdure.engine.events import Decision

__all__ = ["stuck_warnings", "unawaited_warnings"]


def _listeners(task: DurableTask[Any]) -> list[DurableTask[Any]]:
    """The tasks that listen to ``task``: the combinations it is part of."""
    owners = (getattr(listener, "__self__", None) for listener in task._listeners or ())
    return [owner for owner in owners if isinstance(owner, DurableTask)]


def _reaches(tasks: Iterable[DurableTask[Any]], wanted: Collection[DurableTask[Any]]) -> bool:
    """Whether one of ``tasks``, or a combination they are part of (directly or not), is ``wanted``.

    ``tasks`` is walked lazily: the answer usually comes from the first one (a task the code awaits,
    or its ``when_all``), so a turn of an execution with many open tasks does not pay for all of them.
    """
    seen: set[DurableTask[Any]] = set()
    for start in tasks:
        pending = [start]
        while pending:
            task = pending.pop()
            if task in wanted:
                return True
            if task not in seen:
                seen.add(task)
                pending.extend(_listeners(task))
    return False


def unawaited_warnings(
    open_tasks: Mapping[int, DurableTask[Any]],
    scheduled: Mapping[int, Decision],
    awaited: Collection[DurableTask[Any]],
    describe: Callable[[Decision], str],
) -> list[str]:
    """When an execution ends: the tasks still open (by the id of their decision) that the code never awaited."""
    forgotten = [describe(scheduled[i]) for i, task in open_tasks.items() if not _reaches([task], awaited)]
    if not forgotten:
        return []
    return [
        f"the orchestration ended without awaiting {', '.join(forgotten)}: they may still run, and their "
        "results are dropped (await them, alone or with ctx.when_all)"
    ]


def stuck_warnings(
    task: DurableTask[Any] | None, open_tasks: Iterable[DurableTask[Any]], waits: Iterable[Iterable[DurableTask[Any]]]
) -> list[str]:
    """At the end of a turn: whether ``task``, which the code waits for, can still finish."""
    if task is None or task.done() or _reaches(chain(open_tasks, (t for ts in waits for t in ts)), (task,)):
        return []
    return [
        f"the orchestration awaits a {type(task).__name__} that this execution never scheduled (kept from an "
        "earlier turn, or made outside its context): it will wait forever"
    ]
