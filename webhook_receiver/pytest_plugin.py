"""A pytest plugin (loaded automatically once ``webhook_receiver`` is installed).

Fixtures:

``webhook_event``
    :func:`~webhook_receiver.testing.make_event`, to build delivery bodies.
``webhook_client``
    Delivers events to your ``app`` fixture with the receiver's own secret:
    ``webhook_client.send("order.paid")`` or ``webhook_client.send(body)``.
``moltin_emulator``
    A running :class:`~webhook_receiver.emulator.Emulator` on a free port,
    retrying deliveries quickly; stopped after the test.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Mapping

import pytest
from flask import Flask

from .emulator import Emulator
from .receiver import RECEIVERS_KEY, WebhookReceiver
from .testing import deliver, make_event


class WebhookClient:
    """Sends signed deliveries to an app's receiver through Flask's test client.

    :param app: the app under test.
    :param receiver: which receiver, by name, when the app has several.
    """

    def __init__(self, app: Flask, receiver: str | None = None) -> None:
        receivers: dict[str, WebhookReceiver] = app.extensions.get(RECEIVERS_KEY, {})
        if not receivers:
            raise RuntimeError("the app has no webhook receiver: call receiver.init_app(app) in the app fixture")
        self.receiver = receivers[receiver] if receiver else next(iter(receivers.values()))
        self.app = app
        self.client = app.test_client()

    def send(self, event: str | Mapping[str, Any], data: Mapping[str, Any] | None = None, *,
             secret: str | None = None, **kwargs: Any) -> Any:
        """Deliver *event* (a trigger name or a body) and return the test response.

        :param event: ``"order.paid"`` for a sample event, or a body from
            :func:`~webhook_receiver.testing.make_event`.
        :param data: the resource, when *event* is a trigger name.
        :param secret: the secret to send; the receiver's own by default.
        :param kwargs: passed to :func:`~webhook_receiver.testing.make_event`
            (``attempt``, ``form``, ``event_id``) when *event* is a name.
        """
        body = make_event(event, data, **kwargs) if isinstance(event, str) else event
        with self.app.app_context():
            secret = secret if secret is not None else self.receiver.secret_key()
            path = self.receiver.get_config().url
        return deliver(self.client, body, secret=secret, path=path)


@pytest.fixture
def webhook_event() -> Callable[..., dict[str, Any]]:
    """:func:`~webhook_receiver.testing.make_event`."""
    return make_event


@pytest.fixture
def webhook_client(app: Flask) -> WebhookClient:
    """Signed deliveries to the ``app`` fixture's receiver."""
    return WebhookClient(app)


@pytest.fixture
def moltin_emulator() -> Iterator[Emulator]:
    """A local Moltin on a free port of 127.0.0.1, retrying deliveries after 0.1, 0.2 and 0.4 s."""
    with Emulator(retry_delays=(0.1, 0.2, 0.4)) as emulator:
        yield emulator
