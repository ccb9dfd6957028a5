"""Metrics of a queue consumer: its messages are counted as deliveries are, with a ``transport`` label.

A real RabbitMQ (its STOMP plugin) and a real prometheus_client registry; the
HTTP endpoint of the same app counts its deliveries as ``transport="webhook"``.
"""

from __future__ import annotations

import uuid

import pytest

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.testing import deliver, make_event

from .conftest import SECRET, new_app
from .queues import Rabbit, cloudevent, consume, rabbit_fixture  # noqa: F401

prometheus_client = pytest.importorskip("prometheus_client")


def sample(registry: object, name: str, **labels: str) -> float:
    value = registry.get_sample_value(name, labels)  # type: ignore[attr-defined]
    return 0.0 if value is None else float(value)


def test_consumed_messages_are_counted_with_their_transport(receiver: WebhookReceiver, rabbit: Rabbit) -> None:
    ran: list[str] = []

    @receiver.on("order.paid", name="ship")
    def ship(event: Event) -> None:
        ran.append(event.id)

    registry = prometheus_client.CollectorRegistry()
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_METRICS=registry)
    receiver.init_app(app)
    assert deliver(app.test_client(), make_event("order.paid"), secret=SECRET).status_code == 200

    first, second = (f"metrics-{uuid.uuid4().hex}" for _ in range(2))
    rabbit.publish([cloudevent(first), cloudevent(second), b"not json at all"])
    consumer = receiver.consumer(app, rabbit.url, concurrency=1)
    consume(consumer, lambda stats: stats.acked >= 2 and stats.poison >= 1)
    rabbit.publish([cloudevent(first)])  # a redelivery of an event already processed
    consumer = receiver.consumer(app, rabbit.url, concurrency=1)
    consume(consumer, lambda stats: stats.acked >= 1)
    assert sorted(ran[1:]) == sorted([first, second])

    deliveries = "webhook_receiver_deliveries_total"
    stomp = {"receiver": "moltin", "transport": "stomp"}
    assert sample(registry, deliveries, trigger="order.paid", status="processed", **stomp) == 2.0
    assert sample(registry, deliveries, trigger="order.paid", status="duplicate", **stomp) == 1.0
    assert sample(registry, deliveries, trigger="other", status="bad_request", **stomp) == 1.0
    webhook = {"receiver": "moltin", "transport": "webhook"}
    assert sample(registry, deliveries, trigger="order.paid", status="processed", **webhook) == 1.0
    durations = "webhook_receiver_delivery_duration_seconds_count"
    assert sample(registry, durations, status="processed", **stomp) == 2.0
    assert sample(registry, durations, status="processed", **webhook) == 1.0
    # the handler's runs are counted as any: three calls, one from the endpoint and two from the queue
    assert sample(registry, "webhook_receiver_handler_runs_total", receiver="moltin", handler="ship", outcome="ok") == 3
    transports = {
        s.labels["transport"] for metric in registry.collect() for s in metric.samples if s.name == deliveries
    }
    assert transports == {"stomp", "webhook"}
