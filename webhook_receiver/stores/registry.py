"""From a ``WEBHOOK_RECEIVER_STORE`` URL to a store: a registry of factories by URL scheme.

The built-in schemes are ``memory``, ``sqlite``, ``redis``, ``rediss`` and
``unix``, and the SQLAlchemy URLs ``postgresql`` (or Heroku's ``postgres``),
``mysql``, ``mariadb`` and ``sqlite+pysqlite`` (each with any driver:
``postgresql+psycopg``; without one, the installed driver). A store
of your own joins them with :func:`register_store`, or, from a package, with
an entry point in the ``webhook_receiver.stores`` group
(the name is the scheme, the object the factory)::

    [options.entry_points]
    webhook_receiver.stores =
        postgresql = my_package.store:from_url

A scheme with a driver (``postgresql+psycopg``) finds the factory of the
whole scheme first, then of the part before ``+``.
"""

from __future__ import annotations

import os
import sys
import threading
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any, Callable, Mapping

from ..redact import hide_passwords
from ..untrusted import printable
from .base import EventStore

__all__ = [
    "ENTRY_POINT_GROUP",
    "StoreFactory",
    "StoreSettings",
    "open_store",
    "prefix_keys_read",
    "register_store",
    "schemes",
]

#: The entry point group searched for schemes not registered in this process.
ENTRY_POINT_GROUP = "webhook_receiver.stores"


@dataclass(frozen=True)
class StoreSettings:
    """What a store factory gets besides the URL.

    :param receiver: the receiver's name: the built-in stores are built as its
        (their ``receiver``), and Redis keys are prefixed with it by default.
    :param lease_seconds: ``WEBHOOK_RECEIVER_LEASE_SECONDS``.
    :param instance_path: the app's instance folder, where relative files go.
    :param config: the app's configuration as the receiver sees it (its
        ``WEBHOOK_RECEIVERS`` entry over the app-wide keys: ``config[
        "WEBHOOK_RECEIVER_REDIS_PREFIX"]`` is the receiver's own), for keys of
        the store's own.
    """

    receiver: str
    lease_seconds: float
    instance_path: str
    config: Mapping[str, Any] = field(default_factory=dict)


#: Builds a store from a URL and the settings; raises :class:`ValueError` for a URL it cannot use.
StoreFactory = Callable[[str, StoreSettings], EventStore]

_factories: dict[str, StoreFactory] = {}
_lock = threading.Lock()


def register_store(scheme: str, factory: StoreFactory) -> None:
    """Make ``WEBHOOK_RECEIVER_STORE = "<scheme>://..."`` build stores with *factory*.

    :param scheme: the URL scheme, such as ``"postgresql"``; case does not matter.
    :param factory: called with the URL and a :class:`StoreSettings`.
    :raises ValueError: if *scheme* is not a URL scheme.
    """
    scheme = scheme.lower()
    if not scheme or not all(c.isalnum() or c in "+-." for c in scheme) or not scheme[0].isalpha():
        raise ValueError(f"{scheme!r} is not a URL scheme")
    with _lock:
        _factories[scheme] = factory


def schemes() -> list[str]:
    """The schemes registered in this process, sorted (entry points join once used)."""
    with _lock:
        return sorted(_factories)


def _entry_point(scheme: str) -> StoreFactory | None:
    if sys.version_info >= (3, 10):
        group: Any = metadata.entry_points(group=ENTRY_POINT_GROUP)
    else:  # pragma: no cover - Python 3.9 answers a dict of groups
        group = metadata.entry_points().get(ENTRY_POINT_GROUP, [])
    for entry in group:
        if entry.name.lower() == scheme:
            factory: StoreFactory = entry.load()
            register_store(scheme, factory)
            return factory
    return None


def _factory(scheme: str) -> StoreFactory | None:
    with _lock:
        factory = _factories.get(scheme) or _factories.get(scheme.partition("+")[0])
    return factory or _entry_point(scheme) or _entry_point(scheme.partition("+")[0])


#: Spellings people type for which no store is registered, and the URL to write instead.
_HINTS = {
    "postgres": "for PostgreSQL write postgresql+psycopg://user:password@host/db (postgres:// is an older"
    " spelling, given by Heroku, that SQLAlchemy does not take)",
    "pg": "for PostgreSQL write postgresql+psycopg://user:password@host/db",
    "mongodb": "MongoDB is not a built-in store; register a factory of your own with register_store",
    "file": "for a SQLite file write sqlite:///relative/path or sqlite:////absolute/path",
}


def open_store(url: str, settings: StoreSettings, *, key: str = "WEBHOOK_RECEIVER_STORE") -> EventStore:
    """The store *url* names.

    :param key: the setting *url* came from, for messages.
    :raises RuntimeError: if no factory knows the URL's scheme, or it refuses
        the URL; the message never shows a password of the URL.
    """
    scheme, sep, _ = url.partition("://")
    factory = _factory(scheme.lower()) if sep else None
    if factory is None:
        known = ", ".join(f"{name}://" for name in schemes())
        shown = f"{printable(scheme)}://..." if sep else "a value without a scheme"
        hint = _HINTS.get(scheme.lower().partition("+")[0]) if sep else None
        raise RuntimeError(
            f"{key}: no store is registered for {shown} (known: {known});"
            + (f" {hint}" if hint else " give a URL of one of those or an EventStore instance")
        )
    try:
        return factory(url, settings)
    except ValueError as exc:
        raise RuntimeError(hide_passwords(f"{key}: {exc}", url)) from None


def prefix_keys_read(url: str) -> frozenset[str] | None:
    """The prefix keys the store *url* names is built with: ``WEBHOOK_RECEIVER_REDIS_PREFIX``, ``..._TABLE_PREFIX``.

    Empty for a built-in store that reads neither (memory, the SQLite store)
    or a URL no factory knows; ``None`` for a factory an app registered, which
    may read any key of :attr:`StoreSettings.config`.
    """
    scheme, sep, _ = url.partition("://")
    factory = _factory(scheme.lower()) if sep else None
    if factory is None or factory in (_memory, _sqlite):
        return frozenset()
    if factory is _redis:
        return frozenset({"WEBHOOK_RECEIVER_REDIS_PREFIX"})
    if factory is _sqlalchemy:
        return frozenset({"WEBHOOK_RECEIVER_TABLE_PREFIX"})
    return None


def _memory(url: str, settings: StoreSettings) -> EventStore:
    from .memory import MemoryStore

    if url != "memory://":
        raise ValueError("the memory store takes no path or options: memory://")
    return MemoryStore(lease_seconds=settings.lease_seconds, receiver=settings.receiver)


def _sqlite(url: str, settings: StoreSettings) -> EventStore:
    """``sqlite:///relative`` (to the instance folder, as with Flask-SQLAlchemy) or ``sqlite:////absolute``."""
    from .sqlite import SQLiteStore

    if not url.startswith("sqlite:///"):
        raise ValueError("a SQLite store is sqlite:///relative/path or sqlite:////absolute/path")
    path = url[len("sqlite:///") :]
    if not path:
        raise ValueError("a SQLite store needs a file: sqlite:///events.sqlite3")
    if not os.path.isabs(path):
        # Relative to the instance folder, which the library creates (for the owner only) when
        # missing; an absolute path's folder is the deployment's to provide.
        path = os.path.join(settings.instance_path, path)
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
    return SQLiteStore(path, lease_seconds=settings.lease_seconds, receiver=settings.receiver)


def _redis(url: str, settings: StoreSettings) -> EventStore:
    """Keys under ``WEBHOOK_RECEIVER_REDIS_PREFIX`` (``webhook_receiver:<receiver>`` by default).

    Receivers that share a prefix keep their keys apart (see :mod:`.redis`).
    """
    from .redis import RedisStore

    prefix = settings.config.get("WEBHOOK_RECEIVER_REDIS_PREFIX") or f"webhook_receiver:{settings.receiver}"
    return RedisStore(url, prefix=prefix, lease_seconds=settings.lease_seconds, receiver=settings.receiver)


def _sqlalchemy(url: str, settings: StoreSettings) -> EventStore:
    """A database URL for SQLAlchemy; a relative SQLite path is in the instance folder, as with Flask-SQLAlchemy.

    ``postgres://`` (Heroku's form), ``postgresql://``, ``mysql://`` and
    ``mariadb://`` get the installed driver (see
    :func:`~webhook_receiver.stores.sqlalchemy.database_url`). The store is
    the receiver's own view of its tables.
    """
    try:
        from .sqlalchemy import SQLAlchemyStore
    except ImportError as exc:
        raise ValueError(str(exc)) from None

    scheme, _, rest = url.partition("://")
    if scheme.startswith("sqlite") and rest.startswith("/") and not rest.startswith("//"):
        path = rest[1:]
        if path and not os.path.isabs(path) and path.partition("?")[0] != ":memory:":
            os.makedirs(settings.instance_path, mode=0o700, exist_ok=True)
            url = f"{scheme}:///{os.path.join(settings.instance_path, path)}"
    prefix = settings.config.get("WEBHOOK_RECEIVER_TABLE_PREFIX") or "webhook_receiver_"
    store = SQLAlchemyStore(url, prefix=prefix, lease_seconds=settings.lease_seconds)
    return store.for_receiver(settings.receiver)


register_store("memory", _memory)
register_store("sqlite", _sqlite)
for _scheme in ("redis", "rediss", "unix"):
    register_store(_scheme, _redis)
# SQLAlchemy URLs (extra [sqlalchemy]); plain sqlite:/// stays the built-in SQLite store.
for _scheme in ("postgresql", "postgres", "mysql", "mariadb", "sqlite+pysqlite"):
    register_store(_scheme, _sqlalchemy)
