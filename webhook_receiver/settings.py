"""The configuration keys the receiver knows, and the app's config as one receiver sees it.

Every key is ``WEBHOOK_RECEIVER_<NAME>`` app-wide, or ``<NAME>`` in the
receiver's entry of ``WEBHOOK_RECEIVERS``, which wins::

    app.config["WEBHOOK_RECEIVER_DISPATCH"] = "thread"          # every receiver
    app.config["WEBHOOK_RECEIVERS"] = {"outlet": {"URL": "/hooks/outlet", "DISPATCH": "inline"}}

Nothing is ever written into ``app.config``: defaults are the reader's, per
receiver. A key of neither form that the receiver does not know is a
:class:`UnknownSettingWarning` naming the nearest known key.
"""

from __future__ import annotations

import difflib
import math
import re
import sys
import warnings
from types import FrameType
from typing import Any, Iterator, Mapping

from .errors import UnknownSettingWarning

__all__ = [
    "KEYS",
    "PREFIX",
    "RECEIVERS",
    "ReceiverSettings",
    "UnknownSettingWarning",
    "check_keys",
    "flag",
    "number",
]

#: What every app-wide key's name starts with.
PREFIX = "WEBHOOK_RECEIVER_"

#: The app-wide key holding each receiver's own settings, by receiver name.
RECEIVERS = "WEBHOOK_RECEIVERS"

#: Every setting the library reads, by its name without :data:`PREFIX`, with what it holds.
#: The one list: a key read anywhere in the package is here, or the warning for unknown keys
#: would call it misspelled (a test checks the package's source against it).
KEYS: Mapping[str, str] = {
    "SECRET_KEY": "the secret registered upstream, or a list of them oldest to newest",
    "ALLOW_NO_SECRET": "accept deliveries without checking a secret (local experiments only)",
    "URL": "where the endpoint is mounted",
    "MAX_CONTENT_LENGTH": "the largest body accepted, in bytes",
    "STORE": "where events and handler outcomes are kept: a URL or an EventStore",
    "REDIS_PREFIX": "the key prefix of a Redis store built from a URL",
    "TABLE_PREFIX": "the table-name prefix of a SQLAlchemy store built from a URL",
    "LEASE_SECONDS": "how long a claim on an event is exclusive",
    "DISPATCH": "who runs the handlers: inline, thread, celery or a Dispatcher",
    "INLINE_DEADLINE": "seconds after which an inline delivery still running is answered 202, or None",
    "THREADS": "worker threads per process, for thread dispatch",
    "MAX_ATTEMPTS": "runs of an event before it is left failed, for background dispatch",
    "RETRY_BACKOFF": "the first pause between runs in seconds, for background dispatch",
    "MAX_BACKLOG": "due events past which deliveries get 503, for background dispatch",
    "GRACE_SECONDS": "how long running handlers may finish when the process stops",
    "METRICS": "where the Prometheus metrics are served (a path) or the CollectorRegistry they join",
    "METRICS_CACHE_SECONDS": "how often the store-read gauges (backlog, oldest due, failed) are read again",
    "TRACING": "OpenTelemetry spans: None (on when opentelemetry-api is installed), False, or a TracerProvider",
    "HEALTH_URL": "where the readiness endpoint is mounted (off when unset)",
    "HEALTH_MAX_AGE": "the age in seconds of the oldest due event past which health is degraded",
    "HEALTH_TIMEOUT": "seconds the health checks wait for the store before they say it is down",
    "INBOX_URL": "where the inbox page is mounted (off when unset)",
    "INBOX_AUTH": "the inbox page's access check: a callable, a view decorator, or 'none' in DEBUG/TESTING",
}


#: The keys read app-wide only (one metrics endpoint, one health probe, one inbox per app): in a
#: ``WEBHOOK_RECEIVERS`` entry they would do nothing, and :func:`check_keys` says so.
APP_WIDE_ONLY: frozenset[str] = frozenset(
    {
        "METRICS",
        "METRICS_CACHE_SECONDS",
        "TRACING",
        "HEALTH_URL",
        "HEALTH_MAX_AGE",
        "HEALTH_TIMEOUT",
        "INBOX_URL",
        "INBOX_AUTH",
    }
)


class ReceiverSettings(Mapping[str, Any]):
    """The app's config as the receiver named *receiver* sees it: its ``WEBHOOK_RECEIVERS`` entry wins.

    ``settings["WEBHOOK_RECEIVER_URL"]`` is the entry's ``"URL"`` when it has
    one, else the app-wide key; any other key is the app's own. Reading never
    writes: a key set nowhere is missing, and the reader picks the default.

    :param config: the app's configuration (``app.config``).
    :param receiver: the receiver's name.
    :raises RuntimeError: if ``WEBHOOK_RECEIVERS`` or the receiver's entry is not a mapping.
    """

    def __init__(self, config: Mapping[str, Any], receiver: str) -> None:
        self.receiver = receiver
        self._config = config
        entries = config.get(RECEIVERS)
        if entries is None:
            entries = {}
        if not isinstance(entries, Mapping):
            raise RuntimeError(
                f"{RECEIVERS} must be a dict of receiver names to dicts of settings, such as"
                ' {"outlet": {"URL": "/hooks/outlet"}}, not a value of type ' + type(entries).__name__
            )
        entry = entries.get(receiver)
        if entry is None:
            entry = {}
        if not isinstance(entry, Mapping):
            raise RuntimeError(
                f"{RECEIVERS}[{receiver!r}] must be a dict of settings such as"
                ' {"URL": "/hooks/outlet"}, not a value of type ' + type(entry).__name__
            )
        self._entry: Mapping[str, Any] = entry

    def __getitem__(self, key: str) -> Any:
        if key.startswith(PREFIX) and key[len(PREFIX) :] in self._entry:
            return self._entry[key[len(PREFIX) :]]
        return self._config[key]

    def __iter__(self) -> Iterator[str]:
        seen = set()
        for key in self._config:
            seen.add(key)
            yield key
        for name in self._entry:
            if isinstance(name, str) and PREFIX + name not in seen:
                yield PREFIX + name

    def __len__(self) -> int:
        return sum(1 for _ in self)

    def __contains__(self, key: object) -> bool:
        if isinstance(key, str) and key.startswith(PREFIX) and key[len(PREFIX) :] in self._entry:
            return True
        return key in self._config

    def shared(self, key: str) -> bool:
        """Whether *key* comes from the app-wide config of an app with ``WEBHOOK_RECEIVERS``: other receivers read it.

        A key one receiver ignores is then no mistake of the app's: another
        may be the one it is set for.
        """
        own = key.startswith(PREFIX) and key[len(PREFIX) :] in self._entry
        return not own and bool(self._config.get(RECEIVERS)) and key in self._config

    def where(self, key: str) -> str:
        """Where *key*'s value comes from, for messages: ``WEBHOOK_RECEIVERS['outlet']['URL']`` or the key."""
        if key.startswith(PREFIX) and key[len(PREFIX) :] in self._entry:
            return f"{RECEIVERS}[{self.receiver!r}][{key[len(PREFIX) :]!r}]"
        return key

    def __repr__(self) -> str:  # never the values: some are secrets
        return f"<ReceiverSettings {self.receiver!r} keys={sorted(k for k in self if k.startswith(PREFIX))}>"


def _nearest(name: str, known: list[str]) -> str | None:
    """The known name closest to *name*: one that starts with the other first (``LEASE``), else by difflib."""
    starting = [k for k in known if len(name) >= 3 and (k.startswith(name) or name.startswith(k))]
    if starting:
        return max(starting, key=lambda k: (difflib.SequenceMatcher(None, name, k).ratio(), -len(k)))
    found = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return found[0] if found else None


def _misspelled_prefix(key: str) -> str | None:
    """The known key that *key*, which does not start with the prefix, is most likely a misspelling of.

    ``WEBHOOK_RECIEVER_STORE``, ``WEBHOOKS_RECEIVER_STORE``, ``webhook_receiver_store``: close to a
    whole known key, any case (a cutoff that leaves an app's own ``WEBHOOK_URL`` alone).
    """
    known = [PREFIX + name for name in KEYS] + [RECEIVERS]
    found = difflib.get_close_matches(key.upper(), known, n=1, cutoff=0.85)
    return found[0] if found else None


def _short(key: str) -> str:
    """*key* without its prefix (``WEBHOOK_RECEIVER_``, or ``WEBHOOK_RECEIVERS_`` as typed by mistake)."""
    for prefix in (RECEIVERS + "_", PREFIX):
        if key.startswith(prefix):
            return key[len(prefix) :]
    return ""


def check_keys(config: Mapping[str, Any], receiver: str, *, app_wide: bool = True) -> None:
    """Warn about every key the receiver does not know, naming the nearest known one.

    Looks at every app-wide key starting with ``WEBHOOK_RECEIVER`` (so
    ``WEBHOOK_RECEIVERS_URL`` too), at every other key close to a known one
    (``WEBHOOK_RECIEVER_STORE``, a lower-case ``webhook_receiver_store``), at every key of the receiver's
    ``WEBHOOK_RECEIVERS`` entry, and, when the mapping has no entry for
    *receiver*, at an entry whose name is close to it (``"outlt"``).

    :param config: the app's configuration.
    :param receiver: the name of the receiver being set up.
    :param app_wide: look at the app-wide keys too (``init_app`` does for
        the first receiver of an app only, so that each is told once).
    """
    for key in config if app_wide else ():
        if not isinstance(key, str) or key == RECEIVERS:
            continue
        if not key.startswith(PREFIX.rstrip("_")):
            meant = _misspelled_prefix(key)
            if meant:
                _warn(f"{key} is not a setting of webhook_receiver", meant)
            continue
        if key.startswith(PREFIX) and key[len(PREFIX) :] in KEYS:
            continue
        short = _nearest(_short(key), list(KEYS))
        nearest = PREFIX + short if short else RECEIVERS if key.rstrip("_") == PREFIX.rstrip("_") else None
        _warn(f"{key} is not a setting of webhook_receiver", nearest)
    entries = config.get(RECEIVERS)
    if not isinstance(entries, Mapping):
        return
    entry = entries.get(receiver)
    if isinstance(entry, Mapping):
        for name in entry:
            where = f"{RECEIVERS}[{receiver!r}][{name!r}]"
            if isinstance(name, str) and name in APP_WIDE_ONLY:
                _warn(f"{where} is app-wide only: set {PREFIX}{name} in the app's config", None)
                continue
            if isinstance(name, str) and name in KEYS:
                continue
            shown = str(name)
            if shown.upper().startswith(PREFIX):  # the app-wide spelling inside an entry
                shown = shown[len(PREFIX) :]
            nearest = _nearest(shown.upper(), list(KEYS))
            _warn(f"{where} is not a setting of webhook_receiver", repr(nearest) if nearest else None)
    elif receiver not in entries:
        names = [name for name in entries if isinstance(name, str)]
        close = difflib.get_close_matches(receiver, names, n=1, cutoff=0.8)  # "outlt", not "shop-eu" for "shop"
        if close:
            nearest = close[0]
            _warn(
                f"{RECEIVERS} has an entry {nearest!r} and none for the receiver {receiver!r} being set up",
                repr(receiver),
            )


def _warn(message: str, nearest: str | None) -> None:
    hint = f"; did you mean {nearest}?" if nearest else "."
    warnings.warn(f"{message}{hint} It is ignored.", UnknownSettingWarning, stacklevel=_callers_level())


def _callers_level() -> int:
    """The ``stacklevel`` of the first frame outside this package and Flask: the app's ``init_app`` call."""
    level, frame = 1, sys._getframe(1)  # level 1 is _warn, which calls warnings.warn
    while frame.f_back is not None and _module(frame).split(".")[0] in ("webhook_receiver", "flask"):
        frame = frame.f_back
        level += 1
    return level


def _module(frame: FrameType) -> str:
    return str(frame.f_globals.get("__name__", ""))


#: The spellings a boolean setting may have when it is a string (an environment variable), any case.
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off"})

#: A number as a string: digits, an optional fraction and exponent, ASCII only (no "1_000", no "٣").
_NUMBER = re.compile(r"[+]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?", re.ASCII)
_WHOLE = re.compile(r"[+]?\d+", re.ASCII)


def flag(settings: Mapping[str, Any], key: str, default: bool = False) -> bool:
    """A boolean setting: a real boolean, or a string spelled ``true/false/1/0/yes/no/on/off``.

    :raises RuntimeError: for anything else (``"flase"``, ``2``, ``None``), naming
        the key and the value's type, never the value.
    """
    if key not in settings:
        return default
    value = settings[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise RuntimeError(
        f"{_where(settings, key)} must be True or False (or a string such as 'true' or 'false'),"
        f" not a value of type {type(value).__name__}"
    )


def number(
    settings: Mapping[str, Any],
    key: str,
    default: float,
    *,
    integer: bool = False,
    at_least: float | None = None,
    at_most: float | None = None,
    why: str = "",
) -> Any:
    """A positive, finite number setting: a number, or a string of one (an environment variable).

    ``"8"`` is 8 and ``"2.5"`` is 2.5, as boolean keys take ``"true"``; NaN
    and infinity are refused in either form (a lease or backoff of NaN would
    never run an event again), and so is a whole number too large for a
    float (``from_prefixed_env`` reads 400 digits as an :class:`int`).

    :param integer: the key takes whole numbers only (``THREADS``), of type
        :class:`int` or a string of digits.
    :param at_least: the least value the key takes, when more than 0 is not enough.
    :param at_most: the most it takes.
    :param why: what a value out of that range would do, for the message (which
        never quotes the value).
    :raises RuntimeError: for anything else, naming the key and the value's
        type, never the value (it might be a secret pasted in the wrong place).
    """
    if key not in settings:
        return default
    value = settings[key]
    kind = "a positive whole number" if integer else "a positive number"
    if isinstance(value, str):
        text = value.strip()
        if integer and _WHOLE.fullmatch(text):
            value = int(text)
        elif not integer and _NUMBER.fullmatch(text):
            value = float(text)
            value = int(value) if value.is_integer() and _WHOLE.fullmatch(text) else value
        else:
            raise RuntimeError(
                f"{_where(settings, key)} must be {kind} (or a string of one, such as"
                f" {'8' if integer else '2.5'!r}), not a string of anything else"
            )
    if isinstance(value, bool) or not isinstance(value, (int,) if integer else (int, float)):
        raise RuntimeError(f"{_where(settings, key)} must be {kind}, not a value of type {type(value).__name__}")
    if isinstance(value, float) and not math.isfinite(value):
        raise RuntimeError(f"{_where(settings, key)} must be {kind}, and finite: NaN and infinity are not")
    if not integer and isinstance(value, int) and not math.isfinite(_as_float(value)):
        # seconds end up in float arithmetic: an int past a float's range would fail every delivery instead
        raise RuntimeError(f"{_where(settings, key)} must be {kind}, and finite: this one is too large for a float")
    if value <= 0:
        raise RuntimeError(f"{_where(settings, key)} must be {kind}; it is zero or less")
    low = at_least is not None and value < at_least
    if low or (at_most is not None and value > at_most):
        bounds = " and ".join(
            f"{word} {_plain(bound)}" for word, bound in (("at least", at_least), ("at most", at_most)) if bound
        )
        raise RuntimeError(f"{_where(settings, key)} must be {bounds}" + (f": {why}" if why else ""))
    return value


def _plain(value: float) -> str:
    """*value* as a reader writes it: ``0.05``, ``3600``, ``1e+10``."""
    return f"{value:g}" if isinstance(value, float) else str(value)


def _as_float(value: int) -> float:
    """*value* as a float; infinity when it is past a float's range."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _where(settings: Mapping[str, Any], key: str) -> str:
    return settings.where(key) if isinstance(settings, ReceiverSettings) else key
