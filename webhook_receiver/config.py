"""Reading a receiver's configuration from a Flask app, once, in ``init_app``."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Sequence

from flask import Flask

from .stores.base import EventStore
from .stores.memory import MemoryStore
from .verify import SecretVerifier, derive_secrets

__all__ = ["DEFAULT_MAX_CONTENT_LENGTH", "ReceiverConfig", "read_config"]

logger = logging.getLogger("webhook_receiver")

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
    """

    url: str
    verifier: SecretVerifier | None
    max_content_length: int
    store: EventStore

    def __repr__(self) -> str:
        return (
            f"<ReceiverConfig url={self.url!r} verifier={self.verifier!r}"
            f" max_content_length={self.max_content_length} store={self.store!r}>"
        )


def read_config(
    app: Flask,
    *,
    name: str,
    url: str | None,
    secret_key: str | Sequence[str] | None,
) -> ReceiverConfig:
    """Read and check the ``WEBHOOK_RECEIVER_*`` keys of *app*.

    Arguments given to the receiver's constructor win over the config keys.

    :param app: the app being set up.
    :param name: the receiver's name, the salt of derived secrets.
    :param url: the constructor's ``url``, or ``None``.
    :param secret_key: the constructor's ``secret_key``, or ``None``.
    :raises RuntimeError: if no secret can be found and the app did not opt
        out, or a key has a value of the wrong kind.
    """
    config = app.config
    config.setdefault("WEBHOOK_RECEIVER_SECRET_KEY", None)
    config.setdefault("WEBHOOK_RECEIVER_ALLOW_NO_SECRET", False)
    config.setdefault("WEBHOOK_RECEIVER_URL", f"/webhooks/{name}")
    config.setdefault("WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH", DEFAULT_MAX_CONTENT_LENGTH)
    config.setdefault("WEBHOOK_RECEIVER_STORE", "memory://")

    mount = url if url is not None else config["WEBHOOK_RECEIVER_URL"]
    if not isinstance(mount, str) or not mount.startswith("/"):
        raise RuntimeError(
            f"WEBHOOK_RECEIVER_URL must be a path starting with '/', such as '/webhooks/{name}'"
        )

    limit = config["WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH"]
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        raise RuntimeError("WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH must be a positive number of bytes")

    return ReceiverConfig(
        url=mount.rstrip("/") or "/",
        verifier=_verifier(app, name, secret_key),
        max_content_length=limit,
        store=_store(config["WEBHOOK_RECEIVER_STORE"]),
    )


def _secrets(value: Any, source: str) -> list[str] | None:
    """Normalise a secret setting to a list, oldest to newest; ``None`` when unset."""
    if value is None:
        return None
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not all(isinstance(v, str) for v in value):
        raise RuntimeError(f"{source} must be a string or a list of strings (oldest to newest)")
    if not value or not all(value):
        raise RuntimeError(f"{source} is empty: set a long random string, or leave it unset")
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
    if app.config["WEBHOOK_RECEIVER_ALLOW_NO_SECRET"]:
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


def _store(value: Any) -> EventStore:
    if isinstance(value, EventStore):
        return value
    if value == "memory://":
        return MemoryStore()
    raise RuntimeError(
        "WEBHOOK_RECEIVER_STORE must be 'memory://' or an EventStore instance"
    )
