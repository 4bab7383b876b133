"""The registry the schedule tests run in ``perdure worker`` processes.

Each run of ``Tick`` records itself through the ``Record`` activity, which appends
``<run instance id> <pid>`` to the file named by ``PERDURE_TEST_LOG``: one line per run that
really ran, written by the process that ran it.
"""

from __future__ import annotations

import os
from typing import Any

from perdure import ActivityContext, OrchestrationContext, Registry

registry = Registry()


@registry.activity("Record")
def record(ctx: ActivityContext, _: Any) -> int:
    line = f"{ctx.instance_id} {os.getpid()}\n".encode()
    fd = os.open(os.environ["PERDURE_TEST_LOG"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)  # one short write: lines of several processes never mix
    finally:
        os.close(fd)
    return os.getpid()


@registry.orchestration("Tick")
async def tick(ctx: OrchestrationContext, _: Any) -> int:
    pid: int = await ctx.call_activity("Record")
    return pid
