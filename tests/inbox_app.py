"""An app with the inbox mounted and events in it: for the browser tests and the docs' screenshots.

Its handlers fail on purpose: ``shop.ship`` (every event) fails the first
run of an event whose id starts with ``fail-``, and succeeds on a replay;
``shop.notify`` (order events) fails every event whose body asks for it
(``data.always_fail``). Events are delivered
through the real endpoint, each at a chosen time on the store's clock.
"""

from __future__ import annotations

import os
import tempfile
import time
from typing import Any, Callable

from flask import Flask, Request

from webhook_receiver import WebhookReceiver
from webhook_receiver.stores.base import EventStore
from webhook_receiver.stores.clock import LeaseClock
from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.testing import deliver, make_event

SECRET = "whsec-inbox-demo-1f2e3d4c5b6a"
#: The header the demo's access check reads: ``X-Inbox-User: <name>`` lets *name* in, unless it is ``mallory``.
USER_HEADER = "X-Inbox-User"
#: What an event's id, trigger-like fields and handler error hold in the XSS cases.
XSS = '<script>alert("id")</script>"><img src=x onerror=alert(1)>'


class ShiftedClock(LeaseClock):
    """The store's wall clock, set back by :attr:`offset` seconds while events are seeded."""

    def __init__(self) -> None:
        super().__init__()
        self.offset = 0.0

    def wall(self) -> float:
        return time.time() - self.offset


def allow(request: Request) -> str | bool:
    """The demo's access check: the user named in :data:`USER_HEADER`, or a cookie set by the test."""
    user = request.headers.get(USER_HEADER) or request.cookies.get("inbox_user", "")
    return user if user and user != "mallory" else False


def make_inbox_app(
    directory: str | None = None, auth: Callable[..., Any] | str = allow, store: EventStore | None = None
) -> tuple[Flask, ShiftedClock]:
    """The app, its SQLite store in *directory* (a new temporary one by default) unless *store* is given, and the clock.

    The clock is the SQLite store's: with another *store*, :func:`send` delivers every event now.
    """
    directory = directory or tempfile.mkdtemp(prefix="inbox-demo-")
    receiver = WebhookReceiver()
    runs: dict[str, int] = {}

    @receiver.on("*", name="shop.ship")
    def ship(event: Any) -> None:
        runs[event.id] = runs.get(event.id, 0) + 1
        if event.id.startswith("fail-") and runs[event.id] == 1:
            raise ConnectionError("warehouse API timed out after 10.0 s")

    @receiver.on("order.*", name="shop.notify")
    def notify(event: Any) -> None:
        message = event.data.get("always_fail") if isinstance(event.data, dict) else None
        if message:
            raise ValueError(str(message))

    clock = ShiftedClock()
    app = Flask(__name__, instance_path=directory)
    app.config.update(
        TESTING=True,
        SECRET_KEY="inbox-demo-app-key",
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=store or SQLiteStore(os.path.join(directory, "events.db"), clock=clock),
        WEBHOOK_RECEIVER_INBOX_URL="/webhooks/inbox",
        WEBHOOK_RECEIVER_INBOX_AUTH=auth,
    )
    receiver.init_app(app)
    return app, clock


def send(app: Flask, clock: ShiftedClock, trigger: str, event_id: str, *, ago: float = 0.0, **data: Any) -> int:
    """Deliver one event as if *ago* seconds ago; the endpoint's status code."""
    body = make_event(trigger, {"type": trigger.partition(".")[0], "id": event_id[-12:], **data}, event_id=event_id)
    clock.offset = ago
    try:
        return int(deliver(app.test_client(), body, secret=SECRET).status_code)
    finally:
        clock.offset = 0.0


def seed(app: Flask, clock: ShiftedClock, *, count: int = 60) -> None:
    """Events over the last day: mostly processed, some failed (``fail-...``), one with hostile text."""
    triggers = ["order.paid", "order.created", "order.fulfilled", "product.updated", "customer.created"]
    for n in range(count):
        trigger = triggers[n % len(triggers)]
        prefix = "fail-" if n % 7 == 3 else "evt-"
        send(app, clock, trigger, f"{prefix}{n:04d}-8c1f2a", ago=(count - n) * 86400 / count)
    send(app, clock, "order.paid", "evt-always-failing", ago=600, always_fail="card processor said: declined")
    # upstream's retry of it (attempt 2): logged in its delivery attempts
    again = make_event(
        "order.paid",
        {"type": "order", "id": "always-failing", "always_fail": "card processor said: declined"},
        event_id="evt-always-failing",
        attempt=2,
    )
    deliver(app.test_client(), again, secret=SECRET)


def seed_hostile(app: Flask, clock: ShiftedClock) -> str:
    """An event whose id, data and handler error hold markup and script; its id."""
    event_id = f"xss-{XSS}"
    send(app, clock, "order.paid", event_id, ago=30, always_fail=XSS, name=XSS, status=XSS)
    return event_id


def store_of_kind(kind: str, request: Any) -> Any:
    """The store a parametrized inbox test runs on: ``memory``, ``redis``, a database of ``DATABASES``, or
    None (the app's default SQLite store); a database's tables are dropped when the test ends."""
    from webhook_receiver.stores.memory import MemoryStore

    from .conftest import DATABASES, REDIS_URL, drop_tables, require_database

    store: Any = None
    if kind == "memory":
        store = MemoryStore()
    elif kind == "redis":
        from webhook_receiver.stores.redis import RedisStore

        store = RedisStore(REDIS_URL, prefix=request.getfixturevalue("redis_prefix"))
    elif kind in DATABASES:
        from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore

        require_database(DATABASES[kind])
        prefix = request.getfixturevalue("table_prefix")
        store = SQLAlchemyStore(DATABASES[kind], prefix=prefix)
        request.addfinalizer(lambda: (store.close(), drop_tables(DATABASES[kind], prefix)))
    return store
