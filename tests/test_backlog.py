"""The backlog reader: reads never wait behind a slow store; the slow listings run a bounded share of the time."""

from __future__ import annotations

import threading
from typing import Any

from webhook_receiver.events import Event
from webhook_receiver.observability.backlog import BacklogReader
from webhook_receiver.stores.base import EventStore
from webhook_receiver.stores.memory import MemoryStore
from webhook_receiver.testing import make_event

from .processes import wait_for


class SlowListings(MemoryStore):
    """A memory store whose listings by status wait for a gate, and are counted.

    It answers the backlog as a store of the app's own that does not override
    :meth:`EventStore.backlog_stats` does: from listings by status.
    """

    backlog_stats = EventStore.backlog_stats

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.listings = 0

    def events(self, **kwargs: Any) -> Any:
        self.listings += 1
        self.gate.wait(30)
        return super().events(**kwargs)


def test_a_read_never_waits_behind_a_background_read() -> None:
    store = SlowListings()
    store.accept(Event.from_dict(make_event("order.paid")))
    reader = BacklogReader(store, interval=0.0)
    assert reader.read(wait=False) is None  # the first read runs in the background, held at the gate
    wait_for(lambda: store.listings == 1, 10, "the background read to list")

    answers: list[Any] = []
    thread = threading.Thread(target=lambda: answers.append(reader.read(wait=False)), daemon=True)
    thread.start()
    wait_for(lambda: answers, 10, "a second read while the first one waits on the store")
    assert answers == [None]
    store.gate.set()
    wait_for(lambda: reader.read(wait=False) is not None, 10, "the backlog")
    backlog = reader.read(wait=False)
    assert backlog is not None and backlog.due == 1 and backlog.failed == 0
    assert backlog.oldest_due_age is not None


def test_the_listings_run_again_only_after_nine_times_their_cost() -> None:
    store = SlowListings()
    store.gate.set()
    store.accept(Event.from_dict(make_event("order.paid")))
    reader = BacklogReader(store, interval=0.0)
    reader._fetch()  # the first read, in this thread (read() would also start a background one)
    listed = store.listings
    assert listed == 2  # pending, failed
    reader._listing_cost = 3600.0  # as if the last listing took an hour
    store.accept(Event.from_dict(make_event("order.paid")))
    reader._fetch()
    reader.interval = 3600.0  # fresh: read() starts no background read that would race the counts below
    backlog = reader.read(wait=False)
    assert backlog is not None and backlog.due == 2  # the count is fresh
    assert store.listings == listed  # the listings were not run again
    reader.interval = 0.0
    reader._listing_cost = 0.0
    reader._fetch()
    assert store.listings == listed + 2


class CountedStats(MemoryStore):
    """A memory store that counts its backlog reads."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    def backlog_stats(self) -> Any:
        self.reads += 1
        return super().backlog_stats()


def test_a_store_s_own_backlog_read_runs_again_only_after_nine_times_its_cost() -> None:
    store = CountedStats()
    store.accept(Event.from_dict(make_event("order.paid")))
    reader = BacklogReader(store, interval=0.0)
    backlog = reader.read(wait=True)
    assert backlog is not None and backlog.due == 1 and backlog.oldest_due_age is not None
    wait_for(lambda: reader._refreshing == 0, 10, "the background read the first read started")
    reads = store.reads
    reader._read_cost = 3600.0  # as if the last read took an hour: not stale for ten hours
    for _ in range(3):
        assert reader.read(wait=False) is not None
    assert reader._refreshing == 0 and store.reads == reads, "no background read started"
    reader._read_cost = 0.0
    assert reader.read(wait=False) is not None
    wait_for(lambda: store.reads == reads + 1, 10, "a background read once the cost allows it")
