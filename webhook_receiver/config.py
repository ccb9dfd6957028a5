"""Reading a receiver's configuration from a Flask app, once, in ``init_app``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

from flask import Flask

from .dispatch.base import Dispatcher, RetryPolicy
from .dispatch.inline import InlineDispatcher
from .dispatch.queue import DEFAULT_MAX_BACKLOG
from .dispatch.thread import ThreadDispatcher
from .errors import WeakSecretWarning
from .stores.base import EventStore
from .stores.registry import StoreSettings, open_store
from .untrusted import logger
from .verify import SecretVerifier, derive_secrets

__all__ = ["DEFAULT_MAX_CONTENT_LENGTH", "ReceiverConfig", "read_config"]


#: The default ``WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH``: 1 MiB.
DEFAULT_MAX_CONTENT_LENGTH = 1024 * 1024


@dataclass(frozen=True)
class ReceiverConfig:
    """What one receiver needs at request time on one app.

    :param url: where the endpoint is mounted.
    :param verifier: checks the secret header; ``None`` only when the app
        opted out with ``WEBHOOK_RECEIVER_ALLOW_NO_SECRET``.
    :param max_content_length: the largest body accepted, in bytes.
    :param store: where events and handler outcomes are kept.
    :param dispatcher: who runs the handlers and when.
    """

    url: str
    verifier: SecretVerifier | None
    max_content_length: int
    store: EventStore
    dispatcher: Dispatcher

    def __repr__(self) -> str:
        return (
            f"<ReceiverConfig url={self.url!r} verifier={self.verifier!r}"
            f" max_content_length={self.max_content_length} store={self.store!r}"
            f" dispatcher={self.dispatcher!r}>"
        )


def read_config(
    app: Flask,
    *,
    name: str,
    url: str | None,
    secret_key: str | Sequence[str] | None,
    celery: Any = None,
) -> ReceiverConfig:
    """Read and check the ``WEBHOOK_RECEIVER_*`` keys of *app*.

    Arguments given to the receiver's constructor win over the config keys.

    :param app: the app being set up.
    :param name: the receiver's name, the salt of derived secrets.
    :param url: the constructor's ``url``, or ``None``.
    :param secret_key: the constructor's ``secret_key``, or ``None``.
    :param celery: the Celery app given to ``init_app``, or ``None``.
    :raises RuntimeError: if no secret can be found and the app did not opt
        out, or a key has a value of the wrong kind.
    """
    config = app.config
    config.setdefault("WEBHOOK_RECEIVER_SECRET_KEY", None)
    config.setdefault("WEBHOOK_RECEIVER_ALLOW_NO_SECRET", False)
    config.setdefault("WEBHOOK_RECEIVER_URL", f"/webhooks/{name}")
    config.setdefault("WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH", DEFAULT_MAX_CONTENT_LENGTH)
    config.setdefault("WEBHOOK_RECEIVER_STORE", None)
    config.setdefault("WEBHOOK_RECEIVER_REDIS_PREFIX", f"webhook_receiver:{name}")
    config.setdefault("WEBHOOK_RECEIVER_LEASE_SECONDS", 60.0)
    config.setdefault("WEBHOOK_RECEIVER_DISPATCH", "celery" if celery is not None else "inline")
    config.setdefault("WEBHOOK_RECEIVER_THREADS", 4)
    config.setdefault("WEBHOOK_RECEIVER_MAX_ATTEMPTS", 5)
    config.setdefault("WEBHOOK_RECEIVER_RETRY_BACKOFF", 2.0)
    config.setdefault("WEBHOOK_RECEIVER_MAX_BACKLOG", DEFAULT_MAX_BACKLOG)
    config.setdefault("WEBHOOK_RECEIVER_GRACE_SECONDS", 10.0)

    mount = url if url is not None else config["WEBHOOK_RECEIVER_URL"]
    if not isinstance(mount, str) or not mount.startswith("/"):
        raise RuntimeError(f"WEBHOOK_RECEIVER_URL must be a path starting with '/', such as '/webhooks/{name}'")

    limit = config["WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH"]
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise RuntimeError("WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH must be a positive number of bytes")

    lease = _number(config, "WEBHOOK_RECEIVER_LEASE_SECONDS")
    store = _store(app, name, config["WEBHOOK_RECEIVER_STORE"], lease)
    return ReceiverConfig(
        url=mount.rstrip("/") or "/",
        verifier=_verifier(app, name, secret_key),
        max_content_length=limit,
        store=store,
        dispatcher=_dispatcher(app, store, celery),
    )


def _number(config: Any, key: str, *, integer: bool = False) -> Any:
    value = config[key]
    kinds = (int,) if integer else (int, float)
    if not isinstance(value, kinds) or isinstance(value, bool) or value <= 0:
        raise RuntimeError(f"{key} must be a positive {'whole ' if integer else ''}number")
    return value


#: The spellings a boolean setting may have when it is a string (an environment variable), any case.
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

#: How to make a good secret, for messages.
_HOW_TO_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"

#: Shorter secrets get a warning.
MIN_SECRET_LENGTH = 16


def flag(config: Any, key: str) -> bool:
    """A boolean setting: a real boolean, or a string spelled ``true/false/1/0/yes/no/on/off``.

    :raises RuntimeError: for anything else (``"flase"``, ``2``, ``None``), naming
        the key and the value's type, never the value.
    """
    value = config[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise RuntimeError(
        f"{key} must be True or False (or a string such as 'true' or 'false'),"
        f" not a value of type {type(value).__name__}"
    )


def _secrets(value: Any, source: str) -> list[str] | None:
    """Normalise a secret setting to a list, oldest to newest; ``None`` when unset.

    :raises RuntimeError: when a secret cannot travel in an HTTP header as it
        is (a character that is not printable ASCII, or leading or trailing
        whitespace, which servers strip): such a secret would never match.
    """
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise RuntimeError(f"{source} must be a string or a list of strings (oldest to newest)")
    if not value or not all(value):
        raise RuntimeError(f"{source} is empty: set a long random string, or leave it unset")
    for n, secret in enumerate(value, 1):
        where = source if len(value) == 1 else f"secret {n} of {source}"
        if not all(" " <= ch <= "~" for ch in secret):
            raise RuntimeError(
                f"{where} holds a character that is not printable ASCII: it cannot travel in"
                f" the X-MOLTIN-SECRET-KEY header as it is. Make one with {_HOW_TO_MAKE_ONE}"
            )
        if secret != secret.strip():
            raise RuntimeError(
                f"{where} starts or ends with whitespace, which servers strip from headers,"
                f" so it would never match. Make one with {_HOW_TO_MAKE_ONE}"
            )
        if len(secret) < MIN_SECRET_LENGTH:
            warnings.warn(
                f"{where} is shorter than {MIN_SECRET_LENGTH} characters: anyone who can guess it can"
                f" fake deliveries. Make one with {_HOW_TO_MAKE_ONE}",
                WeakSecretWarning,
                stacklevel=6,
            )
    return list(value)


def _verifier(app: Flask, name: str, secret_key: str | Sequence[str] | None) -> SecretVerifier | None:
    secrets = _secrets(secret_key, "the secret_key argument")
    if secrets is None:
        secrets = _secrets(app.config["WEBHOOK_RECEIVER_SECRET_KEY"], "WEBHOOK_RECEIVER_SECRET_KEY")
    if secrets is None and app.config.get("SECRET_KEY"):
        fallbacks = list(app.config.get("SECRET_KEY_FALLBACKS") or ())
        secrets = derive_secrets([*fallbacks, app.config["SECRET_KEY"]], salt=name)
    if secrets:
        return SecretVerifier(secrets)
    if flag(app.config, "WEBHOOK_RECEIVER_ALLOW_NO_SECRET"):
        logger.warning(
            "webhook receiver %r accepts deliveries WITHOUT checking a secret"
            " (WEBHOOK_RECEIVER_ALLOW_NO_SECRET is set): anyone who finds the URL"
            " can fake Moltin events. Never do this in production.",
            name,
        )
        return None
    raise RuntimeError(
        f"webhook receiver {name!r} has no secret to check deliveries against. Set"
        " WEBHOOK_RECEIVER_SECRET_KEY to the secret_key registered with Moltin, or set"
        " Flask's SECRET_KEY to have one derived (receiver.secret_key(app) tells its value),"
        " or, for local experiments only, set WEBHOOK_RECEIVER_ALLOW_NO_SECRET = True."
    )


def _store(app: Flask, name: str, value: Any, lease: float) -> EventStore:
    """The store ``WEBHOOK_RECEIVER_STORE`` names (see :mod:`.stores.registry`).

    Unset, it is a SQLite file in the instance folder; in an app with
    ``TESTING`` set, a memory store of the app's own, so that tests never
    share events with each other or with the developer's store.
    """
    if isinstance(value, EventStore):
        return value
    if value is None:
        value = "memory://" if app.testing else f"sqlite:///webhook_receiver-{name}.sqlite3"
    if not isinstance(value, str):
        raise RuntimeError("WEBHOOK_RECEIVER_STORE must be a URL string or an EventStore instance")
    return open_store(value, StoreSettings(name, lease, app.instance_path, app.config))


def _dispatcher(app: Flask, store: EventStore, celery: Any) -> Dispatcher:
    config = app.config
    mode = config["WEBHOOK_RECEIVER_DISPATCH"]
    if isinstance(mode, Dispatcher):
        return mode
    queue_options = {
        "policy": RetryPolicy(
            max_attempts=_number(config, "WEBHOOK_RECEIVER_MAX_ATTEMPTS", integer=True),
            backoff=_number(config, "WEBHOOK_RECEIVER_RETRY_BACKOFF"),
        ),
        "max_backlog": _number(config, "WEBHOOK_RECEIVER_MAX_BACKLOG", integer=True),
        "grace": _number(config, "WEBHOOK_RECEIVER_GRACE_SECONDS"),
    }
    if mode == "inline":
        return InlineDispatcher()
    if mode == "thread":
        if not store.durable:
            logger.warning(
                "thread dispatch with the %s store: accepted events are lost if the"
                " process stops; use the default SQLite store or Redis",
                store.name,
            )
        return ThreadDispatcher(threads=_number(config, "WEBHOOK_RECEIVER_THREADS", integer=True), **queue_options)
    if mode == "celery":
        celery = celery if celery is not None else app.extensions.get("celery")
        if celery is None:
            raise RuntimeError(
                "WEBHOOK_RECEIVER_DISPATCH = 'celery' needs a Celery app: receiver.init_app(app,"
                " celery=celery_app), or app.extensions['celery'] as in Flask's Celery pattern"
            )
        if store.reach == "process":
            raise RuntimeError(
                f"Celery workers run in other processes and cannot see the {store.name} store; set"
                " WEBHOOK_RECEIVER_STORE to redis://... (or sqlite:///... on one machine)"
            )
        if store.reach == "machine":
            logger.warning(
                "Celery dispatch with the %s store: only workers on this machine can reach %s;"
                " use WEBHOOK_RECEIVER_STORE = 'redis://...' for workers on other machines",
                store.name,
                store.location,
            )
        from .dispatch.celery import CeleryDispatcher

        return CeleryDispatcher(celery, **queue_options)
    raise RuntimeError("WEBHOOK_RECEIVER_DISPATCH must be 'inline', 'thread', 'celery' or a Dispatcher instance")
