"""Review of issue 17: settings that were accepted and then broke every delivery, or were ignored."""

from __future__ import annotations

import os

import pytest

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore
from webhook_receiver.testing import deliver, make_event

from .conftest import MARIADB_URL, POSTGRES_URL, SECRET, new_app

#: A number as ``from_prefixed_env`` reads an environment variable of 401 digits: a Python int no float holds.
HUGE = "1" + "0" * 400


@pytest.mark.parametrize("key", ["LEASE_SECONDS", "RETRY_BACKOFF", "GRACE_SECONDS"])
@pytest.mark.parametrize("store", ["memory://", "sqlite:///events.sqlite3"])
def test_a_number_too_large_for_a_float_is_refused_at_init_app(
    monkeypatch: pytest.MonkeyPatch, key: str, store: str
) -> None:
    # Before: accepted, then every delivery answered 500 (OverflowError: int too large to convert to
    # float) on the memory and SQLite stores, 503 (bigint out of range) on PostgreSQL.
    monkeypatch.setenv(f"FLASK_WEBHOOK_RECEIVER_{key}", HUGE)
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=store, WEBHOOK_RECEIVER_DISPATCH="inline")
    app.config.from_prefixed_env()
    assert isinstance(app.config[f"WEBHOOK_RECEIVER_{key}"], int)
    with pytest.raises(RuntimeError, match=f"WEBHOOK_RECEIVER_{key} must be a positive number") as raised:
        WebhookReceiver().init_app(app)
    assert HUGE not in str(raised.value)


def test_a_large_but_finite_lease_still_runs_events(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FLASK_WEBHOOK_RECEIVER_LEASE_SECONDS", "1" + "0" * 12)  # an int a float holds
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE="sqlite:///events.sqlite3")
    app.config.from_prefixed_env()
    receiver = WebhookReceiver()
    ran: list[str] = []
    receiver.on("order.paid")(lambda event: ran.append(event.id))
    receiver.init_app(app)
    response = deliver(app.test_client(), make_event("order.paid", event_id="ev-big-lease"), secret=SECRET)
    assert response.status_code == 200
    assert ran == ["ev-big-lease"]


def test_two_receivers_mounted_by_hand_at_one_url_are_refused() -> None:
    # Before: both rules were added at /hooks; Flask routed every delivery to the first receiver,
    # whose handler ran on (and whose store marked processed) the second one's events.
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    shop, outlet = WebhookReceiver(name="shop"), WebhookReceiver(name="outlet")
    ran: list[tuple[str, str]] = []

    @shop.on("order.paid")
    def ship(event: Event) -> None:
        ran.append(("shop", event.id))

    @outlet.on("order.paid")
    def stock(event: Event) -> None:
        ran.append(("outlet", event.id))

    app.register_blueprint(shop.blueprint, url_prefix="/hooks")
    with pytest.raises(RuntimeError, match=r"'shop' and 'outlet' would both be mounted at /hooks"):
        app.register_blueprint(outlet.blueprint, url_prefix="/hooks/")
    response = deliver(app.test_client(), make_event("order.paid", event_id="ev-1"), secret=SECRET, path="/hooks")
    assert response.status_code == 200
    assert ran == [("shop", "ev-1")]


def test_a_receiver_mounted_by_hand_where_init_app_mounted_another_is_refused() -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    WebhookReceiver(name="shop").init_app(app)
    outlet = WebhookReceiver(name="outlet")
    with pytest.raises(RuntimeError, match=r"'shop' and 'outlet' would both be mounted at /webhooks/shop"):
        app.register_blueprint(outlet.blueprint, url_prefix="/webhooks/shop")


def test_one_receiver_may_be_mounted_by_hand_at_two_urls() -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    shop = WebhookReceiver(name="shop")
    ran: list[str] = []
    shop.on("order.paid")(lambda event: ran.append(event.id))
    app.register_blueprint(shop.blueprint, url_prefix="/a")
    app.register_blueprint(shop.blueprint, url_prefix="/b", name="shop_b")
    client = app.test_client()
    assert deliver(client, make_event("order.paid", event_id="ev-a"), secret=SECRET, path="/a").status_code == 200
    assert deliver(client, make_event("order.paid", event_id="ev-b"), secret=SECRET, path="/b").status_code == 200
    assert ran == ["ev-a", "ev-b"]


@pytest.mark.parametrize("url", ["/webhooks/<tenant>", "/hooks?x=1", "/hooks#frag", "/hooks/\x1b[2J"])
@pytest.mark.parametrize("where", ["app-wide", "entry", "argument"])
def test_a_mount_url_no_delivery_can_reach_is_refused_at_init_app(url: str, where: str) -> None:
    # Before: accepted; '/webhooks/<tenant>' made every delivery a 500 (TypeError: _view() got an
    # unexpected keyword argument 'tenant'), '/hooks?x=1' and '/hooks#frag' every delivery a 404.
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    if where == "app-wide":
        app.config["WEBHOOK_RECEIVER_URL"] = url
    elif where == "entry":
        app.config["WEBHOOK_RECEIVERS"] = {"moltin": {"URL": url}}
    receiver = WebhookReceiver(url=url if where == "argument" else None)
    with pytest.raises(RuntimeError, match="must be a plain path") as refused:
        receiver.init_app(app)
    assert "\x1b" not in str(refused.value)


@pytest.mark.parametrize("url", ["sqlite+pysqlite://", "sqlite+pysqlite:///:memory:"])
def test_an_in_memory_sqlite_url_for_the_sqlalchemy_store_is_refused(url: str) -> None:
    # Before: 'sqlite+pysqlite://' was accepted and gave each thread a database of its own (tables made
    # in the first one only): with thread dispatch every delivery answered 503 for good, inline all but
    # the first thread's; ':memory:' became a file named ':memory:' in the instance folder.
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url)
    with pytest.raises(RuntimeError, match="memory://"):
        WebhookReceiver().init_app(app)
    assert not any(name.startswith(":memory:") for name in os.listdir(app.instance_path))


@pytest.mark.parametrize("url", [POSTGRES_URL, MARIADB_URL], ids=["postgresql", "mariadb"])
def test_a_table_prefix_too_long_for_the_database_is_refused_at_init_app(url: str) -> None:
    # Before: accepted; every delivery then answered 503 (IdentifierError on PostgreSQL, 1103
    # 'Incorrect table name' on MariaDB).
    prefix = "whr_" + "x" * 50 + "_"
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url, WEBHOOK_RECEIVER_TABLE_PREFIX=prefix)
    with pytest.raises(RuntimeError, match="prefix .* is too long .* use a prefix of at most"):
        WebhookReceiver().init_app(app)
    fits = "whr_" + "x" * 40 + "_"
    store = SQLAlchemyStore(url, prefix=fits)  # 46 characters: its longest name, 61
    store.close()
