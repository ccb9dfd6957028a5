"""Each delivery attempt of an event on its page: the first from the event's row, every later one logged.

The first delivery writes nothing more (the hot path keeps its writes); a
redelivery (answered 500, 200 or duplicate), a queue's redelivery and a
replay are each logged, per receiver, and shown escaped.
"""

from __future__ import annotations

import html as html_lib
import json
import re
import sqlite3
import threading
from typing import Any

import pytest
from flask import Flask

from webhook_receiver import WebhookReceiver
from webhook_receiver.cli.operations import webhooks_cli
from webhook_receiver.stores.base import DeliveryAttempt, EventStatus, EventStore, StoredEvent
from webhook_receiver.stores.memory import MemoryStore
from webhook_receiver.testing import deliver, make_event
from webhook_receiver.testing.store_contract import contract_event

from .conftest import new_app
from .inbox_app import SECRET, USER_HEADER, XSS, make_inbox_app, send, store_of_kind
from .test_inbox import INBOX, OPS, token_of


def attempts_table(page: str) -> list[list[str]]:
    """The cells of the page's delivery attempts, as text."""
    table = page.split('id="attempts"', 1)[1].split("</table>", 1)[0]
    body = table.split("<tbody>", 1)[1]
    rows = re.findall(r"<tr>(.*?)</tr>", body, re.S)
    return [
        [
            html_lib.unescape(re.sub(r"<[^>]+>", "", cell)).strip()
            for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)
        ]
        for row in rows
    ]


def redeliver(app: Flask, event_id: str, attempt: int) -> int:
    body = make_event("order.paid", {"type": "order", "id": "o-1"}, event_id=event_id, attempt=attempt)
    return int(deliver(app.test_client(), body, secret=SECRET).status_code)


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis", "postgresql", "mariadb"])
def test_every_attempt_is_on_the_page_in_order_with_our_answer(
    kind: str, tmp_path: Any, request: pytest.FixtureRequest
) -> None:

    store = store_of_kind(kind, request)
    app, clock = make_inbox_app(str(tmp_path), store=store)
    kept = app.extensions["webhook_receiver"]["moltin"].store
    assert send(app, clock, "order.paid", "fail-1") == 500, "shop.ship fails the first run"
    assert send(app, clock, "order.paid", "evt-2") == 200
    assert kept.deliveries("fail-1") == [] and kept.deliveries("evt-2") == [], "a first delivery logs nothing"
    assert redeliver(app, "fail-1", 2) == 200  # upstream's retry: shop.ship succeeds now
    assert redeliver(app, "fail-1", 3) == 200  # a duplicate
    client = app.test_client()
    token = token_of(client)
    hostile_user = f"ops{XSS}"
    answer = client.post(
        f"{INBOX}/actions/replay",
        data={"csrf_token": token, "event_id": "fail-1"},
        headers={USER_HEADER: hostile_user, "Accept": "application/json"},
    )
    assert answer.json["state"] == "duplicate"
    page = client.get(f"{INBOX}/event", query_string={"id": "fail-1"}, headers=OPS).text
    rows = attempts_table(page)
    assert [row[1:] for row in rows] == [
        ["webhook", "1", "500 failed (first delivery: from the event's outcome)"],
        ["webhook", "2", "200 processed"],
        ["webhook", "3", "200 duplicate"],
        [f"replay by {hostile_user}", "not given", "duplicate"],
    ]
    assert XSS not in page, "the replayer's name is escaped"
    assert [row[1:] for row in attempts_table(client.get(f"{INBOX}/event?id=evt-2", headers=OPS).text)] == [
        ["webhook", "1", "200 processed (first delivery: from the event's outcome)"]
    ]
    # the summary fragment (refreshed after an action) carries them too
    fragment = client.get(f"{INBOX}/event", query_string={"id": "fail-1", "fragment": "summary"}, headers=OPS).text
    assert len(attempts_table(fragment)) == 4


def test_a_first_delivery_writes_nothing_to_the_delivery_log(tmp_path: Any) -> None:
    app, clock = make_inbox_app(str(tmp_path))
    for n in range(20):
        assert send(app, clock, "product.updated", f"evt-{n:02d}") == 200
    conn = sqlite3.connect(str(tmp_path / "events.db"))
    try:
        assert conn.execute("SELECT count(*) FROM webhook_receiver_deliveries").fetchone()[0] == 0
        assert redeliver(app, "evt-03", 2) == 200
        assert conn.execute("SELECT count(*) FROM webhook_receiver_deliveries").fetchone()[0] == 1
    finally:
        conn.close()


def test_background_dispatch_logs_a_redelivery_as_accepted_or_duplicate(tmp_path: Any) -> None:
    store = MemoryStore()
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=store, WEBHOOK_RECEIVER_DISPATCH="thread")
    receiver = WebhookReceiver()
    receiver.on("order.paid", name="never-ok")(lambda event: 1 / 0)
    receiver.init_app(app)
    try:
        assert redeliver(app, "bg-1", 1) == 202
        assert store.deliveries("bg-1") == []
        assert redeliver(app, "bg-1", 2) == 202
        logged = store.deliveries("bg-1")
        assert [(a.via, a.attempt, a.code, a.answer) for a in logged] == [("webhook", 2, 202, "accepted")]
    finally:
        app.extensions["webhook_receiver"]["moltin"].dispatcher.close()


def test_flask_webhooks_show_lists_the_logged_attempts_escaped(tmp_path: Any) -> None:
    app, clock = make_inbox_app(str(tmp_path))
    assert send(app, clock, "order.paid", "fail-9") == 500
    assert redeliver(app, "fail-9", 2) == 200
    store = app.extensions["webhook_receiver"]["moltin"].store
    store.record_delivery("fail-9", DeliveryAttempt(1_700_000_000.0, "replay", None, None, "duplicate", "eve\x1b[31m"))
    runner = app.test_cli_runner()
    shown = runner.invoke(webhooks_cli, ["show", "fail-9"])
    assert shown.exit_code == 0, shown.output
    assert "deliveries after the first (2" in shown.output
    assert "webhook attempt 2: 200 processed" in shown.output
    assert "replay by eve\\x1b[31m: duplicate" in shown.output and "\x1b" not in shown.output
    as_json = json.loads(runner.invoke(webhooks_cli, ["show", "fail-9", "--json"]).output)
    assert [d["answer"] for d in as_json["deliveries"]] == ["processed", "duplicate"]


def test_a_store_of_your_own_gets_a_working_log_by_default() -> None:
    class Minimal(MemoryStore):
        record_delivery = EventStore.record_delivery  # the defaults, as a store of your own has them
        deliveries = EventStore.deliveries

    store = Minimal()
    other = store.for_receiver("outlet")
    store.record_delivery("e", DeliveryAttempt(1.0, "webhook", 2, 200, "duplicate"))
    assert [a.answer for a in store.deliveries("e")] == ["duplicate"]
    assert other.deliveries("e") == []


def test_the_first_answer_follows_from_the_outcome_and_the_dispatch() -> None:
    from webhook_receiver.inbox.deliveries import first_answer

    def stored(status: EventStatus, attempts: int) -> StoredEvent:
        return StoredEvent("e", "order.paid", status, {"id": "e"}, received_at=100.0, attempts=attempts)

    assert first_answer(stored(EventStatus.PROCESSED, 1), "inline", None, 0) == "200 processed"
    assert first_answer(stored(EventStatus.PROCESSED, 2), "inline", None, 1) == "500 failed"
    assert first_answer(stored(EventStatus.FAILED, 1), "inline", None, 0) == "500 failed"
    assert first_answer(stored(EventStatus.PROCESSED, 1), "thread", None, 0) == "202 accepted"
    assert first_answer(stored(EventStatus.PROCESSING, 1), "inline", 8.0, 0) == "no answer yet (running)"


# -- the live poll -------------------------------------------------------------------


def test_the_live_rows_answer_304_while_the_sqlite_store_says_nothing_changed(tmp_path: Any) -> None:
    app, clock = make_inbox_app(str(tmp_path))
    send(app, clock, "order.paid", "evt-1")
    client = app.test_client()
    url = f"{INBOX}/?fragment=rows&status=processed"
    first = client.get(url, headers=OPS)
    assert first.status_code == 200 and 'data-id="evt-1"' in first.text and first.headers["ETag"]
    again = client.get(url, headers={**OPS, "If-None-Match": first.headers["ETag"]})
    assert again.status_code == 304 and again.data == b"", "nothing changed: no list read, no body"
    assert again.headers["Cache-Control"] == "no-store"
    other_filter = client.get(f"{INBOX}/?fragment=rows", headers={**OPS, "If-None-Match": first.headers["ETag"]})
    assert other_filter.status_code == 200, "the tag is the query's too"
    # a delivery from another connection (another thread: the endpoint's) changes it
    done = threading.Thread(target=send, args=(app, clock, "order.paid", "evt-2"))
    done.start()
    done.join()
    changed = client.get(url, headers={**OPS, "If-None-Match": first.headers["ETag"]})
    assert changed.status_code == 200 and 'data-id="evt-2"' in changed.text
    # and so does one through this thread's own connection
    send(app, clock, "order.paid", "evt-3")
    latest = client.get(url, headers={**OPS, "If-None-Match": changed.headers["ETag"]})
    assert latest.status_code == 200 and 'data-id="evt-3"' in latest.text


def test_a_store_without_a_change_marker_reads_the_list_on_every_poll(tmp_path: Any) -> None:
    app, clock = make_inbox_app(str(tmp_path), store=MemoryStore())
    send(app, clock, "order.paid", "evt-1")
    client = app.test_client()
    first = client.get(f"{INBOX}/?fragment=rows", headers=OPS)
    assert first.status_code == 200 and "ETag" not in first.headers
    assert client.get(f"{INBOX}/?fragment=rows", headers={**OPS, "If-None-Match": "*"}).status_code == 200


def test_the_postgresql_marker_moves_with_every_write(request: pytest.FixtureRequest) -> None:
    from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore

    from .conftest import DATABASES, drop_tables, require_database

    require_database(DATABASES["postgresql"])
    prefix = request.getfixturevalue("table_prefix")
    store = SQLAlchemyStore(DATABASES["postgresql"], prefix=prefix)
    request.addfinalizer(lambda: (store.close(), drop_tables(DATABASES["postgresql"], prefix)))
    before = store.change_marker()
    assert before is not None
    claim = store.claim(contract_event("pg-1"))
    assert store.change_marker() != before
    middle = store.change_marker()
    assert store.finish(claim, ok=True)
    assert store.change_marker() != middle


def test_sqlalchemy_tables_of_an_earlier_version_get_the_log_s_table_or_its_sql(tmp_path: Any) -> None:
    import sqlalchemy as sa

    from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore

    url = f"sqlite+pysqlite:///{tmp_path / 'events.db'}"
    first = SQLAlchemyStore(url)
    assert first.claim(contract_event("old")).state.value == "claimed"
    first.close()
    engine = sa.create_engine(url)
    with engine.begin() as conn:  # as an earlier version left them: no delivery log
        conn.execute(sa.text("DROP TABLE webhook_receiver_deliveries"))
    engine.dispose()
    migrations_own_them = SQLAlchemyStore(url, create_tables=False)
    with pytest.raises(RuntimeError, match="webhook_receiver_deliveries .* is missing") as refused:
        migrations_own_them.get("old")
    assert "CREATE TABLE webhook_receiver_deliveries" in str(refused.value)
    assert "CREATE INDEX webhook_receiver_deliveries_ev" in str(refused.value)
    migrations_own_them.close()
    again = SQLAlchemyStore(url)  # the default: created in place, the events kept
    assert again.get("old") is not None and again.deliveries("old") == []
    again.record_delivery("old", DeliveryAttempt(1.0, "webhook", 2, 409, "in_progress"))
    assert [a.code for a in again.deliveries("old")] == [409]
    again.close()
