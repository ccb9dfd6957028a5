"""Reading a receiver's configuration from a Flask app, once, in ``init_app``."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any, Sequence

from flask import Flask

from .dispatch.base import Dispatcher, RetryPolicy
from .dispatch.inline import AUTO, MAX_DEADLINE, UPSTREAM_TIMEOUT, InlineDispatcher, not_durable_message
from .dispatch.queue import DEFAULT_MAX_BACKLOG
from .dispatch.thread import ThreadDispatcher
from .errors import WeakSecretWarning
from .redact import hide_passwords
from .settings import RECEIVERS, ReceiverSettings, check_keys, flag, number
from .stores.base import EventStore
from .stores.registry import StoreSettings, open_store, prefix_keys_read
from .untrusted import UNSAFE, logger, printable
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
    :param store: where events and handler outcomes are kept, as this
        receiver sees it (:meth:`~webhook_receiver.stores.EventStore.for_receiver`).
    :param dispatcher: who runs the handlers and when.
    """

    url: str
    verifier: SecretVerifier | None
    max_content_length: int
    store: EventStore
    dispatcher: Dispatcher

    def __repr__(self) -> str:
        return hide_passwords(
            f"<ReceiverConfig url={self.url!r} verifier={self.verifier!r}"
            f" max_content_length={self.max_content_length} store={self.store!r}"
            f" dispatcher={self.dispatcher!r}>"
        )


#: The defaults of the number keys.
DEFAULT_LEASE_SECONDS = 60.0
DEFAULT_THREADS = 4
DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_RETRY_BACKOFF = 2.0
DEFAULT_GRACE_SECONDS = 10.0
#: The longest ``WEBHOOK_RECEIVER_GRACE_SECONDS``, as ``flask webhooks consume --grace``.
MAX_GRACE_SECONDS = 3600.0
#: The shortest ``WEBHOOK_RECEIVER_LEASE_SECONDS``.
MIN_LEASE_SECONDS = 0.05
#: The most ``WEBHOOK_RECEIVER_THREADS``.
MAX_THREADS = 1024


def read_config(
    app: Flask,
    *,
    name: str,
    url: str | None,
    secret_key: str | Sequence[str] | None,
    celery: Any = None,
    first: bool = True,
) -> ReceiverConfig:
    """Read and check the settings of the receiver named *name* on *app*; ``app.config`` is left as it is.

    Each setting is, by precedence: the receiver's constructor argument
    (``url``, ``secret_key``); its entry of ``WEBHOOK_RECEIVERS``
    (``app.config["WEBHOOK_RECEIVERS"]["outlet"]["URL"]``); the app-wide
    ``WEBHOOK_RECEIVER_*`` key; the default, computed for this receiver
    (``/webhooks/<name>``). Unknown keys are warned about
    (:func:`~webhook_receiver.settings.check_keys`).

    :param app: the app being set up.
    :param name: the receiver's name, the salt of derived secrets.
    :param url: the constructor's ``url``, or ``None``.
    :param secret_key: the constructor's ``secret_key``, or ``None``.
    :param celery: the Celery app given to ``init_app``, or ``None``.
    :param first: this is the app's first receiver: warn about unknown
        app-wide keys (later receivers warn about their own entry only).
    :raises RuntimeError: if no secret can be found and the app did not opt
        out, or a key has a value of the wrong kind.
    """
    check_keys(app.config, name, app_wide=first)
    settings = ReceiverSettings(app.config, name)

    mount = url if url is not None else settings.get("WEBHOOK_RECEIVER_URL", f"/webhooks/{name}")
    where = "the url argument" if url is not None else settings.where("WEBHOOK_RECEIVER_URL")
    if not isinstance(mount, str) or not mount.startswith("/"):
        raise RuntimeError(f"{where} must be a path starting with '/', such as '/webhooks/{name}'")
    odd = sorted({char for char in mount if char in _NOT_IN_A_MOUNT or UNSAFE.match(char)})
    if odd:
        # '<x>' would be a werkzeug variable (every delivery a 500), '?' and '#' never reach a route (404)
        raise RuntimeError(
            f"{where} must be a plain path such as '/webhooks/{name}': it holds"
            f" {', '.join(printable(repr(char)) for char in odd)}, which no delivery's path can match as it is"
        )

    limit = number(settings, "WEBHOOK_RECEIVER_MAX_CONTENT_LENGTH", DEFAULT_MAX_CONTENT_LENGTH, integer=True)
    lease = number(
        settings,
        "WEBHOOK_RECEIVER_LEASE_SECONDS",
        DEFAULT_LEASE_SECONDS,
        at_least=MIN_LEASE_SECONDS,
        why="the heartbeat renews a lease at a third of it while the handlers run, so a shorter one lapses"
        " under them, and another worker runs them again",
    )
    store = _store(app, name, settings, lease)
    return ReceiverConfig(
        url=mount.rstrip("/") or "/",
        verifier=_verifier(app, name, settings, secret_key),
        max_content_length=limit,
        store=store,
        dispatcher=_dispatcher(app, settings, store, celery),
    )


#: Characters a mount URL cannot hold: a werkzeug variable's brackets, a query's and a fragment's start.
_NOT_IN_A_MOUNT = frozenset("<>?#")

#: How to make a good secret, for messages.
_HOW_TO_MAKE_ONE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"

#: Shorter secrets get a warning.
MIN_SECRET_LENGTH = 16


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


def _verifier(
    app: Flask, name: str, settings: ReceiverSettings, secret_key: str | Sequence[str] | None
) -> SecretVerifier | None:
    secrets = _secrets(secret_key, "the secret_key argument")
    if secrets is None:
        key = "WEBHOOK_RECEIVER_SECRET_KEY"
        secrets = _secrets(settings.get(key), settings.where(key))
    if secrets is None and app.config.get("SECRET_KEY"):
        fallbacks = list(app.config.get("SECRET_KEY_FALLBACKS") or ())
        secrets = derive_secrets([*fallbacks, app.config["SECRET_KEY"]], salt=name)
    if secrets:
        if flag(settings, "WEBHOOK_RECEIVER_ALLOW_NO_SECRET") and not settings.shared(
            "WEBHOOK_RECEIVER_ALLOW_NO_SECRET"
        ):
            logger.warning(
                "%s is ignored: receiver %r has a secret, and checks it",
                settings.where("WEBHOOK_RECEIVER_ALLOW_NO_SECRET"),
                name,
            )
        return SecretVerifier(secrets)
    if flag(settings, "WEBHOOK_RECEIVER_ALLOW_NO_SECRET"):
        logger.warning(
            "webhook receiver %r accepts deliveries WITHOUT checking a secret"
            " (WEBHOOK_RECEIVER_ALLOW_NO_SECRET is set): anyone who finds the URL"
            " can fake Moltin events. Never do this in production.",
            name,
        )
        return None
    raise RuntimeError(
        f"webhook receiver {name!r} has no secret to check deliveries against. Put the secret_key"
        f' registered with Elastic Path in app.config["WEBHOOK_RECEIVER_SECRET_KEY"] (or, for this'
        f' receiver only, app.config["{RECEIVERS}"][{name!r}]["SECRET_KEY"]), before init_app;'
        " from an environment variable, export FLASK_WEBHOOK_RECEIVER_SECRET_KEY=... and call"
        " app.config.from_prefixed_env() before init_app (a bare WEBHOOK_RECEIVER_SECRET_KEY"
        " variable is not read). Or set Flask's SECRET_KEY to have one derived"
        " (flask webhooks secret, or receiver.secret_key(app), tells its value), or, for local experiments only, set"
        " WEBHOOK_RECEIVER_ALLOW_NO_SECRET = True."
    )


def _store(app: Flask, name: str, settings: ReceiverSettings, lease: float) -> EventStore:
    """The store ``WEBHOOK_RECEIVER_STORE`` names (see :mod:`.stores.registry`), as receiver *name* sees it.

    Unset, it is a SQLite file in the instance folder; in an app with
    ``TESTING`` set, a memory store of the app's own, so that tests never
    share events with each other or with the developer's store. A store
    instance keeps its own lease: a ``WEBHOOK_RECEIVER_LEASE_SECONDS`` set to
    another value is refused rather than ignored.
    """
    key = "WEBHOOK_RECEIVER_STORE"
    value = settings.get(key)
    _check_prefixes(settings, value)
    if isinstance(value, EventStore):
        lease_key = "WEBHOOK_RECEIVER_LEASE_SECONDS"
        if lease_key in settings and lease != value.lease_seconds:
            raise RuntimeError(
                f"{settings.where(lease_key)} is {lease:g} and the store given as {settings.where(key)} keeps"
                f" its own lease of {value.lease_seconds:g} seconds: a store instance is built with its"
                f" lease, so pass lease_seconds={lease:g} to the store's constructor"
                f" ({type(value).__name__}(..., lease_seconds={lease:g})) and drop {settings.where(lease_key)}"
            )
        return value.for_receiver(name)
    if value is None:
        value = "memory://" if app.testing else f"sqlite:///webhook_receiver-{name}.sqlite3"
    if not isinstance(value, str):
        raise RuntimeError(
            f"{settings.where(key)} must be a URL string or an EventStore instance,"
            f" not a value of type {type(value).__name__}"
        )
    store = open_store(value, StoreSettings(name, lease, app.instance_path, settings), key=settings.where(key))
    return store.for_receiver(name)


#: The keys of the built-in stores' prefixes.
_PREFIX_KEYS = ("WEBHOOK_RECEIVER_REDIS_PREFIX", "WEBHOOK_RECEIVER_TABLE_PREFIX")


def _check_prefixes(settings: ReceiverSettings, store: Any) -> None:
    """Refuse a prefix that is not a non-empty string; warn of one the store does not read."""
    reads = prefix_keys_read(store) if isinstance(store, str) else frozenset()
    for key in _PREFIX_KEYS:
        if key not in settings:
            continue
        prefix = settings[key]
        if not isinstance(prefix, str) or not prefix.strip() or not prefix.isprintable():
            raise RuntimeError(
                f"{settings.where(key)} must be a non-empty string of printable characters"
                + ("" if isinstance(prefix, str) else f", not a value of type {type(prefix).__name__}")
            )
        if reads is not None and key not in reads and not settings.shared(key):  # None: an app's own factory
            logger.warning(
                "%s is ignored by receiver %r: %s (it is read by %s stores built from a URL)",
                settings.where(key),
                settings.receiver,
                "a store instance keeps its own" if isinstance(store, EventStore) else "its store does not read it",
                "Redis" if key == "WEBHOOK_RECEIVER_REDIS_PREFIX" else "SQLAlchemy",
            )


DEADLINE_KEY = "WEBHOOK_RECEIVER_INLINE_DEADLINE"

#: The spellings of "no deadline" as a string (an environment variable), any case.
_NO_DEADLINE = frozenset({"none", "null", "off"})


def _inline_deadline(settings: ReceiverSettings) -> float | str | None:
    """``WEBHOOK_RECEIVER_INLINE_DEADLINE``: seconds, ``None`` (none), or :data:`AUTO` when unset.

    Unset, the dispatcher decides: 8 s with a durable store, none with the
    memory store. ``None`` and the strings ``"none"``, ``"null"`` and
    ``"off"`` turn it off; anything else must be a positive, finite number
    (or a string of one), as the other number keys.
    """
    if DEADLINE_KEY not in settings:
        return AUTO
    value = settings[DEADLINE_KEY]
    if value is None or (isinstance(value, str) and value.strip().lower() in _NO_DEADLINE):
        return None
    try:
        seconds = float(number(settings, DEADLINE_KEY, 0.0))
    except RuntimeError as exc:
        raise RuntimeError(f"{exc} (or None, for no deadline)") from None
    if seconds > MAX_DEADLINE:
        raise RuntimeError(
            f"{settings.where(DEADLINE_KEY)} is at most {MAX_DEADLINE:g} seconds, not {seconds:g}"
            " (or None, for no deadline)"
        )
    if seconds >= UPSTREAM_TIMEOUT:
        logger.warning(
            "%s is %g s: upstream stops waiting after about %g s, so a delivery still running then is retried"
            " rather than answered 202; keep it a second or two under that",
            settings.where(DEADLINE_KEY),
            seconds,
            UPSTREAM_TIMEOUT,
        )
    return seconds


#: The keys the built-in dispatchers are built with.
_DISPATCH_KEYS = (
    "WEBHOOK_RECEIVER_THREADS",
    "WEBHOOK_RECEIVER_MAX_ATTEMPTS",
    "WEBHOOK_RECEIVER_RETRY_BACKOFF",
    "WEBHOOK_RECEIVER_MAX_BACKLOG",
    "WEBHOOK_RECEIVER_GRACE_SECONDS",
)
#: Those inline dispatch does not read (its deadline's background runs retry by the others).
_BACKGROUND_ONLY_KEYS = ("WEBHOOK_RECEIVER_THREADS", "WEBHOOK_RECEIVER_MAX_BACKLOG")


def _ignored(settings: ReceiverSettings, keys: tuple[str, ...], why: str) -> None:
    """Warn of each of *keys* set for this receiver (not app-wide beside other receivers) that it does not read."""
    for key in keys:
        if key in settings and not settings.shared(key):
            logger.warning("%s is ignored by receiver %r: %s", settings.where(key), settings.receiver, why)


def _dispatcher(app: Flask, settings: ReceiverSettings, store: EventStore, celery: Any) -> Dispatcher:
    key = "WEBHOOK_RECEIVER_DISPATCH"
    mode = settings.get(key, "celery" if celery is not None else "inline")
    if isinstance(mode, Dispatcher):
        if DEADLINE_KEY in settings:
            logger.warning(
                "%s is ignored: the dispatcher given as %s has its own (InlineDispatcher(deadline=...))",
                settings.where(DEADLINE_KEY),
                settings.where(key),
            )
        _ignored(settings, _DISPATCH_KEYS, f"the dispatcher given as {settings.where(key)} was built with its own")
        return mode

    # Checked whatever the mode, so that a malformed value is never silent.
    options: dict[str, Any] = {
        "policy": RetryPolicy(
            max_attempts=number(settings, "WEBHOOK_RECEIVER_MAX_ATTEMPTS", DEFAULT_MAX_ATTEMPTS, integer=True),
            backoff=number(settings, "WEBHOOK_RECEIVER_RETRY_BACKOFF", DEFAULT_RETRY_BACKOFF),
        ),
        "max_backlog": number(settings, "WEBHOOK_RECEIVER_MAX_BACKLOG", DEFAULT_MAX_BACKLOG, integer=True),
        "grace": number(
            settings,
            "WEBHOOK_RECEIVER_GRACE_SECONDS",
            DEFAULT_GRACE_SECONDS,
            at_most=MAX_GRACE_SECONDS,
            why="the time a stopping process waits for running handlers",
        ),
    }
    threads = number(
        settings,
        "WEBHOOK_RECEIVER_THREADS",
        DEFAULT_THREADS,
        integer=True,
        at_most=MAX_THREADS,
        why="each is a thread of this process, started at init_app",
    )
    deadline = _inline_deadline(settings)
    if mode == "inline":
        _ignored(settings, _BACKGROUND_ONLY_KEYS, "inline dispatch runs the handlers in the request")
        if deadline not in (None, AUTO) and not store.durable:
            raise RuntimeError(not_durable_message(store, settings.where(DEADLINE_KEY)))
        return InlineDispatcher(deadline=deadline, policy=options["policy"], grace=options["grace"])
    if deadline not in (None, AUTO):
        logger.warning(
            "%s is ignored with %s dispatch, which answers 202 without waiting for the handlers",
            settings.where(DEADLINE_KEY),
            mode,
        )
    if mode == "thread":
        if not store.durable:
            logger.warning(
                "thread dispatch with the %s store: accepted events are lost if the"
                " process stops; use the default SQLite store or Redis",
                store.name,
            )
        return ThreadDispatcher(threads=threads, **options)
    if mode == "celery":
        celery = celery if celery is not None else app.extensions.get("celery")
        if celery is None:
            raise RuntimeError(
                f"{settings.where(key)} = 'celery' needs a Celery app: receiver.init_app(app,"
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
                hide_passwords(str(store.location)),
            )
        _ignored(settings, ("WEBHOOK_RECEIVER_THREADS",), "Celery dispatch runs the handlers in Celery's workers")
        from .dispatch.celery import CeleryDispatcher

        return CeleryDispatcher(celery, **options)
    raise RuntimeError(f"{settings.where(key)} must be 'inline', 'thread', 'celery' or a Dispatcher instance")
