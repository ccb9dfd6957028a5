"""Review of issue 21: a password in the integration's URL (echoed in every body upstream sends) never reaches the page.

Upstream echoes the integration's ``configuration`` in each delivery: its
``secret_key`` is redacted before the event is stored, but its ``url`` is
kept; an integration that authenticates with basic auth carries the password
in that URL (``https://user:password@shop.example/webhooks/moltin``).
"""

from __future__ import annotations

from typing import Any

from webhook_receiver.cli import webhooks_cli
from webhook_receiver.testing import make_event
from webhook_receiver.wire import signed

from .inbox_app import SECRET, USER_HEADER, make_inbox_app

INBOX = "/webhooks/inbox"
PASSWORD = "hook-pw-4f9e2a7c"


def test_the_event_page_hides_the_password_of_the_echoed_url(tmp_path: Any) -> None:
    app, _ = make_inbox_app(str(tmp_path))
    body = make_event("order.paid", {"type": "order", "id": "1", "note": "kept as sent"}, event_id="evt-basic-auth")
    data, headers = signed(body, secret=SECRET, url=f"https://hook-user:{PASSWORD}@shop.example/webhooks/moltin")
    assert app.test_client().post("/webhooks/moltin", data=data, headers=headers).status_code == 200
    page = app.test_client().get(f"{INBOX}/event", query_string={"id": "evt-basic-auth"}, headers={USER_HEADER: "ops"})
    assert page.status_code == 200
    assert PASSWORD not in page.text
    assert "https://hook-user:***@shop.example/webhooks/moltin" in page.text  # the rest of it is shown
    assert "kept as sent" in page.text


def test_flask_webhooks_show_hides_it_too(tmp_path: Any) -> None:
    app, _ = make_inbox_app(str(tmp_path))
    body = make_event("order.paid", {"type": "order", "id": "1"}, event_id="evt-basic-auth")
    data, headers = signed(body, secret=SECRET, url=f"https://hook-user:{PASSWORD}@shop.example/webhooks/moltin")
    assert app.test_client().post("/webhooks/moltin", data=data, headers=headers).status_code == 200
    for args in (["show", "evt-basic-auth"], ["show", "evt-basic-auth", "--json"]):
        result = app.test_cli_runner().invoke(webhooks_cli, args)
        assert result.exit_code == 0, result.output
        assert PASSWORD not in result.output and "hook-user:***@shop.example" in result.output
