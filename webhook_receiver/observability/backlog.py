"""The backlog as the store tells it: due events, how long the oldest has waited, failed events."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from ..stores.base import EventStatus, EventStore

__all__ = ["Backlog", "BacklogReader", "read_backlog"]

#: The largest share of its time a background reader spends on the listings by status.
MAX_SHARE = 0.1


@dataclass(frozen=True)
class Backlog:
    """What the store holds that waits or failed.

    :param due: events due now (:meth:`EventStore.count_due`).
    :param oldest_due_age: seconds since the oldest pending event fell due, or
        ``None`` when none is due.
    :param failed: events left failed.
    :param read_at: when the due events were counted (epoch seconds).
    """

    due: int
    oldest_due_age: float | None
    failed: int
    read_at: float


def _answers_cheaply(store: EventStore) -> bool:
    """Whether *store* overrides :meth:`EventStore.backlog_stats` (every store of this library does)."""
    return type(store).backlog_stats is not EventStore.backlog_stats


def _oldest_and_failed(store: EventStore) -> tuple[float | None, int]:
    """When the oldest pending event fell due, and how many failed: from listings by status (slow on large stores)."""
    now = time.time()
    due_times = [e.due_at for e in store.events(status=EventStatus.PENDING) if e.due_at is not None]
    oldest_due_at = min((t for t in due_times if t <= now), default=None)
    return oldest_due_at, len(store.events(status=EventStatus.FAILED))


def read_backlog(store: EventStore) -> Backlog:
    """Ask *store* for its whole backlog now (:meth:`EventStore.backlog_stats`).

    :raises StoreUnavailable: if the store cannot answer.
    """
    now = time.time()
    due, oldest_due_at, failed = store.backlog_stats()
    age = None if oldest_due_at is None or not due else max(0.0, now - oldest_due_at)
    return Backlog(int(due), age, int(failed), now)


class BacklogReader:
    """One store's backlog, read again in the background at most once per *interval*; a reader never waits but once.

    A store that overrides :meth:`EventStore.backlog_stats` (every store of
    this library: a few indexed counts) is asked everything at each
    interval. A store of your own that does not is asked its due events at
    each interval (:meth:`~EventStore.count_due`); the listings behind the
    age of the oldest due event and the failed count, slow on a large store,
    are read again only once their last read is *interval* old and at least
    nine times as long ago as it took, so that they take at most a tenth of
    the time; in between, the age is counted on from when the oldest event
    fell due, and is 0 once no event is due. The same share bounds the
    regular read: it is read again once *interval* has passed and nine times
    as long as its last read took (a store whose indexes do not answer
    everything, such as MariaDB's count of failed events, is read less often
    rather than kept busy).

    The first :meth:`read` asks the store and waits for it (or, told not
    to wait, starts a background read and finds nothing); later ones answer
    with what is kept and start one background read when it is stale.

    :param store: the store.
    :param interval: seconds between two counts of the due events.
    """

    def __init__(self, store: EventStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._lock = threading.Lock()
        self._due: int | None = None
        self._due_at = 0.0
        self._oldest_due_at: float | None = None
        self._failed = 0
        self._listed_at = 0.0
        self._listing_cost = 0.0
        self._read_cost = 0.0  # how long the last regular read took
        self._error: Exception | None = None
        self._error_at = 0.0
        self._refreshing = 0  # the pid of the process whose background read runs, else 0

    def read(self, *, wait: bool = True) -> Backlog | None:
        """The backlog kept, or read now when nothing is kept yet.

        :param wait: when nothing is kept yet, wait for the store; with
            ``False``, start a background read and return ``None``.
        :raises StoreUnavailable: if the store cannot answer the first read,
            or the last background read failed (it is tried again).
        """
        with self._lock:
            first = self._due is None and self._error is None
        if first and wait:
            self._fetch()  # raises what the store raised
        with self._lock:
            now = time.time()
            since = now - (self._error_at if self._error is not None else self._due_at)
            stale = since >= self.interval and since >= self._read_cost / MAX_SHARE
            if (stale or self._due is None) and self._refreshing != os.getpid():
                self._refreshing = os.getpid()
                threading.Thread(target=self._refresh, name="webhook-receiver-backlog", daemon=True).start()
            if self._error is not None:
                raise self._error
            if self._due is None:
                return None
            oldest = self._oldest_due_at
            age = None if oldest is None or not self._due else max(0.0, now - oldest)
            return Backlog(self._due, age, self._failed, self._due_at)

    def _refresh(self) -> None:
        try:
            self._fetch()
        except Exception:  # noqa: BLE001 - kept for the next read to raise
            pass
        finally:
            with self._lock:
                self._refreshing = 0

    def _fetch(self) -> None:
        """Count the due events, and list by status when that is due; the store is asked with no lock held.

        :raises StoreUnavailable: what the store raised (kept, for readers).
        """
        store = self.store
        with self._lock:
            since, cost = time.time() - self._listed_at, self._listing_cost
        try:
            now = time.time()
            started = time.perf_counter()
            listed: tuple[float | None, int] | None = None
            if _answers_cheaply(store):
                due, oldest, failed = store.backlog_stats()
                listed, cost = (oldest, int(failed)), 0.0
                read_cost = time.perf_counter() - started
            else:
                due = store.count_due()
                read_cost = time.perf_counter() - started
                if since >= self.interval and since >= cost / MAX_SHARE:
                    started = time.perf_counter()
                    listed = _oldest_and_failed(store)
                    cost = time.perf_counter() - started
        except Exception as exc:
            with self._lock:
                self._error, self._error_at = exc, time.time()
            raise
        with self._lock:
            if listed is not None:
                (self._oldest_due_at, self._failed), self._listed_at, self._listing_cost = listed, now, cost
            self._due, self._due_at, self._error, self._read_cost = int(due), now, None, read_cost
