"""The dashboard as an operator uses it: a real server process, headless Chromium, a worker in this process."""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.acceptance.dashboard_support import (
    HAVE_PLAYWRIGHT,
    IMAGES,
    ROOT,
    BackgroundWorker,
    csrf_of,
    needs_browser,
    start_dashboard,
    stop_process,
)
from tests.acceptance.operator_support import FAST, FLAKY, Seeded, create_store, registry, seed, wait_status

from perdure import Client, OrchestrationStatus, Runtime, SqliteProvider
from perdure._state import ACTIONS

if HAVE_PLAYWRIGHT:
    from playwright.sync_api import Page, expect


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Seeded, Path]]:
    """A seeded store and the dashboard over it (no worker yet: the PENDING instance stays pending)."""
    db = tmp_path_factory.mktemp("dashboard") / "perdure.db"
    ids = asyncio.run(seed(db))
    process, url = start_dashboard(db)
    try:
        yield url, ids, db
    finally:
        stop_process(process)
        FLAKY["fail"] = True


@pytest.fixture(scope="module")
def worker(site: tuple[str, Seeded, Path]) -> Iterator[BackgroundWorker]:
    """A worker serving the store, from the first test that needs instances to move on."""
    running = BackgroundWorker(site[2])
    running.start()
    yield running
    running.stop()


def rows(page: Page) -> Any:
    return page.locator("#rows tr")


# --- the list ----------------------------------------------------------------------------------


@needs_browser
def test_list_shows_instances_of_each_status(site: tuple[str, Seeded, Path], page: Page) -> None:
    url, ids, _ = site
    page.goto(url)
    expect(rows(page)).to_have_count(9)
    for status, instance_id in [
        ("COMPLETED", ids.completed),
        ("FAILED", ids.failed),
        ("RUNNING", ids.running),
        ("SUSPENDED", ids.suspended),
        ("TERMINATED", ids.terminated),
        ("PENDING", ids.pending),
    ]:
        row = page.locator(f'#rows tr[data-instance-id="{instance_id}"]')
        expect(row.locator(".badge")).to_have_text(status)
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "dashboard-list.png"))


@needs_browser
def test_list_filters_by_status_prefix_and_name(site: tuple[str, Seeded, Path], page: Page) -> None:
    url, ids, _ = site
    page.goto(url)
    expect(rows(page)).to_have_count(9)
    page.check("#status-SUSPENDED")
    expect(rows(page)).to_have_count(1)
    expect(rows(page).first).to_have_attribute("data-instance-id", ids.suspended)
    page.check("#status-PENDING")
    expect(rows(page)).to_have_count(2)
    assert "status=SUSPENDED" in page.url and "status=PENDING" in page.url
    page.click("#clear")
    expect(rows(page)).to_have_count(9)
    page.fill("#prefix", "family")
    expect(rows(page)).to_have_count(3)
    page.fill("#prefix", "")
    page.fill("#name", "Waiter")
    expect(rows(page)).to_have_count(3)
    page.fill("#name", "NoSuchName")
    expect(page.locator("#empty")).to_be_visible()


@needs_browser
def test_list_pages_with_the_cursor(site: tuple[str, Seeded, Path], page: Page) -> None:
    url, _, _ = site
    page.goto(url + "?limit=4")
    seen: list[str] = []
    for expected in (4, 4, 1):
        expect(rows(page)).to_have_count(expected)
        expect(page.locator("#page-label")).to_have_text(f"page {len(seen) // 4 + 1}")
        seen += [row.get_attribute("data-instance-id") or "" for row in rows(page).all()]
        if expected == 4:
            page.click("#next")
    expect(page.locator("#next")).to_be_disabled()
    assert len(seen) == 9 and seen == sorted(set(seen))
    page.click("#first")
    expect(rows(page).first).to_have_attribute("data-instance-id", seen[0])


def test_the_api_offers_the_actions_each_status_allows(site: tuple[str, Seeded, Path]) -> None:
    # Before any worker runs: the seeded store has one instance of each status.
    url, ids, _ = site
    seen = set()
    for instance_id in (ids.pending, ids.running, ids.suspended, ids.completed, ids.failed, ids.terminated):
        data = httpx.get(url + "api/instance", params={"id": instance_id}).json()
        status = OrchestrationStatus(data["instance"]["status"])
        seen.add(status)
        assert data["can"] == {action: action in status.allowed_actions for action in ACTIONS}
        assert data["finished"] is status.is_terminal
    assert seen == set(OrchestrationStatus)
    failed = httpx.get(url + "api/instance", params={"id": ids.failed}).json()["can"]
    assert [action for action, allowed in failed.items() if allowed] == ["rewind", "purge"]


@needs_browser
def test_list_refreshes_when_instances_change(
    site: tuple[str, Seeded, Path], worker: BackgroundWorker, page: Page
) -> None:
    url, _, _ = site
    page.goto(url + "?prefix=live-")
    expect(page.locator("#empty")).to_be_visible()
    worker.call(lambda c: c.start_orchestration("live-1", "Greeting", "Liv"))
    row = page.locator('#rows tr[data-instance-id="live-1"]')
    expect(row.locator(".badge")).to_have_text("COMPLETED")


# --- an instance -------------------------------------------------------------------------------


@needs_browser
def test_instance_page_shows_history_timeline_and_family_links(site: tuple[str, Seeded, Path], page: Page) -> None:
    url, ids, _ = site
    page.goto(url + f"instance?id={ids.parent}")
    expect(page.locator("#status")).to_have_text("COMPLETED")
    expect(page.locator("#history tr")).to_have_count(6)
    expect(page.locator("#history tr").first).to_have_attribute("data-event", "OrchestrationStarted")
    expect(page.locator("#history tr").first.locator("td").nth(1)).to_have_text("+0.000s")
    expect(page.locator("#output")).to_contain_text("Hello, Bo!")
    expect(page.locator(".gantt g.span")).to_have_count(2)
    expect(page.locator('.gantt g.span[data-kind="child"]')).to_have_count(2)
    expect(page.locator("#children tr")).to_have_count(2)
    # From the parent's timeline to the child, and back through the child's parent link.
    page.locator(".gantt g.span a").first.click()
    expect(page.locator("#instance-id")).to_have_text("family-child-0")
    expect(page.locator(".gantt g.span")).to_have_count(2)
    expect(page.locator('.gantt g.span[data-kind="activity"]')).to_have_count(1)
    expect(page.locator('.gantt g.span[data-kind="timer"]')).to_have_count(1)
    expect(page.locator("#custom-status")).to_contain_text('"step": "greeting"')
    page.locator("#facts a", has_text=ids.parent).click()
    expect(page.locator("#instance-id")).to_have_text(ids.parent)


@needs_browser
def test_failed_instance_page_shows_the_error_and_its_traceback(site: tuple[str, Seeded, Path], page: Page) -> None:
    url, ids, _ = site
    page.goto(url + f"instance?id={ids.failed}")
    expect(page.locator("#status")).to_have_text("FAILED")
    expect(page.locator("#error-message")).to_contain_text("card declined for 42")
    expect(page.locator("#traceback")).to_contain_text("Traceback (most recent call last)")
    expect(page.locator(".gantt .outcome-failed")).to_have_count(1)
    expect(page.locator('button[data-action="rewind"]')).to_be_enabled()
    expect(page.locator('button[data-action="terminate"]')).to_be_disabled()


# --- actions -----------------------------------------------------------------------------------


@needs_browser
def test_terminate_asks_for_confirmation_first(
    site: tuple[str, Seeded, Path], worker: BackgroundWorker, page: Page
) -> None:
    url, ids, _ = site
    page.goto(url + f"instance?id={ids.running}")
    expect(page.locator("#status")).to_have_text("RUNNING")
    page.click('button[data-action="terminate"]')
    dialog = page.locator("#confirm")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("Terminate this instance?")
    page.click("#confirm-cancel")
    expect(dialog).to_be_hidden()
    assert worker.status(ids.running) is OrchestrationStatus.RUNNING
    page.click('button[data-action="terminate"]')
    page.fill("#confirm-reason", "ordered twice")
    page.click("#confirm-ok")
    expect(page.locator("#status")).to_have_text("TERMINATED")
    expect(page.locator('#history tr[data-event="OrchestrationTerminated"]')).to_contain_text("ordered twice")
    assert worker.status(ids.running) is OrchestrationStatus.TERMINATED


@needs_browser
def test_suspend_resume_and_raise_event_from_the_page(
    site: tuple[str, Seeded, Path], worker: BackgroundWorker, page: Page
) -> None:
    url, ids, _ = site
    page.goto(url + f"instance?id={ids.suspended}")
    expect(page.locator("#status")).to_have_text("SUSPENDED")
    expect(page.locator('button[data-action="suspend"]')).to_be_disabled()
    page.click('button[data-action="resume"]')
    page.click("#confirm-ok")
    expect(page.locator("#status")).to_have_text("RUNNING")
    page.click('button[data-action="raise-event"]')
    page.fill("#event-name", "approve")
    page.fill("#event-data", "{not json")
    page.click("#confirm-ok")
    expect(page.locator("#confirm-error")).to_contain_text("not valid JSON")
    page.fill("#event-data", '{"approved": true}')
    page.click("#confirm-ok")
    expect(page.locator("#status")).to_have_text("COMPLETED")
    expect(page.locator("#output")).to_contain_text('"approved": true')
    assert worker.status(ids.suspended) is OrchestrationStatus.COMPLETED


@needs_browser
@pytest.mark.skipif(not hasattr(Client, "rewind"), reason="Client.rewind is not available yet")
def test_rewinding_a_failed_instance_from_the_page_makes_it_complete(
    site: tuple[str, Seeded, Path], worker: BackgroundWorker, page: Page
) -> None:
    url, ids, _ = site
    FLAKY["fail"] = False  # the card problem is fixed; the rewound run charges successfully
    page.goto(url + f"instance?id={ids.failed}")
    expect(page.locator("#status")).to_have_text("FAILED")
    page.click('button[data-action="rewind"]')
    expect(page.locator("#confirm")).to_contain_text("Rewind this failed instance?")
    page.fill("#confirm-reason", "card limit raised")
    page.click("#confirm-ok")
    expect(page.locator("#status")).to_have_text("COMPLETED", timeout=15_000)
    expect(page.locator("#output")).to_contain_text("charged 42")
    expect(page.locator("#history tr[data-event='ExecutionRewound']")).to_contain_text("card limit raised")
    assert worker.status(ids.failed) is OrchestrationStatus.COMPLETED
    IMAGES.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(IMAGES / "dashboard-instance.png"), full_page=True)


# --- protection --------------------------------------------------------------------------------


def test_actions_need_post_the_same_origin_and_the_session_csrf_token(
    site: tuple[str, Seeded, Path],
) -> None:
    url, _, _ = site
    origin = url.rstrip("/")
    target = url + "api/instance/terminate?id=ghost"
    with httpx.Client() as browser_like, httpx.Client() as other:
        token = csrf_of(browser_like.get(url).text)
        good = {"Origin": origin, "X-Perdure-CSRF": token}
        # With everything right, the request reaches the action (which finds no such instance).
        assert browser_like.post(target, headers=good, json={}).status_code == 404
        assert browser_like.post(target, headers={"X-Perdure-CSRF": token}, json={}).status_code == 403
        evil = {"Origin": "http://evil.example", "X-Perdure-CSRF": token}
        assert browser_like.post(target, headers=evil, json={}).status_code == 403
        assert browser_like.post(target, headers={"Origin": origin}, json={}).status_code == 403
        # Another session's token is worth nothing.
        other.get(url)
        assert other.post(target, headers=good, json={}).status_code == 403
        assert browser_like.get(target).status_code == 405
        # DNS rebinding: a foreign host name is refused even on loopback.
        assert browser_like.get(url + "api/instances", headers={"Host": "evil.example"}).status_code == 421


def test_with_a_token_every_request_needs_it(tmp_path: Path) -> None:
    secret = "s3cret-token-for-tests"
    create_store(tmp_path / "token.db")
    process, url = start_dashboard(tmp_path / "token.db", "--token", secret)
    try:
        with httpx.Client() as client:
            assert client.get(url).status_code == 401
            assert client.get(url + "api/instances").status_code == 401
            assert client.get(url + "?token=wrong-token-123456").status_code == 401
            first = client.get(url + "?token=" + secret)
            assert first.status_code == 303 and first.headers["location"] == "/"
            assert client.get(url).status_code == 200  # the cookie now carries it
        bearer = httpx.get(url + "api/instances", headers={"Authorization": f"Bearer {secret}"})
        assert bearer.status_code == 200 and bearer.json() == {"instances": [], "next_cursor": None}
    finally:
        stop_process(process)


def test_the_pages_load_nothing_from_other_hosts() -> None:
    static = ROOT / "src" / "perdure" / "tools" / "dashboard" / "static"
    for asset in static.iterdir():
        text = asset.read_text(encoding="utf-8")
        assert not re.search(r"(src|href)=\"(https?:)?//", text), asset.name
        assert "http://" not in text.replace("http://www.w3.org/2000/svg", ""), asset.name


# --- bad parameters ----------------------------------------------------------------------------

BAD_QUERIES = [
    ("api/instances", {"status": "bogus"}),
    ("api/instances", {"status": "running,bogus"}),
    ("api/instances", {"limit": "-1"}),
    ("api/instances", {"limit": "0"}),
    ("api/instances", {"limit": "abc"}),
    ("api/instances", {"limit": "1e3"}),
    ("api/instances", {"limit": str(10**9)}),
    ("api/instances", {"limit": "9" * 5000}),
    ("api/instances", {"after": "order-\x1b[2J"}),
    ("api/instances", {"after": "x" * 300}),
    ("api/instances", {"prefix": "order-\x00"}),
    ("api/instances", {"name": "Greeting\x9b"}),
    ("api/instances", {"created_after": "yesterday"}),
    ("api/instances", {"created_after": "2024-13-45"}),
    ("api/instances", {"created_before": "99999999999w"}),
    ("api/instance", {}),
    ("api/instance", {"id": "order-\x1b]0;pwned\x07"}),
    ("api/instance", {"id": "x" * 300}),
    ("api/instance", {"id": "order-completed", "execution": "abc"}),
    ("api/instance", {"id": "order-completed", "execution": "-1"}),
    ("api/instance", {"id": "order-completed", "execution": "0"}),
    ("api/instance", {"id": "order-completed", "execution": "2"}),  # it has one execution
    ("api/instance", {"id": "order-completed", "execution": "9" * 30}),
    ("api/download", {"id": "order-completed"}),
    ("api/download", {"id": "order-completed", "field": "secrets"}),
    ("api/download", {"field": "input"}),
    ("api/download", {"id": "\x9b", "field": "input"}),
]


def assert_short_error(response: httpx.Response, status: int) -> None:
    assert response.status_code == status, response.text[:300]
    error = response.json()["error"]
    assert isinstance(error, str) and 0 < len(error) < 300, error


@pytest.mark.parametrize(("path", "params"), BAD_QUERIES)
def test_a_bad_parameter_is_a_short_400(site: tuple[str, Seeded, Path], path: str, params: dict[str, str]) -> None:
    assert_short_error(httpx.get(site[0] + path, params=params), 400)


def test_good_edge_values_are_accepted(site: tuple[str, Seeded, Path]) -> None:
    url, ids, _ = site
    for params in ({"limit": "500"}, {"limit": "1"}, {"status": "running,COMPLETED"}, {"created_after": "7d"}):
        assert httpx.get(url + "api/instances", params=params).status_code == 200, params
    data = httpx.get(url + "api/instance", params={"id": ids.completed, "execution": "1"}).json()
    assert data["history"][0]["type"] == "OrchestrationStarted"


def test_an_unknown_instance_is_404(site: tuple[str, Seeded, Path]) -> None:
    url, _, _ = site
    assert_short_error(httpx.get(url + "api/instance", params={"id": "ghost"}), 404)
    assert_short_error(httpx.get(url + "api/download", params={"id": "ghost", "field": "input"}), 404)


def test_an_action_with_a_bad_parameter_or_body_is_a_short_400(site: tuple[str, Seeded, Path]) -> None:
    url, ids, _ = site
    with httpx.Client() as browser_like:
        headers = {"Origin": url.rstrip("/"), "X-Perdure-CSRF": csrf_of(browser_like.get(url).text)}

        def post(action: str, query: str, body: bytes) -> httpx.Response:
            return browser_like.post(f"{url}api/instance/{action}{query}", headers=headers, content=body)

        for action, query, body in [
            ("suspend", "", b"{}"),
            ("suspend", "?id=", b"{}"),
            ("suspend", "?id=order-%1b%5b2J", b"{}"),
            ("suspend", f"?id={ids.running}", b"[]"),
            ("suspend", f"?id={ids.running}", b"\xff"),
            ("suspend", f"?id={ids.running}", b'{"reason": 5}'),
            ("terminate", f"?id={ids.running}", b'{"reason": ["x"]}'),
            ("raise-event", f"?id={ids.running}", b'{"name": 5}'),
            ("raise-event", f"?id={ids.running}", b'{"name": "go\\u001b"}'),
        ]:
            assert_short_error(post(action, query, body), 400)
        assert_short_error(post("suspend", "?id=ghost", b"{}"), 404)
    status = httpx.get(url + "api/instance", params={"id": ids.running}).json()["instance"]["status"]
    assert status != "SUSPENDED"


# --- big values --------------------------------------------------------------------------------

BIG = "x" * (1 << 20)  # 1 MiB of text: its JSON is 2 characters longer


async def seed_big(path: Path) -> None:
    """Three instances whose inputs (and output, error) are 1 MiB each."""
    failing, FLAKY["fail"] = FLAKY["fail"], True
    provider = await SqliteProvider.open(path)
    try:
        client = Client(provider)
        async with Runtime(provider, registry, FAST):
            await client.start_orchestration("big-greeting", "Greeting", BIG)
            await client.start_orchestration("big-failure", "Flaky", BIG)
            await client.start_orchestration("big-waiter", "Waiter", BIG)
            await client.wait_for_orchestration("big-greeting", timeout=30)
            await client.wait_for_orchestration("big-failure", timeout=30)
            await wait_status(client, "big-waiter", OrchestrationStatus.RUNNING, timeout=30)
    finally:
        await provider.close()
        FLAKY["fail"] = failing


@pytest.fixture(scope="module")
def big_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    db = tmp_path_factory.mktemp("big") / "perdure.db"
    # In a thread of its own: the browser's event loop may already run in this one.
    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, seed_big(db)).result(120)
    process, url = start_dashboard(db)
    try:
        yield url
    finally:
        stop_process(process)


def test_the_list_sends_summaries_not_whole_values(big_site: str) -> None:
    response = httpx.get(big_site + "api/instances")
    assert response.status_code == 200
    assert len(response.content) < 8_000  # three instances holding 1 MiB each (6 MiB before)
    instances = {i["instance_id"]: i for i in response.json()["instances"]}
    assert set(instances) == {"big-greeting", "big-failure", "big-waiter"}
    greeting = instances["big-greeting"]
    assert not {"input", "output", "error", "custom_status"} & set(greeting)
    assert greeting["input_preview"] == {"text": '"' + "x" * 199, "truncated": True, "length": len(BIG) + 2}
    assert greeting["output_preview"]["truncated"] and greeting["output_preview"]["text"].startswith('"Hello, xxx')
    assert greeting["custom_status_preview"] == {"text": '{"step": "greeting"}', "truncated": False, "length": 20}
    error = instances["big-failure"]["error_preview"]
    assert error["type"] == "perdure.ActivityFailedError" and error["truncated"] and len(error["text"]) == 200
    assert instances["big-waiter"]["error_preview"] is None and instances["big-waiter"]["output_preview"] is None


def test_an_instance_sends_each_value_cut_at_64_kib(big_site: str) -> None:
    response = httpx.get(big_site + "api/instance", params={"id": "big-failure"})
    assert response.status_code == 200
    assert len(response.content) < 300_000  # input, error message and traceback cut; history fields cut
    data = response.json()
    assert data["values"]["input"] == {"text": '"' + "x" * 65_535, "truncated": True, "length": len(BIG) + 2}
    assert data["values"]["output"] is None
    error = data["error"]
    assert error["message"]["truncated"] and len(error["message"]["text"]) == 65_536
    assert error["message"]["text"].startswith("activity 'Charge' failed: RuntimeError: card declined for xxx")
    failed = next(e for e in data["history"] if e["type"] == "ActivityFailed")["details"]["error"]
    assert failed["message"].endswith(f"… ({len('card declined for ') + len(BIG):,} characters)")
    started = data["history"][0]["details"]
    assert started["input"] == "x" * 1_000 + f"… ({len(BIG):,} characters)"


def test_a_download_gives_the_whole_value(big_site: str) -> None:
    response = httpx.get(big_site + "api/download", params={"id": "big-failure", "field": "error"})
    assert response.status_code == 200
    assert response.headers["content-disposition"].startswith("attachment;")
    assert response.headers["content-type"] == "application/json"
    error = response.json()
    assert error["type"] == "perdure.ActivityFailedError" and error["message"].endswith(BIG)
    assert "Traceback (most recent call last)" in error["traceback"]
    response = httpx.get(big_site + "api/download", params={"id": "big-waiter", "field": "input"})
    assert response.json() == BIG
    assert httpx.get(big_site + "api/download", params={"id": "big-waiter", "field": "output"}).json() is None


@needs_browser
def test_the_page_shows_64_kib_of_a_value_and_downloads_the_whole(big_site: str, page: Page) -> None:
    page.goto(big_site + "?prefix=big-")
    expect(rows(page)).to_have_count(3)
    failure = page.locator('#rows tr[data-instance-id="big-failure"]')
    expect(failure.locator("td.error-preview")).to_contain_text("perdure.ActivityFailedError: activity 'Charge'")
    page.goto(big_site + "instance?id=big-greeting")
    expect(page.locator("#input-note")).to_contain_text(f"Showing 65,536 of {len(BIG) + 2:,} characters.")
    assert len(page.locator("#input").text_content() or "") == 65_537  # and an ellipsis
    expect(page.locator("#custom-status-note")).not_to_contain_text("Showing")
    with page.expect_download() as info:
        page.locator("#input-note a").click()
    download = info.value
    assert download.suggested_filename == "big-greeting-input.json"
    assert json.loads(Path(download.path()).read_text(encoding="utf-8")) == BIG
