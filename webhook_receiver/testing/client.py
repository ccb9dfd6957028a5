"""Signed deliveries in tests: to a Flask test client or a URL."""

from __future__ import annotations

from typing import Any, Mapping, Union

from flask import Flask
from flask.testing import FlaskClient

from ..receiver import RECEIVERS_KEY, WebhookReceiver
from ..wire import make_event, post, signed

__all__ = ["WebhookClient", "deliver"]

Target = Union[FlaskClient, str]


def deliver(
    target: Target,
    event: Mapping[str, Any],
    *,
    secret: str | None,
    path: str = "/webhooks/moltin",
    trigger: str | None = None,
    timeout: float = 15.0,
) -> Any:
    """POST *event* as Moltin would: secret and trigger headers, configuration echo.

    :param target: a Flask test client, or the full URL of a receiver.
    :param event: a body from :func:`~webhook_receiver.testing.make_event`.
    :param secret: the secret to send, or ``None`` to send no secret header.
    :param path: the receiver's path, with a test client.
    :param trigger: the trigger header; the body's ``triggered_by`` by default.
    :param timeout: seconds to wait for a URL to answer.
    :returns: the test client's response, or a :class:`requests.Response`.
    """
    if isinstance(target, str):
        return post(target, event, secret=secret, trigger=trigger, timeout=timeout)
    data, headers = signed(event, secret=secret, url=path, trigger=trigger)
    return target.post(path, data=data, headers=headers)


class WebhookClient:
    """Sends signed deliveries to an app's receiver through Flask's test client.

    The ``webhook_client`` fixture of the pytest plugin is one of these.

    :param app: the app under test.
    :param receiver: which receiver, by name, when the app has several.
    :raises RuntimeError: if the app has no receiver.
    """

    def __init__(self, app: Flask, receiver: str | None = None) -> None:
        receivers: dict[str, WebhookReceiver] = app.extensions.get(RECEIVERS_KEY, {})
        if not receivers:
            raise RuntimeError("the app has no webhook receiver: call receiver.init_app(app) in the app fixture")
        self.receiver = receivers[receiver] if receiver else next(iter(receivers.values()))
        self.app = app
        self.client = app.test_client()

    def send(
        self,
        event: str | Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
        *,
        secret: str | None = None,
        **kwargs: Any,
    ) -> Any:
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
