"""What the dashboard's browser tests share: a worker in a thread, the dashboard process, Chromium."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import pytest
from tests.acceptance.operator_support import FAST, registry

from perdure import Client, OrchestrationState, OrchestrationStatus, Registry, Runtime, open_provider

__all__ = [
    "CHROMIUM",
    "CHROMIUM_ARGS",
    "HAVE_PLAYWRIGHT",
    "IMAGES",
    "ROOT",
    "BackgroundWorker",
    "needs_browser",
    "start_dashboard",
    "stop_process",
]

CHROMIUM = Path("/usr/bin/chromium")
ROOT = Path(__file__).resolve().parents[2]
# Every run saves its screenshots; they replace the ones in the docs only when asked to
# (PERDURE_UPDATE_SCREENSHOTS=1), so an ordinary test run leaves the work tree clean.
IMAGES = ROOT / "docs" / "images" if os.environ.get("PERDURE_UPDATE_SCREENSHOTS") else ROOT / "tests" / "artifacts"
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-sync",
]

HAVE_PLAYWRIGHT = importlib.util.find_spec("playwright") is not None

needs_browser = pytest.mark.skipif(
    not HAVE_PLAYWRIGHT or not CHROMIUM.exists(),
    reason="browser tests need playwright (pip install playwright) and Chromium at /usr/bin/chromium "
    "(apt-get install chromium)",
)


class BackgroundWorker:
    """A runtime serving the store from a thread of this process, and a way to run client calls on it."""

    def __init__(self, store: Path | str, code: Registry = registry) -> None:
        self.url = store if isinstance(store, str) else f"sqlite:///{store}"
        self.code = code
        self.ready = threading.Event()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.stop_event: asyncio.Event | None = None
        self.client: Client | None = None
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._thread, name="perdure-test-worker", daemon=True)

    def _thread(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by start() or stop()
            self.error = exc
            self.ready.set()

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.stop_event = asyncio.Event()
        provider = await open_provider(self.url, create=False)
        try:
            async with Runtime(provider, self.code, FAST):
                self.client = Client(provider)
                self.ready.set()
                await self.stop_event.wait()
        finally:
            await provider.close()

    def start(self) -> None:
        self.thread.start()
        assert self.ready.wait(15), "the worker did not start"
        if self.error is not None:
            raise self.error

    def call(self, work: Callable[[Client], Coroutine[Any, Any, Any]], timeout: float = 15) -> Any:
        assert self.loop is not None and self.client is not None
        future: Future[Any] = asyncio.run_coroutine_threadsafe(work(self.client), self.loop)
        return future.result(timeout)

    def status(self, instance_id: str) -> OrchestrationStatus | None:
        state: OrchestrationState | None = self.call(lambda c: c.get_status(instance_id))
        return None if state is None else state.status

    def stop(self) -> None:
        if self.loop is not None and self.stop_event is not None:
            self.loop.call_soon_threadsafe(self.stop_event.set)
        self.thread.join(15)
        assert not self.thread.is_alive(), "the worker did not stop"


def start_dashboard(db: Path | str, *extra: str) -> tuple[subprocess.Popen[str], str]:
    """``perdure dashboard`` over a SQLite file or a store URL, on a free port; the process and the URL it printed."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERDURE_")}
    env["PERDURE_DB"] = db if isinstance(db, str) else f"sqlite:///{db}"
    process = subprocess.Popen(
        [sys.executable, "-m", "perdure", "dashboard", "--port", "0", "--refresh", "0.3", *extra],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    line = process.stdout.readline()  # blocks until the server listens (or the process ends)
    match = re.search(r"http://\S+/", line)
    if match is None:
        process.kill()
        _, err = process.communicate(timeout=10)
        raise AssertionError(f"the dashboard did not start: {line!r} {err}")
    return process, match.group(0)


def stop_process(process: subprocess.Popen[str]) -> None:
    process.terminate()
    try:
        process.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.communicate(timeout=10)


def csrf_of(html: str) -> str:
    """The session CSRF token a dashboard page carries."""
    match = re.search(r'name="csrf-token" content="([0-9a-f]+)"', html)
    assert match is not None
    return match.group(1)
