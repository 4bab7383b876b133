"""Fan-out/fan-in: run one activity per item in parallel, then combine the results.

The orchestration asks an activity for a list of documents, schedules one ``CountWords`` per
document at once, and waits for all of them with ``ctx.when_all``. The activities run
concurrently on the work dispatcher; their results come back in the order they were scheduled.
The result is a dataclass, which the client reads back as one with ``result_type``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from perdure import ActivityContext, Client, OrchestrationContext, Registry, Runtime, SqliteProvider

registry = Registry()

DOCUMENTS = {
    "intro.txt": "durable orchestrations survive crashes",
    "replay.txt": "history is replayed to rebuild the state of the code",
    "timers.txt": "a durable timer costs nothing while it waits",
    "events.txt": "external events are kept until the code waits for them",
}


@dataclass
class WordCounts:
    per_document: dict[str, int]
    total: int


@registry.activity("ListDocuments")
async def list_documents(ctx: ActivityContext) -> list[str]:
    return sorted(DOCUMENTS)


@registry.activity("CountWords")
async def count_words(ctx: ActivityContext, document: str) -> int:
    await asyncio.sleep(0.1)  # pretend to read a large file
    return len(DOCUMENTS[document].split())


@registry.orchestration("WordCount")
async def word_count(ctx: OrchestrationContext) -> WordCounts:
    documents = await ctx.call_activity("ListDocuments")
    # Fan out: every task is scheduled before any is awaited, so they all run at once.
    tasks = [ctx.call_activity("CountWords", document) for document in documents]
    # Fan in: one await for all of them.
    counts = await ctx.when_all(tasks)
    return WordCounts(per_document=dict(zip(documents, counts, strict=True)), total=sum(counts))


async def main() -> None:
    provider = await SqliteProvider.open(":memory:")
    async with Runtime(provider, registry):
        client = Client(provider)
        await client.start_orchestration("word-count-1", "WordCount")
        state = await client.wait_for_orchestration("word-count-1", timeout=30, result_type=WordCounts)
        print(f"status: {state.status.value}")
        for document, count in state.output.per_document.items():
            print(f"{document}: {count} words")
        print(f"total: {state.output.total} words")
    await provider.close()


if __name__ == "__main__":
    asyncio.run(main())
