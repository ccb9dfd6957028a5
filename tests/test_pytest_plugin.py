"""The pytest plugin's fixtures, as a user's test suite would use them."""

from __future__ import annotations

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
