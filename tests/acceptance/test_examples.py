"""The examples, run as a user runs them: ``python examples/<name>.py`` in a fresh process."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

# What each example must print (lines of its standard output, in this order, among others).
EXPECTED: dict[str, list[str]] = {
    "hello_world.py": [
        "status: COMPLETED",
        "output: Hello, World!",
        "history: OrchestrationStarted, ActivityScheduled, ActivityCompleted, TimerCreated, TimerFired, "
        "OrchestrationCompleted",
    ],
    "fan_out_fan_in.py": [
        "status: COMPLETED",
        "events.txt: 10 words",
        "intro.txt: 4 words",
        "replay.txt: 10 words",
        "timers.txt: 8 words",
        "total: 32 words",
    ],
    "human_approval.py": [
        "deploy-1: COMPLETED: release 1.4 deployed, approved by ana",
        "deploy-2: COMPLETED: release 1.5: not approved within 1 s, nothing deployed",
    ],
    "cloud_provisioning.py": [
        "env-ok: COMPLETED (ready)",
        "env-ok: vm env-ok/vm",
        "env-ok: resources left: 6",
        # The VM step fails; the five completed steps are undone, last first.
        "  created network interface env-broken/nic",
        "  deleted network interface env-broken/nic",
        "  deleted public IP env-broken/ip",
        "  deleted subnet env-broken/vnet/subnet-default",
        "  deleted virtual network env-broken/vnet",
        "  deleted storage account env-broken/storage",
        "env-broken: FAILED (rolled back)",
        "env-broken: resources left: 0",
    ],
    "long_activities.py": [
        "status: COMPLETED",
        "crunch: 4950",
        "fetch: fetched https://example.org/report on attempt 2",  # the first timed out
        "race: fast won; cancelled: Slow",
    ],
    "schedules.py": [
        "nightly-export: next run at 02:00 in Paris",
        "digest: 2 runs, one per second, ids like digest@<due time>",
        "digest: paused (holidays)",
        "digest: triggered while paused: digest sent to the team",
        "schedules left: 0",
        "report-late: PENDING until start_at, then COMPLETED: report ready",
    ],
    "eternal_monitor.py": [
        "status: COMPLETED",
        "executions: 4",
        "output: {'rounds': 4, 'seen': ['down', 'down', 'down', 'up']}",
        "execution 1: 8 events, ends with OrchestrationContinuedAsNew",
        "execution 4: 4 events, ends with OrchestrationCompleted",
    ],
}

# Web applications: not scripts that print, but apps driven over HTTP by test_web_examples.py.
WEB_APPS = ["fastapi_app.py", "flask_app.py"]


def run_example(name: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / name)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_prints_its_result(name: str) -> None:
    run = run_example(name)
    assert run.returncode == 0, run.stdout + run.stderr
    lines = run.stdout.splitlines()
    position = 0
    for expected in EXPECTED[name]:
        assert expected in lines[position:], f"{expected!r} missing (or out of order) in:\n{run.stdout}"
        position = lines.index(expected, position) + 1


def test_saga_creates_nothing_after_the_failed_step_and_undoes_only_what_it_created() -> None:
    out = run_example("cloud_provisioning.py").stdout.splitlines()
    broken = [line.strip() for line in out if "env-broken/" in line and line.startswith("  ")]
    created = [line.removeprefix("created ") for line in broken if line.startswith("created ")]
    deleted = [line.removeprefix("deleted ") for line in broken if line.startswith("deleted ")]
    assert "virtual machine env-broken/vm" not in created
    assert deleted == list(reversed(created))
    assert "env-broken: error: activity 'CreateVirtualMachine' failed" in "\n".join(out)


def test_the_readme_example_runs_twice_in_a_row_on_its_file(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
    assert blocks, "the README shows an example"
    script = tmp_path / "hello.py"
    script.write_text(blocks[0], encoding="utf-8")
    for run in (1, 2):  # the second run finds the first one's store and instance
        done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, f"run {run}: {done.stdout}{done.stderr}"
        assert done.stdout.splitlines() == ["OrchestrationStatus.COMPLETED Hello, World!"], f"run {run}"
    assert (tmp_path / "app.db").exists()


def test_every_example_is_tested_and_listed() -> None:
    scripts = sorted(p.name for p in EXAMPLES.glob("*.py"))
    assert scripts == sorted([*EXPECTED, *WEB_APPS])
    listing = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for script in scripts:
        assert f"]({script})" in listing, f"{script} is not listed in examples/README.md"
