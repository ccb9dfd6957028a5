"""Review of the hot path: what its shortcuts must still do like the thorough path.

- A body orjson refuses but :mod:`json` reads (a surrogate spelled in UTF-8)
  is stored encoded, not as sent: the SQL stores could not decode its bytes
  and answered 500 on every attempt, until upstream gave up.
- A secret field's name is matched by Unicode case folding everywhere,
  the fast scan included (``ſecret_key`` and ``paßword`` were kept in clear).
- The odd fields of a body whose ``resources`` string is decoded later are
  logged at once, like every other body's.
- Two threads reading a deferred ``resources`` at once both get it.
"""

from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any

import pytest

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.events import redact
from webhook_receiver.wire import make_event

from .conftest import DATABASES, REDIS_URL, SECRET, drop_tables, new_app, require_database, require_redis

HEADERS = {"X-MOLTIN-SECRET-KEY": SECRET, "X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"}

#: A body with a lone surrogate spelled in UTF-8 (ED A0 80): not UTF-8, yet the standard library reads it.
SURROGATE = b'{"id":"sur-1","triggered_by":"order.paid","note":"a\xed\xa0\x80b"}'


def _store_url(kind: str, tmp_path: Path) -> str:
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / 'events.sqlite3'}"
    if kind == "redis":
        require_redis()
        return REDIS_URL
    require_database(DATABASES[kind])
    return DATABASES[kind]


@pytest.mark.parametrize("kind", ["memory", "sqlite", "redis", "postgresql", "mariadb"])
def test_a_body_json_reads_and_orjson_does_not_is_stored_encoded(
    receiver: WebhookReceiver, tmp_path: Path, table_prefix: str, kind: str
) -> None:
    ran: list[Any] = []

    @receiver.on("order.paid")
    def note(event: Event) -> None:
        ran.append(event.raw["note"])

    config: dict[str, Any] = {"WEBHOOK_RECEIVER_SECRET_KEY": SECRET}
    if kind != "memory":
        config["WEBHOOK_RECEIVER_STORE"] = _store_url(kind, tmp_path)
    if kind == "redis":
        config["WEBHOOK_RECEIVER_REDIS_PREFIX"] = table_prefix
    elif kind in DATABASES:
        config["WEBHOOK_RECEIVER_TABLE_PREFIX"] = table_prefix
    app = new_app(**config)
    receiver.init_app(app)
    try:
        client = app.test_client()
        first = client.post("/webhooks/moltin", data=SURROGATE, headers=HEADERS)
        again = client.post("/webhooks/moltin", data=SURROGATE, headers=HEADERS)
        assert (first.status_code, again.status_code) == (200, 200), (first.text, again.text)
        assert ran == ["a\ud800b"], "run once, with the text json read"
        stored = receiver.get_store(app).get("sur-1")
        assert stored is not None and stored.status.value == "processed" and stored.raw["note"] == "a\ud800b"
    finally:
        if kind in DATABASES:
            drop_tables(DATABASES[kind], table_prefix)
        elif kind == "redis":
            import redis

            client_ = redis.Redis.from_url(REDIS_URL)
            for key in client_.scan_iter(f"{table_prefix}:*"):
                client_.delete(key)


@pytest.mark.parametrize("key", ["\u017fecret_key", "pa\u00dfword", "PA\u1e9eWORD", "CLIENT_\u017fECRET"])
@pytest.mark.parametrize("as_bytes", [True, False])
def test_a_secret_field_is_matched_by_case_folding(key: str, as_bytes: bool) -> None:
    text = json.dumps({"id": "fold-1", "triggered_by": "order.paid", "x": {key: "LEAK-1"}}, ensure_ascii=False)
    event = Event.from_json(text.encode() if as_bytes else text)
    assert event.raw["x"][key] == "[redacted]"
    assert b"LEAK-1" not in event.raw_json
    hidden, changed = redact({"a": [{key: "LEAK-2"}]})
    assert changed and hidden == {"a": [{key: "[redacted]"}]}, "from_dict's walk too"


def test_an_ascii_body_with_no_secret_is_still_kept_as_sent() -> None:
    body = b'{"id":"plain-1","triggered_by":"order.paid","note":"stra\xc3\x9fe? no: a street"}'
    event = Event.from_json(body)
    assert event.raw_json == body, "a sharp s in a value makes the scan thorough, and nothing changes"
    assert Event.from_json(b'{"id":"p2","triggered_by":"order.paid","n":1}').raw_json.startswith(b'{"id":"p2"')


def test_odd_fields_are_logged_when_resources_is_decoded_later(
    receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    seen: list[tuple[str, ...]] = []

    @receiver.on("order.paid")
    def look(event: Event) -> None:
        seen.append(event.irregular)

    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver.init_app(app)
    body = make_event("order.paid", event_id="odd-both", form="both")
    body.update(attempt="first", store_id=123, integration="not-an-object")
    with caplog.at_level(logging.WARNING, logger="webhook_receiver"):
        answer = app.test_client().post("/webhooks/moltin", json=body, headers=HEADERS)
    assert answer.status_code == 200, answer.text
    warned = [r.getMessage() for r in caplog.records if "unexpected shape" in r.getMessage()]
    assert len(warned) == 1 and all(name in warned[0] for name in ("integration", "attempt", "store_id")), warned
    assert seen and set(seen[0]) == {"integration", "attempt", "store_id"}


def _read_at_once(event: Event) -> tuple[list[Any], list[BaseException]]:
    """Read *event*'s resources and irregular fields from two threads let go together."""
    results: list[Any] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def read() -> None:
        start.wait()
        try:
            results.append((event.resources["data"]["id"], event.irregular))
        except BaseException as exc:  # noqa: BLE001 - what the test looks for
            errors.append(exc)

    threads = [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, errors


def test_two_threads_reading_a_deferred_resources_at_once_both_get_it() -> None:
    body = make_event("order.paid", event_id="race-1", form="both")
    resources = json.loads(body["resources"])
    resources["data"]["padding"] = ["x" * 40] * 100_000  # 4 MB to decode: both threads are inside at once
    body["resources"] = json.dumps(resources)
    for _ in range(5):
        event = Event.from_json(json.dumps(body).encode())
        assert "resources" not in event.__dict__, "the shortcut this checks: resources decoded when read"
        results, errors = _read_at_once(event)
        assert not errors, errors
        assert len(results) == 2 and results[0] == results[1]


def test_a_nan_body_is_kept_as_sent_so_that_a_retry_reads_the_same() -> None:
    body = b'{"id":"nan-1","triggered_by":"order.paid","ratio":NaN,"big":123456789012345678901234567890}'
    event = Event.from_json(body)
    assert event.raw_json == body, "json reads it back as the handler saw it"
    again = Event.from_stored(json.loads(event.raw_json))
    assert again.raw["ratio"] != again.raw["ratio"] and again.raw["big"] == 123456789012345678901234567890


def test_threads_reading_a_deferred_resources_never_see_none() -> None:
    body = make_event("order.paid", event_id="race-2", form="both")
    body["attempt"] = "first"
    text = json.dumps(body).encode()
    for _ in range(300):
        event = Event.from_json(text)
        results, errors = _read_at_once(event)
        assert not errors and all(found[0] is not None for found in results), (results, errors)
        assert all("attempt" in found[1] for found in results), results
