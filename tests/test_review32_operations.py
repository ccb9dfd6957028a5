"""Review of the operations features: store URLs whose password would be read as another part, paths that collide.

- A database URL whose unencoded password holds an ``@`` and a ``:`` made
  SQLAlchemy read the password's tail as the port, and quote it in the
  error ``init_app`` raised (and ``health --json`` printed).
- A Redis URL whose password holds a ``#`` lost its host, port and
  database with the fragment: redis-py connected to the local server's
  database 0, without a word.
- The health or metrics path on a page of the inbox hid that page.
- A metrics cache of 1e300 seconds was taken: the gauges were never read again.
"""

from __future__ import annotations

from typing import Any

import pytest

from webhook_receiver import WebhookReceiver

from .conftest import SECRET, new_app

PASSWORD_PIECES = ("Tr0ub", "dor", "Horse99Battery")


@pytest.mark.parametrize("scheme", ["postgresql+psycopg", "mysql+pymysql", "postgres"])
def test_a_database_password_with_an_at_and_a_colon_is_refused_unquoted(scheme: str) -> None:
    pytest.importorskip("sqlalchemy")
    url = f"{scheme}://postgres:Tr0ub@dor:Horse99Battery@127.0.0.1:5432/test"
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url)
    with pytest.raises(RuntimeError) as caught:
        WebhookReceiver(app)
    message = f"{caught.value} {caught.value!r}"
    assert "as %40" in message, message
    assert not any(piece in message for piece in PASSWORD_PIECES), message


def test_a_database_url_whose_port_does_not_parse_is_refused_unquoted() -> None:
    pytest.importorskip("sqlalchemy")
    url = "postgresql+psycopg://postgres:Secret99Piece@127.0.0.1:54x2/test"
    with pytest.raises(RuntimeError) as caught:
        WebhookReceiver(new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url))
    assert "does not parse" in str(caught.value) and "Secret99Piece" not in repr(caught.value), repr(caught.value)


@pytest.mark.parametrize(
    ("url", "said"),
    [
        ("redis://:ab@#cd@127.0.0.1:6390/5", "write a '#' inside the password as %23"),
        ("redis://default:Pr1v#ate@127.0.0.1:6390/5", "write a '#' inside the password as %23"),
        ("redis://:Pr1v@ate@127.0.0.1:6390/5", "write an '@'"),
    ],
)
def test_a_redis_url_whose_password_would_be_read_as_another_part_is_refused(url: str, said: str) -> None:
    pytest.importorskip("redis")
    with pytest.raises(RuntimeError) as caught:
        WebhookReceiver(new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url))
    message = str(caught.value)
    assert said in message, message
    assert "Pr1v" not in message and "ate@" not in message and "cd@" not in message, message


def test_an_encoded_redis_password_still_works() -> None:
    pytest.importorskip("redis")
    from webhook_receiver.stores.redis import RedisStore

    store = RedisStore("redis://:ab%40%23cd@127.0.0.1:6390/5")
    assert "ab" not in store.url and store.url.endswith("@127.0.0.1:6390/5"), store.url
    assert store.client.connection_pool.connection_kwargs["password"] == "ab@#cd"


@pytest.mark.parametrize(
    "config",
    [
        {"WEBHOOK_RECEIVER_HEALTH_URL": "/inbox/"},
        {"WEBHOOK_RECEIVER_METRICS": "/inbox/"},
        {"WEBHOOK_RECEIVER_METRICS": "/inbox/event"},
        {"WEBHOOK_RECEIVER_HEALTH_URL": "/inbox/actions/replay"},
    ],
)
def test_a_health_or_metrics_path_on_an_inbox_page_is_refused(config: dict[str, Any]) -> None:
    pytest.importorskip("prometheus_client")
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_INBOX_URL="/inbox",
        WEBHOOK_RECEIVER_INBOX_AUTH="none",
        **config,
    )
    with pytest.raises(RuntimeError, match="^WEBHOOK_RECEIVER_INBOX_URL is '/inbox': its page '/inbox/"):
        WebhookReceiver(app)


def test_the_inbox_beside_health_and_metrics_paths_of_their_own_is_mounted() -> None:
    pytest.importorskip("prometheus_client")
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_INBOX_URL="/inbox",
        WEBHOOK_RECEIVER_INBOX_AUTH="none",
        WEBHOOK_RECEIVER_HEALTH_URL="/inbox-health",
        WEBHOOK_RECEIVER_METRICS="/inbox/metrics",
    )
    WebhookReceiver(app)
    client = app.test_client()
    assert client.get("/inbox/").status_code == 200
    assert client.get("/inbox-health").status_code == 200
    assert client.get("/inbox/metrics").status_code == 200


@pytest.mark.parametrize("seconds", [1e300, 3601])
def test_a_metrics_cache_over_an_hour_is_refused(seconds: float) -> None:
    pytest.importorskip("prometheus_client")
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_METRICS="/metrics",
        WEBHOOK_RECEIVER_METRICS_CACHE_SECONDS=seconds,
    )
    with pytest.raises(RuntimeError, match="^WEBHOOK_RECEIVER_METRICS_CACHE_SECONDS is at most 3600 seconds"):
        WebhookReceiver(app)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:6379/Pr1vate@10.255.255.1:6390/5",  # a '/' in the password: its tail read as the database
        "redis://:/Pr1vate@10.255.255.1:6390/5",
        "redis://:6379?Pr1vate@10.255.255.1:6390/5",  # a '?': its tail read as the query
    ],
)
def test_a_redis_password_with_a_slash_or_question_mark_is_refused(url: str) -> None:
    pytest.importorskip("redis")
    with pytest.raises(RuntimeError) as caught:
        WebhookReceiver(new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_STORE=url))
    message = str(caught.value)
    assert "%2F" in message and "Pr1vate" not in message, message


@pytest.mark.parametrize(
    "url",
    [
        "redis://default@127.0.0.1:6379?password=&client_name=a@b",
        "redis://user@127.0.0.1:6379?password=p@ss",
        "redis://[::1]:6379/0",
        "rediss://:pw@127.0.0.1:6380/1",
        "unix:///tmp/redis.sock?password=a@b",
    ],
)
def test_a_redis_url_with_an_at_in_its_query_is_taken(url: str) -> None:
    pytest.importorskip("redis")
    from webhook_receiver.stores.redis import RedisStore

    RedisStore(url)  # builds its client lazily: nothing connects


def test_a_database_url_s_query_takes_an_at_written_as_percent_40() -> None:
    pytest.importorskip("sqlalchemy")
    from webhook_receiver.stores.sqlalchemy_schema import database_url

    parsed = database_url("postgresql+psycopg://postgres@127.0.0.1:5432/test?application_name=ops%40host")
    assert parsed.host == "127.0.0.1" and parsed.query["application_name"] == "ops@host"
    # SQLAlchemy ends the user info at the query's '@' and would connect to the host "host": refused
    for url in (
        "postgresql+psycopg://postgres@127.0.0.1:5432/test?application_name=ops@host",
        "postgresql+psycopg://postgres@127.0.0.1:5432?application_name=ops@host",
    ):
        with pytest.raises(ValueError, match="as %40"):
            database_url(url)
    assert database_url("sqlite:///tmp/a@b/c@d.db").database == "tmp/a@b/c@d.db"
    assert database_url("postgresql+psycopg://user%40srv@h/db").username == "user@srv", "an encoded '@' is taken"
    slash = database_url("postgresql+psycopg://u:pa/ss@h:5432/db")  # a '/' in the password: SQLAlchemy reads it
    assert (slash.password, slash.host, slash.database) == ("pa/ss", "h", "db")
    beside_a_password = database_url("mysql+pymysql://u:p@h/db?unix_socket=/x@y")  # parsed right: taken
    assert beside_a_password.host == "h" and beside_a_password.query["unix_socket"] == "/x@y"
