"""Review of issue 17: database passwords typed the way people type them never show.

Before the fix, a password with an unencoded '@' (``postgres:hunter@2secret@host``) was cut by
SQLAlchemy at the first '@': the rest of it became the host name, shown in the store's repr and in
every StoreUnavailable message (which the receiver logs); and a ``?pwd=`` / ``?pass=`` query
parameter showed in the store's repr and in ``listen``'s first line.
"""

from __future__ import annotations

import logging

import pytest

from webhook_receiver import WebhookReceiver
from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore
from webhook_receiver.testing import deliver, make_event

from .conftest import DATABASES, SECRET, new_app, require_database

TAIL = "2tailOfThePassword"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://postgres:hunter@{TAIL}@127.0.0.1:5432/test",
        f"mysql+pymysql://root:hunter@{TAIL}@127.0.0.1:3306/test",
        f"postgresql://postgres:hunter@{TAIL}/x@127.0.0.1:5432/test",
    ],
)
def test_an_unencoded_at_sign_in_a_password_is_refused_without_showing_it(
    url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ValueError, match="%40") as raised:
        SQLAlchemyStore(url)
    assert TAIL not in str(raised.value) and "hunter" not in str(raised.value)
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url)
    with pytest.raises(RuntimeError) as refused:
        WebhookReceiver().init_app(app)
    assert TAIL not in str(refused.value) and "hunter" not in str(refused.value)
    assert TAIL not in caplog.text


@pytest.mark.parametrize("name", ["postgresql", "mariadb"])
def test_an_encoded_at_sign_works_and_stays_hidden(name: str, caplog: pytest.LogCaptureFixture) -> None:
    base = DATABASES[name]
    require_database(base)
    user = base.split("://", 1)[1].split("@", 1)[0]
    # trust / no password on the test servers: the password is sent, and ignored
    url = base.replace(f"{user}@", f"{user}:hunter%40{TAIL}@", 1) if name == "postgresql" else base
    store = SQLAlchemyStore(url)
    assert TAIL not in repr(store) and TAIL not in store.location
    store.close()


@pytest.mark.parametrize("parameter", ["pwd", "pass", "PWD"])
def test_a_password_query_parameter_of_any_spelling_is_hidden_in_the_store_s_repr(
    parameter: str, caplog: pytest.LogCaptureFixture
) -> None:
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/test?{parameter}=s3cret{TAIL}"
    store = SQLAlchemyStore(url)
    assert TAIL not in repr(store) and TAIL not in store.location
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url)
    caplog.set_level(logging.DEBUG)
    receiver = WebhookReceiver()
    receiver.on("order.paid")(lambda event: None)
    receiver.init_app(app)
    assert TAIL not in repr(receiver.get_config(app))
    deliver(app.test_client(), make_event("order.paid"), secret=SECRET)  # the driver refuses the option: 503
    assert TAIL not in caplog.text
    store.close()


@pytest.mark.parametrize(
    "url, meant",
    [
        ("postgresql+psycopg_async://postgres@127.0.0.1:5432/test", "postgresql+psycopg://"),
        ("mysql+aiomysql://root@127.0.0.1:3306/test", "mysql+pymysql://"),
    ],
)
def test_an_asyncio_driver_is_refused_naming_the_synchronous_one(url: str, meant: str) -> None:
    # Before: postgresql+psycopg_async was accepted, and every delivery failed (a bare ImportError for
    # greenlet, a 500; with greenlet, 'greenlet_spawn has not been called', a 503 for good).
    with pytest.raises(ValueError, match="asyncio") as raised:
        SQLAlchemyStore(url)
    assert meant in str(raised.value)
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url)
    with pytest.raises(RuntimeError, match="asyncio"):
        WebhookReceiver().init_app(app)
