"""The inbox's two settings, and the access check every one of its pages passes first.

``WEBHOOK_RECEIVER_INBOX_URL`` mounts the page; ``WEBHOOK_RECEIVER_INBOX_AUTH``
says who may see it: a callable taking the request and answering whether it
may (a string answer names the user), or a view decorator such as
Flask-Login's ``login_required``. ``"none"`` lets everyone in and is refused
unless the app runs with ``DEBUG`` or ``TESTING``.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any, Callable

from flask import Flask, Request, abort, g, request
from flask.typing import ResponseReturnValue
from werkzeug.wrappers import Response as BaseResponse

from ..untrusted import logger

__all__ = ["AUTH_NONE", "AUTH_KEY", "URL_KEY", "InboxSettings", "View", "read_settings", "who"]

#: Where the inbox is mounted, such as ``"/webhooks/inbox"``; unset (the default) mounts nothing.
URL_KEY = "WEBHOOK_RECEIVER_INBOX_URL"
#: The access check: a callable ``(request) -> bool | str``, a view decorator, or ``"none"``.
AUTH_KEY = "WEBHOOK_RECEIVER_INBOX_AUTH"
#: The value of :data:`AUTH_KEY` that lets everyone in (``DEBUG`` or ``TESTING`` only).
AUTH_NONE = "none"

View = Callable[..., ResponseReturnValue]


@dataclass(frozen=True)
class InboxSettings:
    """The inbox's settings as read from the app.

    :param url: where it is mounted.
    :param guard: wraps each of its views in the access check.
    :param check: how the access check was given: ``"predicate"``,
        ``"decorator"`` or ``"none"``.
    """

    url: str
    guard: Callable[[View], View]
    check: str


def read_settings(app: Flask) -> InboxSettings | None:
    """Read ``WEBHOOK_RECEIVER_INBOX_URL`` and ``WEBHOOK_RECEIVER_INBOX_AUTH`` from *app*.

    :returns: ``None`` when the inbox is off (no URL).
    :raises RuntimeError: if the URL is malformed, the access check is
        missing or of no usable kind, ``"none"`` is given outside ``DEBUG``
        and ``TESTING``, or an access check is given without a URL (it would
        be ignored).
    """
    url = app.config.get(URL_KEY)
    auth = app.config.get(AUTH_KEY)
    if url in (None, ""):
        if auth is not None:
            raise RuntimeError(f"{AUTH_KEY} is set but {URL_KEY} is not: set both to mount the inbox, or neither")
        return None
    if not isinstance(url, str) or not url.startswith("/") or (len(url) > 1 and url.endswith("/")):
        raise RuntimeError(f"{URL_KEY} must be a path such as '/webhooks/inbox' (a leading '/', no trailing one)")
    if auth is None:
        raise RuntimeError(
            f"the inbox at {url} needs an access check: set {AUTH_KEY} to a callable (request -> bool) or a view"
            f" decorator such as flask_login.login_required ({AUTH_KEY} = 'none' is for DEBUG or TESTING only)"
        )
    if isinstance(auth, str):
        if auth != AUTH_NONE:
            raise RuntimeError(f"{AUTH_KEY} = {auth!r}: the only string accepted is 'none'")
        if not (app.debug or app.testing):
            raise RuntimeError(f"{AUTH_KEY} = 'none' lets anyone in: allowed only with DEBUG or TESTING")
        logger.warning("the inbox at %s lets anyone in (%s = 'none'): for DEBUG or TESTING only", url, AUTH_KEY)
        return InboxSettings(url, _open, AUTH_NONE)
    if not callable(auth):
        raise RuntimeError(f"{AUTH_KEY} must be a callable or a view decorator, not {type(auth).__name__}")
    if _is_decorator(auth):
        return InboxSettings(url, auth, "decorator")
    return InboxSettings(url, _predicate_guard(auth), "predicate")


def _probe() -> str:  # what _is_decorator hands the access check
    return ""


def _is_decorator(auth: Callable[..., Any]) -> bool:
    """Tell a view decorator (it returns a callable when given a function) from a check of the request."""
    try:
        answer = auth(_probe)
    except Exception:  # noqa: BLE001 - a check of the request fails on a function: it is one
        return False
    return callable(answer)


def _open(view: View) -> View:
    return view


def _predicate_guard(check: Callable[[Request], Any]) -> Callable[[View], View]:
    def guard(view: View) -> View:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> ResponseReturnValue:
            answer = check(request)
            if isinstance(answer, BaseResponse):
                # a check that answers as a view would (a redirect to the login page): that is a refusal,
                # though a response is a true value; it is given, the view never runs
                return answer
            if not answer:
                abort(403)
            if isinstance(answer, str):
                g.webhook_receiver_inbox_user = answer
            return view(*args, **kwargs)

        return guarded

    return guard


def who() -> str:
    """Who makes the current request, for the log: the name the access check gave, else what the request says.

    An HTTP user name is only what the client sent (an access check of a
    cookie or an address never looked at it): it is marked as not checked.
    """
    named = g.get("webhook_receiver_inbox_user")
    if named:
        return str(named)
    login_user = g.get("_login_user")  # Flask-Login keeps the current user there
    if login_user is not None and callable(getattr(login_user, "get_id", None)):
        user_id = login_user.get_id()
        if user_id is not None:
            return f"user {user_id}"
    if request.remote_user:  # set by the server in front, which checked it
        return str(request.remote_user)
    if request.authorization is not None and request.authorization.username:
        # any client can send one: the inbox's check may not have looked at it, so the log says so
        return f"{request.authorization.username} (by its Authorization header, not checked by the inbox)"
    return f"an unnamed user from {request.remote_addr or 'an unknown address'}"
