"""The dashboard's schedules page: a real server process, headless Chromium, a worker in this process."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.acceptance.dashboard_support import (
    CHROMIUM,
    CHROMIUM_ARGS,
    IMAGES,
    BackgroundWorker,
    csrf_of,
    needs_browser,
    start_dashboard,
    stop_process,
)
from tests.acceptance.operator_support import create_store

from perdure import Client


@pytest.fixture(scope="module")
def schedule_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, BackgroundWorker]]:
    """A store with a worker and two schedules, and the dashboard over it."""
    db = tmp_path_factory.mktemp("dashboard-schedules") / "perdure.db"
    create_store(db)
    worker = BackgroundWorker(db)
    worker.start()

    async def create(client: Client) -> None:
        await client.create_schedule("hourly-greeting", "Greeting", "ops", every=3600)
        await client.create_schedule("nightly", "Greeting", "night", cron="0 2 * * *", timezone="Europe/Paris")

    worker.call(create)
    process, url = start_dashboard(db)
    try:
        yield url, worker
    finally:
        stop_process(process)
        worker.stop()


def test_the_api_lists_schedules_and_guards_the_commands(schedule_site: tuple[str, BackgroundWorker]) -> None:
    url, _ = schedule_site
    with httpx.Client() as browser_like:
        listed = browser_like.get(url + "api/schedules").json()["schedules"]
        assert [s["schedule_id"] for s in listed] == ["hourly-greeting", "nightly"]
        assert listed[1]["cron"] == "0 2 * * *" and listed[1]["timezone"] == "Europe/Paris"
        token = csrf_of(browser_like.get(url + "schedules").text)
        good = {"Origin": url.rstrip("/"), "X-Perdure-CSRF": token}
        target = url + "api/schedule/pause?id=ghost"
        assert browser_like.post(target, json={}).status_code == 403  # no CSRF token, no Origin
        missing = browser_like.post(target, headers=good, json={})
        assert missing.status_code == 404 and "no schedule with id 'ghost'" in missing.json()["error"]
        assert browser_like.post(url + "api/schedule/explode?id=nightly", headers=good, json={}).status_code == 404
        bad_id = browser_like.post(url + "api/schedule/trigger?id=", headers=good, json={})
        assert bad_id.status_code == 400
        bad_note = browser_like.post(url + "api/schedule/pause?id=nightly", headers=good, json={"note": 5})
        assert bad_note.status_code == 400


@needs_browser
def test_pause_trigger_resume_and_delete_from_the_page(schedule_site: tuple[str, BackgroundWorker]) -> None:
    from playwright.sync_api import expect, sync_playwright

    url, worker = schedule_site
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 600})
        page.set_default_timeout(10_000)
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.on("dialog", lambda dialog: dialog.accept("database upgrade"))
        page.goto(url + "schedules")
        row = page.locator('#rows tr[data-schedule-id="hourly-greeting"]')
        expect(row).to_contain_text("every 1h")
        expect(page.locator('#rows tr[data-schedule-id="nightly"]')).to_contain_text("cron 0 2 * * * (Europe/Paris)")

        row.locator('button[data-command="pause"]').click()
        expect(row).to_have_attribute("data-state", "paused")
        expect(row).to_contain_text("database upgrade")
        row.locator('button[data-command="trigger"]').click()
        expect(row).to_contain_text("hourly-greeting@")  # the triggered run's link
        run = _last_run(worker)
        assert worker.call(lambda c: c.wait_for_orchestration(run, timeout=15)).output == "Hello, ops!"
        row.locator('button[data-command="resume"]').click()
        expect(row).to_have_attribute("data-state", "active")
        IMAGES.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(IMAGES / "dashboard-schedules.png"), full_page=True)
        row.locator('button[data-command="delete"]').click()
        expect(row).to_have_count(0)
        assert [s.schedule_id for s in worker.call(lambda c: c.list_schedules())] == ["nightly"]
        browser.close()
    assert errors == [], f"script errors in the page: {errors}"


def _last_run(worker: BackgroundWorker) -> str:
    async def run_id(client: Client) -> Any:
        for _ in range(200):
            info = await client.get_schedule("hourly-greeting")
            if info.last_run_id is not None:
                return info.last_run_id
            await asyncio.sleep(0.05)
        raise AssertionError("the triggered run never started")

    found: str = worker.call(run_id)
    return found
