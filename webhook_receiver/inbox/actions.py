"""The inbox's actions, through the same code as ``flask webhooks replay``: each one logged with who did it."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any, Protocol

from ..dispatch.run import ProcessResult, process_stored
from ..handlers import HandlerSource
from ..stores.base import EventStatus, EventStore, StoredEvent
from ..untrusted import logger
from .query import Filters, events_page

__all__ = [
    "BULK_LIMIT",
    "BulkPlan",
    "BulkResult",
    "InboxReceiver",
    "can_resolve",
    "plan_bulk",
    "replay_bulk",
    "replay_one",
    "resolve",
]

#: The most events one bulk replay runs; the rest wait for the next one.
BULK_LIMIT = 1000


class InboxReceiver(HandlerSource, Protocol):
    """What the inbox needs of a receiver: its name, its handlers and its store."""

    def get_store(self, app: Any = None) -> EventStore:
        """The receiver's store on *app*."""


def replayable(stored: StoredEvent, now: float, lease_seconds: float) -> bool:
    """Whether a replay runs it: failed, or left pending or processing past its lease (as ``replay --failed``)."""
    if stored.status is EventStatus.FAILED:
        return True
    stale = stored.updated_at < now - lease_seconds
    return stored.status in (EventStatus.PENDING, EventStatus.PROCESSING) and stale


def replay_one(app: Any, receiver: InboxReceiver, event_id: str, user: str) -> ProcessResult:
    """Run again the handlers of one event that have not succeeded, here and now.

    :raises StoreUnavailable: if the store cannot answer.
    """
    result = process_stored(app, receiver, receiver.get_store(app), event_id, by=user)
    logger.info(
        "inbox: %s replayed event %s: %s%s",
        user,
        event_id,
        result.state,
        f" (failing: {', '.join(result.failed)})" if result.failed else "",
    )
    return result


@dataclass
class BulkPlan:
    """What a bulk replay would run.

    :param filters: the list's filters, with the time of the preview as their end.
    :param ids: the ids of the events it would replay, newest first.
    :param more: more events match than :data:`BULK_LIMIT`, or than the scan read.
    """

    filters: Filters
    ids: list[str]
    more: bool


def plan_bulk(store: EventStore, filters: Filters, now: float, *, limit: int | None = BULK_LIMIT) -> BulkPlan:
    """The replayable events among those matching *filters* and received before *now* (and before their end).

    ``flask webhooks replay --failed`` and the inbox's bulk replay both choose
    their events here.

    :param limit: the most events planned (``None``: every one).
    :raises StoreUnavailable: if the store cannot answer.
    """
    # never past now (an end in the future, a relative one that moves on by the confirmation), both ends
    # pinned as exact times: the confirmation, given these, replays what the preview counted
    bounded = filters.with_until(now if filters.until is None else min(filters.until, now))
    ids: list[str] = []
    # one status at a time, so that the store filters (the failed ones have an index of their own) rather
    # than this reading every processed event
    statuses = [filters.status] if filters.status is not None else list(_REPLAYABLE)
    for status in statuses:
        cursor = None
        while True:
            page = events_page(store, replace(bounded, status=status), before=cursor, limit=500)
            for stored in page.events:
                if replayable(stored, now, store.lease_seconds):
                    if limit is not None and len(ids) >= limit:
                        return BulkPlan(bounded, ids, True)
                    ids.append(stored.id)
            if page.next is None:
                break
            cursor = page.next
    return BulkPlan(bounded, ids, False)


#: The statuses a replay may run, as ``flask webhooks replay --failed``: failed first.
_REPLAYABLE = (EventStatus.FAILED, EventStatus.PENDING, EventStatus.PROCESSING)


@dataclass
class BulkResult:
    """What a bulk replay did.

    :param counts: how many events ended in each state (``processed``, ``failed``, ...).
    :param still_failing: the ids of the events still failing, with their failing handlers.
    """

    counts: dict[str, int] = field(default_factory=dict)
    still_failing: list[tuple[str, list[str]]] = field(default_factory=list)


def replay_bulk(app: Any, receiver: InboxReceiver, plan: BulkPlan, user: str) -> BulkResult:
    """Replay each event of *plan*, one after the other, as ``flask webhooks replay --failed`` does.

    :raises StoreUnavailable: if the store cannot answer.
    """
    store = receiver.get_store(app)
    result = BulkResult()
    started = time.monotonic()
    for event_id in plan.ids:
        one = process_stored(app, receiver, store, event_id, by=user)
        result.counts[one.state] = result.counts.get(one.state, 0) + 1
        if one.state in ("failed", "unreadable"):
            result.still_failing.append((event_id, one.failed or [one.error or "unreadable"]))
    logger.info(
        "inbox: %s replayed %d %s in %.1f s: %s",
        user,
        len(plan.ids),
        plan.filters.describe(),
        time.monotonic() - started,
        ", ".join(f"{n} {state}" for state, n in sorted(result.counts.items())) or "nothing to replay",
    )
    return result


def can_resolve(store: EventStore) -> bool:
    """Whether *store* overrides :meth:`EventStore.resolve` (every built-in store; a third-party one may not)."""
    return getattr(type(store), "resolve", EventStore.resolve) is not EventStore.resolve


def resolve(store: EventStore, event_id: str, user: str) -> bool | None:
    """Mark a failed event resolved (:meth:`EventStore.resolve`): kept, out of the failed view.

    :returns: ``None`` when the store cannot (a third-party store without the
        operation), else whether the event was failed and is now resolved.
    :raises StoreUnavailable: if the store cannot answer.
    """
    try:
        done = store.resolve(event_id)
    except NotImplementedError:
        return None
    logger.info("inbox: %s marked event %s resolved: %s", user, event_id, "done" if done else "it was not failed")
    return done
