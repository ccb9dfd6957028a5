"""Workers started by ``init_app`` wait for the handlers registered right after it.

``WebhookReceiver(app)`` then ``@receiver.on(...)`` is the other common way to set up an
extension. A due event that a previous process left (accepted, never run) must not be taken by a
worker started in ``init_app`` before its handler is registered: it would run with no handler and
be marked processed, its effect lost.
"""

from __future__ import annotations

import time
from pathlib import Path

from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.stores import EventStatus
from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.testing.store_contract import contract_event

from .conftest import SECRET


def test_a_due_event_left_by_a_previous_process_runs_with_handlers_registered_after_init_app(tmp_path: Path) -> None:
    path = tmp_path / "events.sqlite3"
    before = SQLiteStore(str(path))
    assert before.accept(contract_event("left-behind")) is None  # answered 202, then the process died
    before.close()

    app = Flask(__name__, instance_path=str(tmp_path))  # not TESTING: workers start in init_app
    app.config.update(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=f"sqlite:///{path}",
        WEBHOOK_RECEIVER_DISPATCH="thread",
    )
    receiver = WebhookReceiver(app)
    time.sleep(0.2)  # an import that takes a moment before the decorators below run
    ran: list[str] = []

    @receiver.on("order.paid")
    def paid(event: Event) -> None:
        ran.append(event.id)

    store = receiver.get_store(app)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            stored = store.get("left-behind")
            if stored is not None and stored.status is EventStatus.PROCESSED:
                break
            time.sleep(0.05)
        assert ran == ["left-behind"], "the event ran with its handler, not with none"
        stored = store.get("left-behind")
        assert stored is not None and [outcome.ok for outcome in stored.handlers.values()] == [True]
    finally:
        app.extensions["webhook_receiver"]["moltin"].dispatcher.close()
