"""A consumer's batches: the messages it holds are claimed, run and acknowledged together, with every guarantee.

A real RabbitMQ (its STOMP plugin) and a real SQLite store: messages are
published before the consumer starts, so that they arrive as batches.
"""

from __future__ import annotations

import logging
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

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


def test_a_batch_keeps_the_lease_of_every_event_until_its_finish(tmp_path: Path, receiver: WebhookReceiver) -> None:
    """An event whose handlers ran early in a batch is still held while later ones run: no worker takes it over."""
    from webhook_receiver.dispatch.inline import InlineDispatcher
    from webhook_receiver.stores import ClaimState
    from webhook_receiver.stores.sqlite import SQLiteStore

    path = str(tmp_path / "events.sqlite3")
    other = SQLiteStore(path, receiver="moltin")  # another worker on the same file
    looks: list[ClaimState] = []
    first = f"held-{uuid.uuid4().hex}"

    @receiver.on("order.paid")
    def ship(event: Event) -> None:
        if event.id != first:  # the later events: slow, past the first one's lease
            time.sleep(0.7)
            looks.append(other.claim(Event.from_cloudevent(cloudevent(first))).state)

    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=SQLiteStore(path, lease_seconds=1.0))
    receiver.init_app(app)
    dispatcher = receiver.get_config(app).dispatcher
    assert isinstance(dispatcher, InlineDispatcher)
    ids = [first, *(uuid.uuid4().hex for _ in range(3))]
    events = [Event.from_cloudevent(cloudevent(event_id)) for event_id in ids]
    with app.app_context():
        handlers = receiver.handlers_for("order.paid", app)
        outcomes = dispatcher.dispatch_many([(event, handlers) for event in events])
    assert looks == [ClaimState.BUSY] * 3  # 2.1 s after its claim, its 1 s lease is still held
    assert [getattr(outcome, "status", outcome) for outcome in outcomes] == ["processed"] * 4


def test_a_batch_finish_cut_part_way_by_an_outage_counts_the_events_it_wrote_as_processed(
    receiver: WebhookReceiver, caplog: pytest.LogCaptureFixture
) -> None:
    """A store writing a batch's finish one by one fails part-way: its retry's refusals are no takeover."""
    from webhook_receiver.dispatch.inline import InlineDispatcher
    from webhook_receiver.errors import StoreUnavailable
    from webhook_receiver.stores import Claim, MemoryStore
    from webhook_receiver.stores.base import Run

    class CutOnce(MemoryStore):
        """Its third finish fails once, as a connection lost in the middle of the batch's writes."""

        finishes = 0

        def finish(self, claim: Claim, *, ok: bool, last: Run | None = None, **kwargs: Any) -> bool:
            CutOnce.finishes += 1
            if CutOnce.finishes == 3:
                raise StoreUnavailable("cut", "the connection was lost")
            return super().finish(claim, ok=ok, last=last, **kwargs)

    ran: list[str] = []
    receiver.on("order.paid")(lambda event: ran.append(event.id))
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=CutOnce())
    receiver.init_app(app)
    dispatcher = receiver.get_config(app).dispatcher
    assert isinstance(dispatcher, InlineDispatcher)
    events = [Event.from_cloudevent(cloudevent(f"cut-{uuid.uuid4().hex}")) for _ in range(5)]
    with app.app_context(), caplog.at_level(logging.WARNING, logger="webhook_receiver"):
        outcomes = dispatcher.dispatch_many([(event, receiver.handlers_for("order.paid", app)) for event in events])
    assert [getattr(outcome, "status", outcome) for outcome in outcomes] == ["processed"] * 5
    assert sorted(ran) == sorted(event.id for event in events)  # each once
    assert "taken over" not in caplog.text
    store = receiver.get_store(app)
    assert all(store.get(event.id).status.value == "processed" for event in events)  # type: ignore[union-attr]
