"""The backlog as the store tells it: due events, how long the oldest has waited, failed events."""

from __future__ import annotations

import os
import threading
import time
from dataclasses import dataclass

from ..stores.base import EventStatus, EventStore

__all__ = ["Backlog", "BacklogReader", "read_backlog"]


@dataclass(frozen=True)
class Backlog:
    """What the store holds that waits or failed.

    :param due: events due now (:meth:`EventStore.count_due`).
    :param oldest_due_age: seconds since the oldest pending event fell due, or
        ``None`` when none is due.
    :param failed: events left failed.
    :param read_at: when it was read (epoch seconds).
    """

    due: int
    oldest_due_age: float | None
    failed: int
    read_at: float


def read_backlog(store: EventStore) -> Backlog:
    """Ask *store* for its backlog now.

    The store interface has :meth:`~EventStore.count_due`; the age of the
    oldest due event and the count of failed events come from listings by
    status, which every store answers (a store with a ``backlog_stats()``
    method answering ``(due, oldest_due_at, failed)`` in one query is asked that
    instead).

    :raises StoreUnavailable: if the store cannot answer.
    """
    now = time.time()
    stats = getattr(store, "backlog_stats", None)
    if callable(stats):
        due, oldest_due_at, failed = stats()
    else:
        due = store.count_due()
        due_times = [e.due_at for e in store.events(status=EventStatus.PENDING) if e.due_at is not None]
        oldest_due_at = min((t for t in due_times if t <= now), default=None)
        failed = len(store.events(status=EventStatus.FAILED))
    age = None if oldest_due_at is None else max(0.0, now - oldest_due_at)
    return Backlog(int(due), age, int(failed), now)


class BacklogReader:
    """:func:`read_backlog` of one store, read again at most once per *interval* seconds, off the caller's path.

    The first :meth:`read` asks the store and waits for it (or, told not
    to wait, starts a background read and finds nothing); later ones answer
    with the backlog kept, and when it is older than the interval they start
    one background read that replaces it once done. So a scrape never waits
    on the store after the first, however slow the listings by status are on
    a large store, and the store is asked at most once per interval by each
    process.

    :param store: the store.
    :param interval: how long an answer is kept, in seconds.
    """

    def __init__(self, store: EventStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._lock = threading.Lock()
        self._last: Backlog | None = None
        self._error: Exception | None = None
        self._refreshing = 0  # the pid of the process whose background read runs, else 0

    def read(self, *, wait: bool = True) -> Backlog | None:
        """The backlog kept, or read now when nothing is kept yet.

        :param wait: when nothing is kept yet, wait for the store; with
            ``False``, start a background read and return ``None``.
        :raises StoreUnavailable: if the store cannot answer the first read,
            or the last background read failed (it is tried again).
        """
        with self._lock:
            last, error = self._last, self._error
            if last is None and error is None and wait:
                try:
                    last = self._last = read_backlog(self.store)
                except Exception as exc:
                    self._error = exc
                    raise
                return last
            stale = (last is None or time.time() - last.read_at >= self.interval) and (
                error is None or time.time() - getattr(error, "_at", 0.0) >= self.interval
            )
            if stale and self._refreshing != os.getpid():
                self._refreshing = os.getpid()
                threading.Thread(target=self._refresh, name="webhook-receiver-backlog", daemon=True).start()
        if error is not None:
            raise error
        return last

    def _refresh(self) -> None:
        try:
            backlog = read_backlog(self.store)
        except Exception as exc:  # noqa: BLE001 - kept for the next read to raise
            exc._at = time.time()  # type: ignore[attr-defined]
            with self._lock:
                self._error, self._refreshing = exc, 0
            return
        with self._lock:
            self._last, self._error, self._refreshing = backlog, None, 0
