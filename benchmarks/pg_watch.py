"""The PostgreSQL backends serving one benchmark run: their CPU, their pinning, and what they wait for.

A benchmark names its connections ``perdure-<schema>-client`` and ``perdure-<schema>-worker``
(``application_name`` in the URL), so that its backends can be told from the others of a shared
server. ``Watch`` runs a thread with a connection of its own (named ``watch-<schema>``, so it is
left out of every figure) that, every ``interval`` seconds:

- pins each new backend of the run to the database's CPUs, when a layout asks for it (only those
  backends: the server itself and everyone else's backends are left alone);
- samples ``pg_stat_activity`` for them: state, wait event, the statement running (named after
  ``queries.sql``) and the kind of lock waited for (``pg_locks``);
- counts the notifications on the schema's channel (it listens like one more process would), and
  the notifying commits they came from (at least: a change of sending backend starts the next).

Averaged over a shape's samples, a state's count is the mean number of backends in it; ``active``
with no wait event means on a CPU or waiting for one, so on one pinned core a figure above 1 is
a run queue.
"""

from __future__ import annotations

import collections
import contextlib
import os
import re
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from perdure.providers._sql import load_queries

_SAMPLE = """
SELECT a.pid, a.application_name, a.state, a.wait_event_type, a.wait_event, left(a.query, 1000),
       CASE WHEN a.wait_event_type = 'Lock' THEN
           (SELECT string_agg(DISTINCT l.locktype || coalesce(' ' || l.classid::regclass::text, ''), ',')
            FROM pg_locks l WHERE l.pid = a.pid AND NOT l.granted) END
FROM pg_stat_activity a WHERE a.application_name LIKE %s
"""

_PLACEHOLDER = re.compile(r"%\(\w+\)[sb]|\$\d+")
_COMMENT = re.compile(r"--[^\n]*")


def _shape(sql: str) -> str:
    """A statement's text without comments, parameters and spacing, to match what the server shows."""
    return " ".join(_PLACEHOLDER.sub("?", _COMMENT.sub("", sql)).split())[:120]


_STATEMENTS = {_shape(sql): name for name, sql in load_queries("perdure.providers.postgres").items()}


def statement_name(query: str) -> str:
    """The ``queries.sql`` name of a statement the server shows, or its first words."""
    shape = _shape(query)
    return _STATEMENTS.get(shape) or " ".join(shape.split()[:3]) or "(none)"


def cpu_seconds(pids: Iterable[int]) -> dict[int, float]:
    """User plus system CPU seconds of each process still alive (Linux ``/proc``)."""
    ticks = os.sysconf("SC_CLK_TCK")
    found = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        found[pid] = (int(fields[11]) + int(fields[12])) / ticks
    return found


def cpu_busy() -> list[tuple[int, int]]:
    """Busy and total jiffies of each CPU since boot, from ``/proc/stat`` (everyone's work)."""
    found = []
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith("cpu") and line[3:4].isdigit():
            values = [int(value) for value in line.split()[1:]]
            idle = values[3] + values[4]  # idle and iowait
            found.append((sum(values) - idle, sum(values)))
    return found


FUNCTION_STATS = """
SELECT funcname, calls, total_time, self_time FROM pg_stat_user_functions WHERE schemaname = %s ORDER BY self_time DESC
"""
"""Calls and server time of the schema's functions, counted by backends started with
``track_functions=pl`` (``PGOPTIONS``: a session setting of the run's own connections)."""


def pin_process(pid: int, cpus: set[int]) -> None:
    """Every thread of a process on ``cpus`` (``sched_setaffinity`` moves one thread only)."""
    for task in os.listdir(f"/proc/{pid}/task"):
        with contextlib.suppress(OSError):
            os.sched_setaffinity(int(task), cpus)


@dataclass
class Samples:
    """What the run's backends did over some ticks of the watch."""

    ticks: int = 0
    backends: int = 0
    notifications: int = 0
    notifying_commits: int = 0
    states: collections.Counter[str] = field(default_factory=collections.Counter)
    statements: collections.Counter[str] = field(default_factory=collections.Counter)

    def describe(self) -> str:
        """Mean backends per state and wait, and the statements the active ones were running."""
        if not self.ticks:
            return "no samples"
        ticks = self.ticks
        active = sum(count for state, count in self.states.items() if state.startswith("active"))
        waits = ", ".join(
            f"{state.removeprefix('active').strip() or 'on CPU'} {count / ticks:.2f}"
            for state, count in self.states.most_common()
            if state.startswith("active") and count / ticks >= 0.01
        )
        others = ", ".join(
            f"{state} {count / ticks:.2f}"
            for state, count in self.states.most_common()
            if not state.startswith("active") and state != "idle" and count / ticks >= 0.01
        )
        top = ", ".join(
            f"{name} {count * 100 / active:.0f} %" for name, count in self.statements.most_common(6) if active
        )
        return (
            f"{self.ticks} samples, {self.backends / ticks:.1f} backends; active {active / ticks:.2f} "
            f"({waits or '-'}); {others or 'no other non-idle'}; active statements: {top or '-'}"
        )


class Watch:
    """A thread that pins the run's new backends (if ``cpus``) and samples what they do."""

    def __init__(self, admin_url: str, schema: str, cpus: set[int] | None, interval: float = 0.02) -> None:
        self._url = f"{admin_url}{'&' if '?' in admin_url else '?'}application_name=watch-{schema}"
        self._pattern = f"perdure-{schema}-%"
        self._cpus, self._interval = cpus, interval
        self._channel = f"perdure_{schema}"[:63]
        self._pinned: set[int] = set()
        self._roles: dict[int, str] = {}
        self._samples = Samples()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="pg-watch", daemon=True)
        self.thread_cpu = 0.0
        """CPU seconds the watch thread spent, to leave out of the client process's figure."""

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def backends(self) -> dict[int, str]:
        """The run's backends seen so far, with their role (``client`` or ``worker``)."""
        with self._lock:
            return dict(self._roles)

    def take(self) -> Samples:
        """The samples since the last call."""
        with self._lock:
            samples, self._samples = self._samples, Samples()
        return samples

    def _run(self) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self._url, autocommit=True) as conn:
            if self._cpus is not None:
                with contextlib.suppress(OSError):
                    os.sched_setaffinity(conn.info.backend_pid, self._cpus)
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            sender = 0
            while not self._stop.is_set():
                heard = commits = 0
                for notify in conn.notifies(timeout=self._interval):
                    # A transaction's notifications arrive together: a change of sender starts the
                    # next commit (two commits of one backend in a row count once: a lower bound).
                    heard, commits, sender = heard + 1, commits + (notify.pid != sender), notify.pid
                began = time.thread_time()
                rows = conn.execute(_SAMPLE, (self._pattern,)).fetchall()
                self._record(rows, heard, commits)
                self.thread_cpu += time.thread_time() - began

    def _record(self, rows: list[tuple[object, ...]], heard: int, commits: int) -> None:
        with self._lock:
            samples = self._samples
            samples.ticks += 1
            samples.notifications += heard
            samples.notifying_commits += commits
            for pid, application, state, wait_type, wait, query, lock in rows:
                assert isinstance(pid, int) and isinstance(application, str)
                self._roles[pid] = application.rsplit("-", 1)[1]
                if self._cpus is not None and pid not in self._pinned:
                    self._pinned.add(pid)
                    with contextlib.suppress(OSError):
                        os.sched_setaffinity(pid, self._cpus)
                samples.backends += 1
                label = "idle" if state == "idle" else f"{state}" + (f" {wait_type}:{wait}" if wait_type else "")
                label += f" ({lock})" if lock else ""
                samples.states[label] += 1
                if state == "active":
                    samples.statements[statement_name(str(query))] += 1
