"""The demo, as a user runs it: the console script, a worker process that is really killed."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from perdure import RuntimeOptions


def test_demo_survives_its_killed_worker_and_repeats_no_finished_step(tmp_path: Path) -> None:
    env = {**os.environ, "PERDURE_DEMO_STEP_SECONDS": "0.3"}
    run = subprocess.run(
        [sys.executable, "-m", "perdure", "demo", "--db", str(tmp_path / "demo.db")],
        env=env,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    out = run.stdout
    assert "killed worker" in out
    assert "orchestration COMPLETED" in out
    # Default options: the interrupted step moves to the new worker within the worker timeout
    # (the new worker's own start-up included).
    recovery = re.search(r"CreateVirtualMachine running again on worker \d+, ([\d.]+) s after the crash", out)
    assert recovery is not None, out
    assert 0 < float(recovery.group(1)) <= RuntimeOptions().worker_timeout + 5, out
    runs = dict(re.findall(r"(Create\w+)\s+(\d+)×", out))
    # Finished before the crash: never repeated. Interrupted: ran again. Flaky: retried once.
    assert runs == {
        "CreateResourceGroup": "1",
        "CreateVirtualNetwork": "1",
        "CreateStorageAccount": "2",
        "CreateVirtualMachine": "2",
    }
