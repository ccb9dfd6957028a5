"""Upstream's integration logs on an event's page, through a provider a higher layer gives the app.

The inbox sits below the upstream client (``upstream/`` imports the receiver,
which mounts the inbox), so it never imports it: it reads, from
``app.extensions``, a callable taking an event id and answering that
event's entries of upstream's integration logs (:class:`UpstreamLog`).
:func:`webhook_receiver.upstream.show_upstream_logs` sets one up from the
app's upstream credentials. Whatever the provider raises becomes a short
notice on the page (its type only: no message, so no URL or credential
reaches the page), never an error.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Callable

__all__ = ["CREDENTIALS", "UPSTREAM_LOGS_KEY", "UpstreamLog", "UpstreamLogs", "UpstreamView", "read_upstream_logs"]

#: The key of ``app.extensions`` holding the provider: ``(event_id) -> list[UpstreamLog]``.
UPSTREAM_LOGS_KEY = "webhook_receiver.inbox.upstream_logs"
#: The settings (app config, then environment) that hold upstream's credentials, as ``flask webhooks`` reads them.
CREDENTIALS = (("EPCC_CLIENT_ID", "MOLTIN_CLIENT_ID"), ("EPCC_CLIENT_SECRET", "MOLTIN_CLIENT_SECRET"))


@dataclass(frozen=True)
class UpstreamLog:
    """One of upstream's delivery attempts of an event, as its integration logs tell it.

    :param at: when upstream logged it (its text, such as ``2026-12-01T02:00:00Z``).
    :param attempt: its attempt number.
    :param status_code: the status our endpoint answered, ``None`` when no answer came.
    :param error_detail: upstream's reason for a failed attempt.
    :param processing_time: how long the attempt took, in seconds, as upstream measured it.
    :param succeeded: whether upstream counted it a success.
    :param integration: the integration's id.
    """

    at: str
    attempt: int | None
    status_code: int | None
    error_detail: str | None
    processing_time: float | None
    succeeded: bool | None
    integration: str = ""


#: What the inbox calls: an event id to that event's entries of upstream's logs, oldest first.
UpstreamLogs = Callable[[str], list[UpstreamLog]]


@dataclass
class UpstreamView:
    """What the page shows of upstream's logs.

    :param state: ``"shown"``, ``"failed"`` (upstream did not answer), ``"unwired"``
        (credentials are set, no provider) or ``"off"``.
    :param logs: the event's entries.
    :param notice: a short text for ``"failed"``.
    :param scope: what was searched, for the page (``"the newest 500 logs"``).
    """

    state: str
    logs: list[UpstreamLog] = field(default_factory=list)
    notice: str = ""
    scope: str = ""


def read_upstream_logs(app: Any, event_id: str) -> UpstreamView:
    """Ask the app's provider for *event_id*'s entries of upstream's logs; never raises."""
    provider = app.extensions.get(UPSTREAM_LOGS_KEY)
    if provider is None:
        return UpstreamView("unwired" if _credentials_set(app) else "off")
    scope = str(getattr(provider, "scope", ""))
    try:
        logs = list(provider(event_id))
    except Exception as exc:  # noqa: BLE001 - the page says so; the type only, never a message with a URL or a secret
        return UpstreamView("failed", notice=f"upstream's logs could not be read ({type(exc).__name__})", scope=scope)
    return UpstreamView("shown", logs=logs, scope=scope)


def _credentials_set(app: Any) -> bool:
    def given(names: tuple[str, ...]) -> bool:
        return any(app.config.get(name) or os.environ.get(name) for name in names)

    return all(given(names) for names in CREDENTIALS)
