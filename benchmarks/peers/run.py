"""perdure beside DBOS: the same shapes, on the same backends, in one run, as ratios.

Run: ``python benchmarks/peers/run.py [--backend postgres|sqlite|both] [--n 300] [--shapes …]
[--repeat 1] [--json]``.

DBOS is installed by this script into a throw-away virtual environment (``.peers/dbos`` at the
top of the repository, ignored by git) the first time it runs. Each side runs each shape in a
subprocess of its own (the runtime or executor and its caller in one process) on a database made
for that run alone: a fresh schema (perdure) or database (DBOS) on the same PostgreSQL server, or
fresh files in a temporary directory. Both sides check every result: a wrong or missing one fails
the whole run and no figure is printed.

The sides of one shape run back to back (their order alternating between repeats), so both see
the same load on a shared machine; the ratio is the figure that means something.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import psycopg
from psycopg import sql
from shapes import SHAPES

HERE = Path(__file__).resolve().parent
DBOS_VERSION = "3.4.0"
DEFAULT_VENV = HERE.parent.parent / ".peers" / "dbos"
SIDE_TIMEOUT = 1800
FAN_OUT_LABELS = {"steps": "gather of steps", "queue": "queue of child workflows"}


@dataclass(frozen=True, kw_only=True)
class Settings:
    """What a run compares, from the command line."""

    url: str
    n: int
    repeat: int
    dbos_python: Path
    dbos_styles: tuple[str, ...]
    dbos_fan_out: str
    perdure_synchronous: str
    baseline: Path | None = None
    """Another perdure source tree (its ``src`` folder) measured as a third side, ``baseline``."""


def ensure_dbos(venv: Path) -> Path:
    """Return the virtual environment's interpreter, creating it and installing DBOS if needed."""
    python = venv / "bin" / "python"
    if python.exists():
        probe = subprocess.run(
            [str(python), "-c", "from importlib.metadata import version; print(version('dbos'))"],
            capture_output=True,
            text=True,
        )
        if probe.stdout.strip() == DBOS_VERSION:
            return python
    print(f"installing dbos=={DBOS_VERSION} into {venv}", file=sys.stderr, flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", f"dbos=={DBOS_VERSION}"], check=True, stdout=sys.stderr
    )
    return python


def _with_path(url: str, database: str, scheme: str | None = None) -> str:
    parts = urlsplit(url)
    return urlunsplit((scheme or parts.scheme, parts.netloc, f"/{database}", parts.query, ""))


def server_facts(url: str) -> dict[str, str]:
    """The PostgreSQL server's version and durability setting; refuse to measure without it."""
    with psycopg.connect(url, autocommit=True) as conn:
        facts = {
            name: str(conn.execute(f"SHOW {name}").fetchone()[0])  # type: ignore[index]
            for name in ("server_version", "synchronous_commit", "fsync")
        }
    if facts["synchronous_commit"] != "on" or facts["fsync"] != "on":
        raise SystemExit(f"PostgreSQL must run with synchronous_commit=on and fsync=on, not {facts}")
    return facts


class ServerRestarted(Exception):
    """A side failed while the PostgreSQL server restarted under it (not a wrong result)."""


def _connect(url: str) -> psycopg.Connection[Any]:
    """Connect, waiting up to two minutes for a server that is restarting."""
    deadline = time.monotonic() + 120
    while True:
        try:
            return psycopg.connect(url, autocommit=True)
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1)


def _server_started_at(url: str) -> str:
    with _connect(url) as conn:
        return str(conn.execute("SELECT pg_postmaster_start_time()").fetchone()[0])  # type: ignore[index]


def _run_side(command: list[str], env: dict[str, str], server_url: str | None = None) -> dict[str, Any]:
    """Run one side and return its figure; with ``server_url``, tell a server restart from a failure."""
    started_at = _server_started_at(server_url) if server_url else None
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=HERE, timeout=SIDE_TIMEOUT)
    if done.returncode != 0:
        failure = f"{' '.join(command)} failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
        if server_url and _server_started_at(server_url) != started_at:
            raise ServerRestarted(failure)
        raise SystemExit(failure)
    figure: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return figure


@contextmanager
def fresh_schema(url: str) -> Iterator[str]:
    """A schema name of its own for one perdure run, dropped afterwards."""
    schema = f"peers_{uuid.uuid4().hex[:10]}"
    try:
        yield schema
    finally:
        with _connect(url) as conn:
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


@contextmanager
def fresh_database(url: str) -> Iterator[str]:
    """A database name of its own for one DBOS run (DBOS creates it), dropped afterwards."""
    database = f"peers_dbos_{uuid.uuid4().hex[:10]}"
    maintenance = _with_path(url, "postgres")
    try:
        yield database
    finally:
        with _connect(maintenance) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(database)))


def run_perdure(backend: str, shape: str, settings: Settings, source: Path | None = None) -> dict[str, Any]:
    """One run of one shape by perdure (from ``source``, a ``src`` folder, if given) on a fresh database."""
    command = [sys.executable, "perdure_side.py", "--shape", shape, "--n", str(settings.n)]
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(source), *filter(None, [env.get("PYTHONPATH")])])
    if backend == "postgres":
        with fresh_schema(settings.url) as schema:
            command += ["--postgres", settings.url, "--schema", schema]
            return _run_side(command, env, server_url=settings.url)
    with tempfile.TemporaryDirectory() as tmp:
        command += ["--sqlite", str(Path(tmp) / "perdure.db"), "--synchronous", settings.perdure_synchronous]
        return _run_side(command, env)


def run_dbos(backend: str, shape: str, style: str, settings: Settings) -> dict[str, Any]:
    """One run of one shape by DBOS, in its virtual environment on a fresh database."""
    command = [str(settings.dbos_python), "dbos_side.py", "--shape", shape, "--n", str(settings.n)]
    command += ["--style", style, "--fan-out", settings.dbos_fan_out]
    # Only the virtual environment's own packages: nothing of perdure on the path.
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    if backend == "postgres":
        with fresh_database(settings.url) as database:
            url = _with_path(settings.url, database, scheme="postgresql+psycopg")
            return _run_side([*command, "--url", url], env, server_url=settings.url)
    with tempfile.TemporaryDirectory() as tmp:
        return _run_side([*command, "--url", f"sqlite:///{Path(tmp) / 'dbos.sqlite'}"], env)


def dbos_styles_for(shape: str, settings: Settings) -> tuple[str, ...]:
    """The DBOS styles to run for a shape: the fan-out variant decides its own."""
    if shape == "fan_out":
        return ("async",) if settings.dbos_fan_out == "steps" else ("sync",)
    return settings.dbos_styles


def run_once(backend: str, shape: str, side: str, style: str, settings: Settings) -> dict[str, Any]:
    """One side's run of a shape; run again (at most twice) if the server restarted under it.

    Other work on a shared machine may restart the PostgreSQL server; that interrupts a run but
    says nothing about either side. Any other failure ends the whole run.
    """
    restarts = 0
    while True:
        try:
            if side == "perdure":
                figure = run_perdure(backend, shape, settings)
            elif side == "baseline":
                figure = run_perdure(backend, shape, settings, settings.baseline)
            else:
                figure = run_dbos(backend, shape, style, settings)
        except ServerRestarted as restart:
            restarts += 1
            if restarts == 3:
                raise SystemExit(str(restart)) from None
            print(f"  {backend} {shape} {side}: the server restarted during the run; again", file=sys.stderr)
            continue
        return figure | {"side": side, "runs_after_server_restart": restarts}


def measure_shape(backend: str, shape: str, settings: Settings) -> dict[str, Any]:
    """Every run of one shape on one backend, and the best figure of each side."""
    runs: list[dict[str, Any]] = []
    for attempt in range(settings.repeat):
        sides: list[tuple[str, str]] = [("perdure", "")] + ([("baseline", "")] if settings.baseline else [])
        sides += [("dbos", style) for style in dbos_styles_for(shape, settings)]
        if attempt % 2:
            sides.reverse()
        for side, style in sides:
            figure = run_once(backend, shape, side, style, settings)
            runs.append(figure)
            label = f"{side} {style}" if style else side
            print(f"  {backend} {shape} {label}: {figure['rate']:.0f} {SHAPES[shape].unit}/s", file=sys.stderr)
    best = {side: max((r for r in runs if r["side"] == side), key=lambda r: r["rate"]) for side in ("perdure", "dbos")}
    baseline = {}
    if settings.baseline:
        before = max((r for r in runs if r["side"] == "baseline"), key=lambda r: r["rate"])
        baseline = {"baseline": before["rate"], "baseline_ratio": before["rate"] / best["dbos"]["rate"]}
    return baseline | {
        "shape": shape,
        "unit": SHAPES[shape].unit,
        "perdure": best["perdure"]["rate"],
        "dbos": best["dbos"]["rate"],
        "dbos_style": FAN_OUT_LABELS.get(best["dbos"].get("fan_out", ""), best["dbos"]["style"]),
        "ratio": best["perdure"]["rate"] / best["dbos"]["rate"],
        "perdure_cpu_ms": best["perdure"]["cpu_ms_per_unit"],
        "dbos_cpu_ms": best["dbos"]["cpu_ms_per_unit"],
        "runs": runs,
    }


def table(backend: str, rows: list[dict[str, Any]], settings: Settings) -> str:
    """A Markdown table of one backend's figures."""
    lines = [
        f"{backend}, N = {settings.n}, best of {settings.repeat}:",
        "",
        "| shape | perdure | DBOS | perdure / DBOS | process CPU ms per unit, perdure / DBOS |",
        "|---|---|---|---|---|",
    ]
    if settings.baseline:
        lines[2:4] = [
            "| shape | perdure | baseline | DBOS | perdure / DBOS | baseline / DBOS |"
            " process CPU ms per unit, perdure / DBOS |",
            "|---|---|---|---|---|---|---|",
        ]
    for row in rows:
        unit = "steps/s" if row["unit"] == "steps" else "/s"
        before = f"{row['baseline']:.0f} {unit} | " if settings.baseline else ""
        before_ratio = f"{row['baseline_ratio']:.2f}× | " if settings.baseline else ""
        lines.append(
            f"| {SHAPES[row['shape']].title} | {row['perdure']:.0f} {unit} | {before}{row['dbos']:.0f} {unit} "
            f"({row['dbos_style']}) | **{row['ratio']:.2f}×** | {before_ratio}"
            f"{row['perdure_cpu_ms']:.2f} / {row['dbos_cpu_ms']:.2f} |"
        )
    return "\n".join(lines)


def describe(document: dict[str, Any]) -> str:
    """The versions and settings a run measured, read back from the sides' reports."""
    runs = [run for rows in document["backends"].values() for row in rows for run in row["runs"]]
    lines = []
    for side in ("perdure", "dbos"):
        mine = [run for run in runs if run["side"] == side]
        versions = ", ".join(f"{name} {version}" for name, version in mine[-1]["versions"].items())
        lines.append(f"{side}: {versions}")
        sqlite = {(run["journal_mode"], run["synchronous"]) for run in mine if "journal_mode" in run}
        lines += [f"  SQLite journal_mode={journal}, synchronous={level}" for journal, level in sorted(sqlite)]
    if "postgres" in document:
        lines.append("PostgreSQL " + ", ".join(f"{name}={value}" for name, value in document["postgres"].items()))
    machine = document["machine"]
    lines.append(
        f"{machine['machine']}, {machine['cpus']} CPUs, Python {machine['python']}; load average "
        f"{machine['load_average_at_start'][0]:.1f} at start, {machine['load_average_at_end'][0]:.1f} at end"
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", choices=["postgres", "sqlite", "both"], default="both")
    parser.add_argument("--n", type=int, default=300, help="size of every shape")
    parser.add_argument("--shapes", nargs="+", choices=list(SHAPES), default=list(SHAPES))
    parser.add_argument("--repeat", type=int, default=1, help="runs per side and shape; the best counts")
    parser.add_argument(
        "--url", default=os.environ.get("PERDURE_BENCH_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")
    )
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="DBOS's throw-away virtual environment")
    parser.add_argument(
        "--dbos-style",
        choices=["sync", "async", "both"],
        default="both",
        help="DBOS workflows as plain def, async def, or both (the faster counts)",
    )
    parser.add_argument(
        "--dbos-fan-out",
        choices=["steps", "queue"],
        default="steps",
        help="DBOS fan-out: asyncio.gather of steps in one workflow, or a queue of child workflows",
    )
    parser.add_argument(
        "--perdure-synchronous",
        choices=["FULL", "NORMAL"],
        default="FULL",
        help="perdure's SQLite synchronous setting (DBOS runs SQLite's default, FULL)",
    )
    parser.add_argument(
        "--baseline",
        type=Path,
        help="the src folder of another perdure checkout, measured beside this one (e.g. the last release)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = parser.parse_args()

    settings = Settings(
        url=args.url,
        n=args.n,
        repeat=args.repeat,
        dbos_python=ensure_dbos(args.venv),
        dbos_styles=("sync", "async") if args.dbos_style == "both" else (args.dbos_style,),
        dbos_fan_out=args.dbos_fan_out,
        perdure_synchronous=args.perdure_synchronous,
        baseline=args.baseline.resolve() if args.baseline else None,
    )
    backends = ["postgres", "sqlite"] if args.backend == "both" else [args.backend]
    document: dict[str, Any] = {
        "machine": {
            "machine": platform.machine(),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_average_at_start": os.getloadavg(),
        },
        "n": args.n,
        "repeat": args.repeat,
        "backends": {},
    }
    if "postgres" in backends:
        document["postgres"] = server_facts(args.url)
    for backend in backends:
        rows = [measure_shape(backend, shape, settings) for shape in args.shapes]
        document["backends"][backend] = rows
        if not args.json:
            print(table(backend, rows, settings), end="\n\n", flush=True)
    document["machine"]["load_average_at_end"] = os.getloadavg()
    print(json.dumps(document, indent=2) if args.json else describe(document))


if __name__ == "__main__":
    main()
