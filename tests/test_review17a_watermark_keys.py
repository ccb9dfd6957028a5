"""Review of issue 17: latest_only on the SQLAlchemy store with resource keys that do not fit its columns.

Upstream's ``data.type`` / ``data.id`` are untrusted and unbounded; the watermark columns are
``VARCHAR(100)`` / ``VARCHAR(255)`` (``VARBINARY`` of 4 bytes a character on MariaDB). Before the fix:
on PostgreSQL a 300-character id (or a NUL) made every delivery a 503, for good; on MariaDB
``INSERT IGNORE`` cut the id to fit, so that a newer event of the same resource was then skipped as
"already handled", and two resources sharing the first 255 characters shared one watermark.
"""

from __future__ import annotations

import uuid
from typing import Any, Iterator

import pytest
from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.testing import deliver

from .conftest import DATABASES, SECRET, drop_tables, new_app, require_database


@pytest.fixture(params=sorted(DATABASES))
def database(request: pytest.FixtureRequest, table_prefix: str) -> Iterator[str]:
    url = DATABASES[request.param]
    require_database(url)
    yield url
    drop_tables(url, table_prefix)


def _app(url: str, prefix: str, ran: list[tuple[str, str]]) -> Flask:
    receiver = WebhookReceiver()

    @receiver.on("order.updated", latest_only=True, name="mirror")
    def mirror(event: Event) -> None:
        ran.append((event.data["id"], event.id))

    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url, WEBHOOK_RECEIVER_TABLE_PREFIX=prefix)
    receiver.init_app(app)
    return app


def _body(resource_type: str, resource_id: str, when: str) -> dict[str, Any]:
    data = {"type": resource_type, "id": resource_id, "meta": {"timestamps": {"updated_at": when}}}
    return {"id": f"ev-{uuid.uuid4().hex}", "triggered_by": "order.updated", "resources": {"data": data}}


@pytest.mark.parametrize(
    "resource_type, resource_id",
    [
        ("order", "x" * 300),
        ("order", "\U0001f600" * 300),  # 1,200 bytes of UTF-8: more than MariaDB's VARBINARY(1020)
        ("order", "a\x00b"),  # PostgreSQL text cannot hold a NUL
        ("t" * 150, "o-1"),
    ],
    ids=["long-id", "long-emoji-id", "nul-id", "long-type"],
)
def test_a_resource_key_that_does_not_fit_still_orders_its_events(
    database: str, table_prefix: str, resource_type: str, resource_id: str
) -> None:
    ran: list[tuple[str, str]] = []
    client = _app(database, table_prefix, ran).test_client()
    older = _body(resource_type, resource_id, "2026-01-01T00:00:00Z")
    newer = _body(resource_type, resource_id, "2026-01-02T00:00:00Z")
    assert deliver(client, older, secret=SECRET).status_code == 200
    assert deliver(client, newer, secret=SECRET).status_code == 200
    assert deliver(client, _body(resource_type, resource_id, "2025-12-31T00:00:00Z"), secret=SECRET).status_code == 200
    assert [event_id for _, event_id in ran] == [older["id"], newer["id"]]  # the oldest, last, is skipped


def test_two_long_ids_sharing_their_start_keep_watermarks_of_their_own(database: str, table_prefix: str) -> None:
    ran: list[tuple[str, str]] = []
    client = _app(database, table_prefix, ran).test_client()
    first, second = "\U0001f600" * 255 + "-A", "\U0001f600" * 255 + "-B"  # more than 1,020 bytes each
    newer_first = _body("order", first, "2026-01-02T00:00:00Z")
    older_second = _body("order", second, "2026-01-01T00:00:00Z")
    assert deliver(client, newer_first, secret=SECRET).status_code == 200
    assert deliver(client, older_second, secret=SECRET).status_code == 200
    assert ran == [(first, newer_first["id"]), (second, older_second["id"])]
