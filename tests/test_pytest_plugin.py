"""The pytest plugin's fixtures, as a user's test suite would use them."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any, Callable

import pytest
from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.local.emulator import Emulator
from webhook_receiver.testing import WebhookClient


def test_the_plugin_is_loaded(pytestconfig: pytest.Config) -> None:
    assert pytestconfig.pluginmanager.has_plugin("webhook_receiver")


def test_webhook_client_signs_with_the_apps_secret(
    webhook_client: WebhookClient, receiver: WebhookReceiver, webhook_event: Callable[..., dict[str, Any]]
) -> None:
    seen: list[Event] = []
    receiver.on("order.*")(lambda e: seen.append(e))
    assert webhook_client.send("order.paid", attempt=2).get_json()["status"] == "processed"
    assert webhook_client.send(webhook_event("order.created", form="payload")).status_code == 200
    assert webhook_client.send("order.paid", secret="forged").status_code == 401
    assert [(e.trigger, e.attempt) for e in seen] == [("order.paid", 2), ("order.created", 1)]


def test_webhook_client_needs_a_receiver() -> None:
    with pytest.raises(RuntimeError, match="no webhook receiver"):
        WebhookClient(Flask(__name__))


def test_moltin_emulator_fixture(moltin_emulator: Emulator) -> None:
    assert moltin_emulator.url.startswith("http://127.0.0.1:")
    assert moltin_emulator.firer.retry_delays == (0.1, 0.2, 0.4)


def test_testing_apps_get_a_store_of_their_own_so_a_fixed_id_passes_every_time(tmp_path: Path) -> None:
    """The README's way: an app fixture with TESTING and no store; a test with a fixed event id, run twice."""
    (tmp_path / "conftest.py").write_text(
        textwrap.dedent(f"""
        import pytest
        from flask import Flask
        from webhook_receiver import WebhookReceiver

        receiver = WebhookReceiver()
        receiver.on("order.paid")(lambda event: None)

        @pytest.fixture
        def app():
            app = Flask("shop", instance_path={str(tmp_path / "instance")!r})
            app.config.update(TESTING=True, WEBHOOK_RECEIVER_SECRET_KEY="a-long-enough-secret-1234")
            receiver.init_app(app)
            return app
        """)
    )
    (tmp_path / "test_shop.py").write_text(
        textwrap.dedent("""
        import pytest

        @pytest.mark.parametrize("run", [1, 2])
        def test_paid(webhook_client, run):
            answer = webhook_client.send("order.paid", event_id="fixed-id")
            assert answer.get_json()["status"] == "processed"
        """)
    )
    for _ in range(2):  # and again: nothing is left behind for the next run
        result = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout + result.stderr
    assert not list((tmp_path / "instance").glob("*.sqlite3")), "the developer's store is not touched"


USER_APP = """
import pytest
from flask import Flask
from webhook_receiver import WebhookReceiver

receiver = WebhookReceiver()
receiver.on("order.paid")(lambda event: None)

def create_app():
    # No TESTING: the app's default store, a SQLite file in its instance folder.
    app = Flask("shop", instance_path={instance!r})
    app.config.update(WEBHOOK_RECEIVER_SECRET_KEY="a-long-enough-secret-1234")
    receiver.init_app(app)
    return app

@pytest.fixture
def app():
    return create_app()
"""

USER_TESTS = """
import pytest

@pytest.mark.parametrize("run", [1, 2])
def test_paid(webhook_client, run):
    answer = webhook_client.send("order.paid", event_id="fixed-id")
    assert answer.get_json()["status"] == "processed"
"""


def run_suite(folder: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=folder,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_each_test_gets_a_store_of_its_own_even_when_the_app_does_not_set_testing(tmp_path: Path) -> None:
    """A user's suite whose create_app() sets no TESTING: a fixed event id passes in every test, run after run."""
    (tmp_path / "conftest.py").write_text(USER_APP.format(instance=str(tmp_path / "instance")))
    (tmp_path / "test_shop.py").write_text(USER_TESTS)
    for _ in range(2):
        result = run_suite(tmp_path)
        assert result.returncode == 0 and "2 passed" in result.stdout, result.stdout + result.stderr
    from webhook_receiver.stores.sqlite import SQLiteStore

    for path in (tmp_path / "instance").glob("*.sqlite3"):
        assert SQLiteStore(str(path)).events() == [], "the app's own store is not written"


def test_a_suite_may_keep_the_apps_store_by_overriding_a_fixture(tmp_path: Path) -> None:
    (tmp_path / "conftest.py").write_text(
        USER_APP.format(instance=str(tmp_path / "instance"))
        + "\n@pytest.fixture\ndef webhook_isolated_store():\n    return False\n"
    )
    (tmp_path / "test_shop.py").write_text(USER_TESTS)
    result = run_suite(tmp_path)
    assert result.returncode == 1 and "1 failed, 1 passed" in result.stdout, result.stdout + result.stderr
    assert "'duplicate'" in result.stdout  # the second test met the first one's event, in the app's own store


def test_the_testing_pages_moltin_emulator_example_runs_as_written(tmp_path: Path) -> None:
    """docs/testing.rst's conftest.py and test, with a yourapp module as a user's would be."""
    page = (Path(__file__).parent.parent / "docs" / "testing.rst").read_text()
    start = page.index("    # conftest.py\n")
    block = page[start : page.index("\n``moltin_emulator.fire(", start)]
    code = textwrap.dedent(block)
    conftest, test = code.split("# test_delivery.py\n")
    (tmp_path / "conftest.py").write_text(conftest)
    (tmp_path / "test_delivery.py").write_text(test)
    (tmp_path / "yourapp.py").write_text(
        textwrap.dedent("""
        from flask import Flask
        from webhook_receiver import WebhookReceiver

        receiver = WebhookReceiver()
        paid = []
        receiver.on("order.paid")(lambda event: paid.append(event.id))

        def create_app(config=None):
            app = Flask("yourapp")
            app.config.update(config or {})
            receiver.init_app(app)
            return app
        """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0 and "1 passed" in result.stdout, result.stdout + result.stderr
