"""The dashboard's views of what runs where, in headless Chromium, on SQLite and on PostgreSQL.

What each unfinished instance waits for, the tasks an ended execution left open (withdrawn,
cancelled), and the workers page. A worker runs in a thread of this process (so a test can hold
an activity attempt open), the dashboard in a process of its own.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from tests.acceptance.dashboard_support import (
    HAVE_PLAYWRIGHT,
    IMAGES,
    BackgroundWorker,
    needs_browser,
    start_dashboard,
    stop_process,
)
from tests.conftest import PROVIDER_KINDS, drop_test_provider, open_test_provider

from perdure import (
    ActivityContext,
    Client,
    OrchestrationContext,
    OrchestrationStatus,
    Registry,
    RetryPolicy,
    WorkerInfo,
    open_provider,
)

if HAVE_PLAYWRIGHT:
    from playwright.sync_api import Page, expect

T = TypeVar("T")
code = Registry()
RELEASE = threading.Event()  # lets the second attempt of Charge finish


@code.activity("Charge")
def charge(ctx: ActivityContext, amount: int) -> str:
    if ctx.attempt == 1:
        raise ConnectionError("the bank did not answer")
    RELEASE.wait(60)
    return f"charged {amount}"


@code.orchestration("Checkout")
async def checkout(ctx: OrchestrationContext, amount: int) -> Any:
    return await ctx.call_activity("Charge", amount, retry=RetryPolicy(max_attempts=3, initial_interval=0.1))


@code.orchestration("Approval")
async def approval(ctx: OrchestrationContext, _: Any) -> Any:
    ctx.set_custom_status("waiting for approval")
    return await ctx.wait_for_event("approved", timeout=3600)


@code.orchestration("Waiter")
async def waiter(ctx: OrchestrationContext, _: Any) -> Any:
    return await ctx.wait_for_event("go")


@code.orchestration("ChangedItsMind")
async def changed_its_mind(ctx: OrchestrationContext, _: Any) -> str:
    reminder = ctx.create_timer(3600)
    reminder.cancel()
    return "no reminder"


@dataclass
class Site:
    kind: str
    store: str  # the store's URL
    url: str  # the dashboard's


def off_loop(work: Coroutine[Any, Any, T]) -> T:
    """Run ``work`` to the end on a thread of its own: Playwright may run an event loop in this one."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(asyncio.run, work).result()


async def _open(kind: str, tmp_path: Path) -> tuple[Any, str]:
    provider, url = await open_test_provider(kind, tmp_path)
    await provider.close()  # the worker and the dashboard open it themselves
    return provider, url


@contextmanager
def dashboard_over_new_store(kind: str, tmp_path: Path) -> Iterator[Site]:
    """A new, empty store of ``kind`` and the dashboard over it; the store is dropped afterwards."""
    provider, store = off_loop(_open(kind, tmp_path))
    process, url = start_dashboard(store)
    try:
        yield Site(kind, store, url)
    finally:
        stop_process(process)
        if kind == "postgres":
            off_loop(drop_test_provider(kind, provider))  # closes it again (a no-op) and drops the schema


@pytest.fixture(scope="module", params=PROVIDER_KINDS)
def site(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    """A store of each kind and the dashboard over it, shared by the tests of the module."""
    kind = str(request.param)
    with dashboard_over_new_store(kind, tmp_path_factory.mktemp(f"waits-{kind}")) as opened:
        yield opened


@pytest.fixture(scope="module")
def worker(site: Site) -> Iterator[BackgroundWorker]:
    """A worker serving ``code`` on the site's store, from the first test that needs one."""
    RELEASE.clear()
    running = BackgroundWorker(site.store, code)
    running.start()
    yield running
    RELEASE.set()
    running.stop()


def wait_until(worker: BackgroundWorker, instance_id: str, check: Any, timeout: float = 15) -> None:
    """Wait until ``check(state, history)`` holds for the instance."""

    async def poll(client: Client) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            state = await client.get_status(instance_id)
            if state is not None and check(state, await client.get_history(instance_id)):
                return
            if loop.time() > deadline:
                raise AssertionError(f"{instance_id} did not get there: {state}")
            await asyncio.sleep(0.05)

    worker.call(poll, timeout + 5)


async def _start(store: str, instance_id: str, name: str, **options: Any) -> None:
    provider = await open_provider(store, create=False)
    try:
        await Client(provider).start_orchestration(instance_id, name, **options)
    finally:
        await provider.close()


def scheduled(name: str, attempt: int) -> Any:
    def check(_: Any, history: list[Any]) -> bool:
        return any(getattr(e, "name", None) == name and getattr(e, "attempt", 0) == attempt for e in history)

    return check


def waits_of(site: Site, instance_id: str) -> list[dict[str, Any]]:
    data = httpx.get(site.url + "api/instance", params={"id": instance_id}).json()
    waits: list[dict[str, Any]] = data["waiting_for"]
    return waits


def running_wait(site: Site, instance_id: str, timeout: float = 15) -> dict[str, Any]:
    """The instance's one wait, once it is an activity a worker runs."""
    deadline = time.monotonic() + timeout
    while True:
        [wait] = waits_of(site, instance_id)
        if wait["running_on"] is not None or time.monotonic() > deadline:
            return wait
        time.sleep(0.05)


def save_screenshot(site: Site, page: Page, name: str) -> None:
    """The whole page, once (from the SQLite run), as the docs show it."""
    if site.kind == "sqlite":
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / name), full_page=True)


def utc(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def worker_id_of(worker: BackgroundWorker) -> str:
    [record] = worker.call(lambda c: c.list_workers())
    return str(record.worker_id)


# --- what an instance waits for ----------------------------------------------------------------


@needs_browser
def test_a_pending_instance_no_worker_serves_says_so_in_red(site: Site, tmp_path: Path, page: Page) -> None:
    # A store of its own, which no worker serves (the shared one may have its worker already).
    with dashboard_over_new_store(site.kind, tmp_path) as alone:
        off_loop(_start(alone.store, "nobody-1", "Checkout"))
        page.goto(alone.url + "instance?id=nobody-1")
        line = page.locator('#waiting-for li[data-kind="start"]')
        expect(line).to_contain_text("a worker to run its first turn")
        expect(line).to_contain_text("no live worker serves orchestration Checkout")
        expect(line).to_have_class("unserved")


@needs_browser
def test_a_running_activity_shows_its_attempt_and_the_worker_that_serves_it(
    site: Site, worker: BackgroundWorker, page: Page
) -> None:
    worker.call(lambda c: c.start_orchestration("checkout-1", "Checkout", 42))
    wait_until(worker, "checkout-1", scheduled("Charge", 2))
    [record] = worker.call(lambda c: c.list_workers())
    worker_id = str(record.worker_id)
    wait = running_wait(site, "checkout-1")  # once the worker holds the attempt's work item
    assert (wait["kind"], wait["served_by"], wait["running_on"]) == ("activity", [worker_id], worker_id)

    page.goto(site.url + "instance?id=checkout-1")
    line = page.locator('#waiting-for li[data-kind="activity"]')
    expect(line).to_contain_text("activity Charge, attempt 2, scheduled at ")
    expect(line).to_contain_text(f"; running on worker {worker_id} ({record.host}, pid {record.pid})")
    expect(page.locator('.gantt g.span[data-kind="activity"]')).to_have_count(2)
    expect(page.locator(".gantt .outcome-failed")).to_have_count(1)
    expect(page.locator(".gantt .outcome-pending")).to_have_count(1)
    save_screenshot(site, page, "dashboard-waiting.png")

    RELEASE.set()
    expect(page.locator("#status")).to_have_text("COMPLETED", timeout=15_000)
    expect(page.locator("#waiting-section")).to_be_hidden()
    expect(page.locator("#output")).to_contain_text("charged 42")


@needs_browser
def test_an_event_wait_names_the_event_and_its_timeout_then_the_timer_reads_withdrawn(
    site: Site, worker: BackgroundWorker, page: Page
) -> None:
    worker.call(lambda c: c.start_orchestration("approval-1", "Approval"))
    wait_until(worker, "approval-1", lambda state, _: state.status is OrchestrationStatus.RUNNING)
    [awaited] = worker.call(lambda c: c.get_status("approval-1")).waiting_for
    assert (awaited.name, awaited.timeout_at - awaited.since) == ("approved", timedelta(hours=1))
    [wait] = waits_of(site, "approval-1")
    assert (wait["kind"], wait["event"], wait["due"]) == ("event", "approved", awaited.timeout_at.isoformat())

    page.goto(site.url + "instance?id=approval-1")
    line = page.locator('#waiting-for li[data-kind="event"]')
    expect(line).to_have_text(f"event 'approved' since {utc(awaited.since)}, timeout at {utc(awaited.timeout_at)}")
    expect(page.locator(".gantt")).to_contain_text("timeout of event 'approved'")
    expect(page.locator('#waiting-for li[data-kind="timer"]')).to_have_count(0)  # the timeout is not a timer of its own
    expect(page.locator(".gantt .outcome-pending")).to_have_count(1)
    save_screenshot(site, page, "dashboard-waiting-event.png")

    page.click('button[data-action="raise-event"]')
    page.fill("#event-name", "approved")
    page.fill("#event-data", '"Ada"')
    page.click("#confirm-ok")
    expect(page.locator("#status")).to_have_text("COMPLETED")
    assert worker.call(lambda c: c.get_status("approval-1")).waiting_for == ()
    # The timeout's timer never fires now: it is shown withdrawn, not as still to come.
    expect(page.locator('.gantt g.span[data-kind="timer"]')).to_have_class("span kind-timer outcome-withdrawn")
    expect(page.locator(".gantt .outcome-pending")).to_have_count(0)
    expect(page.locator(".legend")).to_contain_text("withdrawn (never fired)")


@needs_browser
def test_a_wait_with_nothing_scheduled_names_its_event_and_a_cancelled_timer_reads_cancelled(
    site: Site, worker: BackgroundWorker, page: Page
) -> None:
    worker.call(lambda c: c.start_orchestration("waiter-1", "Waiter"))
    worker.call(lambda c: c.start_orchestration("mind-1", "ChangedItsMind"))
    wait_until(worker, "waiter-1", lambda state, _: state.status is OrchestrationStatus.RUNNING)
    page.goto(site.url + "instance?id=waiter-1")
    line = page.locator('#waiting-for li[data-kind="event"]')
    expect(line).to_contain_text("event 'go' since ")
    expect(line).not_to_contain_text("timeout")

    worker.call(lambda c: c.wait_for_orchestration("mind-1", timeout=10))
    page.goto(site.url + "instance?id=mind-1")
    expect(page.locator("#status")).to_have_text("COMPLETED")
    expect(page.locator(".gantt .outcome-cancelled")).to_have_count(1)
    expect(page.locator("#waiting-section")).to_be_hidden()


# --- the list and the workers page -------------------------------------------------------------


@needs_browser
def test_the_list_shows_custom_status_and_error_columns(site: Site, worker: BackgroundWorker, page: Page) -> None:
    worker.call(lambda c: c.start_orchestration("approval-2", "Approval"))
    wait_until(worker, "approval-2", lambda state, _: state.custom_status == "waiting for approval")
    page.goto(site.url + "?prefix=approval-2")
    row = page.locator('#rows tr[data-instance-id="approval-2"]')
    expect(row.locator("td.preview").first).to_have_text('"waiting for approval"')
    headers = page.locator("#instances thead th")
    expect(headers.nth(4)).to_have_text("Custom status")
    expect(headers.nth(5)).to_have_text("Error")


async def _dead_worker(store: str) -> None:
    """The record of a worker that died (killed: its record stays, not alive, for a day)."""
    provider = await open_provider(store, create=False)
    now = datetime.now(UTC)
    dead = WorkerInfo(
        worker_id="8a7e55c04b1f4f0d9b0c6e2a1d3f4b57",
        host="gpu-2",
        pid=1177,
        activities=("Render",),
        queues=("gpu",),
        started_at=now,
        last_seen=now,
    )
    try:
        handle = provider.worker_liveness(dead, timeout=0.1)
        assert handle is not None
        await asyncio.to_thread(handle.beat)
        await asyncio.to_thread(handle.close, remove=False)
        await asyncio.sleep(0.3)
    finally:
        await provider.close()


@needs_browser
def test_the_workers_page_lists_live_workers_and_what_they_serve(
    site: Site, worker: BackgroundWorker, page: Page
) -> None:
    worker_id = worker_id_of(worker)
    off_loop(_dead_worker(site.store))
    page.goto(site.url)
    page.click("header nav a[href='/workers']")
    row = page.locator(f'#rows tr[data-worker-id="{worker_id}"]')
    expect(row).to_have_count(1)
    expect(page.locator("#rows tr")).to_have_count(1)  # the dead one only with "all"
    expect(row.locator("td.orchestrations")).to_contain_text("Approval@1.0.0")
    expect(row.locator("td.orchestrations")).to_contain_text("Checkout@1.0.0")
    expect(row.locator("td.activities")).to_contain_text("Charge")
    expect(row.locator("td.activities")).to_contain_text("queues: default")
    page.check("#all")
    assert page.url.endswith("/workers?all=1")
    expect(page.locator("#rows tr")).to_have_count(2)
    dead = page.locator("#rows tr.dead")
    expect(dead).to_have_attribute("data-worker-id", "8a7e55c04b1f4f0d9b0c6e2a1d3f4b57")
    expect(dead).to_contain_text("(dead)")
    expect(dead.locator("td.activities")).to_contain_text("queues: gpu")
    if site.kind == "sqlite":
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / "dashboard-workers.png"), clip={"x": 0, "y": 0, "width": 1280, "height": 330})


def test_the_workers_api_and_its_bad_parameter(site: Site, worker: BackgroundWorker) -> None:
    worker_id = worker_id_of(worker)
    live = httpx.get(site.url + "api/workers").json()
    assert [w["worker_id"] for w in live["workers"]] == [worker_id]
    assert live["workers"][0]["alive"] is True and "Charge" in live["workers"][0]["activities"]
    assert httpx.get(site.url + "api/workers", params={"all": "1"}).status_code == 200
    bad = httpx.get(site.url + "api/workers", params={"all": "yes\x1b"})
    assert bad.status_code == 400 and 0 < len(bad.json()["error"]) < 300
    # The Host check covers the new page and API like the others.
    assert httpx.get(site.url + "api/workers", headers={"Host": "evil.example"}).status_code == 421
    assert httpx.get(site.url + "workers", headers={"Host": "evil.example"}).status_code == 421
