"""The backlog as the store tells it: due events, how long the oldest has waited, failed events."""

from __future__ import annotations

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
    """:func:`read_backlog` of one store, kept for *interval* seconds; one caller reads while the others wait.

    :param store: the store.
    :param interval: how long an answer is kept, in seconds.
    """

    def __init__(self, store: EventStore, interval: float) -> None:
        self.store = store
        self.interval = interval
        self._lock = threading.Lock()
        self._last: Backlog | None = None

    def read(self) -> Backlog:
        """The backlog, read again when the kept one is older than the interval.

        :raises StoreUnavailable: if the store cannot answer (nothing is kept then).
        """
        with self._lock:
            last = self._last
            if last is None or time.time() - last.read_at >= self.interval:
                last = self._last = read_backlog(self.store)
            return last
