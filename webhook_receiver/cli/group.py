"""The ``flask webhooks`` command group and what its commands share.

Credentials come from ``MOLTIN_CLIENT_ID``, ``MOLTIN_CLIENT_SECRET`` and
``MOLTIN_API_URL``, in the app's config or the environment. Every failure is
one line on stderr and a non-zero exit, never a traceback.
"""
from __future__ import annotations

import functools
import os
from typing import Any, Callable, TypeVar

import click
from flask import current_app
from flask.cli import AppGroup

from ..errors import WebhookReceiverError
from ..moltin import DEFAULT_BASE_URL, MoltinClient
from ..receiver import RECEIVERS_KEY, WebhookReceiver

__all__ = ["webhooks_cli"]

F = TypeVar("F", bound=Callable[..., Any])

webhooks_cli = AppGroup("webhooks", help="Moltin webhooks: register the integration, inspect it, list routes.")


def setting(name: str) -> str | None:
    value = current_app.config.get(name) or os.environ.get(name)
    return str(value) if value else None


def api_client() -> MoltinClient:
    client_id = setting("MOLTIN_CLIENT_ID")
    client_secret = setting("MOLTIN_CLIENT_SECRET")
    if not client_id or not client_secret:
        raise click.ClickException(
            "set MOLTIN_CLIENT_ID and MOLTIN_CLIENT_SECRET (in the app config or the environment),"
            " and MOLTIN_API_URL for an Elastic Path host")
    return MoltinClient(client_id, client_secret, base_url=setting("MOLTIN_API_URL") or DEFAULT_BASE_URL)


def receiver_named(name: str | None) -> WebhookReceiver:
    receivers: dict[str, WebhookReceiver] = current_app.extensions.get(RECEIVERS_KEY, {})
    if name is None:
        if len(receivers) == 1:
            return next(iter(receivers.values()))
        name = "moltin"
    try:
        return receivers[name]
    except KeyError:
        known = ", ".join(sorted(receivers)) or "none"
        raise click.ClickException(f"no receiver named {name!r} on this app (receivers: {known})") from None


def one_line_errors(fn: F) -> F:
    """Turn library errors into one clear line and exit status 1."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (WebhookReceiverError, RuntimeError) as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


receiver_option = click.option("--receiver", "receiver_name", metavar="NAME",
                               help="Which receiver, when the app has several.")
