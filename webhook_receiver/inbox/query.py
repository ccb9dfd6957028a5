"""What the list shows: filters read from the query string, and keyset pages read through the store API.

The store API answers ``events(status=, trigger=, since=, limit=)``, newest
first. A page is keyed by the ``(received_at, id)`` of its last event: the
next page holds the events older than that key. A store whose ``events``
takes ``before=(received_at, id)`` is asked for exactly one page; any other
store is asked for the newest events in growing batches, the older-than-key
ones kept, at most :data:`SCAN_LIMIT` events read per page.

Filters the store cannot apply (a trigger wildcard, a handler, an id
prefix, an end time) are applied here, over the same bounded batches.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from typing import Any, Mapping

from werkzeug.exceptions import BadRequest

from ..catalogue import matches
from ..stores.base import EventStatus, EventStore, StoredEvent

__all__ = ["PAGE_SIZE", "SCAN_LIMIT", "Cursor", "Filters", "Page", "events_page", "parse_time", "when"]

#: Events on one page of the list.
PAGE_SIZE = 50
#: The most events read from the store for one page when some filter is applied here.
SCAN_LIMIT = 20_000

#: Sorts after every id: the key just above every event received at one time.
_ABOVE_EVERY_ID = "\U0010ffff"

_UNITS = {"m": 60, "h": 3600, "d": 86400, "w": 604800}
_FORMATS = (
    "%Y-%m-%dT%H:%M:%S.%f",
    "%Y-%m-%dT%H:%M:%S",
    "%Y-%m-%dT%H:%M",
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y-%m-%d",
)


def parse_time(text: str, now: float) -> float:
    """``2h``, ``7d``, ``30m`` (that long ago) or a UTC date and time such as ``2026-12-01T02:00``, as epoch seconds.

    :raises ValueError: if it is neither.
    """
    text = text.strip()
    unit = text[-1:].lower()
    if unit in _UNITS and text[:-1].replace(".", "", 1).isdigit():
        moment = now - float(text[:-1]) * _UNITS[unit]
        try:  # the page and the CLI show it as a date: one no date can be is refused here, not a 500 later
            datetime.fromtimestamp(moment, timezone.utc)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"{text!r} reaches further back than any date") from None
        return moment
    for layout in _FORMATS:
        try:
            return datetime.strptime(text, layout).replace(tzinfo=timezone.utc).timestamp()
        except ValueError:
            continue
    raise ValueError(f"{text!r} is neither a duration such as 2h nor a UTC time such as 2026-12-01T02:00")


def when(epoch: float | None) -> str:
    """An epoch time as the page shows it (UTC), or an empty string."""
    if not epoch:
        return ""
    return datetime.fromtimestamp(epoch, timezone.utc).strftime("%Y-%m-%d %H:%M:%S")


def _exact(epoch: float) -> str:
    """An epoch time as a UTC text to the microsecond, which :func:`parse_time` reads back."""
    # isoformat, not strftime: strftime's year has no leading zeros before 1000 (``1-01-01``), unreadable back
    return datetime.fromtimestamp(epoch, timezone.utc).replace(tzinfo=None).isoformat(timespec="microseconds")


@dataclass(frozen=True, order=True)
class Cursor:
    """The key of the last event on a page: the next page starts below it."""

    received_at: float
    id: str

    def encode(self) -> str:
        """As the ``before`` query argument."""
        return f"{self.received_at!r}~{self.id}"

    @classmethod
    def decode(cls, text: str) -> Cursor:
        """From :meth:`encode`'s text.

        :raises BadRequest: if it is not one.
        """
        stamp, sep, event_id = text.partition("~")
        try:
            if not sep:
                raise ValueError
            return cls(float(stamp), event_id)
        except ValueError:
            raise BadRequest("'before' is not a page key") from None

    @classmethod
    def of(cls, stored: StoredEvent) -> Cursor:
        """The key of *stored*."""
        return cls(stored.received_at, stored.id)


@dataclass(frozen=True)
class Filters:
    """The list's filters; empty ones filter nothing.

    :param status: only events with this status.
    :param trigger: an exact trigger or a wildcard as in ``@receiver.on`` (``order.*``).
    :param handler: only events one of whose handlers has this name (or ends with ``.<name>``).
    :param id_prefix: only events whose id starts with this.
    :param since: only events received at or after this time.
    :param until: only events received before this time.
    :param since_text: *since* as typed, to show it back.
    :param until_text: *until* as typed.
    """

    status: EventStatus | None = None
    trigger: str = ""
    handler: str = ""
    id_prefix: str = ""
    since: float | None = None
    until: float | None = None
    since_text: str = ""
    until_text: str = ""

    @classmethod
    def from_args(cls, args: Mapping[str, str], now: float | None = None) -> Filters:
        """Read them from a query string (or a form).

        :raises BadRequest: if one is malformed.
        """
        now = time.time() if now is None else now
        status_text = args.get("status", "").strip()
        try:
            status = EventStatus(status_text) if status_text else None
        except ValueError:
            raise BadRequest(f"status must be one of {', '.join(s.value for s in EventStatus)}") from None
        since_text, until_text = args.get("since", "").strip(), args.get("until", "").strip()
        try:
            since = parse_time(since_text, now) if since_text else None
            until = parse_time(until_text, now) if until_text else None
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
        return cls(
            status=status,
            trigger=args.get("trigger", "").strip(),
            handler=args.get("handler", "").strip(),
            id_prefix=args.get("id", "").strip(),
            since=since,
            until=until,
            since_text=since_text,
            until_text=until_text,
        )

    def query_args(self) -> dict[str, str]:
        """The filters as query arguments, the empty ones left out."""
        found = {
            "status": self.status.value if self.status else "",
            "trigger": self.trigger,
            "handler": self.handler,
            "id": self.id_prefix,
            "since": self.since_text,
            "until": self.until_text,
        }
        return {name: value for name, value in found.items() if value}

    @property
    def exact_trigger(self) -> str | None:
        """The trigger the store can filter on: an exact one."""
        return self.trigger if self.trigger and "*" not in self.trigger else None

    @property
    def applied_here(self) -> bool:
        """Whether some filter is applied here rather than by the store."""
        return bool((self.trigger and "*" in self.trigger) or self.handler or self.id_prefix or self.until)

    def keeps(self, stored: StoredEvent) -> bool:
        """Whether *stored* passes the filters the store did not apply."""
        if self.trigger and "*" in self.trigger and not matches(self.trigger, stored.trigger):
            return False
        if self.id_prefix and not stored.id.startswith(self.id_prefix):
            return False
        if self.until is not None and stored.received_at >= self.until:
            return False
        if self.handler and not any(
            name == self.handler or name.endswith("." + self.handler) for name in stored.handlers
        ):
            return False
        return True

    def describe(self, count: int | None = None) -> str:
        """The filtered events in words: ``failed order.paid events received since 2026-12-01 02:00:00 UTC``.

        :param count: says ``event`` rather than ``events`` when it is 1.
        """
        words = [self.status.value] if self.status else []
        if self.trigger:
            words.append(self.trigger)
        words.append("event" if count == 1 else "events")
        if self.id_prefix:
            words.append(f"with an id starting {self.id_prefix!r}")
        if self.handler:
            words.append(f"handled by {self.handler}")
        if self.since is not None:
            words.append(f"received since {when(self.since)} UTC")
        if self.until is not None:
            words.append(f"{'and' if self.since is not None else 'received'} before {when(self.until)} UTC")
        return " ".join(words)

    def with_until(self, until: float) -> Filters:
        """These filters, with events received from *until* on left out, both ends pinned as exact times.

        A bulk replay's preview carries them in its form: to the microsecond,
        so that an event received in the same second after the preview is
        not in the replay, and a relative start (``since=1h``) as the time it
        meant at the preview, not at the confirmation. The values are those
        the texts read back as, so preview and confirmation match.
        """
        until_text = _exact(until)
        pinned = replace(self, until=parse_time(until_text, until), until_text=until_text)
        if self.since is None:
            return pinned
        since_text = _exact(self.since)
        return replace(pinned, since=parse_time(since_text, until), since_text=since_text)


@dataclass
class Page:
    """One page of the list.

    :param events: the events, newest first.
    :param next: the key the next page starts below, when there may be one.
    :param scanned: how many events were read from the store.
    :param cut_short: the scan stopped at :data:`SCAN_LIMIT` before filling the page.
    """

    events: list[StoredEvent]
    next: Cursor | None
    scanned: int
    cut_short: bool = False


def takes_before(store: EventStore) -> bool:
    """Whether the store's ``events`` takes a ``before=(received_at, id)`` key (a keyset page in one query)."""
    try:
        return "before" in inspect.signature(store.events).parameters
    except (TypeError, ValueError):
        return False


def events_page(
    store: EventStore,
    filters: Filters,
    *,
    before: Cursor | None = None,
    limit: int = PAGE_SIZE,
    scan_limit: int = SCAN_LIMIT,
) -> Page:
    """The events matching *filters* older than *before*, newest first, at most *limit* of them.

    :raises StoreUnavailable: if the store cannot answer.
    """
    common: dict[str, Any] = {"status": filters.status, "trigger": filters.exact_trigger, "since": filters.since}
    if takes_before(store):
        return _page_by_key(store, filters, common, before, limit, scan_limit)
    wide = before is not None or filters.applied_here
    batch_size = min(max(4 * (limit + 1), 256), scan_limit) if wide else limit + 1
    while True:
        batch = store.events(**common, limit=batch_size)
        exhausted = len(batch) < batch_size
        ordered = sorted(batch, key=Cursor.of, reverse=True)
        floor = None if exhausted or not ordered else ordered[-1].received_at
        kept = [
            e
            for e in ordered
            if (before is None or Cursor.of(e) < before)
            and (floor is None or e.received_at > floor)  # a tie at the batch's edge may be cut: next batch
            and filters.keeps(e)
        ]
        if len(kept) > limit:
            return Page(kept[:limit], Cursor.of(kept[limit - 1]), len(batch))
        if exhausted:
            return Page(kept, None, len(batch))
        if batch_size >= scan_limit and floor is not None:
            # everything above the batch's oldest time was looked at: go on below it, ties included
            return Page(kept, Cursor(floor, _ABOVE_EVERY_ID), len(batch), True)
        batch_size = min(batch_size * 4, scan_limit)


def _page_by_key(
    store: EventStore,
    filters: Filters,
    common: dict[str, Any],
    before: Cursor | None,
    limit: int,
    scan_limit: int,
) -> Page:
    """A page from a store that takes ``before``: each batch starts where the last one ended."""
    kept: list[StoredEvent] = []
    scanned = 0
    key = before
    if filters.until is not None and (key is None or Cursor(filters.until, "") < key):
        key = Cursor(filters.until, "")
    batch_size = min(max(4 * (limit + 1), 256), scan_limit) if filters.applied_here else limit + 1
    while True:
        batch = store.events(**common, limit=batch_size, before=None if key is None else (key.received_at, key.id))
        scanned += len(batch)
        kept.extend(e for e in batch if filters.keeps(e))
        if len(kept) > limit:
            return Page(kept[:limit], Cursor.of(kept[limit - 1]), scanned)
        if len(batch) < batch_size:
            return Page(kept, None, scanned)
        key = Cursor.of(batch[-1])
        if scanned >= scan_limit:
            return Page(kept, key, scanned, True)
