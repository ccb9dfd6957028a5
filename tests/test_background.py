"""Background dispatch in one process: thread pool retries, final failures, recovery, a broker that is down."""

from __future__ import annotations

import logging
import time
from typing import Any, Callable

import pytest
from flask import Flask

from webhook_receiver import Event, WebhookReceiver, signals
from webhook_receiver.stores import EventStatus
from webhook_receiver.testing import make_event

from .conftest import SECRET, new_app

#: The store an app gets when it sets none and is not TESTING (conftest apps are).
SQLITE_DEFAULT = "sqlite:///webhook_receiver-moltin.sqlite3"


def wait_status(receiver: WebhookReceiver, app: Flask, event_id: str, status: EventStatus) -> None:
    deadline = time.monotonic() + 10
    while True:
        stored = receiver.get_store(app).get(event_id)
        if stored is not None and stored.status is status:
            return
        assert time.monotonic() < deadline, f"{event_id} is {stored.status if stored else None}, not {status}"
        time.sleep(0.02)


@pytest.fixture
def threaded(make_app: Callable[..., Flask]) -> Any:
    apps: list[Flask] = []

    def factory(**config: Any) -> Flask:
        app = make_app(
            WEBHOOK_RECEIVER_DISPATCH="thread",
            WEBHOOK_RECEIVER_RETRY_BACKOFF=0.01,
            WEBHOOK_RECEIVER_MAX_ATTEMPTS=3,
            **config,
        )
        apps.append(app)
        return app

    yield factory
    for app in apps:
        for config in app.extensions["webhook_receiver"].values():
            config.dispatcher.close()


def test_thread_dispatch_answers_202_and_runs_in_the_background(
    threaded: Callable[..., Flask], receiver: WebhookReceiver, send: Any
) -> None:
    app = threaded()
    seen: list[tuple[str, bool]] = []

    @receiver.on("order.paid")
    def record(event: Event) -> None:
        from flask import current_app

        seen.append((event.id, current_app._get_current_object() is app))  # type: ignore[attr-defined]

    from webhook_receiver.testing import deliver

    client = app.test_client()
    answer = deliver(client, make_event("order.paid", event_id="bg-1"), secret=SECRET)
    assert answer.status_code == 202 and answer.get_json() == {"id": "bg-1", "status": "accepted"}
    wait_status(receiver, app, "bg-1", EventStatus.PROCESSED)
    assert seen == [("bg-1", True)], "handlers run once, in an app context"
    assert deliver(client, make_event("order.paid", event_id="bg-1"), secret=SECRET).get_json()["status"] == "duplicate"


def test_thread_dispatch_retries_then_gives_up_with_signals(
    threaded: Callable[..., Flask], receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    app = threaded()
    runs: list[str] = []
    receiver.on("order.paid", name="steady")(lambda e: runs.append("steady"))

    @receiver.on("order.paid", name="broken")
    def broken(event: Event) -> None:
        runs.append("broken")
        raise RuntimeError("always")

    seen: list[tuple[str, Any]] = []
    from webhook_receiver.testing import deliver

    with (
        signals.event_retrying.connected_to(lambda s, **kw: seen.append(("retrying", kw["attempt"])), app),
        signals.event_failed.connected_to(lambda s, **kw: seen.append(("failed", kw["failed"])), app),
        caplog.at_level(logging.WARNING, logger="webhook_receiver"),
    ):
        assert deliver(app.test_client(), make_event("order.paid", event_id="bg-2"), secret=SECRET).status_code == 202
        wait_status(receiver, app, "bg-2", EventStatus.FAILED)
        deadline = time.monotonic() + 5
        while len(seen) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    assert runs == ["steady", "broken", "broken", "broken"], "only the failing handler runs again"
    assert seen == [("retrying", 1), ("retrying", 2), ("failed", ["broken"])]
    assert "failed for good after 3 runs" in caplog.text and "flask webhooks replay bg-2" in caplog.text


def test_events_left_pending_by_a_dead_process_are_picked_up(
    threaded: Callable[..., Flask], receiver: WebhookReceiver
) -> None:
    app = threaded(WEBHOOK_RECEIVER_LEASE_SECONDS=0.05)
    seen: list[str] = []
    receiver.on("order.paid")(lambda e: seen.append(e.id))
    store = receiver.get_store(app)
    store.accept(Event.from_dict(make_event("order.paid", event_id="orphan")))
    time.sleep(0.1)
    from webhook_receiver.testing import deliver

    deliver(app.test_client(), make_event("order.paid", event_id="new"), secret=SECRET)
    wait_status(receiver, app, "orphan", EventStatus.PROCESSED)
    wait_status(receiver, app, "new", EventStatus.PROCESSED)
    assert sorted(seen) == ["new", "orphan"]


def test_celery_broker_down_answers_503_and_keeps_the_event(receiver: WebhookReceiver) -> None:
    from celery import Celery

    receiver.on("order.paid")(lambda e: None)
    celery = Celery("down", broker="redis://127.0.0.1:1/0")
    celery.conf.broker_connection_timeout = 1
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=SQLITE_DEFAULT)
    receiver.init_app(app, celery=celery)
    from webhook_receiver.testing import deliver

    receiver.get_config(app).dispatcher.close()  # no monitor sending wake-ups to a broker that is down
    answer = deliver(app.test_client(), make_event("order.paid", event_id="queued"), secret=SECRET)
    assert answer.status_code == 503
    assert answer.get_json() == {"id": "queued", "status": "unavailable", "error": "the task queue is unavailable"}
    stored = receiver.get_store(app).get("queued")
    assert stored is not None and stored.status is EventStatus.PENDING, "kept for upstream's retry"


def test_celery_needs_an_app_and_a_shared_store(
    make_app: Callable[..., Flask], caplog: pytest.LogCaptureFixture
) -> None:
    from celery import Celery

    with pytest.raises(RuntimeError, match="needs a Celery app"):
        make_app(WEBHOOK_RECEIVER_DISPATCH="celery")
    memory_app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE="memory://")
    with pytest.raises(RuntimeError, match="cannot see the memory store"):
        WebhookReceiver().init_app(memory_app, celery=Celery("x"))
    sqlite_app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=SQLITE_DEFAULT)
    with caplog.at_level(logging.WARNING, logger="webhook_receiver"):
        WebhookReceiver().init_app(sqlite_app, celery=Celery("y"))
    assert "only workers on this machine can reach" in caplog.text
    for config in sqlite_app.extensions["webhook_receiver"].values():
        config.dispatcher.close()


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("WEBHOOK_RECEIVER_DISPATCH", "later"),
        ("WEBHOOK_RECEIVER_MAX_ATTEMPTS", 0),
        ("WEBHOOK_RECEIVER_LEASE_SECONDS", -1),
        ("WEBHOOK_RECEIVER_THREADS", 1.5),
    ],
)
def test_malformed_dispatch_settings(make_app: Callable[..., Flask], key: str, value: Any) -> None:
    with pytest.raises(RuntimeError, match=key):
        make_app(
            **{key: value, "WEBHOOK_RECEIVER_DISPATCH": "thread"}
            if key != "WEBHOOK_RECEIVER_DISPATCH"
            else {key: value}
        )
