"""Review of issue 21: a damaged entry of an event's delivery log never takes its page (or ``show``) down."""

from __future__ import annotations

import os
import sqlite3
from typing import Any

import pytest

from webhook_receiver.stores.base import load_delivery

from .inbox_app import USER_HEADER, make_inbox_app, send

INBOX = "/webhooks/inbox"


@pytest.mark.parametrize("entry", ["not json", "[1.0, 2]", '{"at": 1}', '[1.0, "webhook", "two", 200, "duplicate"]'])
def test_the_event_page_shows_a_damaged_entry_as_such(tmp_path: Any, entry: str) -> None:
    app, clock = make_inbox_app(str(tmp_path))
    send(app, clock, "order.paid", "fail-logged")
    conn = sqlite3.connect(os.path.join(str(tmp_path), "events.db"))
    with conn:  # another version, or a hand, wrote it
        conn.execute(
            "INSERT INTO webhook_receiver_deliveries (receiver, event_id, entry) VALUES ('moltin', 'fail-logged', ?)",
            (entry,),
        )
    conn.close()
    page = app.test_client().get(f"{INBOX}/event", query_string={"id": "fail-logged"}, headers={USER_HEADER: "ops"})
    assert page.status_code == 200
    assert "a damaged entry of the delivery log" in page.text
    assert "Replay the handlers" in page.text  # the page is there to act on


def test_load_delivery_reads_its_own_entries_unchanged() -> None:
    assert load_delivery('[1.5, "replay", null, null, "processed", "ops"]').by == "ops"
    assert load_delivery('[1.5, "webhook", 2, 200, "duplicate"]').code == 200
