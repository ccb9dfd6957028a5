"""Review of issue 17, item 9 on MariaDB: a row whose id is not UTF-8 fails alone.

Ids are ``VARBINARY`` on MariaDB, decoded as UTF-8 when read. A row written by hand (or by another
program) with an id that is not UTF-8 made ``claim_due`` raise ``UnicodeDecodeError`` on every call,
so no worker took any event of the receiver again; ``events()`` raised on it too.
"""

from __future__ import annotations

from typing import Iterator

import pytest
import sqlalchemy as sa

from webhook_receiver import Event
from webhook_receiver.stores import EventStatus
from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore
from webhook_receiver.testing import make_event

from .conftest import MARIADB_URL, drop_tables, require_database


@pytest.fixture
def store(table_prefix: str) -> Iterator[SQLAlchemyStore]:
    require_database(MARIADB_URL)
    made = SQLAlchemyStore(MARIADB_URL, prefix=table_prefix)
    assert made.accept(Event.from_dict(make_event("order.paid", event_id="ev-1"))) is None
    engine = sa.create_engine(MARIADB_URL)
    with engine.begin() as conn:  # due before the others, so that a worker comes to it first
        conn.execute(
            sa.text(
                f"INSERT INTO {table_prefix}events (receiver, id, trigger_name, status, raw, received_at,"
                " updated_at, attempts, due_at, background)"
                " VALUES ('moltin', X'FF61', 'order.paid', 'pending', '{}', 1, 1, 0, 1, 1)"
            )
        )
    engine.dispose()
    assert made.accept(Event.from_dict(make_event("order.paid", event_id="ev-2"))) is None
    yield made
    made.close()
    drop_tables(MARIADB_URL, table_prefix)


def test_the_queue_goes_on_past_a_row_whose_id_is_not_utf8(store: SQLAlchemyStore) -> None:
    taken = []
    while (claim := store.claim_due()) is not None:
        taken.append(claim.event_id)
    assert taken == ["ev-1", "ev-2"]
    listed = {stored.id: stored for stored in store.events()}
    assert listed["\ufffda"].status is EventStatus.FAILED and "not UTF-8" in (listed["\ufffda"].error or "")
