from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import threading
import uuid
from typing import Any, Callable, Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.serving import make_server

from webhook_receiver import WebhookReceiver
from webhook_receiver.local.emulator import Emulator
from webhook_receiver.testing import deliver
from webhook_receiver.upstream.client import MoltinClient

SECRET = "whsec-test-5f1c0d2e9a8b7c6d"

_INSTANCES = tempfile.mkdtemp(prefix="webhook-receiver-tests-")
atexit.register(shutil.rmtree, _INSTANCES, True)


def new_app(**config: Any) -> Flask:
    """A Flask app with an instance folder of its own, so that default SQLite stores never meet."""
    app = Flask(__name__, instance_path=tempfile.mkdtemp(dir=_INSTANCES))
    app.config.update(TESTING=True, **config)
    return app


@pytest.fixture
def receiver() -> WebhookReceiver:
    """A fresh receiver; tests register their handlers on it."""
    return WebhookReceiver()


@pytest.fixture
def make_app(receiver: WebhookReceiver) -> Callable[..., Flask]:
    """An app factory, as users write them; keyword arguments become config."""

    def factory(**config: Any) -> Flask:
        app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
        app.config.update(config)
        receiver.init_app(app)
        return app

    return factory


@pytest.fixture
def app(make_app: Callable[..., Flask]) -> Flask:
    return make_app()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def send(client: FlaskClient) -> Callable[..., Any]:
    """Deliver a body to the app with the right secret unless told otherwise."""

    def send_(event: dict[str, Any], secret: str | None = SECRET, **kwargs: Any) -> Any:
        return deliver(client, event, secret=secret, **kwargs)

    return send_


@pytest.fixture
def live_server() -> Iterator[Callable[[Flask], str]]:
    """Serve apps on real ports of 127.0.0.1 (werkzeug, threaded); yields a starter returning the base URL."""
    servers: list[Any] = []

    def start(app: Flask) -> str:
        server = make_server("127.0.0.1", 0, app, threaded=True)
        thread = threading.Thread(target=lambda: server.serve_forever(poll_interval=0.05), daemon=True)
        thread.start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def moltin() -> Iterator[Emulator]:
    """A Moltin stand-in on a free port of 127.0.0.1, retrying deliveries fast."""
    with Emulator(retry_delays=(0.05, 0.1, 0.2)) as emulator:
        yield emulator


@pytest.fixture
def moltin_client(moltin: Emulator) -> MoltinClient:
    return MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url, backoff=0.01)


def add_integrations(moltin: Emulator, count: int, name: str, url: str = "http://x/") -> None:
    """Put *count* webhook integrations straight into the emulator's state: ``<name>-<n>`` at ``<url><n>``."""
    for n in range(count):
        moltin.state.new_integration(
            {
                "name": f"{name}-{n}",
                "integration_type": "webhook",
                "observes": [f"custom{n}.created"],
                "configuration": {"url": f"{url}{n}"},
            },
            moltin.url,
        )


REDIS_URL = os.environ.get("WEBHOOK_RECEIVER_TEST_REDIS", "redis://127.0.0.1:6379/15")


@pytest.fixture
def processes(tmp_path: Any) -> Iterator[Any]:
    """Real processes (gunicorn, Celery, redis-server) running tests/service_app.py, stopped afterwards."""
    from .processes import Processes

    procs = Processes({"WHR_INSTANCE": str(tmp_path), "WHR_OUTPUT": str(tmp_path / "effects.jsonl")})
    yield procs
    procs.stop_all()


def require_redis() -> None:
    """Skip when Redis is not reachable, unless CI=true, where that is a failure."""
    import redis

    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
        pytest.skip(f"Redis is not reachable at {REDIS_URL}")


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    """A key prefix of this test's own in the test Redis; its keys are deleted afterwards."""
    import redis

    require_redis()
    prefix = f"whr-test-{uuid.uuid4().hex[:12]}"
    yield prefix
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(f"{prefix}:*"))
    if keys:
        client.delete(*keys)
    client.close()


POSTGRES_URL = os.environ.get("WEBHOOK_RECEIVER_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
MARIADB_URL = os.environ.get("WEBHOOK_RECEIVER_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/test")
DATABASES = {"postgresql": POSTGRES_URL, "mariadb": MARIADB_URL}


def require_database(url: str) -> None:
    """Skip when the database is not reachable, unless CI=true, where that is a failure."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except sa.exc.SQLAlchemyError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"the database at {url} is not reachable: {type(exc).__name__}")
        pytest.skip(f"the database at {url} is not reachable")
    finally:
        engine.dispose()


@pytest.fixture
def table_prefix() -> str:
    """A table-name prefix of this test's own."""
    return f"whr_{uuid.uuid4().hex[:10]}_"


def drop_tables(url: str, prefix: str) -> None:
    """Drop every table whose name starts with *prefix*."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        names = [name for name in sa.inspect(engine).get_table_names() if name.startswith(prefix)]
        with engine.begin() as conn:
            for name in names:
                conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
    finally:
        engine.dispose()


# -- the fast subset: `python -m pytest -m "not slow"` ------------------------------------------------------------

#: Files whose every test starts real processes (gunicorn, Celery, redis-server, node, Sphinx, mypy, ruff)
#: or kills some, or runs for seconds.
SLOW_FILES = frozenset(
    {
        "test_docs.py",
        "test_emulator_sdk.py",
        "test_end_to_end.py",
        "test_exactly_once.py",
        "test_faults.py",
        "test_fuzz_server.py",
        "test_inbox_upstream.py",
        "test_package.py",
        "test_queue_faults.py",
        "test_readme_walkthrough.py",
        "test_review18_batch_outage.py",
        "test_review18_batch_stop.py",
        "test_review18_batch_stores.py",
        "test_review18_sqs_batch.py",
    }
)

#: Single tests of other files that take more than about 2 s (by ``--durations``), by file and name.
SLOW_TESTS = frozenset(
    {
        ("test_architecture.py", "test_the_pytest_plugin_loads_nothing_until_a_fixture_is_used"),  # a pytest process
        ("test_background.py", "test_celery_broker_down_answers_503_and_keeps_the_event"),  # Celery's connect timeout
        ("test_events.py", "test_the_fast_redaction_agrees_with_the_thorough_one"),  # many generated bodies
        ("test_fuzz.py", "test_no_5xx_and_no_unverified_handler_call"),
        ("test_operations_cli.py", "test_listen_shows_deliveries_as_they_land"),
        ("test_pytest_plugin.py", "test_testing_apps_get_a_store_of_their_own_so_a_fixed_id_passes_every_time"),
        ("test_sample_app.py", "test_demo_runs_end_to_end"),
        ("test_stores.py", "test_sqlite_claims_are_exclusive_across_processes"),  # processes
        ("test_emulator.py", "test_a_slow_endpoint_times_out_and_is_retried"),
    }
)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark ``slow`` the tests that start real processes or take seconds; ``-m "not slow"`` leaves them out."""
    for item in items:
        name = getattr(item, "originalname", item.name)
        if (
            item.path.name in SLOW_FILES
            or (item.path.name, name) in SLOW_TESTS
            or "processes" in getattr(item, "fixturenames", ())
        ):
            item.add_marker(pytest.mark.slow)
