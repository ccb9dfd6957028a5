"""The SQLAlchemy store's tables and URLs on real databases (issue 17, items 3, 6, 7, 9, 14, 15).

Tables of the earlier layout (no receiver column) are refused with the SQL that
upgrades them, and that SQL works; bodies survive a latin1 / utf8mb3 MariaDB
database byte for byte; ids differing only by case, accent or a trailing space
are different events; a damaged outcomes row fails alone; concurrent first
watermarks never fail; the URLs people type reach the installed drivers, and
a password never shows.
"""

from __future__ import annotations

import threading
import uuid
from typing import Any, Iterator

import pytest
import sqlalchemy as sa

from webhook_receiver import Event, StoreUnavailable, WebhookReceiver
from webhook_receiver.stores import ClaimState, EventStatus
from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore, build_metadata, database_url
from webhook_receiver.testing import deliver, make_event
from webhook_receiver.testing.store_contract import contract_event

from .conftest import DATABASES, MARIADB_URL, SECRET, drop_tables, new_app, require_database

#: Every database the store runs on: the machine's PostgreSQL and MariaDB, and a SQLite file.
KINDS = ["postgresql", "mariadb", "sqlite"]


@pytest.fixture(params=KINDS)
def database(request: pytest.FixtureRequest, tmp_path: Any, table_prefix: str) -> Iterator[str]:
    """The URL of one database, its tables of this test's prefix dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite+pysqlite:///{tmp_path / 'events.sqlite3'}"
        return
    url = DATABASES[request.param]
    require_database(url)
    yield url
    drop_tables(url, table_prefix)


def legacy_metadata(prefix: str) -> sa.MetaData:
    """The tables as the previous release made them: keyed by the event id alone."""
    metadata = sa.MetaData()
    long_text = sa.Text().with_variant(sa.dialects.mysql.LONGTEXT(), "mysql", "mariadb")
    sa.Table(
        f"{prefix}events",
        metadata,
        sa.Column("id", sa.String(200), primary_key=True),
        sa.Column("trigger_name", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("raw", long_text, nullable=False),
        sa.Column("outcomes", long_text),
        sa.Column("received_at", sa.Float(53), nullable=False),
        sa.Column("updated_at", sa.Float(53), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, default=0),
        sa.Column("due_at", sa.Float(53)),
        sa.Column("error", sa.Text),
        sa.Column("lease_token", sa.String(64)),
        sa.Column("lease_expires", sa.Float(53)),
        sa.Column("background", sa.Boolean, nullable=False, default=False),
        sa.Index(f"{prefix}events_due", "due_at"),
        sa.Index(f"{prefix}events_lease", "lease_expires"),
        sa.Index(f"{prefix}events_received", "received_at"),
    )
    sa.Table(
        f"{prefix}watermarks",
        metadata,
        sa.Column("handler", sa.String(255), primary_key=True),
        sa.Column("resource_type", sa.String(100), primary_key=True),
        sa.Column("resource_id", sa.String(255), primary_key=True),
        sa.Column("updated_at", sa.Float(53), nullable=False),
    )
    return metadata


def test_build_metadata_keys_both_tables_by_receiver(table_prefix: str) -> None:
    metadata = build_metadata(table_prefix)
    events, marks = metadata.tables[f"{table_prefix}events"], metadata.tables[f"{table_prefix}watermarks"]
    assert [c.name for c in events.primary_key.columns] == ["receiver", "id"]
    assert [c.name for c in marks.primary_key.columns] == ["receiver", "handler", "resource_type", "resource_id"]
    assert all(index.columns.keys()[0] == "receiver" for index in events.indexes)


def test_a_receiver_name_longer_than_its_column_is_refused(tmp_path: Any) -> None:
    store = SQLAlchemyStore(f"sqlite+pysqlite:///{tmp_path / 'names.sqlite3'}")
    assert store.for_receiver("r" * 100).receiver == "r" * 100
    with pytest.raises(ValueError, match="1 to 100 characters"):
        store.for_receiver("r" * 101)
    store.close()


def test_tables_of_the_earlier_layout_are_refused_with_the_sql_that_upgrades_them(
    database: str, table_prefix: str
) -> None:
    engine = sa.create_engine(database)
    legacy = legacy_metadata(table_prefix)
    legacy.create_all(engine)
    events, marks = legacy.tables[f"{table_prefix}events"], legacy.tables[f"{table_prefix}watermarks"]
    with engine.begin() as conn:
        body = contract_event("old-1").raw_json.decode()
        conn.execute(
            events.insert().values(
                id="old-1", trigger_name="order.paid", status="processed", raw=body, outcomes="{}",
                received_at=1.0, updated_at=1.0, attempts=1, background=False,
            )
        )  # fmt: skip
        conn.execute(marks.insert().values(handler="h", resource_type="order", resource_id="o-1", updated_at=50.0))
    store = SQLAlchemyStore(database, prefix=table_prefix)
    try:
        with pytest.raises(RuntimeError, match="without the receiver column") as refused:
            store.get("old-1")
        message = str(refused.value)
        sql = message.split("maintenance window:\n\n", 1)[1].split(";\n\n(then", 1)[0]
        statements = sql.split(";\n")
        assert any(s.startswith("INSERT INTO") for s in statements), message
        with engine.begin() as conn:  # what the operator runs
            for statement in statements:
                conn.execute(sa.text(statement))
        again = SQLAlchemyStore(database, prefix=table_prefix)
        stored = again.get("old-1")
        assert stored is not None and stored.status is EventStatus.PROCESSED, "the old rows are the default receiver's"
        assert again.watermark("h", "order", "o-1") == 50.0
        assert again.for_receiver("outlet").get("old-1") is None
        claim = again.claim(contract_event("new-1"))
        assert claim.state is ClaimState.CLAIMED and again.finish(claim, ok=True)
        assert again.claim(contract_event("old-1")).state is ClaimState.DONE
        again.close()
    finally:
        store.close()
        engine.dispose()


def test_ids_that_differ_by_case_accent_or_a_trailing_space_are_different_events(
    database: str, table_prefix: str
) -> None:
    store = SQLAlchemyStore(database, prefix=table_prefix)
    try:
        ids = ["order-a1", "order-a1 ", "ordér-a1", "ORDER-A1"]
        states = [store.claim(contract_event(event_id)).state for event_id in ids]
        assert states == [ClaimState.CLAIMED] * 4, "none of them is a duplicate of another"
        assert [store.get(event_id).id for event_id in ids] == ids  # type: ignore[union-attr]
        assert sorted(e.id for e in store.events()) == sorted(ids)
        assert store.raise_watermark("h", "order", "o-a", 10.0) and store.raise_watermark("h", "order", "O-A", 5.0)
        assert (store.watermark("h", "order", "o-a"), store.watermark("h", "order", "O-A")) == (10.0, 5.0)
    finally:
        store.close()


def test_a_damaged_outcomes_row_fails_alone(database: str, table_prefix: str) -> None:
    store = SQLAlchemyStore(database, prefix=table_prefix)
    try:
        for event_id in ("damaged", "fine-1", "fine-2"):  # the damaged one is due the longest
            assert store.accept(contract_event(event_id)) is None
        engine = sa.create_engine(database)
        with engine.begin() as conn:
            conn.execute(
                sa.text(f"UPDATE {table_prefix}events SET outcomes = :bad WHERE id = 'damaged'"),
                {"bad": '{"ship": [true]}'},  # a row cut short: its fields are missing
            )
        engine.dispose()
        taken = [store.claim_due(), store.claim_due()]
        assert [c.event_id for c in taken if c] == ["fine-1", "fine-2"], "the queue goes on past the damaged row"
        assert store.claim_due() is None
        damaged = store.get("damaged")
        assert damaged is not None and damaged.status is EventStatus.FAILED
        assert damaged.error is not None and "outcomes cannot be read" in damaged.error and damaged.handlers == {}
        assert "damaged" in [e.id for e in store.events()], "listing does not raise on it"
        with pytest.raises(StoreUnavailable, match="outcomes cannot be read"):
            store.claim(contract_event("damaged"))  # a redelivery: no 2xx, the reason in the log
        assert all(c is not None and store.finish(c, ok=True) for c in taken)
    finally:
        store.close()


@pytest.mark.parametrize("kind", ["mariadb", "postgresql"])
def test_concurrent_first_watermarks_never_fail(kind: str, table_prefix: str) -> None:
    """MariaDB used to deadlock two first writes for one new resource and raise after the handler ran."""
    url = DATABASES[kind]
    require_database(url)
    store = SQLAlchemyStore(url, prefix=table_prefix)
    errors: list[BaseException] = []
    try:
        for round_ in range(30):
            told: dict[float, bool] = {}
            start = threading.Barrier(6)

            def mark(
                at: float,
                resource: str = f"p-{round_}",
                start: threading.Barrier = start,
                told: dict[float, bool] = told,
            ) -> None:
                start.wait()
                try:
                    told[at] = store.raise_watermark("h", "product", resource, at)
                except BaseException as exc:  # noqa: BLE001 - the test reports it
                    errors.append(exc)

            threads = [threading.Thread(target=mark, args=(100.0 + n,)) for n in range(6)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert errors == []
            assert told[105.0] is True and store.watermark("h", "product", f"p-{round_}") == 105.0
    finally:
        store.close()
        drop_tables(url, table_prefix)


@pytest.fixture(params=["latin1", "utf8mb3"])
def narrow_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A MariaDB database of the test's own whose default charset is not utf8mb4; dropped afterwards."""
    require_database(MARIADB_URL)
    name = f"whr_{request.param}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(MARIADB_URL)
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name} CHARACTER SET {request.param}"))
    try:
        yield sa.make_url(MARIADB_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
        admin.dispose()


def test_mariadb_bodies_are_kept_byte_for_byte_whatever_the_database_charset(narrow_database: str) -> None:
    note = "🦄 Grüße, 𝄞 and 中文"
    store = SQLAlchemyStore(narrow_database)
    try:
        body = dict(make_event("order.paid", event_id="emoji"), note=note)  # an odd but usable field, kept
        claim = store.claim(Event.from_dict(body))
        assert claim.state is ClaimState.CLAIMED and store.finish(claim, ok=True)
        stored = store.get("emoji")
        assert stored is not None and stored.raw["note"] == note
        assert store.accept(Event.from_dict({**body, "id": "emoji-queued"})) is None
        taken = store.claim_due()
        assert taken is not None and taken.raw is not None and taken.raw["note"] == note
        assert store.finish(taken, ok=True)
    finally:
        store.close()


def test_mariadb_an_events_table_in_another_charset_is_refused_with_the_fix(narrow_database: str) -> None:
    prefix = "whr_narrow_"
    made = SQLAlchemyStore(narrow_database, prefix=prefix)
    made.get("x")  # creates the tables, in utf8mb4
    made.close()
    engine = sa.create_engine(narrow_database)
    with engine.begin() as conn:  # as a table made by hand (or by a migration) in the database's charset
        conn.execute(sa.text(f"ALTER TABLE {prefix}events CONVERT TO CHARACTER SET latin1"))
    store = SQLAlchemyStore(narrow_database, prefix=prefix)
    try:
        with pytest.raises(RuntimeError, match="CONVERT TO CHARACTER SET utf8mb4") as refused:
            store.get("x")
        fix = str(refused.value).split("run ", 1)[1]
        with engine.begin() as conn:
            conn.execute(sa.text(fix))
        fixed = SQLAlchemyStore(narrow_database, prefix=prefix)
        assert fixed.get("x") is None
        fixed.close()
    finally:
        store.close()
        engine.dispose()


def _typed(url: str, scheme: str) -> str:
    """*url* as people type it: ``postgres://``, ``postgresql://``, ``mysql://`` or ``mariadb://``, no driver."""
    parsed = sa.make_url(url)
    return f"{scheme}://" + parsed.render_as_string(hide_password=False).split("://", 1)[1]


@pytest.mark.parametrize(
    ("kind", "scheme"),
    [("postgresql", "postgres"), ("postgresql", "postgresql"), ("mariadb", "mysql"), ("mariadb", "mariadb")],
)
def test_database_urls_without_a_driver_use_the_installed_one(kind: str, scheme: str, table_prefix: str) -> None:
    require_database(DATABASES[kind])
    url = _typed(DATABASES[kind], scheme)
    receiver = WebhookReceiver()
    receiver.on("order.paid")(lambda event: None)
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url, WEBHOOK_RECEIVER_TABLE_PREFIX=table_prefix
    )
    receiver.init_app(app)
    store = receiver.get_store(app)
    try:
        assert isinstance(store, SQLAlchemyStore)
        assert store.engine.url.drivername in ("postgresql+psycopg", "mysql+pymysql", "mariadb+pymysql")
        answer = deliver(app.test_client(), make_event("order.paid", event_id="typed"), secret=SECRET)
        assert answer.status_code == 200, answer.get_json()
    finally:
        store.close()
        drop_tables(DATABASES[kind], table_prefix)


def test_a_driver_that_is_not_installed_is_refused_with_the_url_to_use() -> None:
    with pytest.raises(ValueError, match=r"use mysql\+pymysql://"):
        SQLAlchemyStore("mysql+mysqldb://root@127.0.0.1:3306/test")
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE="postgresql+psycopg2://u@h/db")
    with pytest.raises(
        RuntimeError, match=r"WEBHOOK_RECEIVER_STORE: the postgresql\+psycopg2 driver.*postgresql\+psycopg://"
    ):
        WebhookReceiver(app)


def test_a_mysql_charset_that_would_change_bodies_is_refused() -> None:
    with pytest.raises(ValueError, match="charset=latin1"):
        database_url("mysql://root@127.0.0.1/test?charset=latin1")
    assert database_url("mysql://root@127.0.0.1/test").query["charset"] == "utf8mb4"


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+psycopg://shop:hunter2@127.0.0.1:1/test",
        "postgresql+psycopg://shop@127.0.0.1:1/test?password=hunter2",
        "postgres://shop@127.0.0.1:1/test?sslmode=disable&password=hunter2",
        "mysql+pymysql://shop@127.0.0.1:1/test?password=hunter2",
        "mysql://shop:hunter2@127.0.0.1:1/test",
        "mariadb://shop@127.0.0.1:1/test?passwd=hunter2",
    ],
)
def test_a_database_password_shows_nowhere(url: str) -> None:
    store = SQLAlchemyStore(url, engine_options={"connect_args": {"connect_timeout": 2}})
    shown = [repr(store), store.location, repr(store.engine), str(store.engine.url)]
    assert all("hunter2" not in text for text in shown), shown
    assert "***" in store.location
    with pytest.raises(StoreUnavailable) as raised:
        store.get("x")
    assert "hunter2" not in str(raised.value) and "hunter2" not in repr(raised.value)
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url)
    receiver = WebhookReceiver(app)
    assert "hunter2" not in repr(receiver.get_store(app)) + repr(receiver.get_config(app))
    store.close()


@pytest.mark.parametrize(
    "url",
    ["postgres://shop@127.0.0.1:1/test?password=pw-1", "mysql://shop@127.0.0.1:1/test?passwd=pw-1"],
)
def test_the_password_moved_out_of_the_query_still_reaches_the_driver(url: str) -> None:
    """(The machine's servers trust local logins, so the driver's arguments are what can be checked.)"""
    store = SQLAlchemyStore(url)
    _, kwargs = store.engine.dialect.create_connect_args(store.engine.url)
    assert kwargs.get("password", kwargs.get("passwd")) == "pw-1"
    assert not any("pw-1" in str(value) for key, value in kwargs.items() if key not in ("password", "passwd"))
    store.close()
