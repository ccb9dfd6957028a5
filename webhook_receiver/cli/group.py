"""The ``flask webhooks`` command group and what its commands share.

Credentials come from ``EPCC_CLIENT_ID``, ``EPCC_CLIENT_SECRET`` and
``EPCC_API_BASE_URL`` (Elastic Path's own names, as epcc-cli reads them) or
the older ``MOLTIN_CLIENT_ID``, ``MOLTIN_CLIENT_SECRET`` and
``MOLTIN_API_URL``: the app's config first, then the environment, and in each
the ``EPCC_`` name before the ``MOLTIN_`` one. Every failure is one line on
stderr and a non-zero exit, never a traceback.
"""

from __future__ import annotations

import functools
import math
import os
import re
from typing import Any, Callable, TypeVar

import click
from flask import current_app
from flask.cli import AppGroup

from ..errors import WebhookReceiverError
from ..receiver import RECEIVERS_KEY, WebhookReceiver
from ..redact import hide_passwords
from ..untrusted import printable
from ..upstream.client import ALLOW_HTTP_SETTING, DEFAULT_BASE_URL, MoltinClient, allows_http, check_base_url

__all__ = ["DURATION", "Duration", "FiniteFloat", "LIMIT", "webhooks_cli"]

F = TypeVar("F", bound=Callable[..., Any])

webhooks_cli = AppGroup(
    "webhooks",
    help=(
        "Elastic Path (Moltin) webhooks: sync the integrations with your handlers (sync, list, delete, logs),"
        " watch and operate the event store (listen, events, show, replay, resolve, prune, health), take events"
        " from a queue (consume), try things locally"
        " (send, tunnel), and see routes and the secret."
    ),
)


def setting(*names: str) -> str | None:
    """The first of *names* set in the app's config, else in the environment."""
    for source in (current_app.config, os.environ):
        for name in names:
            value = source.get(name)
            if value:
                return str(value)
    return None


def api_client() -> MoltinClient:
    client_id = setting("EPCC_CLIENT_ID", "MOLTIN_CLIENT_ID")
    client_secret = setting("EPCC_CLIENT_SECRET", "MOLTIN_CLIENT_SECRET")
    if not client_id or not client_secret:
        raise click.ClickException(
            "set EPCC_CLIENT_ID and EPCC_CLIENT_SECRET (in the app config or the environment), and"
            f" EPCC_API_BASE_URL unless the store is at {DEFAULT_BASE_URL}"
        )
    try:
        allow_http = allows_http(setting(ALLOW_HTTP_SETTING))
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    try:
        base_url = check_base_url(
            setting("EPCC_API_BASE_URL", "MOLTIN_API_URL") or DEFAULT_BASE_URL, allow_http=allow_http
        )
    except ValueError as exc:
        raise click.ClickException(f"EPCC_API_BASE_URL: {exc}") from None
    return MoltinClient(client_id, client_secret, base_url=base_url, allow_http=allow_http)


def say(line: str) -> None:
    """Print one *line*, every control character in it escaped (its untrusted parts may hold any).

    A URL's password in it (``user:pw@``, ``?password=``), such as a webhook
    URL's basic-auth login, shows as ``***``.
    """
    click.echo(printable(hide_passwords(line)))


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
            raise click.ClickException(printable(str(exc))) from None

    return wrapper  # type: ignore[return-value]


json_option = click.option("--json", "as_json", is_flag=True, help="One JSON document, for scripts.")

receiver_option = click.option(
    "--receiver", "receiver_name", metavar="NAME", help="Which receiver, when the app has several."
)


class Duration(click.types.FloatParamType):
    """A duration such as ``30d``, ``12h``, ``90m``, ``45s`` or ``2w``, in seconds (ASCII digits, at most 100 years)."""

    name = "duration"
    _UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
    _SHAPE = re.compile(r"([0-9]+(?:\.[0-9]+)?)([smhdwSMHDW])\Z")
    _LONGEST = 100 * 365 * 86400

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        found = self._SHAPE.match(str(value).strip())
        if not found:
            self.fail(f"{printable(str(value))!r} is not a duration such as 30d, 12h or 90m", param, ctx)
        seconds = float(found.group(1)) * self._UNITS[found.group(2).lower()]
        if seconds > self._LONGEST:
            self.fail(f"{printable(str(value))!r} is longer than 100 years", param, ctx)
        return seconds


#: ``--since`` and ``--older-than``.
DURATION = Duration()


class FiniteFloat(click.FloatRange):
    """A number in a range, never NaN nor infinite (click's ``FloatRange`` lets both through)."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        number = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(number):
            self.fail(f"{printable(str(value))!r} is not a finite number", param, ctx)
        return super().convert(number, param, ctx)


#: ``--limit``: stores take 64-bit limits at most, and a negative one is a mistake, not "no limit".
LIMIT = click.IntRange(min=1, max=1_000_000)
