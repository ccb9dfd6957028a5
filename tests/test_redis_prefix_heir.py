"""A Redis prefix's earlier keys stay the app's first receiver's when the server was down as the app started.

``init_app`` gives the app's first receiver the keys an earlier version left
right under a shared prefix (see ``test_review17b_redis_prefix_owner``). When
the server does not answer at that moment, that adoption cannot happen: the
first write of any receiver took the prefix for itself, so a delivery to a
second receiver arriving first gave it the first's history and queued events,
and its reads before any write showed them. The server here is a redis-server
of the test's own, stopped while the app starts and started again on its port
with its data (append-only file).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import redis
from flask import Flask

from webhook_receiver import StoreUnavailable, WebhookReceiver
from webhook_receiver.stores import EventStatus
from webhook_receiver.stores.redis import RedisStore
from webhook_receiver.testing import deliver, make_event
from webhook_receiver.testing.store_contract import contract_event

from .processes import Processes, free_port, port_open, wait_for

pytestmark = pytest.mark.slow

SECRET = "prefix-heir-secret-0123456789abcdef"
PREFIX = "heir-test"


def _server(processes: Processes, port: int, folder: Path) -> None:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "yes"]
    processes.start([*args, "--dir", str(folder)], folder / "redis.log")
    wait_for(lambda: port_open(port), 15, f"redis-server on port {port}")


def _app(url: str, *, store: RedisStore | None = None) -> tuple[Flask, list[tuple[str, str]]]:
    app = Flask(__name__)
    app.config.update(
        TESTING=True,  # no takeover worker: the test takes shop's queued event itself
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=store or url,
        WEBHOOK_RECEIVER_REDIS_PREFIX=PREFIX,
        WEBHOOK_RECEIVERS={"outlet": {"URL": "/webhooks/outlet"}},
    )
    ran: list[tuple[str, str]] = []
    shop = WebhookReceiver(app, name="shop")
    outlet = WebhookReceiver(app, name="outlet")
    shop.on("order.paid")(lambda event: ran.append(("shop", event.id)))
    outlet.on("order.paid")(lambda event: ran.append(("outlet", event.id)))
    return app, ran


@pytest.mark.parametrize("shared", ["url", "instance"], ids=["one-url", "one-instance"])
def test_a_second_receiver_first_after_a_start_with_redis_down_does_not_take_the_first_s_keys(
    tmp_path: Path, shared: str
) -> None:
    port = free_port()
    url = f"redis://127.0.0.1:{port}/0"
    processes = Processes({})
    try:
        _server(processes, port, tmp_path)
        # The version before: one receiver, shop; its keys right under the prefix, no owner key.
        before = RedisStore(url, prefix=PREFIX, receiver="shop")
        assert before.finish(before.claim(contract_event("done-before")), ok=True)
        assert before.accept(contract_event("queued-before")) is None  # answered 202, not yet run
        client = redis.Redis.from_url(url)
        client.delete(f"{PREFIX}:owner")
        client.close()
        before.close()
        processes.stop_all()  # SIGTERM: the server writes its append-only file and exits
        assert not port_open(port)

        instance = RedisStore(url, prefix=PREFIX, receiver="shop", timeout=2) if shared == "instance" else None
        app, ran = _app(url, store=instance)  # init_app cannot adopt shop's keys: nothing answers
        stores = {name: config.store for name, config in app.extensions["webhook_receiver"].items()}
        with pytest.raises(StoreUnavailable):
            stores["outlet"].get("done-before")

        _server(processes, port, tmp_path)  # back, with the earlier data
        assert stores["outlet"].get("done-before") is None, "outlet's reads do not show shop's keys"
        assert [e.id for e in stores["outlet"].events()] == []
        with app.test_client() as http:
            body = make_event("order.paid", event_id="outlet-first")
            assert deliver(http, body, secret=SECRET, path="/webhooks/outlet").status_code == 200
        assert ran == [("outlet", "outlet-first")]

        assert sorted(e.id for e in stores["outlet"].events()) == ["outlet-first"], "outlet sees only its own"
        assert stores["shop"].get("done-before") is not None, "shop's history is still shop's"
        queued = stores["shop"].claim_due()
        assert queued is not None and queued.event_id == "queued-before", "shop's accepted event is shop's"
        assert stores["shop"].finish(queued, ok=True)
        stored = stores["shop"].get("queued-before")
        assert stored is not None and stored.status is EventStatus.PROCESSED
        client = redis.Redis.from_url(url)
        assert client.get(f"{PREFIX}:owner") == b"shop"
        client.close()
    finally:
        processes.stop_all()


def test_a_first_receiver_on_another_store_takes_nothing_of_a_second_receiver_s_prefix(
    tmp_path: Path, redis_prefix: str
) -> None:
    """Review 34: the heir was named whatever the first receiver's store, so a second receiver alone on its
    Redis prefix (the first on SQLite) read past its own earlier keys and wrote the first's name as owner."""
    from .conftest import REDIS_URL

    before = RedisStore(REDIS_URL, prefix=redis_prefix, receiver="outlet")  # outlet alone, before receivers
    assert before.finish(before.claim(contract_event("done-before")), ok=True)
    client = redis.Redis.from_url(REDIS_URL)
    client.delete(f"{redis_prefix}:owner")
    before.close()

    app = Flask(__name__)
    app.config.update(
        TESTING=True,
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=f"sqlite:///{tmp_path}/shop.sqlite3",  # the app's first receiver is not on Redis
        WEBHOOK_RECEIVERS={"outlet": {"URL": "/webhooks/outlet", "STORE": REDIS_URL, "REDIS_PREFIX": redis_prefix}},
    )
    WebhookReceiver(app, name="shop")
    outlet = WebhookReceiver(app, name="outlet")
    outlet.on("order.paid")(lambda event: None)
    store = app.extensions["webhook_receiver"]["outlet"].store
    assert store.get("done-before") is not None, "a read sees outlet's earlier keys"
    with app.test_client() as http:
        body = make_event("order.paid", event_id="outlet-own")
        assert deliver(http, body, secret=SECRET, path="/webhooks/outlet").status_code == 200
    assert client.get(f"{redis_prefix}:owner") == b"outlet"
    assert store.get("done-before") is not None, "outlet's earlier history is still its own"
    client.close()
