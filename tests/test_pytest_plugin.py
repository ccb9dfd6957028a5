"""The pytest plugin's fixtures, as a user's test suite would use them."""

from __future__ import annotations

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
