"""Review of issue 17, item 7 for a store on the app's own engine: MariaDB connections not in utf8mb4.

``SQLAlchemyStore(engine)`` or ``SQLAlchemyStore(db)`` takes the app's connections as they are. With
``?charset=utf8`` (utf8mb3, a common URL in older apps) ``INSERT IGNORE`` turned an emoji of a body
into ``?`` (silently: IGNORE makes the error a warning), and a background worker's handler got the
changed text; with ``?charset=latin1`` the claim raised a bare ``UnicodeEncodeError``. Bodies are
kept byte for byte, or the store refuses, naming the fix.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import sqlalchemy as sa

from webhook_receiver import Event
from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore
from webhook_receiver.testing import make_event

from .conftest import MARIADB_URL, drop_tables, require_database

NAME = "caf\u00e9 \U0001f600"


@pytest.fixture(params=["utf8", "latin1"])
def engine(request: pytest.FixtureRequest, table_prefix: str) -> Iterator[sa.Engine]:
    require_database(MARIADB_URL)
    made = sa.create_engine(f"{MARIADB_URL}?charset={request.param}")
    yield made
    made.dispose()
    drop_tables(MARIADB_URL, table_prefix)


def test_a_body_is_kept_as_sent_or_the_store_refuses_naming_the_fix(engine: sa.Engine, table_prefix: str) -> None:
    store = SQLAlchemyStore(engine, prefix=table_prefix)
    event = Event.from_dict(make_event("order.paid", {"type": "order", "id": "o-1", "name": NAME}, event_id="ev-1"))
    with pytest.raises(RuntimeError, match=r"\?charset=utf8mb4"):
        store.accept(event)
    with pytest.raises(RuntimeError, match=r"\?charset=utf8mb4"):  # every use, not the first only
        store.get("ev-1")


def test_a_utf8mb4_engine_keeps_the_body(table_prefix: str) -> None:
    require_database(MARIADB_URL)
    engine = sa.create_engine(f"{MARIADB_URL}?charset=utf8mb4")
    try:
        store = SQLAlchemyStore(engine, prefix=table_prefix)
        body = make_event("order.paid", {"type": "order", "id": "o-1", "name": NAME}, event_id="ev-1")
        assert store.accept(Event.from_dict(body)) is None
        stored = store.get("ev-1")
        assert stored is not None and Event.from_stored(stored.raw).data["name"] == NAME
    finally:
        engine.dispose()
        drop_tables(MARIADB_URL, table_prefix)
