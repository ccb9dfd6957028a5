"""A consumer's batch while another process holds SQLite's write lock past the store's timeout (real RabbitMQ).

Before the batch is claimed: nothing is acknowledged while the lock is held,
nothing is lost, and each event runs once after it is released. During the
batch (the first handler's run takes the lock): the outcomes are written once
it is released, each event having run once.
"""

from __future__ import annotations

import threading
import uuid
from pathlib import Path

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.stores.sqlite import SQLiteStore

from .conftest import SECRET, new_app
from .queues import Rabbit, cloudevent, consume, rabbit_fixture  # noqa: F401
from .test_dispatch_durable import LockHolder


def test_a_batch_claimed_while_sqlite_is_locked_is_not_acknowledged_and_runs_once_after(
    receiver: WebhookReceiver, rabbit: Rabbit, tmp_path: Path
) -> None:
    path = tmp_path / "events.sqlite3"
    store = SQLiteStore(str(path), timeout=0.2, lease_seconds=3.0)
    store.get("warm-up")  # the file and its tables exist before the lock is taken
    ids = [f"review18-{uuid.uuid4().hex}" for _ in range(8)]
    calls: dict[str, int] = {}
    acked_while_locked: list[int] = []

    @receiver.on("order.paid")
    def ship(event: Event) -> None:
        calls[event.id] = calls.get(event.id, 0) + 1

    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=store)
    receiver.init_app(app)
    holder = LockHolder(path)
    rabbit.publish([cloudevent(event_id) for event_id in ids])
    consumer = receiver.consumer(app, rabbit.url, concurrency=1, prefetch=16)
    consumer.retry_backoff = 0.1

    def release() -> None:
        acked_while_locked.append(consumer.stats.acked)
        holder.release()

    timer = threading.Timer(1.5, release)
    timer.start()
    try:
        consume(consumer, lambda stats: stats.acked >= 8, timeout=30)
    finally:
        timer.cancel()
        holder.release()
    assert acked_while_locked == [0]
    assert consumer.stats.retried >= 1  # the first failure stops the intake: the rest wait, unacknowledged
    assert calls == dict.fromkeys(ids, 1)
    assert all(store.get(event_id).status.value == "processed" for event_id in ids)  # type: ignore[union-attr]
    assert rabbit.count() == 0


def test_sqlite_locked_while_a_batch_runs_its_outcomes_are_written_after_and_each_ran_once(
    receiver: WebhookReceiver, rabbit: Rabbit, tmp_path: Path
) -> None:
    path = tmp_path / "events.sqlite3"
    store = SQLiteStore(str(path), timeout=0.2, lease_seconds=4.0)
    store.get("warm-up")
    ids = [f"review18-{uuid.uuid4().hex}" for _ in range(8)]
    calls: dict[str, int] = {}
    holders: list[LockHolder] = []

    @receiver.on("order.paid")
    def ship(event: Event) -> None:
        calls[event.id] = calls.get(event.id, 0) + 1
        if not holders:  # the first run of the batch: lock the file for longer than the store waits
            holders.append(LockHolder(path))
            threading.Timer(1.0, holders[0].release).start()

    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=store)
    receiver.init_app(app)
    rabbit.publish([cloudevent(event_id) for event_id in ids])
    consumer = receiver.consumer(app, rabbit.url, concurrency=1, prefetch=16)
    consumer.retry_backoff = 0.1
    try:
        consume(consumer, lambda stats: stats.acked >= 8, timeout=30)
    finally:
        for holder in holders:
            holder.release()
    assert calls == dict.fromkeys(ids, 1)
    assert consumer.stats.outcomes == {"processed": 8}
    assert all(store.get(event_id).status.value == "processed" for event_id in ids)  # type: ignore[union-attr]
    assert rabbit.count() == 0
