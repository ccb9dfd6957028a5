"""SQLAlchemyStore with Flask-SQLAlchemy: the app's database, and handlers whose writes commit with their outcome."""

from __future__ import annotations

import logging
from typing import Any, Iterator

import pytest
import sqlalchemy as sa
from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from webhook_receiver import Event, StoreUnavailable, WebhookReceiver
from webhook_receiver.stores import ClaimState, EventStatus, MemoryStore
from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore, build_metadata
from webhook_receiver.testing import deliver, make_event

from .conftest import DATABASES, SECRET, drop_tables, new_app, require_database


class Shop:
    """An app as a shop writes it: Flask-SQLAlchemy, a model of its own, a receiver on the same db."""

    def __init__(self, url: str, prefix: str, **config: Any) -> None:
        self.url = url
        self.prefix = prefix
        self.db = SQLAlchemy()
        db = self.db

        class Shipment(db.Model):  # type: ignore[name-defined,misc]
            __tablename__ = f"{prefix}shipments"
            id = db.Column(db.Integer, primary_key=True)
            event_id = db.Column(db.String(200), nullable=False)  # no unique constraint, on purpose

        self.Shipment = Shipment
        self.store = SQLAlchemyStore(db, prefix=prefix, lease_seconds=30)
        self.receiver = WebhookReceiver()
        self.app: Flask = new_app(
            WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
            WEBHOOK_RECEIVER_STORE=self.store,
            SQLALCHEMY_DATABASE_URI=url,
            **config,
        )
        db.init_app(self.app)
        with self.app.app_context():
            db.create_all()
        self.client = self.app.test_client()

    def start(self) -> None:
        self.receiver.init_app(self.app)

    def send(self, body: dict[str, Any]) -> Any:
        return deliver(self.client, body, secret=SECRET)

    def shipments(self) -> list[str]:
        with self.app.app_context():
            return sorted(s.event_id for s in self.db.session.execute(sa.select(self.Shipment)).scalars())

    def close(self) -> None:
        with self.app.app_context():
            self.db.engine.dispose()
        drop_tables(self.url, self.prefix)


@pytest.fixture(params=sorted(DATABASES))
def shop(request: pytest.FixtureRequest, table_prefix: str) -> Iterator[Shop]:
    url = DATABASES[request.param]
    require_database(url)
    made = Shop(url, table_prefix)
    yield made
    made.close()


def test_a_transactional_handler_commits_its_writes_with_its_outcome(shop: Shop) -> None:
    @shop.receiver.on("order.paid", transactional=True)
    def ship(event: Event) -> None:
        shop.db.session.add(shop.Shipment(event_id=event.id))

    shop.start()
    body = make_event("order.paid", event_id="e-ship")
    assert shop.send(body).get_json() == {"id": "e-ship", "status": "processed"}
    assert shop.send(dict(body, attempt=2)).get_json()["status"] == "duplicate"
    assert shop.shipments() == ["e-ship"]
    with shop.app.app_context():
        stored = shop.store.get("e-ship")
    assert stored is not None and stored.status is EventStatus.PROCESSED
    assert [outcome.ok for outcome in stored.handlers.values()] == [True]


def test_a_handler_that_raises_has_its_writes_rolled_back_and_its_failure_recorded(shop: Shop) -> None:
    calls: list[int] = []

    @shop.receiver.on("order.paid", transactional=True, name="ship")
    def ship(event: Event) -> None:
        calls.append(1)
        shop.db.session.add(shop.Shipment(event_id=event.id))
        if len(calls) == 1:
            raise RuntimeError("the carrier is down")

    shop.start()
    body = make_event("order.paid", event_id="e-fail")
    assert shop.send(body).status_code == 500
    assert shop.shipments() == []
    with shop.app.app_context():
        stored = shop.store.get("e-fail")
    assert stored is not None and stored.status is EventStatus.FAILED
    assert stored.handlers["ship"].error == "RuntimeError: the carrier is down"
    assert shop.send(dict(body, attempt=2)).get_json()["status"] == "processed"
    assert shop.shipments() == ["e-fail"]


def test_a_stale_lease_rolls_everything_back_and_records_nothing(shop: Shop) -> None:
    """Another worker takes the event over while the handler runs: the handler's writes are undone."""

    @shop.receiver.on("order.paid", transactional=True, name="ship")
    def ship(event: Event) -> None:
        shop.db.session.add(shop.Shipment(event_id=event.id))
        engine = sa.create_engine(shop.url)  # another worker, on a connection of its own
        with engine.begin() as conn:
            conn.execute(
                sa.text(f"UPDATE {shop.prefix}events SET lease_token = 'taken-over' WHERE id = :id"), {"id": event.id}
            )
        engine.dispose()

    shop.start()
    answer = shop.send(make_event("order.paid", event_id="e-stale"))
    assert answer.status_code == 409 and answer.get_json()["status"] == "in_progress"
    assert shop.shipments() == []
    with shop.app.app_context():
        stored = shop.store.get("e-stale")
    assert stored is not None and stored.handlers == {} and stored.status is EventStatus.PROCESSING


def test_handlers_run_in_order_and_only_the_failed_ones_again(shop: Shop) -> None:
    ran: list[str] = []

    @shop.receiver.on("order.paid", name="plain")
    def plain(event: Event) -> None:
        ran.append("plain")

    @shop.receiver.on("order.paid", transactional=True, name="ship")
    def ship(event: Event) -> None:
        ran.append("ship")
        shop.db.session.add(shop.Shipment(event_id=event.id))
        if ran.count("ship") == 1:
            raise ValueError("first time")

    shop.start()
    body = make_event("order.paid", event_id="e-mixed")
    assert shop.send(body).status_code == 500
    assert shop.send(dict(body, attempt=2)).get_json()["status"] == "processed"
    assert ran == ["plain", "ship", "ship"]
    assert shop.shipments() == ["e-mixed"]


def test_a_handler_that_commits_on_its_own_is_reported(shop: Shop, caplog: pytest.LogCaptureFixture) -> None:
    @shop.receiver.on("order.paid", transactional=True, name="eager")
    def eager(event: Event) -> None:
        shop.db.session.add(shop.Shipment(event_id=event.id))
        shop.db.session.commit()

    shop.start()
    with caplog.at_level(logging.WARNING, logger="webhook_receiver"):
        assert shop.send(make_event("order.paid", event_id="e-eager")).get_json()["status"] == "processed"
    assert "transactional handler eager committed on its own" in caplog.text
    assert shop.shipments() == ["e-eager"]


def test_a_store_on_its_own_engine_gives_handlers_its_session(table_prefix: str) -> None:
    url = DATABASES["postgresql"]
    require_database(url)
    store = SQLAlchemyStore(url, prefix=table_prefix)
    effects = sa.Table(f"{table_prefix}effects", sa.MetaData(), sa.Column("event_id", sa.String(200)))
    effects.create(store.engine)
    receiver = WebhookReceiver()

    @receiver.on("order.paid", transactional=True)
    def ship(event: Event) -> None:
        store.session.execute(effects.insert().values(event_id=event.id))

    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=store)
    receiver.init_app(app)
    try:
        with pytest.raises(RuntimeError, match="session of a running transactional handler"):
            store.session  # noqa: B018 - outside a handler there is none
        answer = deliver(app.test_client(), make_event("order.paid", event_id="e-own"), secret=SECRET)
        assert answer.get_json()["status"] == "processed"
        with store.engine.connect() as conn:
            assert conn.execute(sa.select(effects.c.event_id)).scalars().all() == ["e-own"]
    finally:
        store.close()
        drop_tables(url, table_prefix)


def test_transactional_handlers_need_a_store_that_can(tmp_path: Any) -> None:
    receiver = WebhookReceiver()

    @receiver.on("order.paid", transactional=True, name="ship")
    def ship(event: Event) -> None: ...

    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=MemoryStore())
    with pytest.raises(RuntimeError, match=r"handlers ship are transactional, and the memory store cannot"):
        receiver.init_app(app)
    later = WebhookReceiver()
    later.init_app(new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET))  # a TESTING app: a memory store
    with pytest.raises(RuntimeError, match=r"handlers late are transactional, and the memory store cannot"):
        later.on("order.paid", transactional=True, name="late")(lambda event: None)
    assert later.handlers == [], "nothing was registered"


@pytest.mark.parametrize("scheme", ["postgresql", "mariadb"])
def test_urls_in_the_config_build_the_store(scheme: str, table_prefix: str) -> None:
    url = DATABASES[scheme]
    require_database(url)
    receiver = WebhookReceiver()
    receiver.on("order.paid")(lambda event: None)
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url, WEBHOOK_RECEIVER_TABLE_PREFIX=table_prefix
    )
    receiver.init_app(app)
    store = receiver.get_store(app)
    try:
        assert isinstance(store, SQLAlchemyStore) and store.prefix == table_prefix and store.reach == "network"
        assert (
            "@" in store.location
            and deliver(app.test_client(), make_event("order.paid"), secret=SECRET).status_code == 200
        )
    finally:
        store.close()
        drop_tables(url, table_prefix)


def test_the_tables_are_public_for_migrations_and_can_be_left_to_them(table_prefix: str) -> None:
    url = DATABASES["postgresql"]
    require_database(url)
    metadata = build_metadata(table_prefix)
    assert sorted(metadata.tables) == [
        f"{table_prefix}deliveries",
        f"{table_prefix}events",
        f"{table_prefix}watermarks",
    ]
    store = SQLAlchemyStore(url, prefix=table_prefix, create_tables=False)
    try:
        with pytest.raises(StoreUnavailable, match="does not exist"):
            store.get("x")
        metadata.create_all(store.engine)  # what a migration does
        assert store.get("x") is None
    finally:
        store.close()
        drop_tables(url, table_prefix)


def test_a_password_in_the_url_shows_nowhere() -> None:
    store = SQLAlchemyStore("postgresql+psycopg://shop:hunter2@127.0.0.1:1/test")
    assert "hunter2" not in repr(store) and "hunter2" not in store.location
    with pytest.raises(StoreUnavailable) as raised:
        store.get("x")
    assert "hunter2" not in str(raised.value)


def test_a_db_store_and_the_app_s_engine_work_in_a_forked_child(shop: Shop) -> None:
    """``gunicorn --preload`` with Flask-SQLAlchemy: the child gets pools of its own, for the store and for ``db``."""
    import os
    import time

    from webhook_receiver.testing.store_contract import contract_event

    shop.start()
    with shop.app.app_context():
        claim = shop.store.claim(contract_event("parent"))
        assert shop.store.finish(claim, ok=True)
        parent_pool = shop.db.engine.pool
        assert parent_pool.checkedin() >= 1, "the parent holds an idle connection the child must not use"
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            with shop.app.app_context():
                fresh = shop.db.engine.pool is not parent_pool
                child = shop.store.claim(contract_event("child"))
                if fresh and child.state is ClaimState.CLAIMED and shop.store.finish(child, ok=True):
                    code = 0
        finally:
            os._exit(code)
    deadline = time.monotonic() + 30
    while not (done := os.waitpid(pid, os.WNOHANG))[0]:
        if time.monotonic() > deadline:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child hung")
        time.sleep(0.05)
    assert os.waitstatus_to_exitcode(done[1]) == 0, "the child used the parent's pool, or the store failed there"
    with shop.app.app_context():
        stored = shop.store.get("child")
        assert stored is not None and stored.status is EventStatus.PROCESSED
        again = shop.store.claim(contract_event("after"))
        assert again.state is ClaimState.CLAIMED and shop.store.finish(again, ok=True)
