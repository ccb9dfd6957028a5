"""The inbox page in a real browser: Debian's Chromium driven by Playwright (see tests/browser.py)."""

from __future__ import annotations

import json
from typing import Any, Callable, Iterator

import pytest
from flask import Flask

from webhook_receiver.testing import deliver, make_event

from .browser import require_chromium
from .inbox_app import SECRET, USER_HEADER, XSS, make_inbox_app, seed, seed_hostile

INBOX = "/webhooks/inbox/"


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    executable = require_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=executable, args=["--no-sandbox"])
        yield launched
        launched.close()


class Watched:
    """A page, and what it did that it should not: dialogs, console errors, script errors, requests elsewhere."""

    def __init__(self, page: Any, base: str) -> None:
        self.page = page
        self.dialogs: list[str] = []
        self.errors: list[str] = []
        self.elsewhere: list[str] = []
        page.on("dialog", lambda dialog: (self.dialogs.append(dialog.message), dialog.dismiss()))
        page.on("console", lambda message: message.type == "error" and self.errors.append(message.text))
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on("request", lambda r: r.url.startswith(base) or self.elsewhere.append(r.url))

    def clean(self) -> None:
        assert self.dialogs == [] and self.errors == [] and self.elsewhere == []


@pytest.fixture
def served(tmp_path: Any, live_server: Callable[[Flask], str]) -> tuple[Flask, Any, str]:
    app, clock = make_inbox_app(str(tmp_path))
    seed(app, clock, count=21)
    return app, clock, live_server(app)


def open_page(browser: Any, base: str, user: str = "ops", width: int = 1280) -> Watched:
    context = browser.new_context(
        base_url=base, extra_http_headers={USER_HEADER: user}, viewport={"width": width, "height": 900}
    )
    return Watched(context.new_page(), base)


def test_filter_to_failed_open_an_event_replay_it_and_see_it_processed_without_a_reload(
    browser: Any, served: tuple[Flask, Any, str]
) -> None:
    app, _, base = served
    watched = open_page(browser, base)
    page = watched.page
    page.goto(INBOX)
    assert page.locator("#rows tr").count() == 22
    page.select_option("#f-status", "failed")
    page.click("#apply-filters")
    page.wait_for_url("**status=failed**")
    assert sorted(page.locator("#rows tr").evaluate_all("rows => rows.map(r => r.dataset.id)")) == [
        "evt-always-failing",
        "fail-0003-8c1f2a",
        "fail-0010-8c1f2a",
        "fail-0017-8c1f2a",
    ]
    page.click("text=fail-0010-8c1f2a")
    page.wait_for_url("**/event?id=fail-0010-8c1f2a")
    assert page.text_content("#status") == "failed"
    assert "ConnectionError: warehouse API timed out" in page.text_content(".handlers")
    page.evaluate("window.notReloaded = true")
    page.click("#replay")
    page.wait_for_function("() => document.getElementById('status').textContent === 'processed'")
    assert page.evaluate("window.notReloaded") is True
    assert "every handler has now succeeded" in page.text_content("#notice")
    assert app.extensions["webhook_receiver"]["moltin"].store.get("fail-0010-8c1f2a").status.value == "processed"
    watched.clean()


def test_the_list_shows_a_new_delivery_without_a_reload(browser: Any, served: tuple[Flask, Any, str]) -> None:
    _, _, base = served
    watched = open_page(browser, base)
    page = watched.page
    page.goto(INBOX + "?trigger=order.*")
    page.evaluate("window.notReloaded = true")
    assert page.locator("tr[data-id='evt-arrives-later']").count() == 0
    body = make_event("order.paid", {"type": "order", "id": "later"}, event_id="evt-arrives-later")
    assert deliver(f"{base}/webhooks/moltin", body, secret=SECRET).status_code == 200
    page.wait_for_selector("tr[data-id='evt-arrives-later']", timeout=15_000)
    assert page.evaluate("window.notReloaded") is True
    watched.clean()


def test_bulk_replay_shows_a_preview_then_a_summary(browser: Any, served: tuple[Flask, Any, str]) -> None:
    app, _, base = served
    watched = open_page(browser, base)
    page = watched.page
    page.goto(INBOX + "?status=failed")
    page.click("#bulk-replay")
    assert page.text_content("#preview").startswith("This will replay 4 failed events received before ")
    page.click("#confirm-bulk")
    page.wait_for_selector("#bulk-summary")
    summary = page.text_content("#bulk-summary")
    assert summary.startswith("Replayed 4 failed events") and summary.endswith(": 1 failed, 3 processed.")
    assert page.locator("text=evt-always-failing").count() == 1  # still failing, listed
    statuses = {e.id: e.status.value for e in app.extensions["webhook_receiver"]["moltin"].store.events()}
    assert [i for i, status in statuses.items() if status == "failed"] == ["evt-always-failing"]
    watched.clean()


def test_hostile_text_shows_literally_and_runs_nothing(browser: Any, served: tuple[Flask, Any, str]) -> None:
    app, clock, base = served
    event_id = seed_hostile(app, clock)
    watched = open_page(browser, base)
    page = watched.page
    page.goto(INBOX)
    row = page.locator("#rows tr").first
    assert row.get_attribute("data-id") == event_id
    assert row.locator("td.id a").text_content() == event_id
    row.locator("td.id a").click()
    page.wait_for_url("**/event?id=**")
    assert page.text_content("h1 .id") == event_id
    assert page.text_content(".handlers .error-text >> nth=1") == f"ValueError: {XSS}"
    assert json.dumps(XSS) in page.locator("details.part", has_text="payload").last.text_content()
    assert page.locator("img").count() == 0 and page.locator("script").count() == 1
    page.click("#replay")  # the answer and the refreshed summary are inserted too
    page.wait_for_function("() => document.getElementById('notice').textContent.length > 0")
    assert page.locator("img").count() == 0 and page.locator("script").count() == 1
    page.goto(INBOX + "bulk?id=xss-")
    assert page.locator(".ids a").text_content() == event_id
    watched.clean()


def test_a_refused_user_gets_403_and_sees_no_event(browser: Any, served: tuple[Flask, Any, str]) -> None:
    _, _, base = served
    watched = open_page(browser, base, user="mallory")
    answer = watched.page.goto(INBOX)
    assert answer is not None and answer.status == 403
    assert "fail-0010" not in watched.page.content() and "order.paid" not in watched.page.content()


@pytest.mark.parametrize("width", [375, 1920])
def test_the_pages_fit_the_screen_and_the_keyboard_reaches_everything(
    browser: Any, served: tuple[Flask, Any, str], width: int
) -> None:
    _, _, base = served
    watched = open_page(browser, base, width=width)
    page = watched.page
    for path in [INBOX, INBOX + "event?id=fail-0010-8c1f2a"]:
        page.goto(path)
        assert page.evaluate("document.documentElement.scrollWidth") <= width, path
    page.goto(INBOX)
    page.keyboard.press("Tab")
    assert page.evaluate("document.activeElement.className") == "skip"
    for _ in range(40):  # the first row's link is reached by Tab alone
        page.keyboard.press("Tab")
        if page.evaluate("document.activeElement.closest('td.id') !== null"):
            break
    else:
        pytest.fail("Tab never reached the events' links")
    focused = page.evaluate("document.activeElement.getAttribute('href')")
    page.wait_for_function("() => document.getElementById('live-state').textContent.startsWith('Live: updated')")
    assert page.evaluate("document.activeElement.getAttribute('href')") == focused  # live rows keep the focus
    page.keyboard.press("Enter")
    page.wait_for_url("**/event?id=**")
    watched.clean()
