"""Review 17b: after the upgrade, a Redis prefix's keys stay with the receiver they were written for.

A single-receiver deployment ("shop", an explicit ``WEBHOOK_RECEIVER_REDIS_PREFIX``)
left events under the prefix, one of them accepted (202) and still queued. The
upgrade adds a second receiver on the same app-wide prefix, the docs'
several-receivers example. Whichever receiver wrote first took the prefix: a
delivery to ``outlet`` arriving first gave it shop's keys, shop's queued event
among them (outlet's queue would run it with outlet's handlers), and shop lost
sight of its own history.
"""

from __future__ import annotations

import redis
from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.stores import EventStatus
from webhook_receiver.stores.redis import RedisStore
from webhook_receiver.testing import deliver, make_event
from webhook_receiver.testing.store_contract import contract_event

from .conftest import REDIS_URL

SECRET = "review17b-prefix-owner-secret-0123"


def _app(prefix: str) -> tuple[Flask, list[tuple[str, str]]]:
    app = Flask(__name__)
    app.config.update(
        TESTING=True,  # no takeover worker: the test itself takes shop's queued event
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=REDIS_URL,
        WEBHOOK_RECEIVER_REDIS_PREFIX=prefix,
        WEBHOOK_RECEIVERS={"outlet": {"URL": "/webhooks/outlet"}},
    )
    ran: list[tuple[str, str]] = []
    shop = WebhookReceiver(app, name="shop")
    outlet = WebhookReceiver(app, name="outlet")

    @shop.on("order.paid")
    def shop_paid(event: Event) -> None:
        ran.append(("shop", event.id))

    @outlet.on("order.paid")
    def outlet_paid(event: Event) -> None:
        ran.append(("outlet", event.id))

    return app, ran


def test_redis_a_second_receiver_writing_first_does_not_take_the_first_receiver_s_keys(redis_prefix: str) -> None:
    # The version before: one receiver, shop; its keys right under the prefix, no owner key.
    before = RedisStore(REDIS_URL, prefix=redis_prefix, receiver="shop")
    done = before.claim(contract_event("done-before"))
    assert before.finish(done, ok=True)
    assert before.accept(contract_event("queued-before")) is None  # answered 202, not yet run
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(f"{redis_prefix}:owner")
    before.close()

    app, ran = _app(redis_prefix)
    with app.test_client() as http:
        body = make_event("order.paid", event_id="outlet-first")
        answer = deliver(http, body, secret=SECRET, path="/webhooks/outlet")
        assert answer.status_code == 200
    assert ran == [("outlet", "outlet-first")]

    stores = {name: config.store for name, config in app.extensions["webhook_receiver"].items()}
    outlet_ids = sorted(e.id for e in stores["outlet"].events())
    assert outlet_ids == ["outlet-first"], "outlet sees only its own events"
    assert stores["shop"].get("done-before") is not None, "shop's history is still shop's"
    queued = stores["shop"].claim_due()
    assert queued is not None and queued.event_id == "queued-before", "shop's accepted event is in shop's queue"
    assert stores["shop"].finish(queued, ok=True)
    stored = stores["shop"].get("queued-before")
    assert stored is not None and stored.status is EventStatus.PROCESSED
    assert client.get(f"{redis_prefix}:owner") == b"shop"
    client.close()
