"""Review of issue 21: what the inbox's access check answers decides who gets in, and who the log names."""

from __future__ import annotations

import logging
import re
from typing import Any

import pytest
from flask import Flask, Request, redirect

from webhook_receiver.stores.base import EventStatus

from .inbox_app import USER_HEADER, make_inbox_app, seed

INBOX = "/webhooks/inbox"


def refuse_with_a_redirect(request: Request) -> Any:
    """A check that sends a refused user to the login page, as a view would: its answer is a response."""
    if request.headers.get(USER_HEADER) == "ops":
        return True
    return redirect("/login")


@pytest.fixture
def guarded(tmp_path: Any) -> Flask:
    app, clock = make_inbox_app(str(tmp_path), auth=refuse_with_a_redirect)
    seed(app, clock, count=8)
    return app


def test_a_check_that_answers_a_redirect_refuses_with_it_and_shows_no_data(guarded: Flask) -> None:
    client = guarded.test_client()
    for path in ["/", "/event?id=fail-0003-8c1f2a", "/chart.svg", "/bulk?status=failed", "/?fragment=rows"]:
        answer = client.get(INBOX + path)
        assert answer.status_code == 302 and answer.headers["Location"] == "/login", path
        assert "fail-0003" not in answer.text and "order." not in answer.text, path
    answer = client.post(f"{INBOX}/actions/resolve", data={"event_id": "fail-0003-8c1f2a"})
    assert answer.status_code == 302
    store = guarded.extensions["webhook_receiver"]["moltin"].store
    assert store.get("fail-0003-8c1f2a").status is EventStatus.FAILED
    assert client.get(f"{INBOX}/", headers={USER_HEADER: "ops"}).status_code == 200


def allow_everyone_unnamed(request: Request) -> bool:
    """A check of something other than the HTTP user (a network, a cookie): it names nobody."""
    return True


def test_an_unverified_authorization_header_does_not_name_who_acted(
    tmp_path: Any, caplog: pytest.LogCaptureFixture
) -> None:
    app, clock = make_inbox_app(str(tmp_path), auth=allow_everyone_unnamed)
    seed(app, clock, count=8)
    client = app.test_client()
    page = client.get(f"{INBOX}/")
    token = re.search(r'data-csrf="([^"]+)"', page.text).group(1)  # type: ignore[union-attr]
    forged = {"Authorization": "Basic YWRtaW46eA=="}  # admin:x, which nothing checked
    with caplog.at_level(logging.INFO, "webhook_receiver"):
        answer = client.post(
            f"{INBOX}/actions/replay", data={"csrf_token": token, "event_id": "fail-0003-8c1f2a"}, headers=forged
        )
    assert answer.status_code == 303
    assert "inbox: admin replayed" not in caplog.text
    store = app.extensions["webhook_receiver"]["moltin"].store
    by = [attempt.by for attempt in store.deliveries("fail-0003-8c1f2a")]
    assert by and by[-1] != "admin", by
    assert "admin" in by[-1] and "not checked" in by[-1], by  # the claim is kept, marked for what it is
