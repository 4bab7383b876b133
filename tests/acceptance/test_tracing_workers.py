"""Tracing across processes: a parent and its child run by two ``perdure worker`` processes form one trace.

One worker runs only orchestration turns, the other only activities, so every parent/child link
between an execution span and an activity span crosses a process boundary; the client's span is
in the test process. Each worker exports its spans to its own file (``tracing_app``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.tracing_app import install
from tests.integration.runtime_support import wait_until

from perdure import Client, OrchestrationStatus, SqliteProvider

pytestmark = pytest.mark.slow

REPO = Path(__file__).parents[2]


def _spans(files: list[Path]) -> list[dict[str, Any]]:
    spans = []
    for path in files:
        if path.exists():
            spans.extend(json.loads(line) for line in path.read_text().splitlines() if line)
    return spans


@pytest.fixture
def workers(tmp_path: Path) -> Iterator[tuple[str, list[Path]]]:
    db = tmp_path / "traced.db"
    files = [tmp_path / "orchestrations.jsonl", tmp_path / "activities.jsonl"]
    url = f"sqlite:///{db}"
    processes = []
    for spans, role in zip(files, ("--no-activities", "--no-orchestrations"), strict=True):
        env = {**os.environ, "PERDURE_TEST_SPANS": str(spans)}
        target = "tests.acceptance.tracing_app:registry"
        with open(spans.with_suffix(".log"), "wb") as log:
            command = [sys.executable, "-m", "perdure", "worker", target, "--db", url, role]
            processes.append(subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=log))
    try:
        yield url, files
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


async def test_a_child_run_by_two_worker_processes_is_in_its_parents_trace(
    workers: tuple[str, list[Path]], tmp_path: Path
) -> None:
    url, files = workers
    tracer_provider = install(str(tmp_path / "client.jsonl"))
    provider = await SqliteProvider.open(url.removeprefix("sqlite:///"))
    try:
        client = Client(provider, tracer_provider=tracer_provider)
        await client.start_orchestration("tp-1", "Parent")
        state = await client.wait_for_orchestration("tp-1", timeout=60)
        assert state.status is OrchestrationStatus.COMPLETED, state
    finally:
        await provider.close()
    [leaf_parent, leaf_child] = state.output

    def complete() -> list[dict[str, Any]] | None:
        spans = _spans(files)
        return spans if len([s for s in spans if s["name"].startswith("orchestration:")]) == 2 else None

    spans = await wait_until(complete, timeout=30, what="both execution spans exported")
    spans.extend(_spans([tmp_path / "client.jsonl"]))
    named = {}
    for span in spans:
        key = (span["name"], span["attributes"].get("perdure.instance_id"))
        assert key not in named, f"duplicate span {key}"
        named[key] = span
    create = named["create_orchestration:Parent", "tp-1"]
    parent = named["orchestration:Parent", "tp-1"]
    child = named["orchestration:Child", "tp-1-child"]
    parent_leaf = named["activity:Leaf", "tp-1"]
    child_leaf = named["activity:Leaf", "tp-1-child"]
    assert len(named) == 5
    assert {s["trace_id"] for s in named.values()} == {create["trace_id"]}
    assert create["parent_id"] is None
    assert parent["parent_id"] == create["span_id"]
    assert child["parent_id"] == parent["span_id"]
    assert parent_leaf["parent_id"] == parent["span_id"]
    assert child_leaf["parent_id"] == child["span_id"]
    # Turns ran in one worker, activities in the other: every link above crossed a process.
    assert parent["pid"] == child["pid"] != parent_leaf["pid"] == child_leaf["pid"] != create["pid"]
    assert leaf_parent.endswith(f"@{parent_leaf['pid']}") and leaf_child.endswith(f"@{child_leaf['pid']}")
