"""Review of today's changes: an observer whose ``watching()`` fails, and the heartbeat of a consumer's batch.

A real SQLite file, real threads (the heartbeat's); the deliveries go through
the Flask test client and the inline dispatcher's ``dispatch_many`` (what a
queue consumer calls for its batch).
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from webhook_receiver import Event, WebhookReceiver, instrumentation
from webhook_receiver.dispatch.inline import InlineDispatcher
from webhook_receiver.stores import ClaimState
from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.testing import deliver, make_event

from .conftest import SECRET, new_app
from .queues import cloudevent


class WatchingFails:
    """An observer whose ``watching()`` raises (a third party's bug); all else is fine."""

    def __init__(self) -> None:
        self.answers = 0

    def watching(self) -> bool:
        raise RuntimeError("observer broken")

    def answered(self, *args: Any, **kwargs: Any) -> None:
        self.answers += 1

    def running(self, receiver: str, event: Event, claim: Any) -> Any:
        raise AssertionError("not asked: it said nothing about watching")

    def handler(self, receiver: str, event: Event, handler: str) -> Any:
        raise AssertionError("not asked: it said nothing about watching")

    def before_accept(self, event: Event) -> Event:
        return event


def test_an_observer_whose_watching_fails_changes_no_webhook_answer(
    receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []
    receiver.on("order.paid", name="ship")(lambda event: ran.append(event.id))
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_TRACING=False)
    receiver.init_app(app)
    instrumentation.add_observer(app, WatchingFails())
    with caplog.at_level(logging.ERROR, logger="webhook_receiver"):
        response = deliver(app.test_client(), make_event("order.paid", event_id="w-1"), secret=SECRET)
    assert response.status_code == 200, "an observer's failure must not change the answer (as _Around promises)"
    assert ran == ["w-1"]
    logged = [r for r in caplog.records if "an observer of deliveries failed" in r.getMessage()]
    assert logged and logged[0].exc_info is not None, "the failure is logged, with its traceback"


def test_an_observer_whose_watching_fails_neither_breaks_a_batch_nor_holds_its_events_for_ever(
    tmp_path: Path, receiver: WebhookReceiver
) -> None:
    path = str(tmp_path / "events.sqlite3")
    other = SQLiteStore(path, receiver="moltin")  # another worker on the same file
    ran: list[str] = []
    receiver.on("order.paid", name="ship")(lambda event: ran.append(event.id))
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=SQLiteStore(path, lease_seconds=0.6))
    receiver.init_app(app)
    instrumentation.add_observer(app, WatchingFails())
    dispatcher = receiver.get_config(app).dispatcher
    assert isinstance(dispatcher, InlineDispatcher)
    ids = [f"wb-{uuid.uuid4().hex}" for _ in range(2)]
    events = [Event.from_cloudevent(cloudevent(event_id)) for event_id in ids]
    with app.app_context():
        handlers = receiver.handlers_for("order.paid", app)
        try:
            outcomes: list[Any] = dispatcher.dispatch_many([(event, handlers) for event in events])
        except Exception as exc:  # noqa: BLE001 - what the consumer sees: every message given back
            outcomes = [exc] * len(events)
    time.sleep(1.5)  # past the lease, two and a half times over: held still only if it is renewed
    states = [other.claim(event).state for event in events]
    assert states != [ClaimState.BUSY] * 2, "the batch's claims are renewed for ever: no one may take them"
    assert [getattr(outcome, "status", type(outcome).__name__) for outcome in outcomes] == ["processed"] * 2
    assert sorted(ran) == sorted(ids)


def test_an_event_finished_early_in_a_batch_is_not_reported_taken_over(
    tmp_path: Path, receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """Its finish ended its lease: the heartbeat must not renew it and then warn that another worker took it."""
    path = str(tmp_path / "events.sqlite3")
    failing = f"early-{uuid.uuid4().hex}"

    @receiver.on("order.paid")
    def ship(event: Event) -> None:
        if event.id == failing:
            raise RuntimeError("this one fails at once")
        time.sleep(0.5)  # the later events: past the renewal of the failed one's lease

    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=SQLiteStore(path, lease_seconds=1.0))
    receiver.init_app(app)
    dispatcher = receiver.get_config(app).dispatcher
    assert isinstance(dispatcher, InlineDispatcher)
    ids = [failing, *(f"late-{uuid.uuid4().hex}" for _ in range(3))]
    events = [Event.from_cloudevent(cloudevent(event_id)) for event_id in ids]
    with caplog.at_level(logging.WARNING, logger="webhook_receiver"), app.app_context():
        handlers = receiver.handlers_for("order.paid", app)
        outcomes = dispatcher.dispatch_many([(event, handlers) for event in events])
    assert [getattr(outcome, "status", outcome) for outcome in outcomes] == ["failed", *["processed"] * 3]
    taken_over = [r.getMessage() for r in caplog.records if "taken over" in r.getMessage()]
    assert taken_over == [], "no other worker took anything over"
