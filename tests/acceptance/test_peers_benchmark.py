"""perdure's side of the peer benchmark, run as the driver runs it, at a tiny size.

The peer itself (installed into a virtual environment by ``benchmarks/peers/run.py``) never runs
in the test suite; this only proves that every shape completes and checks out on perdure's side.
"""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest
from tests.conftest import POSTGRES_URL

from perdure import Client, Runtime, SqliteProvider

ROOT = Path(__file__).resolve().parents[2]
PEERS = ROOT / "benchmarks" / "peers"

# Units each shape completes at N = 5: workflows, or steps of 10-step workflows.
UNITS = {
    "one_at_a_time": 5,
    "started_together": 5,
    "sequence_one_at_a_time": 10,
    "sequence_together": 50,
    "fan_out": 5,
}


def run_side(*where: str, shape: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "perdure_side.py", "--shape", shape, "--n", "5", *where],
        cwd=PEERS,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    figure: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return figure


@pytest.mark.parametrize("shape", sorted(UNITS))
def test_every_shape_completes_with_checked_results_on_sqlite(shape: str, tmp_path: Path) -> None:
    figure = run_side("--sqlite", str(tmp_path / "perdure.db"), shape=shape)
    assert figure["shape"] == shape
    assert figure["units"] == UNITS[shape]
    assert figure["rate"] > 0
    assert figure["synchronous"] == "FULL"


@pytest.mark.postgres
def test_the_fan_out_completes_on_postgres_in_the_schema_it_is_given() -> None:
    psycopg = pytest.importorskip("psycopg")
    schema = f"test_peers_{uuid.uuid4().hex[:8]}"
    try:
        figure = run_side("--postgres", POSTGRES_URL, "--schema", schema, shape="fan_out")
        with psycopg.connect(POSTGRES_URL) as conn:
            completed = conn.execute(f"SELECT count(*) FROM \"{schema}\".instances WHERE status = 'COMPLETED'")
            assert completed.fetchone()[0] == 4  # three warm-up instances and the fan-out
    finally:
        with psycopg.connect(POSTGRES_URL, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert figure["units"] == 5


async def test_a_wrong_result_fails_the_run_instead_of_giving_a_figure(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.syspath_prepend(str(PEERS))
    try:
        side = importlib.import_module("perdure_side")
        monkeypatch.setattr(side, "expected", lambda shape, n, k=0: -1)
        provider = await SqliteProvider.open(tmp_path / "perdure.db")
        try:
            async with Runtime(provider, side.registry):
                with pytest.raises(SystemExit, match=r"COMPLETED 1, expected -1"):
                    await side.run_shape(Client(provider), "one_at_a_time", 2)
        finally:
            await provider.close()
    finally:
        # The benchmark's modules have generic names: leave none behind for other tests.
        for name in ("perdure_side", "shapes"):
            sys.modules.pop(name, None)
