"""Upstream's integration logs for the inbox's event page: wired in from here, above both the inbox and the client.

Upstream's log entries do not name the event they delivered; each holds the
body our endpoint answered (``{"id": ..., "status": ...}``), so an event's
entries are those whose body names its id. An attempt that got no answer
(the endpoint down, a timeout) holds no body and is not found this way.
"""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

from ..inbox.upstream import CREDENTIALS, UPSTREAM_LOGS_KEY, UpstreamLog
from .client import ALLOW_HTTP_SETTING, DEFAULT_BASE_URL, MoltinClient, allows_http, check_base_url

__all__ = ["IntegrationLogs", "show_upstream_logs"]

#: How many of upstream's newest log entries are searched for one event.
SCAN = 500


class IntegrationLogs:
    """An event id to its entries of upstream's integration logs (the inbox's provider).

    :param client: the API client.
    :param scan: how many of the newest entries to search.
    """

    def __init__(self, client: MoltinClient, *, scan: int = SCAN) -> None:
        self.client = client
        self.scan = scan
        #: What the page says was searched.
        self.scope = f"upstream's newest {scan} log entries"

    def __repr__(self) -> str:
        return f"<IntegrationLogs {self.client!r} scan={self.scan}>"

    def __call__(self, event_id: str) -> list[UpstreamLog]:
        found = []
        for entry in itertools.islice(self.client.iter_integration_logs(), self.scan):
            log = _log(entry, event_id)
            if log is not None:
                found.append(log)
        found.reverse()  # upstream lists newest first; the page oldest first
        return found


def show_upstream_logs(app: Any, client: MoltinClient | None = None, *, scan: int = SCAN) -> bool:
    """Show upstream's integration logs on the inbox's event pages of *app*, when it has upstream credentials.

    Credentials are read as ``flask webhooks`` reads them: ``EPCC_CLIENT_ID``,
    ``EPCC_CLIENT_SECRET`` and ``EPCC_API_BASE_URL`` (or the ``MOLTIN_`` names),
    from the app's config, then the environment. Call it after ``init_app``.

    :param client: the client to use instead (its credentials are then not read).
    :param scan: how many of upstream's newest log entries to search per event.
    :returns: whether the logs are shown (``False``: no credentials).
    :raises ValueError: if ``EPCC_API_BASE_URL`` is not a URL.
    """
    if client is None:
        client_id, client_secret = (_setting(app, names) for names in CREDENTIALS)
        if not client_id or not client_secret:
            return False
        allow_http = allows_http(_setting(app, (ALLOW_HTTP_SETTING,)))
        base_url = check_base_url(
            _setting(app, ("EPCC_API_BASE_URL", "MOLTIN_API_URL")) or DEFAULT_BASE_URL, allow_http=allow_http
        )
        # a page waits for it: a short timeout, no retries
        client = MoltinClient(
            client_id, client_secret, base_url=base_url, timeout=3.0, max_retries=0, allow_http=allow_http
        )
    app.extensions[UPSTREAM_LOGS_KEY] = IntegrationLogs(client, scan=scan)
    return True


def _setting(app: Any, names: tuple[str, ...]) -> str | None:
    for source in (app.config, os.environ):
        for name in names:
            value = source.get(name)
            if value:
                return str(value)
    return None


def _log(entry: Any, event_id: str) -> UpstreamLog | None:
    """*entry* as an :class:`UpstreamLog` when the body it holds names *event_id*, else ``None``."""
    if not isinstance(entry, dict) or _answered_id(entry.get("body")) != event_id:
        return None
    status, time_taken, attempt = entry.get("status_code"), entry.get("processing_time"), entry.get("attempt")
    error = entry.get("error_detail")
    created = ((entry.get("meta") or {}).get("timestamps") or {}).get("created_at")
    integration = ((entry.get("relationships") or {}).get("integration") or {}).get("data") or {}
    return UpstreamLog(
        at=str(created or ""),
        attempt=attempt if isinstance(attempt, int) and not isinstance(attempt, bool) else None,
        status_code=status if isinstance(status, int) and not isinstance(status, bool) else None,
        error_detail=str(error) if error else None,
        processing_time=float(time_taken) if isinstance(time_taken, (int, float)) else None,
        succeeded=entry.get("succeeded") if isinstance(entry.get("succeeded"), bool) else None,
        integration=str(integration.get("id") or ""),
    )


def _answered_id(body: Any) -> str | None:
    """The event id in the body our endpoint answered, if it is one of ours."""
    if not isinstance(body, str) or not body.startswith("{"):
        return None
    try:
        decoded = json.loads(body)
    except ValueError:
        return None
    found = decoded.get("id") if isinstance(decoded, dict) else None
    return found if isinstance(found, str) else None
