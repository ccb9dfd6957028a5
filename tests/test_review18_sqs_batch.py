"""An SQS batch (moto's server) mixing poison, good messages and one whose handler fails its first run.

Only the good ones are deleted at first; the failed one comes again and runs
once more; the poison ends in the dead-letter queue by the redrive policy; the
store records each good event processed.
"""

from __future__ import annotations

import uuid

from webhook_receiver import Event, WebhookReceiver

from .conftest import SECRET, new_app
from .queues import Sqs, cloudevent, consume, moto_endpoint_fixture  # noqa: F401


def test_an_sqs_batch_with_poison_and_a_failing_event_deletes_the_rest_and_retries_that_one(
    receiver: WebhookReceiver, moto_endpoint: str
) -> None:
    sqs = Sqs(moto_endpoint, visibility=30, max_receives=2)
    ids = [f"review18-{uuid.uuid4().hex}" for _ in range(6)]
    failing = ids[2]
    calls: dict[str, int] = {}

    @receiver.on("order.paid")
    def ship(event: Event) -> None:
        calls[event.id] = calls.get(event.id, 0) + 1
        if event.id == failing and calls[event.id] == 1:
            raise RuntimeError("the first run fails")

    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver.init_app(app)
    bodies = [cloudevent(event_id) for event_id in ids]
    bodies[1:1] = [b"not json", b'{"type": "order.paid"}']
    sqs.publish(bodies)
    consumer = receiver.consumer(app, f"{sqs.url}?wait=1", concurrency=1, prefetch=20)
    consumer.retry_backoff = 0.0
    consume(consumer, lambda stats: stats.acked >= 6 and sqs.count(sqs.dead_url) >= 2, timeout=60)  # moved on a receive
    assert calls == {event_id: 2 if event_id == failing else 1 for event_id in ids}
    assert consumer.stats.outcomes == {"processed": 6}
    store = receiver.get_store(app)
    assert all(store.get(event_id).status.value == "processed" for event_id in ids)  # type: ignore[union-attr]
    assert sorted(sqs.take_all(sqs.dead_url)) == sorted([b"not json", b'{"type": "order.paid"}'])
    assert sqs.count() == 0
