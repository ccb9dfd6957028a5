"""Batches through the default ``claim_many`` / ``finish_many`` (one call per event): the memory and Redis stores.

A real RabbitMQ (its STOMP plugin): one event of a batch fails its first run,
its second copy sits next to it in the same batch; only the others are
acknowledged at first, the failed one is delivered again and runs once more.
"""

from __future__ import annotations

import uuid

import pytest

from webhook_receiver import Event, WebhookReceiver

from .conftest import SECRET, new_app
from .queues import Rabbit, cloudevent, consume, rabbit_fixture  # noqa: F401


@pytest.mark.parametrize("store", ["memory://", "redis://127.0.0.1:6379/13"])
def test_a_failed_event_of_a_batch_on_a_default_store_is_given_back_and_runs_again(
    receiver: WebhookReceiver, rabbit: Rabbit, store: str
) -> None:
    ids = [f"review18-{uuid.uuid4().hex}" for _ in range(10)]
    failing = ids[4]
    calls: dict[str, int] = {}
    handled: list[str] = []

    @receiver.on("order.paid")
    def ship(event: Event) -> None:
        calls[event.id] = calls.get(event.id, 0) + 1
        if event.id == failing and calls[event.id] == 1:
            raise RuntimeError("the first run fails")

    from webhook_receiver import signals

    def on_handled(sender: object, event: Event, **_: object) -> None:
        handled.append(event.id)

    signals.event_handled.connect(on_handled)
    try:
        app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=store)
        receiver.init_app(app)
        bodies = [cloudevent(event_id) for event_id in ids]
        bodies.insert(5, cloudevent(failing))  # its copy, in the same batch
        rabbit.publish(bodies)
        consumer = receiver.consumer(app, rabbit.url, concurrency=1, prefetch=32)
        consumer.retry_backoff = 0.1
        consume(consumer, lambda stats: stats.acked >= 11, timeout=30)
    finally:
        signals.event_handled.disconnect(on_handled)
    assert calls == {event_id: 2 if event_id == failing else 1 for event_id in ids}
    assert consumer.stats.outcomes.get("processed") == 10
    assert consumer.stats.outcomes.get("duplicate") == 1
    assert sorted(handled) == sorted(ids)  # event_handled once for each, the failed one after its second run
    status = receiver.get_store(app)
    assert all(status.get(event_id).status.value == "processed" for event_id in ids)  # type: ignore[union-attr]
    assert rabbit.count() == 0
