"""SIGTERM (:meth:`Consumer.stop`) in the middle of a batch: the events not started are left for the next consumer.

A real RabbitMQ (its STOMP plugin) and a SQLite store with a long lease: the
batch's events are claimed together before the first runs. Those the stop
left unstarted must not stay held by this consumer's claims until their lease
runs out: the next consumer runs them at once, each once.
"""

from __future__ import annotations

import uuid
from pathlib import Path

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.stores.sqlite import SQLiteStore

from .conftest import SECRET, new_app
from .queues import Rabbit, cloudevent, consume, rabbit_fixture  # noqa: F401


def test_events_a_stop_left_unstarted_in_a_batch_run_at_once_in_the_next_consumer(
    receiver: WebhookReceiver, rabbit: Rabbit, tmp_path: Path
) -> None:
    store = SQLiteStore(str(tmp_path / "events.sqlite3"), lease_seconds=600.0)
    ids = [f"review18-{uuid.uuid4().hex}" for _ in range(8)]
    calls: dict[str, int] = {}
    consumers = []

    @receiver.on("order.paid")
    def ship(event: Event) -> None:
        calls[event.id] = calls.get(event.id, 0) + 1
        if len(calls) == 2:
            consumers[0].stop()  # SIGTERM while the second event of the batch runs

    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=store)
    receiver.init_app(app)
    rabbit.publish([cloudevent(event_id) for event_id in ids])
    first = receiver.consumer(app, rabbit.url, concurrency=1, prefetch=16)
    consumers.append(first)
    sizes: list[int] = []
    handle_many = first.handle_many

    def observed(messages: list) -> list[str]:  # type: ignore[type-arg]
        sizes.append(len(messages))
        return handle_many(messages)

    first.handle_many = observed  # type: ignore[method-assign]
    consume(first, lambda stats: False, timeout=30)
    assert first.stats.acked == 2  # the running handler finished and was acknowledged
    assert sizes and sizes[-1] > 2, sizes  # the stop came in the middle of a batch
    second = receiver.consumer(app, rabbit.url, concurrency=1, prefetch=16)
    second.retry_backoff = 0.1
    second.max_backoff = 0.2
    consume(second, lambda stats: stats.acked >= 6, timeout=20)  # far less than the lease
    assert calls == dict.fromkeys(ids, 1)
    assert second.stats.outcomes == {"processed": 6}
    assert rabbit.count() == 0
