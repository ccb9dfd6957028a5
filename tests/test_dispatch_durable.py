"""Outcomes before the last handler survive a store hiccup: SQLite locked by another process past its busy timeout.

The first of two handlers (``charge``) has run; its outcome must be written
before the second starts. While another process holds ``BEGIN EXCLUSIVE`` on
the file for longer than the store waits, that write is refused; it is tried
again until it is taken, so ``charge`` runs once and its record says one
attempt, in the request (inline) and in a worker thread. The same holds for
the watermark a ``latest_only`` handler takes before it runs.
"""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Iterator

import pytest
from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.stores import EventStatus
from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.testing import deliver, make_event

from .conftest import SECRET, new_app

#: Run by another interpreter: hold the write lock of the SQLite file until a line arrives on stdin.
HOLD_LOCK = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN EXCLUSIVE")
print("locked", flush=True)
sys.stdin.readline()
conn.execute("ROLLBACK")
conn.close()
"""


class LockHolder:
    """Another process holding ``BEGIN EXCLUSIVE`` on a SQLite file until :meth:`release`."""

    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", HOLD_LOCK, str(path)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        assert self.process.stdout.readline().strip() == "locked", "the other process holds the lock"
        self._released = threading.Lock()

    def release(self) -> None:
        if not self._released.acquire(blocking=False):
            return
        assert self.process.stdin is not None
        try:
            self.process.stdin.write("\n")
            self.process.stdin.close()
        except (BrokenPipeError, ValueError):
            pass
        self.process.wait(10)


class ReleaseOnRefusal(logging.Handler):
    """Releases the lock once the receiver logs that a write for *event_id* was refused (not a lease renewal)."""

    def __init__(self, event_id: str) -> None:
        super().__init__(logging.WARNING)
        self.event_id = event_id
        self.holder: LockHolder | None = None
        self.refusals: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        message = record.getMessage()
        if self.event_id in message and "renew" not in message and self.holder is not None:
            self.refusals.append(message)
            self.holder.release()


@pytest.fixture
def apps() -> Iterator[list[Flask]]:
    made: list[Flask] = []
    yield made
    for app in made:
        for config in app.extensions["webhook_receiver"].values():
            config.dispatcher.close()


@pytest.mark.parametrize("dispatch", ["inline", "thread"])
def test_an_outcome_before_the_last_handler_survives_sqlite_locked_by_another_process(
    receiver: WebhookReceiver, tmp_path: Path, apps: list[Flask], dispatch: str
) -> None:
    event_id = f"locked-{dispatch}"
    path = tmp_path / "events.sqlite3"
    # 0.2 s of busy timeout: the lock, held until the refusal is logged, outlasts it; the lease does not run out
    store = SQLiteStore(str(path), lease_seconds=10, timeout=0.2)
    watcher = ReleaseOnRefusal(event_id)
    charges: list[int] = []
    emails: list[str] = []
    holders: list[LockHolder] = []

    @receiver.on("order.paid", name="charge")
    def charge(event: Event) -> None:
        charges.append(event.attempt)
        if len(charges) == 1:  # the first run only: lock the file as the handler ends
            watcher.holder = LockHolder(path)
            holders.append(watcher.holder)

    receiver.on("order.paid", name="email")(lambda event: emails.append(event.id))
    config: dict[str, Any] = {"WEBHOOK_RECEIVER_STORE": store, "WEBHOOK_RECEIVER_DISPATCH": dispatch}
    if dispatch == "thread":
        config.update(WEBHOOK_RECEIVER_THREADS=1)
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, **config)
    receiver.init_app(app)
    apps.append(app)

    logger = logging.getLogger("webhook_receiver")
    logger.addHandler(watcher)
    try:
        answer = deliver(app.test_client(), make_event("order.paid", event_id=event_id), secret=SECRET)
        if dispatch == "inline":
            assert answer.status_code == 200, answer.get_json()
            assert answer.get_json()["status"] == "processed"
        else:
            assert answer.status_code == 202
            deadline = time.monotonic() + 30
            while True:
                stored = store.get(event_id)
                if stored is not None and stored.status is EventStatus.PROCESSED:
                    break
                assert time.monotonic() < deadline, f"{event_id} is {stored.status if stored else None}"
                time.sleep(0.02)
    finally:
        logger.removeHandler(watcher)
        for holder in holders:
            holder.release()

    assert watcher.refusals, "the outcome's first write was refused while the other process held the lock"
    assert charges == [1], "charge ran once"
    assert any("cannot write the outcome of charge yet" in line for line in watcher.refusals)
    assert emails == [event_id]
    stored = store.get(event_id)
    assert stored is not None and stored.status is EventStatus.PROCESSED
    assert stored.handlers["charge"].ok and stored.handlers["charge"].attempts == 1, "the record says one attempt"
    assert stored.handlers["email"].ok and stored.attempts == 1


class LocksAtFirstWatermark(SQLiteStore):
    """A SQLite store whose file another process locks just as the first watermark is written."""

    def __init__(self, path: Path, **kwargs: Any) -> None:
        super().__init__(str(path), **kwargs)
        self.file = path
        self.holders: list[LockHolder] = []
        self.watcher: ReleaseOnRefusal | None = None

    def raise_watermark(self, handler: str, resource_type: str, resource_id: str, updated_at: float) -> Any:
        if not self.holders and self.watcher is not None:
            self.watcher.holder = LockHolder(self.file)
            self.holders.append(self.watcher.holder)
        return super().raise_watermark(handler, resource_type, resource_id, updated_at)


@pytest.mark.parametrize("dispatch", ["inline", "thread"])
def test_a_latest_only_watermark_survives_sqlite_locked_by_another_process(
    receiver: WebhookReceiver, tmp_path: Path, apps: list[Flask], dispatch: str
) -> None:
    event_id = f"mark-{dispatch}"
    store = LocksAtFirstWatermark(tmp_path / "events.sqlite3", lease_seconds=10, timeout=0.2)
    store.watcher = watcher = ReleaseOnRefusal(event_id)
    mirrored: list[str] = []
    receiver.on("order.updated", name="mirror", latest_only=True)(lambda event: mirrored.append(event.id))
    config: dict[str, Any] = {"WEBHOOK_RECEIVER_STORE": store, "WEBHOOK_RECEIVER_DISPATCH": dispatch}
    if dispatch == "thread":
        config.update(WEBHOOK_RECEIVER_THREADS=1)
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, **config)
    receiver.init_app(app)
    apps.append(app)
    data = {"type": "order", "id": "o-1", "meta": {"timestamps": {"updated_at": "2026-11-30T10:00:05Z"}}}

    logger = logging.getLogger("webhook_receiver")
    logger.addHandler(watcher)
    try:
        answer = deliver(app.test_client(), make_event("order.updated", data, event_id=event_id), secret=SECRET)
        if dispatch == "inline":
            assert (answer.status_code, answer.get_json()["status"]) == (200, "processed")
        else:
            assert answer.status_code == 202
            deadline = time.monotonic() + 30
            while (stored := store.get(event_id)) is None or stored.status is not EventStatus.PROCESSED:
                assert time.monotonic() < deadline, f"{event_id} is {stored.status if stored else None}"
                time.sleep(0.02)
    finally:
        logger.removeHandler(watcher)
        for holder in store.holders:
            holder.release()

    assert store.holders and watcher.refusals, "the watermark's first write was refused under the other process's lock"
    assert mirrored == [event_id], "the handler ran once"
    assert any("cannot write the watermark of mirror yet" in line for line in watcher.refusals)
    assert store.watermark("mirror", "order", "o-1") is not None
    stored = store.get(event_id)
    assert stored is not None and stored.handlers["mirror"].attempts == 1
