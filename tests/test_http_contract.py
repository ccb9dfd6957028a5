"""Every row of the HTTP contract (docs/http.rst), through Flask's test client."""

from __future__ import annotations

import json
import logging
from typing import Any, Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from webhook_receiver import Event, StoreUnavailable, WebhookReceiver
from webhook_receiver.stores import Claim, EventStatus, MemoryStore, StoredEvent
from webhook_receiver.testing import make_event

from .conftest import SECRET

URL = "/webhooks/moltin"


@pytest.fixture
def calls(receiver: WebhookReceiver) -> list[tuple[str, str]]:
    found: list[tuple[str, str]] = []

    @receiver.on("order.paid", "product.deleted")
    def handle(event: Event) -> None:
        found.append((event.trigger, event.id))

    return found


def test_processed(send: Callable[..., Any], calls: list[Any]) -> None:
    response = send(make_event("order.paid", event_id="e-1"))
    assert response.status_code == 200
    assert response.get_json() == {"id": "e-1", "status": "processed"}
    assert response.mimetype == "application/json"
    assert calls == [("order.paid", "e-1")]


def test_duplicate_after_success_runs_nothing(send: Callable[..., Any], calls: list[Any]) -> None:
    send(make_event("order.paid", event_id="e-1"))
    again = send(make_event("order.paid", event_id="e-1", attempt=2))
    assert again.status_code == 200
    assert again.get_json() == {"id": "e-1", "status": "duplicate"}
    assert calls == [("order.paid", "e-1")]


def test_ignored_when_no_handler(
    send: Callable[..., Any], calls: list[Any], app: Flask, receiver: WebhookReceiver
) -> None:
    response = send(make_event("brand.created", event_id="e-2"))
    assert response.status_code == 200
    assert response.get_json() == {"id": "e-2", "status": "ignored"}
    assert calls == []
    assert receiver.get_store(app).get("e-2") is None


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET[:-1], SECRET + "x", SECRET.upper()])
def test_missing_or_wrong_secret(send: Callable[..., Any], calls: list[Any], secret: str | None) -> None:
    response = send(make_event("order.paid"), secret=secret)
    assert response.status_code == 401
    body = response.get_json()
    assert set(body) == {"error"}
    assert body["error"] == "the X-MOLTIN-SECRET-KEY header is missing or wrong"
    assert calls == []


@pytest.mark.parametrize("method", ["GET", "PUT", "PATCH", "DELETE", "OPTIONS"])
def test_not_post(client: FlaskClient, method: str) -> None:
    response = client.open(URL, method=method)
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"
    assert "POST" in response.get_json()["error"]


def test_head_is_405_too(client: FlaskClient) -> None:
    response = client.head(URL)
    assert response.status_code == 405


def test_body_over_the_limit(make_app: Callable[..., Flask], calls: list[Any]) -> None:
    client = make_app(WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH=1000).test_client()
    body = make_event("order.paid")
    body["padding"] = "x" * 2000
    response = client.post(
        URL,
        data=json.dumps(body),
        headers={"X-MOLTIN-SECRET-KEY": SECRET, "X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"},
    )
    assert response.status_code == 413
    assert "1000 bytes" in response.get_json()["error"]
    assert calls == []


def test_body_over_the_limit_without_content_length(
    make_app: Callable[..., Flask], calls: list[Any], live_server: Callable[[Flask], str]
) -> None:
    import requests

    url = live_server(make_app(WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH=1000)) + URL
    body = json.dumps({**make_event("order.paid"), "padding": "x" * 5000}).encode()
    # A generator body makes requests upload in chunks, with no Content-Length:
    # the limit is enforced while reading, not only on the header.
    chunks = (body[i : i + 512] for i in range(0, len(body), 512))
    response = requests.post(
        url,
        data=chunks,
        timeout=10,
        headers={"X-MOLTIN-SECRET-KEY": SECRET, "X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"},
    )
    assert response.status_code == 413
    assert calls == []


@pytest.mark.parametrize(
    ("headers", "data", "message"),
    [
        ({}, json.dumps(make_event("order.paid")), "X-MOLTIN-INTEGRATION-TRIGGER header is missing"),
        ({"X-MOLTIN-INTEGRATION-TRIGGER": "order paid!"}, "{}", "not an event name"),
        ({"X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"}, "{not json", "not valid JSON"),
        ({"X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"}, '"a string"', "must be a JSON object"),
        ({"X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"}, '{"triggered_by": "order.paid"}', "has no id"),
        ({"X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"}, '{"id": "e"}', "has no triggered_by"),
        ({"X-MOLTIN-INTEGRATION-TRIGGER": "order.created"}, json.dumps(make_event("order.paid")), "does not match"),
    ],
)
def test_bad_request(
    client: FlaskClient,
    calls: list[Any],
    app: Flask,
    receiver: WebhookReceiver,
    headers: dict[str, str],
    data: str,
    message: str,
) -> None:
    response = client.post(URL, data=data, headers={"X-MOLTIN-SECRET-KEY": SECRET, **headers})
    assert response.status_code == 400
    assert message in response.get_json()["error"]
    assert calls == []
    assert receiver.get_store(app).get("e") is None


def test_odd_shapes_are_accepted_kept_and_logged(
    client: FlaskClient, calls: list[Any], app: Flask, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    body = {
        "id": "odd",
        "triggered_by": "order.paid",
        "attempt": "2",
        "resources": "{",
        "payload": ["unexpected"],
        "integration": "x",
    }
    with caplog.at_level("WARNING", logger="webhook_receiver"):
        response = client.post(
            URL,
            data=json.dumps(body),
            headers={"X-MOLTIN-SECRET-KEY": SECRET, "X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"},
        )
    assert response.status_code == 200 and response.get_json() == {"id": "odd", "status": "processed"}
    assert calls == [("order.paid", "odd")]
    warnings = [r.getMessage() for r in caplog.records if "unexpected shape" in r.getMessage()]
    assert warnings == [
        "event odd (order.paid): unexpected shape of resources, payload, integration;"
        " kept in event.raw as sent, secret fields redacted"
    ]
    stored = receiver.get_store(app).get("odd")
    assert stored is not None and stored.raw["payload"] == ["unexpected"]


@pytest.mark.parametrize(
    "content_type",
    [
        None,
        "text/plain",
        "application/x-www-form-urlencoded",
        "multipart/form-data; boundary=x",
        "application/json; charset=latin-1",
    ],
)
def test_any_content_type_is_parsed_as_json(client: FlaskClient, calls: list[Any], content_type: str | None) -> None:
    headers = {"X-MOLTIN-SECRET-KEY": SECRET, "X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"}
    if content_type:
        headers["Content-Type"] = content_type
    response = client.post(URL, data=json.dumps(make_event("order.paid", event_id="ct")), headers=headers)
    assert response.status_code == 200, response.get_json()
    assert calls == [("order.paid", "ct")]


def test_non_utf8_body(client: FlaskClient, calls: list[Any]) -> None:
    response = client.post(
        URL,
        data=b'{"id": "\xff\xfe", "triggered_by": "order.paid"}',
        headers={"X-MOLTIN-SECRET-KEY": SECRET, "X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"},
    )
    assert response.status_code == 400
    assert "UTF-8" in response.get_json()["error"]
    assert calls == []


def test_failed_handler_answers_500_and_retry_runs_only_what_failed(
    receiver: WebhookReceiver, send: Callable[..., Any]
) -> None:
    runs: list[str] = []
    fail = {"second": True}

    @receiver.on("order.paid")
    def first(event: Event) -> None:
        runs.append("first")

    @receiver.on("order.paid")
    def second(event: Event) -> None:
        runs.append("second")
        if fail["second"]:
            raise RuntimeError("warehouse API down")

    @receiver.on("order.*")
    def third(event: Event) -> None:
        runs.append("third")

    response = send(make_event("order.paid", event_id="e-5"))
    assert response.status_code == 500
    assert response.get_json() == {"id": "e-5", "status": "failed"}
    assert runs == ["first", "second", "third"], "a failing handler does not stop the others"

    fail["second"] = False
    retry = send(make_event("order.paid", event_id="e-5", attempt=2))
    assert retry.status_code == 200
    assert retry.get_json()["status"] == "processed"
    assert runs == ["first", "second", "third", "second"]

    assert send(make_event("order.paid", event_id="e-5", attempt=3)).get_json()["status"] == "duplicate"
    assert runs[-1] == "second"


def test_stored_outcomes(receiver: WebhookReceiver, app: Flask, send: Callable[..., Any]) -> None:
    @receiver.on("order.paid", name="boom")
    def boom(event: Event) -> None:
        raise ValueError("no stock")

    send(make_event("order.paid", event_id="e-6"))
    stored = receiver.get_store(app).get("e-6")
    assert stored is not None
    assert stored.status is EventStatus.FAILED
    assert stored.trigger == "order.paid"
    outcome = stored.handlers["boom"]
    assert (outcome.ok, outcome.error, outcome.attempts) == (False, "ValueError: no stock", 1)
    assert outcome.finished_at >= outcome.started_at > 0


class DownStore(MemoryStore):
    """A store whose backend is down: every call fails as a real outage would."""

    name = "down"

    def claim(self, event: Event) -> Claim:
        raise StoreUnavailable("down", "connection refused")


def test_store_unavailable_answers_503_and_runs_nothing(make_app: Callable[..., Flask], calls: list[Any]) -> None:
    client = make_app(WEBHOOK_RECEIVER_STORE=DownStore()).test_client()
    response = client.post(
        URL,
        data=json.dumps(make_event("order.paid", event_id="e-7")),
        headers={"X-MOLTIN-SECRET-KEY": SECRET, "X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"},
    )
    assert response.status_code == 503
    assert response.get_json()["status"] == "unavailable"
    assert calls == []


class FailsOnRecordStore(MemoryStore):
    """The backend goes down between the claim and the outcome."""

    def finish(self, claim: Claim, **kwargs: Any) -> bool:
        raise StoreUnavailable("flaky", "connection reset")


def test_store_failing_mid_event_answers_503(make_app: Callable[..., Flask], calls: list[Any]) -> None:
    store = FailsOnRecordStore(lease_seconds=0.5)  # the write is tried again for as long as the lease lasts
    client = make_app(WEBHOOK_RECEIVER_STORE=store).test_client()
    response = client.post(
        URL,
        data=json.dumps(make_event("order.paid", event_id="e-8")),
        headers={"X-MOLTIN-SECRET-KEY": SECRET, "X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"},
    )
    assert response.status_code == 503
    stored = store.get("e-8")
    assert stored is not None and stored.status is EventStatus.PROCESSING


def test_event_held_by_another_worker_answers_409(
    app: Flask, receiver: WebhookReceiver, send: Callable[..., Any], calls: list[Any]
) -> None:
    body = make_event("order.paid", event_id="e-9")
    claim = receiver.get_store(app).claim(Event.from_dict(body))
    response = send(body)
    assert response.status_code == 409
    assert response.get_json() == {"id": "e-9", "status": "in_progress"}
    assert calls == []
    receiver.get_store(app).finish(claim, ok=False)
    assert send(body).get_json()["status"] == "processed"


def test_expired_lease_is_taken_over(make_app: Callable[..., Flask], calls: list[Any]) -> None:
    store = MemoryStore(lease_seconds=0.001)
    client = make_app(WEBHOOK_RECEIVER_STORE=store).test_client()
    body = make_event("order.paid", event_id="e-10")
    store.claim(Event.from_dict(body))  # a worker that died without finishing
    import time

    time.sleep(0.01)
    response = client.post(
        URL,
        data=json.dumps(body),
        headers={"X-MOLTIN-SECRET-KEY": SECRET, "X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"},
    )
    assert response.get_json()["status"] == "processed"
    stored = store.get("e-10")
    assert isinstance(stored, StoredEvent) and stored.status is EventStatus.PROCESSED


@pytest.mark.parametrize("store", ["sqlite", "memory"])
@pytest.mark.parametrize(
    "bad_id",
    [
        "\\ud800",
        "line\\r\\nforged",
        "esc\\u001b[31mred",
        "nul\\u0000",
        "c1\\u0085",
        "sep\\u2028INFO forged",  # a line break to str.splitlines and many log viewers
        "bidi\\u202edesrever",  # reorders what a terminal shows
    ],
)
def test_ids_with_control_characters_or_lone_surrogates_are_a_json_400(
    make_app: Callable[..., Flask], calls: list[Any], store: str, bad_id: str
) -> None:
    client = make_app(WEBHOOK_RECEIVER_STORE=None if store == "sqlite" else "memory://").test_client()
    body = '{"id": "%s", "triggered_by": "order.paid"}' % bad_id  # the escape reaches the parser as sent
    response = client.post(
        URL, data=body, headers={"X-MOLTIN-SECRET-KEY": SECRET, "X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"}
    )
    assert response.status_code == 400 and response.is_json
    assert response.get_json() == {"error": "id holds a control character or an unpaired surrogate"}
    assert calls == []


class BrokenStore(MemoryStore):
    """A store with a bug: an exception nobody planned for."""

    def claim(self, event: Event) -> Claim:
        raise KeyError("an internal detail")


def test_an_unexpected_error_is_a_json_500_without_a_traceback(
    make_app: Callable[..., Flask], calls: list[Any], caplog: pytest.LogCaptureFixture
) -> None:
    client = make_app(WEBHOOK_RECEIVER_STORE=BrokenStore()).test_client()
    with caplog.at_level("ERROR", logger="webhook_receiver"):
        response = client.post(
            URL,
            data=json.dumps(make_event("order.paid", event_id="boom")),
            headers={"X-MOLTIN-SECRET-KEY": SECRET, "X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"},
        )
    assert response.status_code == 500 and response.is_json
    assert response.get_json() == {"error": "an unexpected error occurred; it is logged"}
    text = response.get_data(as_text=True)
    assert "Traceback" not in text and "internal detail" not in text
    assert any(r.exc_info for r in caplog.records), "logged with its traceback"


def test_separators_and_bidirectional_controls_are_escaped_in_log_text() -> None:
    from webhook_receiver.untrusted import printable

    shown = printable("Bob\u2028ERROR forged\u2029\u202eevil\u2066x\u2069")
    assert shown == "Bob\\u2028ERROR forged\\u2029\\u202eevil\\u2066x\\u2069"
    assert len(shown.splitlines()) == 1


def test_an_exception_given_to_a_log_line_is_escaped_too(caplog: pytest.LogCaptureFixture) -> None:
    """A server's or a sender's text inside an exception (botocore's, a transport's) forged log lines: only string
    arguments were escaped."""
    from webhook_receiver.untrusted import logger

    error = RuntimeError("refused\nERROR forged line\x1b[2J")
    with caplog.at_level(logging.INFO, logger="webhook_receiver"):
        logger.info("as text: %s; as repr: %r; counts: %d, %.1f s", error, error, 3, 2.5)
    message = caplog.records[-1].getMessage()
    assert "\n" not in message and "\x1b" not in message
    assert "as text: refused\\nERROR forged line\\x1b[2J;" in message
    assert "counts: 3, 2.5 s" in message
    from decimal import Decimal
    from fractions import Fraction

    with caplog.at_level(logging.INFO, logger="webhook_receiver"):
        logger.info("other numbers: %d, %.1f, %d", Decimal(3), Decimal("2.5"), Fraction(6, 2))
        logger.info("by name: %(name)s", {"name": "Bob\nERROR forged"})
    assert caplog.records[-2].getMessage() == "other numbers: 3, 2.5, 3"
    assert caplog.records[-1].getMessage() == "by name: Bob\\nERROR forged"
