"""Review of issue 21: the live list's 304 never keeps rows that a relative time filter has since left out."""

from __future__ import annotations

import time
from typing import Any

from .inbox_app import USER_HEADER, make_inbox_app, send

INBOX = "/webhooks/inbox"
OPS = {USER_HEADER: "ops"}


def test_an_event_leaving_a_relative_since_leaves_the_live_rows(tmp_path: Any) -> None:
    app, clock = make_inbox_app(str(tmp_path))  # SQLite: a store with a change marker
    send(app, clock, "order.paid", "evt-near-the-edge", ago=3597)  # 3 s inside: seen first, loaded or not
    client = app.test_client()
    url = f"{INBOX}/?fragment=rows&since=1h"
    first = client.get(url, headers=OPS)
    assert first.status_code == 200 and 'data-id="evt-near-the-edge"' in first.text and first.headers["ETag"]
    time.sleep(3.5)  # nothing is written; the event is now older than 1h
    again = client.get(url, headers={**OPS, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 200, "the rows changed with the clock: a 304 would keep a row the filter leaves out"
    assert 'data-id="evt-near-the-edge"' not in again.text
