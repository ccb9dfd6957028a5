"""The inbox page through Flask's test client: mounting, the access check, CSRF, headers, filters, paging, actions."""

from __future__ import annotations

import functools
import logging
import re
import socket
import threading
import time
from typing import Any, Callable

import pytest
from flask import Flask, redirect

from webhook_receiver import WebhookReceiver
from webhook_receiver.inbox.csrf import COOKIE, CsrfTokens
from webhook_receiver.inbox.query import Cursor, Filters, events_page
from webhook_receiver.stores.base import EventStatus, EventStore
from webhook_receiver.stores.memory import MemoryStore

from .conftest import new_app
from .inbox_app import SECRET, USER_HEADER, XSS, make_inbox_app, seed, seed_hostile, send, store_of_kind

INBOX = "/webhooks/inbox"
OPS = {USER_HEADER: "ops"}


@pytest.fixture
def demo(tmp_path: Any) -> tuple[Flask, Any]:
    app, clock = make_inbox_app(str(tmp_path))
    seed(app, clock, count=21)
    return app, clock


def token_of(client: Any) -> str:
    """The CSRF token of the list page (which also sets the nonce cookie on *client*)."""
    page = client.get(f"{INBOX}/", headers=OPS)
    found = re.search(r'data-csrf="([^"]+)"', page.text)
    assert found, page.text[:500]
    return found.group(1)


# -- mounting -------------------------------------------------------------------------


def mount(**config: Any) -> Flask:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    app.config.update(config)
    WebhookReceiver().init_app(app)
    return app


def test_the_inbox_is_off_by_default() -> None:
    app = mount()
    assert app.test_client().get(f"{INBOX}/").status_code == 404
    assert not [rule for rule in app.url_map.iter_rules() if "inbox" in rule.endpoint]


def test_it_refuses_to_mount_without_an_access_check() -> None:
    with pytest.raises(RuntimeError, match="needs an access check"):
        mount(WEBHOOK_RECEIVER_INBOX_URL=INBOX)


@pytest.mark.parametrize(
    "config, message",
    [
        ({"WEBHOOK_RECEIVER_INBOX_URL": "webhooks/inbox", "WEBHOOK_RECEIVER_INBOX_AUTH": "none"}, "must be a path"),
        ({"WEBHOOK_RECEIVER_INBOX_URL": "/inbox/", "WEBHOOK_RECEIVER_INBOX_AUTH": "none"}, "must be a path"),
        ({"WEBHOOK_RECEIVER_INBOX_URL": INBOX, "WEBHOOK_RECEIVER_INBOX_AUTH": "nobody"}, "only string accepted"),
        ({"WEBHOOK_RECEIVER_INBOX_URL": INBOX, "WEBHOOK_RECEIVER_INBOX_AUTH": 42}, "must be a callable"),
        ({"WEBHOOK_RECEIVER_INBOX_AUTH": "none"}, "URL is not"),
    ],
)
def test_a_malformed_or_ignored_setting_is_refused(config: dict[str, Any], message: str) -> None:
    with pytest.raises(RuntimeError, match=message.replace("URL", "WEBHOOK_RECEIVER_INBOX_URL")):
        mount(**config)


def test_none_is_refused_outside_debug_and_testing() -> None:
    app = Flask(__name__)
    app.config.update(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=MemoryStore(),
        WEBHOOK_RECEIVER_INBOX_URL=INBOX,
        WEBHOOK_RECEIVER_INBOX_AUTH="none",
    )
    with pytest.raises(RuntimeError, match="only with DEBUG or TESTING"):
        WebhookReceiver().init_app(app)


def test_none_in_testing_lets_everyone_in_with_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, "webhook_receiver"):
        app = mount(WEBHOOK_RECEIVER_INBOX_URL=INBOX, WEBHOOK_RECEIVER_INBOX_AUTH="none")
    assert "lets anyone in" in caplog.text
    assert app.test_client().get(f"{INBOX}/").status_code == 200


# -- the access check -------------------------------------------------------------------


def test_a_refused_user_gets_403_and_no_data_on_every_page_and_action(demo: tuple[Flask, Any]) -> None:
    app, _ = demo
    client = app.test_client()
    token = token_of(client)
    refused = {USER_HEADER: "mallory"}
    for path in ["/", "/event?id=fail-0003-8c1f2a", "/chart.svg", "/bulk?status=failed", "/?fragment=rows"]:
        answer = client.get(INBOX + path, headers=refused)
        assert answer.status_code == 403, path
        assert "fail-0003" not in answer.text and "order.paid" not in answer.text
    for path in ["/actions/replay", "/actions/replay-bulk", "/actions/resolve"]:
        answer = client.post(INBOX + path, data={"csrf_token": token, "event_id": "fail-0003-8c1f2a"}, headers=refused)
        assert answer.status_code == 403, path
    stored = app.extensions["webhook_receiver"]["moltin"].store.get("fail-0003-8c1f2a")
    assert stored.status is EventStatus.FAILED  # the refused replay did not run


def test_a_view_decorator_guards_the_pages_with_its_own_redirect() -> None:
    def login_required(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        def wrapped(*args: Any, **kwargs: Any) -> Any:
            from flask import request

            if request.cookies.get("session_user") != "ops":
                return redirect("/login?next=inbox")
            return view(*args, **kwargs)

        return wrapped

    app = mount(WEBHOOK_RECEIVER_INBOX_URL=INBOX, WEBHOOK_RECEIVER_INBOX_AUTH=login_required)
    client = app.test_client()
    answer = client.get(f"{INBOX}/")
    assert answer.status_code == 302 and answer.headers["Location"] == "/login?next=inbox"
    assert client.post(f"{INBOX}/actions/replay").status_code == 302
    client.set_cookie("session_user", "ops")
    assert client.get(f"{INBOX}/").status_code == 200


# -- CSRF and methods -----------------------------------------------------------------------


def test_actions_refuse_a_get_with_405(demo: tuple[Flask, Any]) -> None:
    client = demo[0].test_client()
    for path in ["/actions/replay", "/actions/replay-bulk", "/actions/resolve"]:
        assert client.get(INBOX + path, headers=OPS).status_code == 405


def test_actions_refuse_a_missing_or_wrong_token_with_400(demo: tuple[Flask, Any]) -> None:
    app, _ = demo
    client = app.test_client()
    token = token_of(client)
    event = {"event_id": "fail-0003-8c1f2a"}
    assert client.post(f"{INBOX}/actions/replay", data=event, headers=OPS).status_code == 400
    wrong = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    assert client.post(f"{INBOX}/actions/replay", data={**event, "csrf_token": wrong}, headers=OPS).status_code == 400
    other = CsrfTokens("inbox-demo-app-key").token_for("another browser's nonce")
    assert client.post(f"{INBOX}/actions/replay", data={**event, "csrf_token": other}, headers=OPS).status_code == 400
    stranger = app.test_client()  # the right token without the cookie it was made for
    answer = stranger.post(f"{INBOX}/actions/replay", data={**event, "csrf_token": token}, headers=OPS)
    assert answer.status_code == 400
    for path in ["/actions/replay-bulk", "/actions/resolve"]:
        assert client.post(INBOX + path, data=event, headers=OPS).status_code == 400
    stored = app.extensions["webhook_receiver"]["moltin"].store.get("fail-0003-8c1f2a")
    assert stored.status is EventStatus.FAILED
    answer = client.post(f"{INBOX}/actions/replay", data={**event, "csrf_token": token}, headers=OPS)
    assert answer.status_code == 303
    assert app.extensions["webhook_receiver"]["moltin"].store.get("fail-0003-8c1f2a").status is EventStatus.PROCESSED


def test_the_nonce_cookie_is_http_only_and_same_site_strict(demo: tuple[Flask, Any]) -> None:
    answer = demo[0].test_client().get(f"{INBOX}/", headers=OPS)
    cookie = answer.headers["Set-Cookie"]
    assert cookie.startswith(COOKIE + "=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie


# -- headers ------------------------------------------------------------------------------


def test_every_page_has_a_strict_csp_no_framing_and_no_caching(demo: tuple[Flask, Any]) -> None:
    client = demo[0].test_client()
    for path in [
        "/",
        "/?fragment=rows",
        "/event?id=evt-0000-8c1f2a",
        "/event?id=evt-0000-8c1f2a&fragment=summary",
        "/chart.svg",
        "/bulk",
    ]:
        answer = client.get(INBOX + path, headers=OPS)
        assert answer.status_code == 200, path
        csp = answer.headers["Content-Security-Policy"]
        assert "script-src 'self'" in csp and "unsafe-inline" not in csp and "unsafe-eval" not in csp
        assert "frame-ancestors 'none'" in csp and answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Cache-Control"] == "no-store"
        assert answer.headers["X-Content-Type-Options"] == "nosniff"


def test_pages_load_nothing_from_elsewhere_and_hold_no_inline_script_or_style(demo: tuple[Flask, Any]) -> None:
    client = demo[0].test_client()
    for path in ["/", "/event?id=fail-0003-8c1f2a", "/bulk?status=failed"]:
        html = client.get(INBOX + path, headers=OPS).text
        assert "http://" not in html.replace('xmlns="http://www.w3.org/2000/svg"', "") and "https://" not in html
        assert re.findall(r"<script[^>]*>", html) == [f'<script src="{INBOX}/static/inbox.js" defer>']
        assert " style=" not in html and "<style" not in html and " on" + "click=" not in html


# -- what the pages show ------------------------------------------------------------------------


def test_untrusted_text_is_escaped_on_every_page(demo: tuple[Flask, Any]) -> None:
    app, clock = demo
    event_id = seed_hostile(app, clock)
    client = app.test_client()
    escaped = "&lt;script&gt;alert(&#34;id&#34;)&lt;/script&gt;&#34;&gt;&lt;img src=x onerror=alert(1)&gt;"
    pages = [
        client.get(f"{INBOX}/", headers=OPS).text,
        client.get(f"{INBOX}/", query_string={"id": "xss-"}, headers=OPS).text,
        client.get(f"{INBOX}/event", query_string={"id": event_id}, headers=OPS).text,
        client.get(f"{INBOX}/bulk", query_string={"id": "xss-"}, headers=OPS).text,
    ]
    for html in pages:
        assert XSS not in html and "<img src=x" not in html and "<script>alert" not in html
        assert escaped in html
    assert pages[2].count(escaped) >= 3  # the id, the handler's error, the body's values


def test_no_secret_reaches_the_event_page(demo: tuple[Flask, Any]) -> None:
    app, _ = demo
    client = app.test_client()
    html = client.get(f"{INBOX}/event", query_string={"id": "evt-0000-8c1f2a"}, headers=OPS).text
    assert "configuration" in html  # the echo is shown, redacted
    assert SECRET not in html and "inbox-demo-app-key" not in html


def test_the_list_filters_by_status_trigger_wildcard_handler_and_id_prefix(demo: tuple[Flask, Any]) -> None:
    client = demo[0].test_client()

    def ids(**args: str) -> set[str]:
        html = client.get(f"{INBOX}/", query_string=args, headers=OPS).text
        return set(re.findall(r'data-id="([^"]+)"', html))

    assert ids(status="failed") == {"fail-0003-8c1f2a", "fail-0010-8c1f2a", "fail-0017-8c1f2a", "evt-always-failing"}
    assert ids(trigger="order.*", status="failed") == {"fail-0010-8c1f2a", "fail-0017-8c1f2a", "evt-always-failing"}
    assert ids(trigger="product.updated") == {
        "fail-0003-8c1f2a",
        "evt-0008-8c1f2a",
        "evt-0013-8c1f2a",
        "evt-0018-8c1f2a",
    }
    assert ids(id="fail-") == {"fail-0003-8c1f2a", "fail-0010-8c1f2a", "fail-0017-8c1f2a"}
    assert ids(handler="notify", trigger="order.created") == {f"evt-{n:04d}-8c1f2a" for n in (1, 6, 11, 16)}
    assert ids(handler="shop.notify", trigger="customer.*") == set()
    assert ids(since="2h") == {"evt-0020-8c1f2a", "evt-always-failing"}
    assert client.get(f"{INBOX}/", query_string={"status": "lost"}, headers=OPS).status_code == 400
    assert client.get(f"{INBOX}/", query_string={"since": "yesterday"}, headers=OPS).status_code == 400


class KeyedStore(MemoryStore):
    """The memory store, keeping the ``before=(received_at, id)`` keys the inbox asks for."""

    def events(  # type: ignore[override]
        self,
        *,
        status: EventStatus | None = None,
        trigger: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        before: tuple[float, str] | None = None,
    ) -> list[Any]:
        self.asked.append(before)
        return super().events(status=status, trigger=trigger, since=since, limit=limit, before=before)

    asked: list[tuple[float, str] | None] = []


class UnkeyedStore(MemoryStore):
    """A third-party store written before ``before``, ``resolve`` and ``count_by_hour``: the inbox falls back."""

    def events(  # type: ignore[override]
        self,
        *,
        status: EventStatus | None = None,
        trigger: str | None = None,
        since: float | None = None,
        limit: int | None = None,
    ) -> list[Any]:
        return super().events(status=status, trigger=trigger, since=since, limit=limit)

    resolve = EventStore.resolve
    count_by_hour = EventStore.count_by_hour


@pytest.mark.parametrize("keyed", [False, True], ids=["a store without before", "a store taking before"])
@pytest.mark.parametrize(
    "filters",
    [Filters(), Filters(trigger="order.*"), Filters(status=EventStatus.PROCESSED), Filters(until=-20.0)],
)
def test_keyset_pages_hold_every_matching_event_once_newest_first(filters: Filters, keyed: bool) -> None:
    app, clock = make_inbox_app(store=KeyedStore() if keyed else UnkeyedStore())
    for n in range(40):  # the memory store's clock is now: ids and times still order the same
        send(app, clock, ["order.paid", "product.updated"][n % 2], f"evt-{n:04d}", ago=(40 - n) * 600)
    store = app.extensions["webhook_receiver"]["moltin"].store
    KeyedStore.asked = []
    if filters.until is not None:  # up to the 21st oldest event, left out
        filters = Filters(until=sorted(e.received_at for e in store.events())[-int(filters.until)])
    every = [e for e in store.events() if filters.keeps(e) and (filters.status in (None, e.status))]
    seen: list[str] = []
    cursor: Cursor | None = None
    for _ in range(100):
        page = events_page(store, filters, before=cursor, limit=7)
        seen += [e.id for e in page.events]
        cursor = page.next
        if cursor is None:
            break
    assert seen == [e.id for e in sorted(every, key=Cursor.of, reverse=True)]
    assert len(seen) == len(set(seen)) > 7
    if keyed:
        assert any(KeyedStore.asked)  # the key went to the store


def test_a_filter_applied_here_scans_at_most_the_scan_limit() -> None:
    app, clock = make_inbox_app()
    seed(app, clock, count=30)
    store = app.extensions["webhook_receiver"]["moltin"].store
    page = events_page(store, Filters(id_prefix="nothing-has-this"), limit=5, scan_limit=8)
    assert page.events == [] and page.cut_short and page.next is not None
    rest = events_page(store, Filters(id_prefix="nothing-has-this"), before=page.next, limit=5, scan_limit=1000)
    assert rest.events == [] and rest.next is None


def test_the_chart_counts_deliveries_and_failures_per_hour(demo: tuple[Flask, Any]) -> None:
    client = demo[0].test_client()
    svg = client.get(f"{INBOX}/chart.svg", headers=OPS)
    assert svg.mimetype == "image/svg+xml"
    titles = re.findall(r"<title>[^<]* UTC: (\d+) received, (\d+) failed</title>", svg.text)
    assert len(titles) == 24
    assert sum(int(received) for received, _ in titles) == 22 - 1  # the first one, 24 h ago, is out of range
    assert sum(int(failed) for _, failed in titles) == 4
    week = client.get(f"{INBOX}/chart.svg?range=7d", headers=OPS).text
    assert len(re.findall("<title>", week)) == 168
    assert client.get(f"{INBOX}/chart.svg?range=1y", headers=OPS).status_code == 400


# -- actions ------------------------------------------------------------------------------


def test_a_replay_runs_the_failed_handlers_and_logs_who_did_it(
    demo: tuple[Flask, Any], caplog: pytest.LogCaptureFixture
) -> None:
    app, _ = demo
    client = app.test_client()
    token = token_of(client)
    with caplog.at_level(logging.INFO, "webhook_receiver"):
        answer = client.post(
            f"{INBOX}/actions/replay",
            data={"csrf_token": token, "event_id": "fail-0010-8c1f2a"},
            headers={**OPS, "Accept": "application/json"},
        )
    assert answer.json == {
        "state": "processed",
        "status": "processed",
        "failed": [],
        "error": None,
        "message": "Replayed: every handler has now succeeded.",
    }
    assert "inbox: ops replayed event fail-0010-8c1f2a: processed" in caplog.text
    stored = app.extensions["webhook_receiver"]["moltin"].store.get("fail-0010-8c1f2a")
    assert stored.handlers["shop.ship"].attempts == 2 and stored.handlers["shop.notify"].attempts == 1


def test_a_bulk_replay_previews_then_replays_what_the_preview_showed(
    demo: tuple[Flask, Any], caplog: pytest.LogCaptureFixture
) -> None:
    app, clock = demo
    client = app.test_client()
    token = token_of(client)
    preview = client.get(f"{INBOX}/bulk", query_string={"status": "failed", "trigger": "order.*"}, headers=OPS).text
    text = re.search(r'<p class="preview" id="preview">([^<]+)</p>', preview).group(1)  # type: ignore[union-attr]
    assert text.startswith("This will replay 3 failed order.* events received before ")
    fields = dict(re.findall(r'<input type="hidden" name="(status|trigger|until)" value="([^"]+)">', preview))
    assert fields.keys() == {"status", "trigger", "until"}
    time.sleep(1.1)  # a second apart, on the preview's whole-second end: the event below is after it
    send(app, clock, "order.paid", "fail-after-the-preview")
    with caplog.at_level(logging.INFO, "webhook_receiver"):
        done = client.post(f"{INBOX}/actions/replay-bulk", data={**fields, "csrf_token": token}, headers=OPS).text
    summary = re.search(r'<p class="summary" id="bulk-summary">([^<]+)</p>', done).group(1)  # type: ignore[union-attr]
    assert summary.startswith("Replayed 3 failed order.* events") and summary.endswith(": 1 failed, 2 processed.")
    assert "evt-always-failing" in done  # still failing, listed
    store = app.extensions["webhook_receiver"]["moltin"].store
    assert store.get("fail-after-the-preview").status is EventStatus.FAILED  # not in the preview: not replayed
    assert store.get("fail-0003-8c1f2a").status is EventStatus.FAILED  # a product event: not order.*
    assert "inbox: ops replayed 3 failed order.* events" in caplog.text


def test_a_bulk_replay_without_the_previews_end_is_refused(demo: tuple[Flask, Any]) -> None:
    client = demo[0].test_client()
    token = token_of(client)
    answer = client.post(f"{INBOX}/actions/replay-bulk", data={"status": "failed", "csrf_token": token}, headers=OPS)
    assert answer.status_code == 400


def test_mark_resolved_needs_a_store_that_can() -> None:
    app, clock = make_inbox_app(store=UnkeyedStore())
    send(app, clock, "order.paid", "fail-0003-8c1f2a")
    client = app.test_client()
    token = token_of(client)
    html = client.get(f"{INBOX}/event?id=fail-0003-8c1f2a", headers=OPS).text
    assert 'id="resolve"' not in html and "cannot yet" in html
    answer = client.post(f"{INBOX}/actions/resolve", data={"csrf_token": token, "event_id": "x"}, headers=OPS)
    assert answer.status_code == 501


def test_mark_resolved_takes_a_failed_event_out_of_the_failed_view(caplog: pytest.LogCaptureFixture) -> None:
    app, clock = make_inbox_app()
    send(app, clock, "order.paid", "fail-to-resolve")
    client = app.test_client()
    token = token_of(client)
    assert 'id="resolve"' in client.get(f"{INBOX}/event?id=fail-to-resolve", headers=OPS).text
    with caplog.at_level(logging.INFO, "webhook_receiver"):
        answer = client.post(
            f"{INBOX}/actions/resolve", data={"csrf_token": token, "event_id": "fail-to-resolve"}, headers=OPS
        )
    assert answer.status_code == 303 and answer.headers["Location"].endswith("done=resolved")
    assert "inbox: ops marked event fail-to-resolve resolved: done" in caplog.text
    assert "fail-to-resolve" not in client.get(f"{INBOX}/?status=failed", headers=OPS).text
    assert "fail-to-resolve" in client.get(f"{INBOX}/?status=resolved", headers=OPS).text, "kept"
    stored = app.extensions["webhook_receiver"]["moltin"].store.get("fail-to-resolve")
    assert stored is not None and stored.status is EventStatus.RESOLVED
    again = client.post(
        f"{INBOX}/actions/resolve",
        data={"csrf_token": token, "event_id": "fail-to-resolve"},
        headers={**OPS, "Accept": "application/json"},
    )
    assert again.json["state"] == "not-failed"


def test_the_chart_of_a_store_without_count_by_hour_counts_the_listed_events(monkeypatch: Any) -> None:
    from webhook_receiver.inbox import chart

    monkeypatch.setattr(chart, "CHART_LIMIT", 5)
    app, clock = make_inbox_app(store=UnkeyedStore())
    for n in range(8):
        send(app, clock, "order.paid", f"evt-{n:02d}")
    svg = app.test_client().get(f"{INBOX}/chart.svg", headers=OPS).text
    titles = re.findall(r"<title>[^<]* UTC: (\d+) received, (\d+) failed</title>", svg)
    assert sum(int(received) for received, _ in titles) == 5 and "counted the newest events only" in svg


def test_the_wheel_ships_every_template_and_static_file() -> None:
    import configparser
    import fnmatch
    from pathlib import Path

    config = configparser.ConfigParser()
    config.read(Path(__file__).parent.parent / "setup.cfg")
    patterns = [p.strip() for p in config["options.package_data"]["webhook_receiver.inbox"].split(",")]
    package = Path(__file__).parent.parent / "webhook_receiver" / "inbox"
    files = [
        str(p.relative_to(package)) for d in ("templates", "static") for p in (package / d).rglob("*") if p.is_file()
    ]
    assert len(files) >= 9
    assert [f for f in files if not any(fnmatch.fnmatch(f, pattern) for pattern in patterns)] == []


def test_a_store_that_does_not_answer_gets_503_on_the_page(redis_prefix: str) -> None:
    from webhook_receiver.stores.redis import RedisStore

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    listener.close()  # nothing listens there any more: every command fails to connect
    app, _ = make_inbox_app(store=RedisStore(f"redis://127.0.0.1:{port}/0", prefix=redis_prefix, timeout=0.5))
    client = app.test_client()
    for path in ["/", "/event?id=x", "/chart.svg"]:
        answer = client.get(INBOX + path, headers=OPS)
        assert answer.status_code == 503, path
        assert "not answering" in answer.text and str(port) not in answer.text
        assert answer.headers["Cache-Control"] == "no-store"


def test_each_receiver_of_an_app_has_its_own_inbox() -> None:
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_INBOX_URL=INBOX, WEBHOOK_RECEIVER_INBOX_AUTH="none"
    )
    WebhookReceiver().init_app(app)
    WebhookReceiver(name="billing").init_app(app)
    client = app.test_client()
    assert "receiver <code>moltin</code>" in client.get(f"{INBOX}/").text
    assert "receiver <code>billing</code>" in client.get(f"{INBOX}/billing/").text


def test_deliveries_go_on_while_the_list_is_read_without_pause(tmp_path: Any) -> None:
    app, clock = make_inbox_app(str(tmp_path))
    seed(app, clock, count=10)
    stop = threading.Event()
    reads: list[int] = []

    def read() -> None:
        client = app.test_client()
        while not stop.is_set():
            reads.append(client.get(f"{INBOX}/?fragment=rows", headers=OPS).status_code)

    readers = [threading.Thread(target=read) for _ in range(2)]
    for reader in readers:
        reader.start()
    try:
        codes = [send(app, clock, "order.created", f"evt-during-reads-{n}") for n in range(150)]
    finally:
        stop.set()
        for reader in readers:
            reader.join()
    assert codes == [200] * 150
    assert reads and set(reads) == {200}
    store = app.extensions["webhook_receiver"]["moltin"].store
    assert len([e for e in store.events(trigger="order.created") if e.id.startswith("evt-during-reads-")]) == 150


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis", "postgresql", "mariadb"])
def test_the_inbox_works_with_every_store(
    kind: str, tmp_path: Any, request: pytest.FixtureRequest, monkeypatch: Any
) -> None:
    from webhook_receiver.inbox import chart

    monkeypatch.setattr(chart, "CHART_LIMIT", 5)  # the store counts by hour itself: no limit applies

    store = store_of_kind(kind, request)
    app, clock = make_inbox_app(str(tmp_path), store=store)
    for n in range(12):
        send(app, clock, ["order.paid", "product.updated"][n % 2], f"{'fail' if n in (3, 8) else 'evt'}-{n:02d}")
    client = app.test_client()
    token = token_of(client)
    html = client.get(f"{INBOX}/", query_string={"status": "failed"}, headers=OPS).text
    assert set(re.findall(r'data-id="([^"]+)"', html)) == {"fail-03", "fail-08"}
    html = client.get(f"{INBOX}/", query_string={"trigger": "order.*"}, headers=OPS).text
    assert set(re.findall(r'data-id="([^"]+)"', html)) == {
        f"{'fail' if n == 8 else 'evt'}-{n:02d}" for n in range(0, 12, 2)
    }
    assert "warehouse API timed out" in client.get(f"{INBOX}/event?id=fail-03", headers=OPS).text
    answer = client.post(
        f"{INBOX}/actions/replay",
        data={"csrf_token": token, "event_id": "fail-03"},
        headers={**OPS, "Accept": "application/json"},
    )
    assert answer.json["status"] == "processed"
    svg = client.get(f"{INBOX}/chart.svg", headers=OPS).text
    titles = re.findall(r"<title>[^<]* UTC: (\d+) received, (\d+) failed</title>", svg)
    assert [sum(int(t[0]) for t in titles), sum(int(t[1]) for t in titles)] == [12, 1]
    assert "counted the newest events only" not in svg
    answer = client.post(
        f"{INBOX}/actions/resolve",
        data={"csrf_token": token, "event_id": "fail-08"},
        headers={**OPS, "Accept": "application/json"},
    )
    assert answer.json["state"] == "resolved"
    assert 'data-id="fail-08"' not in client.get(f"{INBOX}/", query_string={"status": "failed"}, headers=OPS).text
    assert 'data-id="fail-08"' in client.get(f"{INBOX}/", query_string={"status": "resolved"}, headers=OPS).text
