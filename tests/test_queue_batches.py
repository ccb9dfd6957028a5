"""A consumer's batches: the messages it holds are claimed, run and acknowledged together, with every guarantee.

A real RabbitMQ (its STOMP plugin) and a real SQLite store: messages are
published before the consumer starts, so that they arrive as batches.
"""

from __future__ import annotations

import uuid

from webhook_receiver import Event, WebhookReceiver

from .conftest import SECRET, new_app
from .queues import Rabbit, cloudevent, consume, rabbit_fixture  # noqa: F401


def test_a_batch_runs_each_event_once_and_acknowledges_a_second_message_of_it_as_a_duplicate(
    receiver: WebhookReceiver, rabbit: Rabbit
) -> None:
    ran: list[str] = []

    @receiver.on("order.paid")
    def ship(event: Event) -> None:
        ran.append(event.id)

    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver.init_app(app)
    ids = [f"batch-{uuid.uuid4().hex}" for _ in range(30)]
    rabbit.publish([cloudevent(event_id) for event_id in ids for _ in range(2)])  # each twice, side by side
    consumer = receiver.consumer(app, rabbit.url, concurrency=4, prefetch=16)
    consume(consumer, lambda stats: stats.acked >= 60)
    assert sorted(ran) == sorted(ids)
    assert consumer.stats.outcomes == {"processed": 30, "duplicate": 30}
    assert consumer.stats.retried == 0
    store = receiver.get_store(app)
    assert all(store.get(event_id).status.value == "processed" for event_id in ids)  # type: ignore[union-attr]
    assert rabbit.count() == 0


def test_a_failing_handler_in_a_batch_gives_back_its_messages_only(receiver: WebhookReceiver, rabbit: Rabbit) -> None:
    ids = [f"batch-{uuid.uuid4().hex}" for _ in range(12)]
    failing = ids[5]
    calls: dict[str, int] = {}

    @receiver.on("order.paid")
    def ship(event: Event) -> None:
        calls[event.id] = calls.get(event.id, 0) + 1
        if event.id == failing and calls[event.id] == 1:
            raise RuntimeError("the first run fails")

    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver.init_app(app)
    rabbit.publish([cloudevent(event_id) for event_id in ids] + [cloudevent(failing)])
    consumer = receiver.consumer(app, rabbit.url, concurrency=1, prefetch=16)
    consumer.retry_backoff = 0.1
    consume(consumer, lambda stats: stats.acked >= 13)
    assert calls == {event_id: 2 if event_id == failing else 1 for event_id in ids}
    assert consumer.stats.retried >= 1  # the failed message (and its copy, while the first was not done)
    assert consumer.stats.outcomes["processed"] == 12
    assert rabbit.count() == 0
