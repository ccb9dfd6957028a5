"""Several receivers on one app: settings of each its own, and the docs' example run as written."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import pytest
from flask import Flask

from webhook_receiver import WebhookReceiver
from webhook_receiver.dispatch.thread import ThreadDispatcher
from webhook_receiver.stores import EventStatus, MemoryStore
from webhook_receiver.stores.redis import RedisStore
from webhook_receiver.testing import deliver, make_event

from .conftest import REDIS_URL, SECRET, new_app

ROOT = Path(__file__).resolve().parent.parent

SHOP_SECRET = "shop-secret-5f1c0d2e9a8b7c6d"
OLD, NEW = "outlet-old-secret-1a2b3c4d5e", "outlet-new-secret-6f7a8b9c0d"

#: The store URL the docs' example gives app-wide.
DOCS_STORE = '"sqlite:///webhooks.sqlite3"'


def docs_example() -> str:
    """The code block of the "Several receivers" section of docs/handlers.rst."""
    text = (ROOT / "docs" / "handlers.rst").read_text()
    section = text[text.index("Several receivers\n") :]
    block = section[section.index("::\n\n") + 4 :]
    lines = []
    for line in block.splitlines():
        if line and not line.startswith("    "):
            break
        lines.append(line[4:])
    return "\n".join(lines).strip() + "\n"


def run_docs_example(
    instance: Path, replace: dict[str, str], **preset: Any
) -> tuple[WebhookReceiver, WebhookReceiver, Flask]:
    """Run the docs' example as written, in an instance folder of the test's own, with a recording handler
    added to each receiver.

    :param replace: pieces of the example's text to replace (the store URL), each found once.
    :param preset: config keys the app has before the example's lines run (the example sets none of them).
    """
    source = docs_example()
    for old, new in replace.items():
        assert source.count(old) == 1, (old, source)
        source = source.replace(old, new)

    def flask(name: str) -> Flask:
        app = Flask(name, instance_path=str(instance))
        app.config.update(preset)
        return app

    namespace: dict[str, Any] = {
        "__name__": "docs_example",
        "os": os,
        "Flask": flask,
        "WebhookReceiver": WebhookReceiver,
        "old": OLD,
        "new": NEW,
    }
    os.environ["SHOP_SECRET"] = SHOP_SECRET
    try:
        exec(compile(source, "docs/handlers.rst", "exec"), namespace)
        shop, outlet = namespace["shop"], namespace["outlet"]
        ran: list[tuple[str, str]] = []
        shop.on("order.paid", name="test.shop")(lambda event: ran.append(("shop", event.id)))
        outlet.on("order.paid", name="test.outlet")(lambda event: ran.append(("outlet", event.id)))
        app = namespace["create_app"]()
    finally:
        del os.environ["SHOP_SECRET"]
    app.extensions["test.ran"] = ran
    return shop, outlet, app


def close(app: Flask) -> None:
    for config in app.extensions["webhook_receiver"].values():
        config.dispatcher.close()


def wait_processed(receiver: WebhookReceiver, app: Flask, ids: list[str]) -> None:
    store = receiver.get_store(app)
    deadline = time.monotonic() + 30
    while True:
        left = [i for i in ids if (s := store.get(i)) is None or s.status is not EventStatus.PROCESSED]
        if not left:
            return
        assert time.monotonic() < deadline, f"{len(left)} of {len(ids)} events never ran: {left[:5]}"
        time.sleep(0.02)


def check_the_docs_example(shop: WebhookReceiver, outlet: WebhookReceiver, app: Flask) -> None:
    """20 events sent to outlet: only outlet's handlers run, shop's never; each receiver at its own URL."""
    client = app.test_client()
    assert outlet.get_config(app).url == "/hooks/outlet" and shop.get_config(app).url == "/webhooks/shop"
    outlet_dispatcher, shop_dispatcher = outlet.get_config(app).dispatcher, shop.get_config(app).dispatcher
    assert isinstance(outlet_dispatcher, ThreadDispatcher) and isinstance(shop_dispatcher, ThreadDispatcher)
    assert (outlet_dispatcher.threads, shop_dispatcher.threads) == (2, 4), "outlet's entry is its own"
    assert (outlet.get_store(app).receiver, shop.get_store(app).receiver) == ("outlet", "shop")
    ids = [f"outlet-{n}" for n in range(20)]
    for n, event_id in enumerate(ids):
        secret = OLD if n % 2 else NEW  # both of the rotation are accepted
        answer = deliver(client, make_event("order.paid", event_id=event_id), secret=secret, path="/hooks/outlet")
        assert answer.status_code == 202, answer.get_data(as_text=True)
    wait_processed(outlet, app, ids)
    ran = app.extensions["test.ran"]
    assert sorted(ran) == sorted(("outlet", i) for i in ids), "outlet's handlers ran each event once, shop's never"
    assert [e.id for e in shop.get_store(app).events()] == [], "shop's store holds none of outlet's events"
    assert all(shop.get_store(app).get(i) is None for i in ids)
    # each receiver at its own URL, with its own secret
    assert (
        deliver(client, make_event("order.paid", event_id="x"), secret=SHOP_SECRET, path="/webhooks/outlet").status_code
        == 404
    )
    assert (
        deliver(client, make_event("order.paid", event_id="x"), secret=SHOP_SECRET, path="/hooks/outlet").status_code
        == 401
    )
    answer = deliver(client, make_event("order.paid", event_id="shop-1"), secret=SHOP_SECRET, path="/webhooks/shop")
    assert answer.status_code == 202
    wait_processed(shop, app, ["shop-1"])
    assert ("shop", "shop-1") in ran and ("outlet", "shop-1") not in ran
    assert outlet.get_store(app).get("shop-1") is None


def test_the_docs_example_with_a_store_url_of_each_receiver_s_own(tmp_path: Path) -> None:
    """memory:// app-wide: each receiver opens a store of its own, so this needs nothing of the stores."""
    shop, outlet, app = run_docs_example(tmp_path, {DOCS_STORE: '"memory://"'})
    try:
        check_the_docs_example(shop, outlet, app)
    finally:
        close(app)


#: outlet's entry in the docs' example.
OUTLET_ENTRY = '"outlet": {"URL": "/hooks/outlet", "THREADS": 2}'


def test_the_docs_example_with_redis_and_a_prefix_per_receiver(tmp_path: Path, redis_prefix: str) -> None:
    """A Redis URL app-wide; the app-wide prefix is shop's, and outlet's entry gives its own, which reaches
    the store factory. Before the fix, outlet inherited shop's URL and prefix, and shop's workers ran outlet's
    events."""
    replace = {
        DOCS_STORE: f'"{REDIS_URL}"',
        OUTLET_ENTRY: OUTLET_ENTRY[:-1] + f', "REDIS_PREFIX": "{redis_prefix}:outlet"' + "}",
    }
    shop, outlet, app = run_docs_example(tmp_path, replace, WEBHOOK_RECEIVER_REDIS_PREFIX=f"{redis_prefix}:shop")
    try:
        shop_store, outlet_store = shop.get_store(app), outlet.get_store(app)
        assert isinstance(shop_store, RedisStore) and isinstance(outlet_store, RedisStore)
        assert f"{redis_prefix}:shop" in repr(shop_store) and f"{redis_prefix}:outlet" in repr(outlet_store)
        check_the_docs_example(shop, outlet, app)
    finally:
        close(app)


def test_the_docs_example_as_written_one_sqlite_file_for_both(tmp_path: Path) -> None:
    shop, outlet, app = run_docs_example(tmp_path, {})
    try:
        check_the_docs_example(shop, outlet, app)
    finally:
        close(app)


def test_the_docs_example_with_one_redis_prefix_for_both(tmp_path: Path, redis_prefix: str) -> None:
    shop, outlet, app = run_docs_example(
        tmp_path, {DOCS_STORE: f'"{REDIS_URL}"'}, WEBHOOK_RECEIVER_REDIS_PREFIX=redis_prefix
    )
    try:
        check_the_docs_example(shop, outlet, app)
    finally:
        close(app)


def test_init_app_writes_nothing_into_the_app_config_and_defaults_are_each_receiver_s_own(
    redis_prefix: str,
) -> None:
    """The bug: read_config wrote the first receiver's defaults into app.config, so the second inherited them."""
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=REDIS_URL)
    before = dict(app.config)
    shop, outlet = WebhookReceiver(name="shop"), WebhookReceiver(name="outlet")
    shop.init_app(app)
    outlet.init_app(app)
    assert dict(app.config) == before, "init_app wrote into app.config"
    assert (shop.get_config(app).url, outlet.get_config(app).url) == ("/webhooks/shop", "/webhooks/outlet")
    assert "prefix='webhook_receiver:outlet'" in repr(outlet.get_store(app))
    assert "prefix='webhook_receiver:shop'" in repr(shop.get_store(app))
    client = app.test_client()
    assert client.post("/webhooks/outlet").status_code == 401, "outlet is mounted at its own default URL"


def test_constructor_wins_over_the_entry_which_wins_over_the_app_wide_key() -> None:
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY="app-wide-secret-0123456789",
        WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH=1000,
        WEBHOOK_RECEIVERS={
            "outlet": {"SECRET_KEY": "entry-secret-0123456789", "URL": "/entry/outlet", "MAX_CONTENT_LENGTH": "2000"}
        },
    )
    outlet = WebhookReceiver(name="outlet", url="/constructor/outlet")
    shop = WebhookReceiver(name="shop")
    outlet.init_app(app)
    shop.init_app(app)
    assert outlet.get_config(app).url == "/constructor/outlet", "the constructor wins over the entry"
    assert outlet.secret_key(app) == "entry-secret-0123456789", "the entry wins over the app-wide key"
    assert outlet.get_config(app).max_content_length == 2000
    assert shop.secret_key(app) == "app-wide-secret-0123456789" and shop.get_config(app).max_content_length == 1000
    client = app.test_client()
    assert client.post("/entry/outlet").status_code == 404


def test_two_receivers_at_one_url_are_refused() -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_URL="/hooks")
    WebhookReceiver(app, name="shop")
    with pytest.raises(RuntimeError, match=r"'shop' and 'outlet' would both be mounted at /hooks.*WEBHOOK_RECEIVERS"):
        WebhookReceiver(app, name="outlet")


def test_a_store_instance_shared_by_two_receivers_is_seen_through_for_receiver() -> None:
    store = MemoryStore()
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=store)
    shop, outlet = WebhookReceiver(app, name="shop"), WebhookReceiver(app, name="outlet")
    assert (shop.get_store(app).receiver, outlet.get_store(app).receiver) == ("shop", "outlet")
    other = new_app(WEBHOOK_RECEIVERS={"moltin": {"STORE": store, "SECRET_KEY": SECRET}})
    assert WebhookReceiver(other).get_store(other) is store, "the default receiver's view is the store itself"


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (["outlet"], r"WEBHOOK_RECEIVERS must be a dict .* not a value of type list"),
        ({"outlet": "/hooks/outlet"}, r"WEBHOOK_RECEIVERS\['outlet'\] must be a dict .* type str"),
        ({"outlet": {"URL": "hooks"}}, r"WEBHOOK_RECEIVERS\['outlet'\]\['URL'\] must be a path starting with '/'"),
        ({"outlet": {"THREADS": "many"}}, r"WEBHOOK_RECEIVERS\['outlet'\]\['THREADS'\] must be a positive whole"),
    ],
)
def test_a_malformed_entry_is_refused_naming_where_it_is(value: Any, message: str) -> None:
    with pytest.raises(RuntimeError, match=message):
        WebhookReceiver(new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVERS=value), name="outlet")


def test_an_entry_from_the_environment_with_flask_s_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    """As docs/configuration.rst says: FLASK_WEBHOOK_RECEIVERS__outlet__URL, read by from_prefixed_env."""
    monkeypatch.setenv("FLASK_WEBHOOK_RECEIVERS__outlet__URL", "/hooks/outlet")
    monkeypatch.setenv("FLASK_WEBHOOK_RECEIVERS__outlet__THREADS", "2")
    monkeypatch.setenv("FLASK_WEBHOOK_RECEIVER_SECRET_KEY", SECRET)
    app = new_app(WEBHOOK_RECEIVER_DISPATCH="thread")
    app.config.from_prefixed_env()
    outlet = WebhookReceiver(app, name="outlet")
    config = outlet.get_config(app)
    try:
        assert config.url == "/hooks/outlet" and isinstance(config.dispatcher, ThreadDispatcher)
        assert config.dispatcher.threads == 2
    finally:
        config.dispatcher.close()
