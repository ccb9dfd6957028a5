"""The secret and the echoed configuration.secret_key reach no log, no answer and no stored event."""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.testing import deliver, make_event

from .conftest import new_app

SECRET = "never-print-me-7f3a9c"


def test_secret_appears_nowhere(caplog: pytest.LogCaptureFixture) -> None:
    receiver = WebhookReceiver()
    events: list[Event] = []

    @receiver.on("order.paid", "integration.updated")
    def keep(event: Event) -> None:
        events.append(event)
        if event.attempt == 1:
            raise RuntimeError(f"failed on {event.raw}")

    app = new_app()
    app.config.update(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver.init_app(app)
    client = app.test_client()
    integration = {"type": "integration", "id": "i", "configuration": {"url": "u", "secret_key": SECRET}}
    bodies: list[Any] = []
    with caplog.at_level(logging.DEBUG):
        for attempt in (1, 2):
            responses = [
                deliver(client, make_event("order.paid", event_id="a", attempt=attempt), secret=SECRET),
                deliver(
                    client, make_event("integration.updated", integration, event_id="b", attempt=attempt), secret=SECRET
                ),
                deliver(client, make_event("order.paid"), secret=SECRET + "x"),
                deliver(client, make_event("order.paid"), secret=SECRET, trigger="order.created"),
                client.post(
                    "/webhooks/moltin",
                    data=SECRET,
                    headers={"X-MOLTIN-SECRET-KEY": SECRET, "X-MOLTIN-INTEGRATION-TRIGGER": "order.paid"},
                ),
                client.get("/webhooks/moltin", headers={"X-MOLTIN-SECRET-KEY": SECRET}),
            ]
            bodies.extend(r.get_data(as_text=True) for r in responses)
        stored = [receiver.get_store(app).get(i) for i in ("a", "b")]
    assert {r.status_code for r in responses} == {200, 401, 400, 405}
    assert len(events) == 4
    texts = [r.getMessage() for r in caplog.records]
    texts += [caplog.text]
    texts += bodies
    texts += [json.dumps(e.raw) + repr(e) + json.dumps(e.data) for e in events]
    texts += [json.dumps(s.raw) + repr(s) for s in stored if s is not None]
    assert len(stored) == 2 and all(stored)
    for text in texts:
        assert SECRET not in text
