"""Fixtures of the acceptance tests: headless Chromium for the dashboard's browser tests."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from tests.acceptance.dashboard_support import CHROMIUM, CHROMIUM_ARGS, HAVE_PLAYWRIGHT

if HAVE_PLAYWRIGHT:  # else the browser tests are skipped (needs_browser)
    from playwright.sync_api import sync_playwright


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any) -> Iterator[Any]:
    context = browser.new_context(viewport={"width": 1280, "height": 860})
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    errors: list[str] = []
    opened.on("pageerror", lambda error: errors.append(str(error)))
    yield opened
    context.close()
    assert errors == [], f"script errors in the page: {errors}"
