"""Values of settings: where the secret goes, numbers (strings, NaN, infinity), a store's lease, store URLs."""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Iterator

import pytest

from webhook_receiver import WebhookReceiver
from webhook_receiver.dispatch.thread import ThreadDispatcher
from webhook_receiver.stores import EventStore, MemoryStore, StoreSettings, register_store, registry

from .conftest import SECRET, new_app

ROOT = Path(__file__).resolve().parent.parent

# -- where the secret goes (item 12) ------------------------------------------------


def test_the_no_secret_error_says_exactly_where_the_secret_goes() -> None:
    with pytest.raises(RuntimeError) as raised:
        WebhookReceiver(new_app(), name="shop")
    message = str(raised.value)
    assert 'app.config["WEBHOOK_RECEIVER_SECRET_KEY"]' in message
    assert "FLASK_WEBHOOK_RECEIVER_SECRET_KEY" in message and "app.config.from_prefixed_env()" in message
    assert """app.config["WEBHOOK_RECEIVERS"]['shop']["SECRET_KEY"]""" in message
    assert "a bare WEBHOOK_RECEIVER_SECRET_KEY variable is not read" in message


def secret_export_line() -> str:
    """The walkthrough's line (docs/elasticpath.rst) that gives the app its webhook secret."""
    text = (ROOT / "docs" / "elasticpath.rst").read_text()
    block = text[text.index("The whole round trip") :]
    (line,) = [
        line.strip() for line in block.splitlines() if line.strip().startswith("export ") and "SECRET_KEY=" in line
    ]
    return line


#: A user's own app, as Flask's docs write one: config from FLASK_-prefixed environment variables.
USERS_OWN_APP = textwrap.dedent(
    """
    from flask import Flask
    from webhook_receiver import WebhookReceiver

    app = Flask(__name__)
    app.config.from_prefixed_env()
    receiver = WebhookReceiver(app)
    print("secret of", len(receiver.secret_key(app)), "characters")
    """
)


def test_the_walkthrough_s_secret_reaches_a_user_s_own_app(tmp_path: Path) -> None:
    """The walkthrough exported WEBHOOK_RECEIVER_SECRET_KEY, which only the sample app read: a user's own app
    refused to start. Run the docs' export line, then an app that does what Flask's docs say."""
    line = secret_export_line()
    env = {k: v for k, v in os.environ.items() if "WEBHOOK_RECEIVER" not in k and k != "SECRET_KEY"}
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env["PATH"]
    (tmp_path / "users_app.py").write_text(USERS_OWN_APP)
    done = subprocess.run(
        ["bash", "-c", f"{line}\npython users_app.py"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "secret of 43 characters"


def test_the_walkthrough_says_how_a_user_s_own_app_reads_it() -> None:
    text = (ROOT / "docs" / "elasticpath.rst").read_text()
    assert "from_prefixed_env()" in text[: text.index("The whole round trip") + 2000]


# -- numbers (item 13) ----------------------------------------------------------------

FLOAT_KEYS = ["WEBHOOK_RECEIVER_LEASE_SECONDS", "WEBHOOK_RECEIVER_RETRY_BACKOFF", "WEBHOOK_RECEIVER_GRACE_SECONDS"]
WHOLE_KEYS = [
    "WEBHOOK_RECEIVER_THREADS",
    "WEBHOOK_RECEIVER_MAX_ATTEMPTS",
    "WEBHOOK_RECEIVER_MAX_BACKLOG",
    "WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH",
]


def threaded(**config: Any) -> Any:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_DISPATCH="thread", **config)
    receiver = WebhookReceiver(app)
    return receiver.get_config(app)


@pytest.fixture
def closing() -> Iterator[list[Any]]:
    configs: list[Any] = []
    yield configs
    for config in configs:
        config.dispatcher.close()


@pytest.mark.parametrize("key", FLOAT_KEYS + WHOLE_KEYS)
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, "nan", "NaN", "inf", "Infinity", "1e999"])
def test_nan_and_infinity_are_refused_for_every_number_key(key: str, value: Any) -> None:
    with pytest.raises(RuntimeError, match=f"^{key} must be a positive"):
        threaded(**{key: value})


@pytest.mark.parametrize("key", FLOAT_KEYS + WHOLE_KEYS)
def test_nan_from_the_environment_is_refused(key: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Flask's from_prefixed_env reads values as JSON, and Python's JSON reads NaN and Infinity as floats."""
    monkeypatch.setenv(f"FLASK_{key}", "NaN")
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_DISPATCH="thread")
    app.config.from_prefixed_env()
    assert isinstance(app.config[key], float) and math.isnan(app.config[key])
    with pytest.raises(RuntimeError, match=f"^{key} must be a positive"):
        WebhookReceiver(app)


def test_numeric_strings_are_taken_as_boolean_keys_take_strings(closing: list[Any]) -> None:
    config = threaded(
        WEBHOOK_RECEIVER_THREADS="8",
        WEBHOOK_RECEIVER_MAX_ATTEMPTS=" 3 ",
        WEBHOOK_RECEIVER_RETRY_BACKOFF="2.5",
        WEBHOOK_RECEIVER_GRACE_SECONDS="7",
        WEBHOOK_RECEIVER_MAX_BACKLOG="100",
        WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH="2048",
        WEBHOOK_RECEIVER_LEASE_SECONDS="0.5",
    )
    closing.append(config)
    dispatcher = config.dispatcher
    assert isinstance(dispatcher, ThreadDispatcher)
    assert dispatcher.threads == 8 and type(dispatcher.threads) is int
    assert (dispatcher.policy.max_attempts, dispatcher.policy.backoff) == (3, 2.5)
    assert (dispatcher.grace, dispatcher.max_backlog) == (7, 100)
    assert config.max_content_length == 2048 and config.store.lease_seconds == 0.5


@pytest.mark.parametrize("key", FLOAT_KEYS + WHOLE_KEYS)
@pytest.mark.parametrize("value", ["abc", "whsec-0123456789abcdef", "", "8 threads", "1_000", "\u0668", "0x10"])
def test_a_string_that_is_not_a_number_is_refused_naming_the_key_never_the_value(key: str, value: str) -> None:
    with pytest.raises(RuntimeError, match=f"^{key} must be a positive") as raised:
        threaded(**{key: value})
    assert "not a string of anything else" in str(raised.value)
    assert not value.strip() or value not in str(raised.value), "the value is never echoed: it may be a secret"


@pytest.mark.parametrize("key", WHOLE_KEYS)
@pytest.mark.parametrize("value", ["2.5", 2.5, True, "0", 0, -3, "-3"])
def test_whole_number_keys_refuse_fractions_booleans_and_zero(key: str, value: Any) -> None:
    with pytest.raises(RuntimeError, match=f"^{key} must be a positive whole number"):
        threaded(**{key: value})


@pytest.mark.parametrize(
    ("key", "value", "said"),
    [
        ("WEBHOOK_RECEIVER_LEASE_SECONDS", 0.001, "must be at least 0.05: the heartbeat renews"),
        ("WEBHOOK_RECEIVER_LEASE_SECONDS", "0.01", "must be at least 0.05"),
        ("WEBHOOK_RECEIVER_GRACE_SECONDS", 1e10, "must be at most 3600: the time a stopping process waits"),
        ("WEBHOOK_RECEIVER_THREADS", 100_000, "must be at most 1024: each is a thread of this process"),
    ],
)
def test_numbers_out_of_their_range_are_refused_before_anything_starts(key: str, value: Any, said: str) -> None:
    """A lease of 1 ms let other workers run a 1 s handler 16 times; a grace of 1e10 s killed the close timer."""
    started = threading.active_count()
    with pytest.raises(RuntimeError, match=f"^{key} {re.escape(said)}"):
        threaded(**{key: value})
    assert threading.active_count() == started, "no thread was started"


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("WEBHOOK_RECEIVER_LEASE_SECONDS", 0.05),
        ("WEBHOOK_RECEIVER_GRACE_SECONDS", 3600),
        ("WEBHOOK_RECEIVER_THREADS", 2),
    ],
)
def test_numbers_at_the_ends_of_their_range_are_taken(key: str, value: Any, closing: list[Any]) -> None:
    closing.append(threaded(**{key: value}))


def test_a_number_key_is_checked_whatever_the_dispatch_mode() -> None:
    """THREADS of "many" with inline dispatch was never read, so never refused."""
    with pytest.raises(RuntimeError, match="WEBHOOK_RECEIVER_THREADS must be"):
        WebhookReceiver(new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_THREADS="many"))


# -- the lease of a store instance (item 13) ----------------------------------------------


def test_a_lease_key_differing_from_a_store_instance_s_lease_is_refused_saying_what_to_do() -> None:
    store = MemoryStore(lease_seconds=30)
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=store, WEBHOOK_RECEIVER_LEASE_SECONDS=90)
    with pytest.raises(RuntimeError) as raised:
        WebhookReceiver(app)
    message = str(raised.value)
    assert message.startswith("WEBHOOK_RECEIVER_LEASE_SECONDS is 90 and the store given as WEBHOOK_RECEIVER_STORE")
    assert "lease of 30 seconds" in message and "MemoryStore(..., lease_seconds=90)" in message
    assert store.lease_seconds == 30, "the instance is left as it is"


def test_a_lease_key_in_the_receiver_s_entry_is_checked_too() -> None:
    store = MemoryStore(lease_seconds=30)
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=store,
        WEBHOOK_RECEIVERS={"outlet": {"LEASE_SECONDS": "45"}},
    )
    with pytest.raises(RuntimeError, match=r"^WEBHOOK_RECEIVERS\['outlet'\]\['LEASE_SECONDS'\] is 45"):
        WebhookReceiver(app, name="outlet")


@pytest.mark.parametrize("lease", [None, 30, "30", 30.0])
def test_a_store_instance_keeps_its_lease_when_the_key_agrees_or_is_unset(lease: Any) -> None:
    store = MemoryStore(lease_seconds=30)
    config: dict[str, Any] = {"WEBHOOK_RECEIVER_STORE": store}
    if lease is not None:
        config["WEBHOOK_RECEIVER_LEASE_SECONDS"] = lease
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, **config)
    assert WebhookReceiver(app).get_store(app).lease_seconds == 30


def test_a_store_built_from_a_url_takes_the_lease_key() -> None:
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE="memory://", WEBHOOK_RECEIVER_LEASE_SECONDS=7
    )
    assert WebhookReceiver(app).get_store(app).lease_seconds == 7


# -- store URLs in messages and reprs (item 14) -------------------------------------------------

PASSWORD = "hunter2-s3cr3t-0987"


class _LeakyStore(MemoryStore):
    """A store of a third party whose repr shows its URL as given."""

    def __init__(self, url: str) -> None:
        super().__init__()
        self.url = url

    def __repr__(self) -> str:
        return f"<LeakyStore {self.url}>"


@pytest.fixture
def leaky_scheme() -> Iterator[None]:
    def factory(url: str, settings: StoreSettings) -> EventStore:
        if "refuse" in url:
            raise ValueError(f"cannot use {url}: the server said no to {PASSWORD}")
        return _LeakyStore(url)

    register_store("leaky", factory)
    yield
    registry._factories.pop("leaky", None)


@pytest.mark.parametrize(
    "url",
    [
        f"leaky://user:{PASSWORD}@db.example/shop",
        f"leaky://:{PASSWORD}@db.example/shop",
        f"leaky://user@db.example/shop?password={PASSWORD}",
        f"leaky://user@db.example/shop?sslmode=require&PASSWORD={PASSWORD}&x=1",
        f"leaky://user@db.example/shop?pwd={PASSWORD}",
    ],
)
def test_the_config_repr_hides_store_passwords_in_every_form(leaky_scheme: None, url: str) -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url)
    config = WebhookReceiver(app).get_config(app)
    assert PASSWORD in repr(config.store), "the store's own repr leaks (it is a third party's)"
    text = repr(config)
    assert PASSWORD not in text and "***" in text and "db.example/shop" in text


def test_a_factory_s_refusal_is_shown_without_the_url_s_password(leaky_scheme: None) -> None:
    url = f"leaky://user@db.example/refuse?password={PASSWORD}"
    with pytest.raises(RuntimeError) as raised:
        WebhookReceiver(new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url))
    message = str(raised.value)
    assert message.startswith("WEBHOOK_RECEIVER_STORE: cannot use leaky://user@db.example/refuse?password=***")
    assert PASSWORD not in message


@pytest.fixture
def no_postgres_scheme() -> Iterator[None]:
    """No factory for postgres:// (the SQLAlchemy store may map it; this checks the message without it)."""
    saved = registry._factories.pop("postgres", None)
    yield
    if saved is not None:
        registry._factories["postgres"] = saved


@pytest.mark.parametrize("scheme", ["postgres", "postgres+psycopg2", "pg"])
def test_postgres_spellings_with_no_store_get_the_url_to_write(no_postgres_scheme: None, scheme: str) -> None:
    url = f"{scheme}://shop:{PASSWORD}@db.example:5432/shop"
    with pytest.raises(RuntimeError) as raised:
        WebhookReceiver(new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url))
    message = str(raised.value)
    assert f"no store is registered for {scheme}://..." in message
    assert "for PostgreSQL write postgresql+psycopg://user:password@host/db" in message
    assert PASSWORD not in message


def test_an_unknown_scheme_in_a_receiver_s_entry_is_named_by_where_it_is() -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVERS={"outlet": {"STORE": "nope://x"}})
    with pytest.raises(RuntimeError, match=r"^WEBHOOK_RECEIVERS\['outlet'\]\['STORE'\]: no store is registered"):
        WebhookReceiver(app, name="outlet")


def test_hiding_passwords_in_any_text() -> None:
    from webhook_receiver.redact import hide_passwords

    assert hide_passwords("postgresql+psycopg://u:p%40ss@h/db") == "postgresql+psycopg://u:***@h/db"
    assert hide_passwords("mysql+pymysql://u@h/db?charset=utf8mb4&passwd=x") == (
        "mysql+pymysql://u@h/db?charset=utf8mb4&passwd=***"
    )
    assert hide_passwords("redis://h:6379/0") == "redis://h:6379/0", "a port is not a password"
    assert hide_passwords("postgresql://u@h:5432/db") == "postgresql://u@h:5432/db"
    assert hide_passwords("the driver said: bad p@ss for u", "postgresql://u:p%40ss@h/db") == (
        "the driver said: bad *** for u"
    ), "a URL's password alone, as written or decoded"


@pytest.mark.parametrize("delimiter", ["#", "/", "?"])
def test_a_store_password_with_an_unencoded_delimiter_shows_in_no_piece(delimiter: str) -> None:
    """The parser ends the host at the delimiter and quotes the password's head as a port: it is hidden."""
    pytest.importorskip("redis")  # the redis client library parses the URL (no server needed)
    url = f"redis://default:Pr1vatePart{delimiter}restOfIt@10.0.0.5:6379/0"
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url)
    with pytest.raises(RuntimeError) as caught:
        WebhookReceiver(app)
    message = str(caught.value)
    assert message.startswith("WEBHOOK_RECEIVER_STORE: "), message
    assert "Pr1vatePart" not in message and "restOfIt" not in message, message


def test_hiding_a_password_cut_short_by_a_delimiter() -> None:
    from webhook_receiver.redact import hide_passwords

    url = "redis://default:Pr1vatePart#rest@10.0.0.5:6379/0"
    assert hide_passwords("value as 'Pr1vatePart'; fragment rest@10", url) == "value as '***'; fragment ***@10"
    assert hide_passwords(url) == "redis://default:***@10.0.0.5:6379/0"
    assert hide_passwords("postgresql://u@h:5432/db", "postgresql://u@h:5432/db") == "postgresql://u@h:5432/db"


@pytest.mark.parametrize(
    ("config", "said"),
    [
        (
            {"WEBHOOK_RECEIVER_THREADS": 8},
            "WEBHOOK_RECEIVER_THREADS is ignored by receiver 'moltin': inline dispatch runs the handlers",
        ),
        (
            {"WEBHOOK_RECEIVER_MAX_BACKLOG": 8},
            "WEBHOOK_RECEIVER_MAX_BACKLOG is ignored by receiver 'moltin': inline dispatch",
        ),
        (
            {"WEBHOOK_RECEIVER_REDIS_PREFIX": "x", "WEBHOOK_RECEIVER_STORE": "memory://"},
            "WEBHOOK_RECEIVER_REDIS_PREFIX is ignored by receiver 'moltin': its store does not read it",
        ),
        (
            {"WEBHOOK_RECEIVER_TABLE_PREFIX": "x", "WEBHOOK_RECEIVER_STORE": "sqlite:///own.sqlite3"},
            "WEBHOOK_RECEIVER_TABLE_PREFIX is ignored by receiver 'moltin': its store does not read it",
        ),
        (
            {"WEBHOOK_RECEIVER_REDIS_PREFIX": "x", "WEBHOOK_RECEIVER_STORE": MemoryStore()},
            "WEBHOOK_RECEIVER_REDIS_PREFIX is ignored by receiver 'moltin': a store instance keeps its own",
        ),
        ({"WEBHOOK_RECEIVER_ALLOW_NO_SECRET": True}, "WEBHOOK_RECEIVER_ALLOW_NO_SECRET is ignored: receiver 'moltin'"),
    ],
)
def test_a_setting_nothing_reads_is_warned_of(
    config: dict[str, Any], said: str, caplog: pytest.LogCaptureFixture, closing: list[Any]
) -> None:
    with caplog.at_level("WARNING", logger="webhook_receiver"):
        receiver = WebhookReceiver()
        app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, **config)
        receiver.init_app(app)
        closing.append(receiver.get_config(app))
    assert said in caplog.text, caplog.text


@pytest.mark.parametrize("prefix", ["", "  ", 5, "a\nb"])
def test_a_store_prefix_must_be_a_printable_string(prefix: Any) -> None:
    for key in ("WEBHOOK_RECEIVER_REDIS_PREFIX", "WEBHOOK_RECEIVER_TABLE_PREFIX"):
        with pytest.raises(RuntimeError, match=f"^{key} must be a non-empty string of printable characters"):
            WebhookReceiver(new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, **{key: prefix}))


def test_a_prefix_the_store_reads_is_not_warned_of(caplog: pytest.LogCaptureFixture, closing: list[Any]) -> None:
    from webhook_receiver.stores.registry import prefix_keys_read

    assert prefix_keys_read("redis://127.0.0.1:6379/0") == {"WEBHOOK_RECEIVER_REDIS_PREFIX"}
    assert prefix_keys_read("postgresql+psycopg://postgres@127.0.0.1/test") == {"WEBHOOK_RECEIVER_TABLE_PREFIX"}
    assert prefix_keys_read("mysql://root@127.0.0.1/test") == {"WEBHOOK_RECEIVER_TABLE_PREFIX"}
    assert prefix_keys_read("sqlite:///own.sqlite3") == set() and prefix_keys_read("memory://") == set()
    with caplog.at_level("WARNING", logger="webhook_receiver"):
        app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_REDIS_PREFIX="shop:")
        app.config["WEBHOOK_RECEIVER_STORE"] = "redis://127.0.0.1:6379/14"
        receiver = WebhookReceiver(app)
        closing.append(receiver.get_config(app))
    assert "is ignored" not in caplog.text, caplog.text


def test_hiding_a_password_with_a_quote_or_an_at_sign() -> None:
    from webhook_receiver.redact import hide_passwords

    assert (
        hide_passwords("Give http://hook:it'sAsecret@127.0.0.1:9/webhooks")
        == "Give http://hook:***@127.0.0.1:9/webhooks"
    )
    assert (
        hide_passwords("to http://hook:p@ssw0rd@127.0.0.1:9/x: refused") == "to http://hook:***@127.0.0.1:9/x: refused"
    )
    assert hide_passwords("'http://u:pw@h' and 'http://v:pw2@h2/x'") == "'http://u:***@h' and 'http://v:***@h2/x'"
    assert hide_passwords("a mail x:y@z.com, redis://h:6379/0") == "a mail x:y@z.com, redis://h:6379/0"


def test_app_wide_keys_beside_several_receivers_are_not_warned_of(
    caplog: pytest.LogCaptureFixture, closing: list[Any]
) -> None:
    """moltin reads the app-wide THREADS and REDIS_PREFIX; outlet, inline on SQLite, is not the one they are for."""
    config = {
        "WEBHOOK_RECEIVER_SECRET_KEY": SECRET,
        "WEBHOOK_RECEIVER_DISPATCH": "thread",
        "WEBHOOK_RECEIVER_THREADS": 2,
        "WEBHOOK_RECEIVER_STORE": "redis://127.0.0.1:6379/14",
        "WEBHOOK_RECEIVER_REDIS_PREFIX": "shop-wide",
        "WEBHOOK_RECEIVERS": {"outlet": {"URL": "/hooks/outlet", "STORE": "memory://", "DISPATCH": "inline"}},
    }
    with caplog.at_level("WARNING", logger="webhook_receiver"):
        app = new_app(**config)
        for name in ("moltin", "outlet"):
            receiver = WebhookReceiver(name=name)
            receiver.init_app(app)
            closing.append(receiver.get_config(app))
    assert "is ignored" not in caplog.text, caplog.text


def test_a_prefix_an_app_s_own_store_factory_reads_is_not_warned_of(
    caplog: pytest.LogCaptureFixture, closing: list[Any]
) -> None:
    seen: list[Any] = []

    def mine(url: str, settings: StoreSettings) -> EventStore:
        seen.append(settings.config.get("WEBHOOK_RECEIVER_REDIS_PREFIX"))
        return MemoryStore(lease_seconds=settings.lease_seconds, receiver=settings.receiver)

    register_store("rev-mine", mine)
    try:
        with caplog.at_level("WARNING", logger="webhook_receiver"):
            app = new_app(
                WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
                WEBHOOK_RECEIVER_STORE="rev-mine://x",
                WEBHOOK_RECEIVER_REDIS_PREFIX="own",
            )
            closing.append(WebhookReceiver(app).get_config(app))
    finally:
        registry._factories.pop("rev-mine", None)
    assert seen == ["own"] and "is ignored" not in caplog.text, caplog.text
