"""Upstream's integration logs on an event's page, against the emulator as a real process, in Chromium.

The emulator (``webhook-receiver emulate``, the local stand-in for the API)
delivers an event to the app on a real port; each attempt fails (500) and is
retried; its integration logs hold each attempt's status code, error detail
and processing time, which the page shows. Then the emulator is stopped: the
page says upstream did not answer, in a short escaped notice, never a 500
and never the credentials.
"""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import time
from typing import Any, Callable, Iterator
from urllib.parse import quote

import pytest
from flask import Flask

from webhook_receiver.inbox.upstream import UPSTREAM_LOGS_KEY, read_upstream_logs
from webhook_receiver.upstream import MoltinClient, show_upstream_logs

from .inbox_app import SECRET, USER_HEADER, XSS, make_inbox_app
from .test_inbox_browser import browser, open_page  # noqa: F401 - the fixture

EMULATOR_SECRET = "emulator-secret-<b>never-shown</b>"


@pytest.fixture
def emulator() -> Iterator[tuple[subprocess.Popen[str], dict[str, str]]]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "webhook_receiver.local.console",
            "emulate",
            "--port",
            "0",
            "--retry-delays",
            "0.2,0.2",
            "--client-secret",
            EMULATOR_SECRET,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = ""
        for _ in range(5):
            line = proc.stdout.readline().strip()
            if line.startswith("export "):
                break
        assert line.startswith("export "), line
        yield proc, dict(word.split("=", 1) for word in shlex.split(line)[1:])
    finally:
        proc.terminate()
        proc.communicate(timeout=10)


def test_the_event_page_shows_upstream_s_logs_and_a_notice_when_upstream_is_down(
    browser: Any,  # noqa: F811 - the fixture
    emulator: tuple[subprocess.Popen[str], dict[str, str]],
    tmp_path: Any,
    live_server: Callable[[Flask], str],
) -> None:
    proc, credentials = emulator
    app, _ = make_inbox_app(str(tmp_path))
    app.config.update(credentials)
    assert show_upstream_logs(app)
    base = live_server(app)
    client = MoltinClient(
        credentials["EPCC_CLIENT_ID"], credentials["EPCC_CLIENT_SECRET"], base_url=credentials["EPCC_API_BASE_URL"]
    )
    client.create_integration(name="shop", url=f"{base}/webhooks/moltin", secret_key=SECRET, observes=["order.paid"])
    fired = client.request("POST", "/emulator/fire", json={"trigger": "order.paid", "data": {"always_fail": XSS}})
    event_id = fired["data"]["event_id"]
    deadline = time.monotonic() + 30
    while len(client.integration_logs()) < 3 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert len(client.integration_logs()) == 3, "the first attempt and two retries"

    watched = open_page(browser, base)
    page = watched.page
    answer = page.goto(f"/webhooks/inbox/event?id={quote(event_id)}")
    assert answer is not None and answer.status == 200
    rows = page.locator("#upstream-logs tbody tr")
    assert rows.count() == 3
    for n in range(3):
        cells = rows.nth(n).locator("td").all_inner_texts()
        assert cells[1] == str(n + 1), cells  # the attempt, oldest first
        assert cells[2] == "500" and cells[3] == "the endpoint answered 500", cells
        assert re.fullmatch(r"\d+ ms", cells[4]), cells
    # our own record agrees: three webhook attempts, the later two logged as they came
    attempts = page.locator("#attempts tbody tr")
    assert attempts.count() == 3
    assert "500 failed" in attempts.nth(2).inner_text()
    html = page.content()
    assert credentials["EPCC_CLIENT_SECRET"] not in html and "never-shown" not in html
    watched.clean()

    proc.terminate()
    proc.communicate(timeout=10)
    answer = page.goto(f"/webhooks/inbox/event?id={quote(event_id)}")
    assert answer is not None and answer.status == 200, "upstream down is never a 500"
    notice = page.locator("#upstream-notice").inner_text()
    assert notice.startswith("upstream's logs could not be read (MoltinConnectionError)"), notice
    html = page.content()
    assert "never-shown" not in html and credentials["EPCC_API_BASE_URL"] not in html
    assert page.locator("#attempts tbody tr").count() == 3, "the rest of the page is there"
    watched.clean()


def test_without_credentials_there_is_no_upstream_section_and_with_them_unwired_a_hint(tmp_path: Any) -> None:
    app, _ = make_inbox_app(str(tmp_path))
    assert show_upstream_logs(app) is False and UPSTREAM_LOGS_KEY not in app.extensions
    with app.app_context():
        assert read_upstream_logs(app, "e").state == "off"
    app.config.update(EPCC_CLIENT_ID="id", EPCC_CLIENT_SECRET="secret")
    assert read_upstream_logs(app, "e").state == "unwired"
    page = app.test_client().get("/webhooks/inbox/event?id=nope", headers={USER_HEADER: "ops"})
    assert page.status_code == 404


def test_a_provider_that_raises_becomes_a_notice_with_its_type_only(tmp_path: Any) -> None:
    from .inbox_app import send

    app, clock = make_inbox_app(str(tmp_path))
    send(app, clock, "order.paid", "evt-1")

    def broken(event_id: str) -> list[Any]:
        raise RuntimeError(f"https://user:{EMULATOR_SECRET}@upstream.example/ said no")

    app.extensions[UPSTREAM_LOGS_KEY] = broken
    page = app.test_client().get("/webhooks/inbox/event?id=evt-1", headers={USER_HEADER: "ops"})
    assert page.status_code == 200
    assert "upstream&#39;s logs could not be read (RuntimeError)" in page.text
    assert "never-shown" not in page.text and "upstream.example" not in page.text
