"""``latest_only`` under concurrency: the watermark is taken before the handler runs, as a compare-and-set.

Two deliveries of one resource run at once on a real server (werkzeug,
threaded, inline dispatch) against each real store. The newer one arrives
first and is still running when the older one, 50 ms later, comes in: the
older is skipped and the newer's effect stays. The window that remains (see
docs/handlers.rst): an older event whose mark was taken before the newer one
arrived may still be running when the newer one runs; both run, and whichever
writes last wins.
"""

from __future__ import annotations

import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterator

import pytest
from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.stores import EventStore
from webhook_receiver.stores.memory import MemoryStore
from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.testing import deliver, make_event

from .conftest import DATABASES, REDIS_URL, SECRET, drop_tables, new_app, require_database

NEWER = "2026-11-30T10:00:05.000Z"
OLDER = "2026-11-30T10:00:01.000Z"
#: How long a handler waits for the other delivery before the test fails (never reached when all is well).
PATIENCE = 10.0


def update(event_id: str, when: str) -> dict[str, Any]:
    data = {"type": "order", "id": "o-1", "meta": {"timestamps": {"updated_at": when}}}
    return make_event("order.updated", data, event_id=event_id)


def epoch(when: str) -> float:
    return datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()


@pytest.fixture(params=["memory", "sqlite", "redis", "postgresql", "mariadb"])
def store(request: pytest.FixtureRequest, tmp_path: Path, table_prefix: str) -> Iterator[EventStore]:
    kind = request.param
    made: EventStore
    if kind == "memory":
        made = MemoryStore()
    elif kind == "sqlite":
        made = SQLiteStore(str(tmp_path / "events.sqlite3"))
    elif kind == "redis":
        from webhook_receiver.stores.redis import RedisStore

        made = RedisStore(REDIS_URL, prefix=request.getfixturevalue("redis_prefix"))
    else:
        from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore

        require_database(DATABASES[kind])
        made = SQLAlchemyStore(DATABASES[kind], prefix=table_prefix)
    yield made
    made.close()
    if kind in DATABASES:
        drop_tables(DATABASES[kind], table_prefix)


@pytest.fixture
def serve(receiver: WebhookReceiver, live_server: Callable[[Flask], str], store: EventStore) -> str:
    """The receiver on a real threaded server, inline dispatch, on *store*: its URL."""
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=store)
    receiver.init_app(app)
    return live_server(app) + "/webhooks/moltin"


def wait(flag: threading.Event, what: str) -> None:
    assert flag.wait(PATIENCE), f"waited {PATIENCE} s for {what}"


class Mirror:
    """A ``latest_only`` handler keeping the last state it was given per resource: last write wins."""

    def __init__(self) -> None:
        self.runs: list[str] = []
        self.state: dict[str, str] = {}
        self.entered = {"newer": threading.Event(), "older": threading.Event()}
        self.wrote = {"newer": threading.Event(), "older": threading.Event()}
        self.answered = {"newer": threading.Event(), "older": threading.Event()}

    def write(self, event: Event) -> None:
        self.state[event.data["id"]] = event.id
        self.wrote[event.id].set()


def test_a_newer_event_still_running_makes_an_older_one_50_ms_later_skip(
    receiver: WebhookReceiver, serve: str, store: EventStore
) -> None:
    mirror = Mirror()

    @receiver.on("order.updated", latest_only=True, name="mirror")
    def handle(event: Event) -> None:
        mirror.runs.append(event.id)
        mirror.entered[event.id].set()
        if event.id == "newer":
            # the newer one is slow: it writes once the older one was answered (or, were it let in, started)
            deadline = time.monotonic() + PATIENCE
            while not (mirror.answered["older"].is_set() or mirror.entered["older"].is_set()):
                assert time.monotonic() < deadline, "the older delivery neither ran nor was answered"
                time.sleep(0.005)
        else:
            wait(mirror.wrote["newer"], "the newer event's write")  # were it let in, it would write last
        mirror.write(event)

    answers: dict[str, Any] = {}

    def send(event_id: str, when: str) -> None:
        answers[event_id] = deliver(serve, update(event_id, when), secret=SECRET)
        mirror.answered[event_id].set()

    newer = threading.Thread(target=send, args=("newer", NEWER))
    newer.start()
    wait(mirror.entered["newer"], "the newer event's handler to start")
    time.sleep(0.05)  # 50 ms apart, as upstream's reordered retries are
    send("older", OLDER)
    newer.join(PATIENCE)

    assert mirror.runs == ["newer"], "the older event was skipped, not run alongside the newer one"
    assert mirror.state == {"o-1": "newer"}, "the newer event's effect wins"
    assert {k: (a.status_code, a.json()["status"]) for k, a in answers.items()} == {
        "newer": (200, "processed"),
        "older": (200, "processed"),
    }
    older = store.get("older")
    assert older is not None
    skipped = older.handlers["mirror"].skipped
    assert skipped is not None and "already handled as of 2026-11-30T10:00:05" in skipped
    assert store.watermark("mirror", "order", "o-1") == epoch(NEWER)


def test_the_window_left_an_older_event_already_running_when_the_newer_one_arrives(
    receiver: WebhookReceiver, serve: str, store: EventStore
) -> None:
    """Documented, not closed: the older event's mark was taken first, so both run; the last write wins."""
    mirror = Mirror()

    @receiver.on("order.updated", latest_only=True, name="mirror")
    def handle(event: Event) -> None:
        mirror.runs.append(event.id)
        mirror.entered[event.id].set()
        if event.id == "older":
            wait(mirror.answered["newer"], "the newer delivery's answer")  # still running when the newer one ends
        mirror.write(event)

    answers: dict[str, Any] = {}

    def send(event_id: str, when: str) -> None:
        answers[event_id] = deliver(serve, update(event_id, when), secret=SECRET)
        mirror.answered[event_id].set()

    older = threading.Thread(target=send, args=("older", OLDER))
    older.start()
    wait(mirror.entered["older"], "the older event's handler to start")
    send("newer", NEWER)
    older.join(PATIENCE)

    assert mirror.runs == ["older", "newer"], "the newer event is never skipped for an older one"
    assert mirror.state == {"o-1": "older"}, "the window: the older event, still running, wrote last"
    assert store.watermark("mirror", "order", "o-1") == epoch(NEWER), "while the watermark says the newer"
    assert all(a.status_code == 200 for a in answers.values())
    stored = store.get("older")
    assert stored is not None and stored.handlers["mirror"].skipped is None
    # the next older event is skipped again: the window is only the one already running
    assert deliver(serve, update("oldest", "2026-11-30T09:00:00Z"), secret=SECRET).status_code == 200
    assert mirror.runs == ["older", "newer"]


def test_a_failed_newer_event_keeps_its_mark_and_its_retry_passes(
    receiver: WebhookReceiver, serve: str, store: EventStore
) -> None:
    runs: list[str] = []
    failing = ["newer"]

    @receiver.on("order.updated", latest_only=True, name="mirror")
    def handle(event: Event) -> None:
        runs.append(event.id)
        if event.id in failing:
            failing.remove(event.id)
            raise RuntimeError("the mirror is down")

    assert deliver(serve, update("newer", NEWER), secret=SECRET).status_code == 500
    assert deliver(serve, update("older", OLDER), secret=SECRET).status_code == 200, "skipped, not run"
    retry = deliver(serve, update("newer", NEWER), secret=SECRET)  # upstream's retry of the failed one
    assert (retry.status_code, retry.json()["status"]) == (200, "processed")
    assert runs == ["newer", "newer"], "the older event stayed skipped; the retry passed as equal"
    stored = store.get("newer")
    assert stored is not None and stored.handlers["mirror"].ok and stored.handlers["mirror"].attempts == 2
