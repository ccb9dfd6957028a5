"""Mounting the inbox on an app: one blueprint per receiver, every view behind the access check."""

from __future__ import annotations

import secrets

from flask import Blueprint, Flask

from ..errors import StoreUnavailable
from ..untrusted import logger
from .access import InboxSettings, View, read_settings
from .actions import InboxReceiver
from .csrf import CsrfTokens
from .views import InboxViews

__all__ = ["INBOXES_KEY", "mount_inbox"]

#: The key of ``app.extensions`` holding the URL of each receiver's inbox, by receiver name.
INBOXES_KEY = "webhook_receiver.inboxes"


def mount_inbox(app: Flask, receiver: InboxReceiver) -> str | None:
    """Mount *receiver*'s inbox on *app* when ``WEBHOOK_RECEIVER_INBOX_URL`` is set (``init_app`` calls it).

    The first receiver of the app gets the URL itself; any other one the URL
    followed by ``/<its name>``.

    :returns: where it is mounted, or ``None`` when the inbox is off.
    :raises RuntimeError: as :func:`~webhook_receiver.inbox.access.read_settings`.
    """
    settings = read_settings(app)
    if settings is None:
        return None
    mounted: dict[str, str] = app.extensions.setdefault(INBOXES_KEY, {})
    url = settings.url if not mounted else f"{settings.url.rstrip('/')}/{receiver.name}"
    name = f"webhook_receiver_inbox_{receiver.name.replace('-', '_')}"
    views = InboxViews(app, receiver, name, CsrfTokens(_signing_key(app, receiver)))
    blueprint = Blueprint(
        name,
        __name__,
        template_folder="templates",
        static_folder="static",
        static_url_path="/static",
    )
    blueprint.before_request(views.before)
    blueprint.after_request(views.after)
    blueprint.register_error_handler(StoreUnavailable, views.store_unavailable)
    pages: list[tuple[str, str, View, list[str]]] = [
        ("/", "index", views.index, ["GET"]),
        ("/event", "event", views.event, ["GET"]),
        ("/chart.svg", "chart", views.chart, ["GET"]),
        ("/bulk", "bulk_preview", views.bulk_preview, ["GET"]),
        ("/actions/replay", "replay", views.replay, ["POST"]),
        ("/actions/replay-bulk", "replay_bulk", views.replay_bulk, ["POST"]),
        ("/actions/resolve", "resolve", views.resolve, ["POST"]),
    ]
    _check_free(app, url, [page for page, *_ in pages])
    for page, endpoint, view, methods in pages:
        _route(blueprint, settings, page, endpoint, view, methods)
    app.register_blueprint(blueprint, url_prefix=url if url != "/" else None)
    mounted[receiver.name] = url
    return url


def _check_free(app: Flask, url: str, pages: list[str]) -> None:
    """Refuse an inbox URL one of whose *pages* the app routes already (the health or metrics path, say).

    :raises RuntimeError: naming the page and the endpoint that has it.
    """
    base = url.rstrip("/")
    paths = {f"{base}{page}" for page in pages}
    for rule in app.url_map.iter_rules():
        if rule.rule in paths:
            raise RuntimeError(
                f"WEBHOOK_RECEIVER_INBOX_URL is {url!r}: its page {rule.rule!r} is a path the app routes"
                f" already (to {rule.endpoint!r}); give the inbox a URL of its own"
            )


def _route(
    blueprint: Blueprint, settings: InboxSettings, rule: str, endpoint: str, view: View, methods: list[str]
) -> None:
    guarded = settings.guard(view)
    blueprint.add_url_rule(rule, endpoint=endpoint, view_func=guarded, methods=methods)


def _signing_key(app: Flask, receiver: InboxReceiver) -> str | bytes:
    """The key CSRF tokens are signed with: the app's ``SECRET_KEY``, else the receiver's webhook secret.

    Either is shared by every process of the app; only HMACs of it ever leave
    the server. With neither, a key of this process is made (tokens then
    stop working across processes and restarts: a warning says so).
    """
    if app.secret_key:
        return app.secret_key
    secret_of = getattr(receiver, "secret_key", None)
    if callable(secret_of):
        try:
            return f"webhook_receiver.inbox:{secret_of(app)}"
        except RuntimeError:
            pass
    logger.warning(
        "the inbox of receiver %s has no SECRET_KEY nor webhook secret to sign its forms with: it uses a key"
        " of this process, so forms stop working across processes and restarts",
        receiver.name,
    )
    return secrets.token_bytes(32)
