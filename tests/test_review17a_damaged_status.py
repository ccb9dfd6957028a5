"""Review of issue 17, item 9 (a damaged row fails alone) for a row whose status the version does not know.

A status written by hand, or by a newer version rolled back from, made ``events()`` (so ``flask
webhooks events`` and ``listen``) and ``get()`` raise ``ValueError`` for every caller, and
``accept()`` of that event's redelivery raise it too (a 500 for good).
"""

from __future__ import annotations

from typing import Iterator

import pytest
import sqlalchemy as sa

from webhook_receiver import Event
from webhook_receiver.stores import EventStatus
from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore
from webhook_receiver.testing import make_event

from .conftest import DATABASES, drop_tables, require_database


@pytest.fixture(params=sorted(DATABASES))
def damaged(request: pytest.FixtureRequest, table_prefix: str) -> Iterator[SQLAlchemyStore]:
    url = DATABASES[request.param]
    require_database(url)
    store = SQLAlchemyStore(url, prefix=table_prefix)
    for n in range(3):
        assert store.accept(Event.from_dict(make_event("order.paid", event_id=f"ev-{n}"))) is None
    engine = sa.create_engine(url)
    events = store.metadata.tables[f"{table_prefix}events"]
    with engine.begin() as conn:
        conn.execute(sa.update(events).where(events.c.id == "ev-1").values(status="archived"))
    engine.dispose()
    yield store
    store.close()
    drop_tables(url, table_prefix)


def test_a_row_of_an_unknown_status_is_listed_as_failed_with_the_reason(damaged: SQLAlchemyStore) -> None:
    listed = {stored.id: stored for stored in damaged.events()}
    assert sorted(listed) == ["ev-0", "ev-1", "ev-2"]
    assert listed["ev-0"].status is EventStatus.PENDING
    assert listed["ev-1"].status is EventStatus.FAILED and "archived" in (listed["ev-1"].error or "")
    found = damaged.get("ev-1")
    assert found is not None and found.status is EventStatus.FAILED


def test_a_redelivery_of_it_is_queued_again(damaged: SQLAlchemyStore) -> None:
    damaged.accept(Event.from_dict(make_event("order.paid", event_id="ev-1")))
    taken = set()
    while (claim := damaged.claim_due()) is not None:
        taken.add(claim.event_id)
    assert taken == {"ev-0", "ev-1", "ev-2"}
