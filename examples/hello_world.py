"""Hello world: one orchestration, one activity, one durable timer.

Run it with ``python examples/hello_world.py``. It uses an in-memory SQLite store, so nothing is
left behind; pass a file name to ``SqliteProvider.open`` to keep the history.
"""

from __future__ import annotations

import asyncio

from perdure import ActivityContext, Client, OrchestrationContext, Registry, Runtime, SqliteProvider

registry = Registry()


@registry.activity("Greet")
async def greet(ctx: ActivityContext, name: str) -> str:
    return f"Hello, {name}!"


@registry.orchestration("Hello")
async def hello(ctx: OrchestrationContext, name: str) -> str:
    greeting = await ctx.call_activity("Greet", name)
    await ctx.create_timer(0.2)  # durable: a restart during the wait would not lose it
    return greeting


async def main() -> None:
    provider = await SqliteProvider.open(":memory:")
    async with Runtime(provider, registry):
        client = Client(provider)
        # An id of your choice, or None for a new one; start_orchestration returns it.
        instance_id = await client.start_orchestration(None, "Hello", "World")
        state = await client.wait_for_orchestration(instance_id, timeout=30)
        print(f"status: {state.status.value}")
        print(f"output: {state.output}")
        history = await client.get_history(instance_id)
        print("history:", ", ".join(type(event).__name__ for event in history))
    await provider.close()


if __name__ == "__main__":
    asyncio.run(main())
