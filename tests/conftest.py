from __future__ import annotations

from typing import Any, Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient

from webhook_receiver import WebhookReceiver
from webhook_receiver.testing import deliver

SECRET = "whsec-test-5f1c0d2e9a8b7c6d"


@pytest.fixture
def receiver() -> WebhookReceiver:
    """A fresh receiver; tests register their handlers on it."""
    return WebhookReceiver()


@pytest.fixture
def make_app(receiver: WebhookReceiver) -> Callable[..., Flask]:
    """An app factory, as users write them; keyword arguments become config."""

    def factory(**config: Any) -> Flask:
        app = Flask(__name__)
        app.config.update(TESTING=True, WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
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
