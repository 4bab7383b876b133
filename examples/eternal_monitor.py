"""An eternal monitor: check something periodically, forever, with continue-as-new.

A loop inside one execution would grow its history with every check, and replaying it would
cost more each time. Instead the monitor does one round per execution and then calls
``ctx.continue_as_new(state)``: the execution ends, and a new one (``execution_id`` + 1) starts
with a fresh, short history and the state carried in its input.

A real monitor runs until it is terminated. This one stops after a few rounds so that the
example ends, and it also stops early when it sees the service come back up.
"""

from __future__ import annotations

import asyncio
from typing import Any

from perdure import ActivityContext, Client, OrchestrationContext, Registry, Runtime, SqliteProvider

registry = Registry()

CHECK_INTERVAL_SECONDS = 0.1  # minutes in real life
MAX_ROUNDS = 5  # a real monitor has no limit


@registry.activity("CheckService")
async def check_service(ctx: ActivityContext, round_number: int) -> str:
    # Pretend the service recovers on the fourth check.
    return "up" if round_number >= 4 else "down"


@registry.activity("Alert")
async def alert(ctx: ActivityContext, message: str) -> None:
    print(f"  alert: {message}")


@registry.orchestration("Monitor")
async def monitor(ctx: OrchestrationContext, state: dict[str, Any]) -> dict[str, Any]:
    round_number = state["round"]
    status = await ctx.call_activity("CheckService", round_number)
    ctx.logger.info("round %d: the service is %s", round_number, status)  # silent while replaying
    if status == "down":
        await ctx.call_activity("Alert", f"round {round_number}: the service is down")
    seen = [*state["seen"], status]
    if status == "up" or round_number >= MAX_ROUNDS:
        return {"rounds": round_number, "seen": seen}
    await ctx.create_timer(CHECK_INTERVAL_SECONDS)
    ctx.continue_as_new({"round": round_number + 1, "seen": seen})  # does not return


async def main() -> None:
    provider = await SqliteProvider.open(":memory:")
    async with Runtime(provider, registry):
        client = Client(provider)
        await client.start_orchestration("monitor-1", "Monitor", {"round": 1, "seen": []})
        state = await client.wait_for_orchestration("monitor-1", timeout=30)
        print(f"status: {state.status.value}")
        print(f"executions: {state.execution_id}")
        print(f"output: {state.output}")
        for execution_id in range(1, state.execution_id + 1):
            history = await client.get_history("monitor-1", execution_id)
            print(f"execution {execution_id}: {len(history)} events, ends with {type(history[-1]).__name__}")
    await provider.close()


if __name__ == "__main__":
    asyncio.run(main())
