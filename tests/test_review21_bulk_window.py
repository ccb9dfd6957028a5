"""Review of issue 21: a bulk replay runs what its preview counted, not what arrived or moved in between."""

from __future__ import annotations

import math
import re
import time
from typing import Any

from webhook_receiver.stores.base import EventStatus

from .inbox_app import USER_HEADER, make_inbox_app, send

INBOX = "/webhooks/inbox"
OPS = {USER_HEADER: "ops"}


def preview_form(client: Any, **query: str) -> tuple[str, dict[str, str]]:
    page = client.get(f"{INBOX}/bulk", query_string=query, headers=OPS).text
    text = re.search(r'<p class="preview" id="preview">([^<]+)</p>', page).group(1)  # type: ignore[union-attr]
    fields = dict(re.findall(r'<input type="hidden" name="([a-z_]+)" value="([^"]+)">', page))
    return text, fields


def test_an_event_arriving_in_the_second_after_the_preview_is_not_replayed_unseen(tmp_path: Any) -> None:
    app, clock = make_inbox_app(str(tmp_path))
    send(app, clock, "order.paid", "fail-seen", ago=60)
    client = app.test_client()
    store = app.extensions["webhook_receiver"]["moltin"].store
    for _ in range(5):  # the preview early in a second, the event later in the same second
        time.sleep(1.02 - time.time() % 1)
        previewed_at = time.time()
        text, fields = preview_form(client, status="failed")
        event_id = f"fail-after-{int(previewed_at)}"
        send(app, clock, "order.paid", event_id)
        if store.get(event_id).received_at < math.ceil(previewed_at):
            break
    else:
        raise AssertionError("never got an event into the preview's second: the machine is too slow")
    assert text.startswith("This will replay 1 failed event"), text
    done = client.post(f"{INBOX}/actions/replay-bulk", data=fields, headers=OPS).text
    assert "Replayed 1 failed event" in done, done
    assert store.get("fail-seen").status is EventStatus.PROCESSED
    assert store.get(event_id).status is EventStatus.FAILED, "arrived after the preview: not in it, not replayed"


def test_a_relative_since_is_the_preview_s_not_the_confirmation_s(tmp_path: Any) -> None:
    app, clock = make_inbox_app(str(tmp_path))
    send(app, clock, "order.paid", "fail-near-the-edge", ago=3597)  # inside "1h" at the preview, not 3.5 s later
    client = app.test_client()
    text, fields = preview_form(client, status="failed", since="1h")
    assert text.startswith("This will replay 1 failed event received since"), text
    time.sleep(3.5)  # the operator reads the preview
    done = client.post(f"{INBOX}/actions/replay-bulk", data=fields, headers=OPS).text
    assert "Replayed 1 failed event" in done, done
    store = app.extensions["webhook_receiver"]["moltin"].store
    assert store.get("fail-near-the-edge").status is EventStatus.PROCESSED


def test_a_relative_until_is_the_preview_s_too(tmp_path: Any) -> None:
    app, clock = make_inbox_app(str(tmp_path))
    send(app, clock, "order.paid", "fail-old", ago=4000)
    send(app, clock, "order.paid", "fail-young", ago=1797)  # after "until=30m" at the preview, before it 3.5 s later
    client = app.test_client()
    text, fields = preview_form(client, status="failed", until="30m")
    assert text.startswith("This will replay 1 failed event"), text
    time.sleep(3.5)
    done = client.post(f"{INBOX}/actions/replay-bulk", data=fields, headers=OPS).text
    assert "Replayed 1 failed event" in done, done
    store = app.extensions["webhook_receiver"]["moltin"].store
    assert store.get("fail-young").status is EventStatus.FAILED, "not in the preview: not replayed"


def test_an_until_in_the_future_ends_at_the_preview(tmp_path: Any) -> None:
    app, clock = make_inbox_app(str(tmp_path))
    send(app, clock, "order.paid", "fail-seen", ago=60)
    client = app.test_client()
    text, fields = preview_form(client, status="failed", until="2099-01-01")
    assert text.startswith("This will replay 1 failed event"), text
    send(app, clock, "order.paid", "fail-after-the-preview")
    done = client.post(f"{INBOX}/actions/replay-bulk", data=fields, headers=OPS).text
    assert "Replayed 1 failed event" in done, done
    store = app.extensions["webhook_receiver"]["moltin"].store
    assert store.get("fail-after-the-preview").status is EventStatus.FAILED, "not in the preview: not replayed"
