"""The catalogue of observable events, and how handler patterns match event names.

The catalogue follows Elastic Path Commerce Cloud's own lists: the events
table of the integrations API and the subscription events
(``tests/data/epcc-observable-events.txt`` keeps a copy, with its sources, and
a test holds the two together). Around it:

* **legacy** events, in no current list but still accepted upstream
  (``product.created``, ``brand.*``, ``subscription-plan.*`` ...): exact names are accepted, wildcards
  do not expand to them;
* **custom API** events, ``<slug>.created|updated|deleted`` where the slug
  ends in ``_ext`` (``wishlist_ext.created``): accepted as they are.

Anything else is unknown: a handler for it is kept with a warning naming the
closest catalogue event, and ``sync`` refuses to register it, since upstream
answers 422 to an unknown name.
"""

from __future__ import annotations

import difflib
import fnmatch
import re
import warnings

from .errors import UnknownTriggerWarning

__all__ = [
    "LEGACY_EVENTS",
    "OBSERVABLE_EVENTS",
    "check_pattern",
    "closest",
    "expand",
    "is_custom",
    "is_event_name",
    "is_known",
    "is_legacy",
    "matches",
    "unknown_events",
    "unknown_trigger",
]

_CRUD = ("created", "updated", "deleted")


def _expand(entities: tuple[str, ...], actions: tuple[str, ...]) -> list[str]:
    return [f"{entity}.{action}" for entity in entities for action in actions]


#: The events table of the integrations API.
_INTEGRATION_EVENTS = (
    _expand(
        (
            "account",
            "account-member",
            "account-membership",
            "address",
            "catalog-release",
            "catalog-rule",
            "currency",
            "customer",
            "integration",
            "user-authentication-info",
        ),
        _CRUD,
    )
    + _expand(("cart",), ("updated", "deleted"))
    + _expand(("file",), ("created", "deleted"))
    + _expand(("order",), ("created", "updated", "fulfilled", "authorized", "paid", "refunded", "cancelled"))
    + _expand(("settings", "transaction"), ("created", "updated"))
    + [
        "one-time-password-token-request.created",
        "payment-gateway.updated",
        "product.deleted",
        "stock-transaction.created",
    ]
)

#: The subscription events (the 2026 spec: the offerings model, without the plans and products of old).
_SUBSCRIPTION_EVENTS = (
    _expand(("subscription-invoice",), ("created", "deleted"))
    + _expand(
        (
            "subscription-job",
            "subscription-offering",
            "subscription-schedule",
            "subscription-subscriber",
        ),
        _CRUD,
    )
    + _expand(
        ("subscription",),
        ("canceled", "closed", "create-failed", "created", "paused", "pending_cancel", "pending_pause", "resumed"),
    )
)

#: Every event Elastic Path lists today, sorted: what wildcards expand to.
OBSERVABLE_EVENTS: tuple[str, ...] = tuple(sorted(set(_INTEGRATION_EVENTS + _SUBSCRIPTION_EVENTS)))

#: Events in no current list that upstream still accepts: Moltin's catalogue of old, and the subscription
#: plans and products the 2026 subscriptions spec replaced with offerings.
LEGACY_EVENTS: frozenset[str] = frozenset(
    ["product.created", "product.updated"]
    + _expand(("brand", "category", "collection", "subscription-plan", "subscription-product"), _CRUD)
)

_KNOWN = frozenset(OBSERVABLE_EVENTS) | LEGACY_EVENTS
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}\Z")
_PATTERN = re.compile(r"[A-Za-z0-9_.\-*]{1,128}\Z")
_CUSTOM = re.compile(r"[a-z0-9_]{1,59}_ext\.(created|updated|deleted)\Z")
_CUSTOM_PATTERN = re.compile(r"[a-z0-9_*]*_ext\.[a-z*]+\Z")


def is_event_name(name: str) -> bool:
    """Tell whether *name* is shaped like an event name (``entity.action``).

    :param name: a candidate, typically the trigger header of a delivery.
    """
    return bool(_NAME.match(name))


def is_known(name: str) -> bool:
    """Tell whether upstream knows *name*: listed, legacy, or a custom API event.

    :param name: an exact event name.
    """
    return name in _KNOWN or bool(_CUSTOM.match(name))


def is_legacy(name: str) -> bool:
    """Tell whether *name* is a legacy event (accepted upstream, in no current list)."""
    return name in LEGACY_EVENTS


def is_custom(name: str) -> bool:
    """Tell whether *name* is a custom API event: ``<slug>_ext.created|updated|deleted``."""
    return bool(_CUSTOM.match(name))


def closest(name: str) -> str | None:
    """The catalogue event most like *name* (for "did you mean ...?"), or ``None``."""
    found = difflib.get_close_matches(name, sorted(_KNOWN), n=1, cutoff=0.6)
    return found[0] if found else None


def unknown_events(names: list[str]) -> list[str]:
    """Each of *names* upstream would refuse, described with its closest known event."""
    described = []
    for name in names:
        if not is_known(name):
            guess = closest(name)
            described.append(f"{name} (did you mean {guess}?)" if guess else name)
    return described


def unknown_trigger(name: str) -> str:
    """Why *name* cannot be sent or fired, in one sentence: "... is not an Elastic Path event: did you mean ...?"."""
    guess = closest(name)
    hint = f": did you mean {guess}?" if guess else " (custom API events are named '<slug>_ext.created')"
    return f"{name!r} is not an Elastic Path event{hint}"


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
    """The listed event names a *pattern* covers, sorted (legacy events excluded).

    An exact name is returned as it is, known or not.

    :param pattern: a pattern as accepted by :func:`matches`.
    """
    if "*" not in pattern:
        return [pattern]
    return [name for name in OBSERVABLE_EVENTS if matches(pattern, name)]


def check_pattern(pattern: str) -> str:
    """Validate a handler pattern.

    :param pattern: the pattern a person typed.
    :raises TypeError: if *pattern* is not a string.
    :raises ValueError: if *pattern* is empty, holds characters no event name
        can hold, or is a wildcard that covers no listed event (custom API
        wildcards such as ``wishlist_ext.*`` excepted).
    :returns: the pattern, unchanged.
    :warns UnknownTriggerWarning: for an exact name upstream does not know,
        naming the closest one.
    """
    if not isinstance(pattern, str):
        raise TypeError(f"an event name must be a string, not {type(pattern).__name__}")
    if not _PATTERN.match(pattern) or ("*" not in pattern and not _NAME.match(pattern)):
        raise ValueError(
            f"{pattern!r} is not an event name or pattern: use names such as"
            " 'order.paid', 'order.*', '*.deleted' or '*'"
        )
    if "*" in pattern:
        if not expand(pattern) and not _CUSTOM_PATTERN.match(pattern):
            raise ValueError(
                f"{pattern!r} covers no Elastic Path event: check its spelling (such as 'order.*' or"
                " '*.deleted'), or name custom API events as '<slug>_ext.*'"
            )
    elif not is_known(pattern):
        guess = closest(pattern)
        hint = f" (did you mean {guess}?)" if guess else ""
        warnings.warn(
            f"{pattern!r} is not a known Elastic Path event{hint}. It is kept, but upstream refuses to"
            " register unknown names (custom API events are named '<slug>_ext.created')",
            UnknownTriggerWarning,
            stacklevel=3,
        )
    return pattern
