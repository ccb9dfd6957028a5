"""The catalogue of observable events, and how handler patterns match event names.

The catalogue is data, not a gate: a store may send custom-API events
(``<slug>.created``) or events newer than this list. Unknown names are warned
about where a person typed them (:func:`check_pattern`) and accepted everywhere
else.
"""
from __future__ import annotations

import fnmatch
import re
import warnings

from .errors import UnknownTriggerWarning

_CRUD = ("created", "updated", "deleted")


def _expand(entities: tuple[str, ...], actions: tuple[str, ...]) -> list[str]:
    return [f"{entity}.{action}" for entity in entities for action in actions]


#: Events a Moltin store can observe (the classic list).
MOLTIN_EVENTS: frozenset[str] = frozenset(
    _expand(
        ("address", "brand", "category", "collection", "currency", "integration", "product"),
        _CRUD,
    )
    + _expand(("cart",), ("updated", "deleted"))
    + _expand(("file",), ("created", "deleted"))
    + _expand(
        ("order",), ("created", "updated", "fulfilled", "authorized", "paid", "refunded")
    )
    + ["payment-gateway.updated", "stock-transaction.created"]
    + _expand(("settings", "transaction"), ("created", "updated"))
)

#: Events Elastic Path Commerce Cloud adds to the classic list.
ELASTIC_PATH_EVENTS: frozenset[str] = frozenset(
    _expand(
        (
            "account",
            "account-member",
            "account-membership",
            "customer",
            "user-authentication-info",
            "catalog-release",
            "catalog-rule",
            "subscription",
        ),
        _CRUD,
    )
    + ["order.cancelled", "one-time-password-token-request.created"]
    # Some stores spell the integration events in the plural.
    + _expand(("integrations",), _CRUD)
)

#: Every event name this package knows, sorted.
OBSERVABLE_EVENTS: tuple[str, ...] = tuple(sorted(MOLTIN_EVENTS | ELASTIC_PATH_EVENTS))

_KNOWN = frozenset(OBSERVABLE_EVENTS)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\Z")
_PATTERN = re.compile(r"[A-Za-z0-9_.\-*]{1,128}\Z")


def is_event_name(name: str) -> bool:
    """Tell whether *name* is shaped like an event name (``entity.action``).

    :param name: a candidate, typically the trigger header of a delivery.
    """
    return bool(_NAME.match(name))


def is_known(name: str) -> bool:
    """Tell whether *name* is in the catalogue.

    :param name: an exact event name.
    """
    return name in _KNOWN


def matches(pattern: str, trigger: str) -> bool:
    """Tell whether a handler *pattern* covers the event *trigger*.

    Patterns are exact names (``order.paid``) or shell-style wildcards:
    ``order.*`` covers every order event, ``*.deleted`` every deletion and
    ``*`` everything.

    :param pattern: a pattern given to :meth:`WebhookReceiver.on`.
    :param trigger: an exact event name.
    """
    if "*" not in pattern:
        return pattern == trigger
    return fnmatch.fnmatchcase(trigger, pattern)


def expand(pattern: str) -> list[str]:
    """The catalogued event names a *pattern* covers, sorted.

    An exact name is returned as it is, catalogued or not.

    :param pattern: a pattern as accepted by :func:`matches`.
    """
    if "*" not in pattern:
        return [pattern]
    return [name for name in OBSERVABLE_EVENTS if matches(pattern, name)]


def check_pattern(pattern: str) -> str:
    """Validate a handler pattern and warn when it covers no catalogued event.

    :param pattern: the pattern a person typed.
    :raises TypeError: if *pattern* is not a string.
    :raises ValueError: if *pattern* is empty or holds characters no event
        name can hold.
    :returns: the pattern, unchanged.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"an event name must be a string, not {type(pattern).__name__}")
    if not _PATTERN.match(pattern) or ("*" not in pattern and not _NAME.match(pattern)):
        raise ValueError(
            f"{pattern!r} is not an event name or pattern: use names such as"
            " 'order.paid', 'order.*', '*.deleted' or '*'"
        )
    if not expand(pattern) or ("*" not in pattern and not is_known(pattern)):
        warnings.warn(
            f"{pattern!r} is not a known Moltin or Elastic Path event; it is kept"
            " (custom events are fine), but check its spelling",
            UnknownTriggerWarning,
            stacklevel=3,
        )
    return pattern
