"""The tests every event store passes, for the built-in stores and yours.

Subclass :class:`StoreContract` in a test module (its name must start with
``Test`` for pytest to collect it) and give it a ``make_store`` fixture that
builds the store under test with a given lease, each time on empty storage::

    import pytest
    from webhook_receiver.testing.store_contract import StoreContract

    class TestMyStore(StoreContract):
        @pytest.fixture
        def make_store(self, tmp_path):
            made = []

            def build(lease_seconds):
                store = MyStore(tmp_path / "events", lease_seconds=lease_seconds)
                made.append(store)
                return store

            yield build
            for store in made:
                store.close()

Every test runs against real time (leases of a fraction of a second run out
while the test sleeps), so a store whose clock is another server's is tested
with it. Needs pytest.
"""

from __future__ import annotations

import json
import os
import threading
import time
from typing import Callable

import pytest

from ..events import Event
from ..stores.base import MAX_DELIVERIES, Claim, ClaimState, DeliveryAttempt, EventStatus, EventStore, Run
from ..wire import make_event

__all__ = ["StoreContract", "contract_event"]

MakeStore = Callable[[float], EventStore]


def contract_event(event_id: str = "e-1", trigger: str = "order.paid") -> Event:
    """An event as the receiver hands it to a store, its configuration echo holding a secret."""
    body = make_event(trigger, event_id=event_id)
    body["configuration"] = {"url": "u", "secret_key": "the-secret"}
    return Event.from_dict(body)


event = contract_event


def _when_due(store: EventStore, within: float = 10.0) -> Claim | None:
    """The next due event's claim, asked again until one comes or *within* seconds pass.

    For an event whose retry time has just passed on this clock: a store that
    adds the delay to its server's clock makes it due a stall's length later.
    """
    until = time.monotonic() + within
    while True:
        claim = store.claim_due()
        if claim is not None or time.monotonic() >= until:
            return claim
        time.sleep(0.02)


class StoreContract:
    """The store contract as pytest tests; see the module's docs."""

    @pytest.fixture
    def make_store(self) -> MakeStore:
        """Builds the store under test with a given lease; override it."""
        raise NotImplementedError("define a make_store fixture that builds your store")

    @pytest.fixture
    def store(self, make_store: MakeStore) -> EventStore:
        """A lease long enough that a slow machine never sees it run out mid-test."""
        return make_store(30.0)

    def test_claim_record_finish_duplicate(self, store: EventStore) -> None:
        first = store.claim(event())
        assert first.state is ClaimState.CLAIMED and first.succeeded == frozenset()
        assert store.claim(event()).state is ClaimState.BUSY
        assert store.record(first, Run("a", True, None, 1.0, 2.0))
        assert store.finish(first, ok=False, last=Run("b", False, "ValueError: no", 1.0, 2.0))
        stored = store.get("e-1")
        assert stored is not None and stored.status is EventStatus.FAILED
        assert stored.trigger == "order.paid"
        assert stored.raw["configuration"]["secret_key"] == "[redacted]"
        assert "the-secret" not in json.dumps(stored.raw)
        assert (stored.handlers["b"].ok, stored.handlers["b"].error, stored.handlers["b"].attempts) == (
            False,
            "ValueError: no",
            1,
        )

        second = store.claim(event())
        assert second.state is ClaimState.CLAIMED and second.succeeded == frozenset({"a"})
        assert store.finish(second, ok=True, last=Run("b", True, None, 3.0, 4.0))
        stored = store.get("e-1")
        assert stored is not None and stored.status is EventStatus.PROCESSED
        assert stored.handlers["b"].ok and stored.handlers["b"].attempts == 2
        assert store.claim(event()).state is ClaimState.DONE

    def test_expired_lease_is_taken_over_and_the_old_claim_cannot_finish(self, make_store: MakeStore) -> None:
        store = make_store(0.5)
        dead = store.claim(event())
        time.sleep(0.6)
        store.lease_seconds = 30.0  # the worker taking over holds its lease for the rest of the test
        taken = store.claim(event())
        assert taken.state is ClaimState.CLAIMED
        # the worker that died comes back: every write it tries is refused
        assert not store.renew(dead)
        assert not store.record(dead, Run("a", False, "late", 1.0, 2.0))
        assert not store.finish(dead, ok=False, last=Run("a", False, "late", 1.0, 2.0))
        stored = store.get("e-1")
        assert stored is not None and stored.status is EventStatus.PROCESSING and stored.handlers == {}
        assert store.finish(taken, ok=True, last=Run("a", True, None, 3.0, 4.0))
        stored = store.get("e-1")
        assert stored is not None and stored.handlers["a"].ok and stored.handlers["a"].attempts == 1
        assert store.claim(event()).state is ClaimState.DONE

    def test_accept_then_claim(self, store: EventStore) -> None:
        assert store.accept(event()) is None
        assert store.accept(event()) is EventStatus.PENDING
        stored = store.get("e-1")
        assert stored is not None and stored.status is EventStatus.PENDING
        claim = store.claim(event())
        assert claim.state is ClaimState.CLAIMED
        assert store.accept(event()) is EventStatus.PROCESSING
        store.finish(claim, ok=True)
        assert store.accept(event()) is EventStatus.PROCESSED

    def test_the_queue_hands_out_due_events_oldest_first(self, store: EventStore) -> None:
        assert store.claim_due() is None and store.count_due() == 0
        for n in range(3):
            assert store.accept(event(f"q{n}")) is None
            time.sleep(0.002)
        assert store.count_due() == 3
        first = store.claim_due()
        assert first is not None and first.event_id == "q0" and first.attempt == 1
        assert first.trigger == "order.paid" and first.raw is not None and first.raw["id"] == "q0"
        assert first.raw["configuration"]["secret_key"] == "[redacted]"
        assert store.count_due() == 2
        stored = store.get("q0")
        assert stored is not None and stored.status is EventStatus.PROCESSING and stored.due_at is None
        assert store.accept(event("q0")) is EventStatus.PROCESSING, "a redelivery leaves a held event alone"
        assert store.claim(event("q0")).state is ClaimState.BUSY

        # a failed run is due again later: a row, not a timer
        # due a second from now: long enough for a loaded machine's next three reads to come first
        due = time.time() + 1.0
        assert store.finish(first, ok=False, last=Run("h", False, "E: x", 1.0, 2.0), retry_at=due)
        stored = store.get("q0")
        assert stored is not None and stored.status is EventStatus.PENDING and stored.due_at is not None
        assert stored.attempts == 1 and stored.handlers["h"].error == "E: x"
        taken = [store.claim_due(), store.claim_due()]
        assert [c.event_id for c in taken if c] == ["q1", "q2"]
        assert store.claim_due() is None, "q0 is not due yet"
        time.sleep(max(0.0, due + 0.05 - time.time()))
        again = _when_due(store)
        assert again is not None and again.event_id == "q0" and again.attempt == 2
        assert again.outcomes["h"].attempts == 1
        assert store.finish(again, ok=False, last=Run("h", False, "E: y", 3.0, 4.0))
        stored = store.get("q0")
        assert stored is not None and stored.status is EventStatus.FAILED and stored.handlers["h"].attempts == 2

        # an upstream redelivery of a failed event buys it one more run
        assert store.accept(event("q0")) is EventStatus.FAILED
        last = store.claim_due()
        assert last is not None and last.event_id == "q0" and last.attempt == 3
        assert store.finish(last, ok=True, last=Run("h", True, None, 5.0, 6.0))
        assert store.accept(event("q0")) is EventStatus.PROCESSED
        assert all(store.finish(c, ok=True) for c in taken if c)
        assert store.claim_due() is None and store.count_due() == 0

    def test_an_expired_lease_is_due_and_a_renewed_one_is_not(self, make_store: MakeStore) -> None:
        store = make_store(1.0)  # renewed every 0.3 s: a loaded machine's stall of up to 0.7 s keeps it
        store.accept(event("held"))
        time.sleep(0.002)
        store.accept(event("dead"))
        held, dead = store.claim_due(), store.claim_due()
        assert held is not None and dead is not None and (held.event_id, dead.event_id) == ("held", "dead")
        for _ in range(4):
            time.sleep(0.3)
            assert store.renew(held)
        assert store.count_due() == 1, "only the lease that was not renewed ran out"
        taken = store.claim_due()
        assert taken is not None and taken.event_id == "dead" and taken.attempt == 2
        assert store.claim_due() is None
        assert not store.finish(dead, ok=True), "the dead worker's write is fenced off"
        assert store.finish(taken, ok=True) and store.finish(held, ok=True)
        assert store.count_due() == 0

    def test_backlog_stats_follow_a_backlog_that_grows_and_drains(self, store: EventStore) -> None:
        assert tuple(store.backlog_stats()) == (0, None, 0)
        started = time.time()
        for n in range(5):
            assert store.accept(event(f"b{n}")) is None
            time.sleep(0.01)
        stats = store.backlog_stats()
        assert stats.due == 5 == store.count_due() and stats.failed == 0
        first = store.get("b0")
        assert first is not None and first.due_at is not None and stats.oldest_due_at is not None
        assert abs(stats.oldest_due_at - first.due_at) < 0.5, "the oldest due time is the first accepted's"
        assert started - 0.5 <= stats.oldest_due_at <= time.time() + 0.5
        taken = [store.claim_due(), store.claim_due()]
        assert [c.event_id for c in taken if c] == ["b0", "b1"]
        stats = store.backlog_stats()
        third = store.get("b2")
        assert third is not None and third.due_at is not None and stats.oldest_due_at is not None
        assert stats.due == 3 and abs(stats.oldest_due_at - third.due_at) < 0.5, "taken events are not due"
        assert third.due_at > first.due_at

        # failures: one left failed, one due again later (neither due now, one failed)
        assert taken[0] is not None and taken[1] is not None
        assert store.finish(taken[0], ok=False, last=Run("h", False, "E: x", 1.0, 2.0))
        assert store.finish(taken[1], ok=False, last=Run("h", False, "E: y", 1.0, 2.0), retry_at=time.time() + 60)
        assert tuple(store.backlog_stats())[::2] == (3, 1)
        # a request's failure counts; claiming it again (upstream's retry) takes it out of the failed ones
        assert store.finish(store.claim(event("inline")), ok=False)
        assert store.backlog_stats().failed == 2
        again = store.claim(event("inline"))
        assert again.state is ClaimState.CLAIMED and store.backlog_stats().failed == 1
        assert store.finish(again, ok=True) and store.backlog_stats().failed == 1
        # a redelivery to the queue makes the failed one due again; a resolved one is not failed
        assert store.accept(event("b0")) is EventStatus.FAILED
        stats = store.backlog_stats()
        assert (stats.due, stats.failed) == (4, 0)
        assert stats.oldest_due_at is not None and abs(stats.oldest_due_at - third.due_at) < 0.5
        assert store.finish(store.claim(event("settled")), ok=False) and store.backlog_stats().failed == 1
        assert store.resolve("settled") and store.backlog_stats().failed == 0

        # each receiver its own backlog
        other = store.for_receiver("other")
        assert tuple(other.backlog_stats()) == (0, None, 0)
        assert other.finish(other.claim(event("b3")), ok=False)
        assert tuple(other.backlog_stats()) == (0, None, 1) and store.backlog_stats().due == 4

        # the default (listings by status) agrees on the counts
        default = EventStore.backlog_stats(store)
        stats = store.backlog_stats()
        assert (default.due, default.failed) == (stats.due, stats.failed) == (4, 0)

        # drained
        while (claim := store.claim_due()) is not None:
            assert store.finish(claim, ok=claim.event_id != "b4")
        stats = store.backlog_stats()
        assert (stats.due, stats.oldest_due_at, stats.failed) == (0, None, 1)
        assert store.prune(time.time() + 1, include_failed=True) >= 1
        assert tuple(store.backlog_stats()) == (0, None, 0)
        assert tuple(other.backlog_stats()) == (0, None, 1), "pruning one receiver leaves the other's"

    def test_backlog_stats_count_an_expired_lease_as_due_since_it_ran_out(self, make_store: MakeStore) -> None:
        lease = 1.0  # long enough that a loaded machine's claim and first read fit inside it
        store = make_store(lease)
        store.accept(event("dead"))
        before = time.time()
        dead = store.claim_due()
        after = time.time()
        assert dead is not None and store.backlog_stats().due == 0
        time.sleep(after + lease + 0.2 - time.time())
        stats = store.backlog_stats()
        assert stats.due == 1 == store.count_due()
        assert stats.oldest_due_at is not None, "due since its lease ran out"
        assert before + lease - 0.5 < stats.oldest_due_at < after + lease + 0.5, "due from when the lease ran out"
        store.lease_seconds = 30.0
        taken = store.claim_due()
        assert taken is not None and store.finish(taken, ok=True)
        assert tuple(store.backlog_stats()) == (0, None, 0)

    def test_a_finished_claim_writes_nothing_more(self, store: EventStore) -> None:
        claim = store.claim(event())
        assert store.finish(claim, ok=True)
        assert not store.finish(claim, ok=False) and not store.renew(claim)
        stored = store.get("e-1")
        assert stored is not None and stored.status is EventStatus.PROCESSED

    def test_events_listing_and_prune(self, store: EventStore) -> None:
        for n, trigger in enumerate(["order.paid", "product.deleted", "order.paid"]):
            claim = store.claim(event(f"e{n}", trigger))
            store.finish(claim, ok=n != 1)
            time.sleep(0.01)
        store.accept(event("pending", "order.paid"))
        assert [e.id for e in store.events()] == ["pending", "e2", "e1", "e0"]
        assert [e.id for e in store.events(status=EventStatus.FAILED)] == ["e1"]
        assert [e.id for e in store.events(trigger="order.paid", limit=2)] == ["pending", "e2"]
        middle = store.get("e1")
        assert middle is not None
        assert [e.id for e in store.events(since=middle.received_at)] == ["pending", "e2", "e1"]
        assert store.prune(time.time() + 1, dry_run=True) == 2 and len(store.events()) == 4, "a dry run forgets nothing"
        assert store.prune(time.time() + 1) == 2, "failed events are kept unless asked"
        assert [e.id for e in store.events()] == ["pending", "e1"]
        assert store.prune(time.time() + 1, include_failed=True, dry_run=True) == 1
        assert store.prune(time.time() + 1, include_failed=True) == 1, "pending events are never pruned"
        assert [e.id for e in store.events()] == ["pending"]
        assert store.get("e0") is None

    def test_keyset_pages_read_each_event_once_newest_first(self, store: EventStore) -> None:
        for n in range(7):
            claim = store.claim(event(f"k{n}", "order.paid" if n % 2 else "product.deleted"))
            store.finish(claim, ok=n % 3 != 0)
            time.sleep(0.002)
        every = store.events()
        keys = [(e.received_at, e.id) for e in every]
        assert keys == sorted(keys, reverse=True), "newest first: received_at, then id, descending"
        for status in (None, EventStatus.FAILED):
            wanted = [e.id for e in store.events(status=status)]
            paged: list[str] = []
            before: tuple[float, str] | None = None
            while True:
                page = store.events(status=status, limit=2, before=before)
                paged += [e.id for e in page]
                if len(page) < 2:
                    break
                before = (page[-1].received_at, page[-1].id)
            assert paged == wanted, f"pages of {status} events"
        third = every[2]
        assert [e.id for e in store.events(before=(third.received_at, third.id))] == [e.id for e in every[3:]]
        assert [e.id for e in store.events(trigger="order.paid", before=(third.received_at, third.id))] == [
            e.id for e in every[3:] if e.trigger == "order.paid"
        ]
        assert store.events(before=(every[-1].received_at, every[-1].id)) == []

    def test_resolve_keeps_a_failed_event_out_of_the_failed_view(self, store: EventStore) -> None:
        store.finish(store.claim(event("bad")), ok=False)
        store.finish(store.claim(event("good")), ok=True)
        assert store.resolve("good") is False and store.resolve("missing") is False, "only a failed event"
        assert store.resolve("bad") is True
        assert store.resolve("bad") is False, "once"
        stored = store.get("bad")
        assert stored is not None and stored.status is EventStatus.RESOLVED
        assert stored.raw["id"] == "bad", "kept, with its body"
        assert store.events(status=EventStatus.FAILED) == []
        assert [e.id for e in store.events(status=EventStatus.RESOLVED)] == ["bad"]
        assert store.prune(time.time() + 1) == 1 and store.get("bad") is not None, "kept unless asked"
        assert store.prune(time.time() + 1, include_failed=True, dry_run=True) == 1
        # a redelivery to the queue runs it again, as it does a failed event: the 202 it answers is kept
        assert store.accept(event("bad")) is EventStatus.RESOLVED
        taken = store.claim_due()
        assert taken is not None and taken.event_id == "bad" and store.finish(taken, ok=True)
        assert store.resolve("bad") is False
        store.finish(store.claim(event("old")), ok=False)
        assert store.resolve("old")
        assert store.prune(time.time() + 1, include_failed=True) == 2, "resolved events go with failed ones"
        assert store.get("old") is None

    def test_count_by_hour_counts_received_and_failed_events(self, store: EventStore) -> None:
        started = time.time()
        for n in range(5):
            store.finish(store.claim(event(f"c{n}")), ok=n not in (1, 3))
        store.accept(event("queued"))
        store.resolve("c3")
        hours = store.count_by_hour(started - 7200)
        assert all(h.start % 3600 == 0 and h.start <= time.time() for h in hours)
        assert [h.start for h in hours] == sorted(h.start for h in hours), "oldest first"
        assert sum(h.received for h in hours) == 6 and sum(h.failed for h in hours) == 1
        assert all(h.received > 0 for h in hours), "hours without events are left out"
        assert store.count_by_hour(time.time() + 60) == []
        assert store.for_receiver("other").count_by_hour(started - 7200) == [], "each receiver its own"

    def test_watermarks_only_go_up(self, store: EventStore) -> None:
        assert store.watermark("h", "order", "o-1") is None
        assert store.raise_watermark("h", "order", "o-1", 200.5) is True
        assert store.raise_watermark("h", "order", "o-1", 100.0) is False, "an older time is refused"
        assert store.watermark("h", "order", "o-1") == 200.5
        assert store.raise_watermark("h", "order", "o-1", 200.5) is True, "the same time again (a retry) is taken"
        assert store.raise_watermark("h", "order", "o-1", 300.25) is True
        assert store.watermark("h", "order", "o-1") == 300.25
        assert store.watermark("other", "order", "o-1") is None and store.watermark("h", "order", "o-2") is None

    def test_a_watermark_is_a_compare_and_set_among_threads(self, store: EventStore) -> None:
        # 8 threads race to mark one new resource with 8 times: exactly the ones
        # that were newest when they wrote are told True, the newest always.
        times = [100.0 + n for n in range(8)]
        told: dict[float, bool] = {}
        start = threading.Barrier(8)

        def mark(at: float) -> None:
            start.wait()
            told[at] = store.raise_watermark("h", "product", "p-race", at)

        threads = [threading.Thread(target=mark, args=(at,)) for at in times]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert store.watermark("h", "product", "p-race") == max(times)
        assert told[max(times)] is True
        assert len(told) == 8

    def test_a_first_claim_is_attempt_one_and_a_redelivery_is_not(self, store: EventStore) -> None:
        # the receiver records a delivery attempt only when the claim says the event was known
        first = store.claim(event("once"))
        assert first.state is ClaimState.CLAIMED and first.attempt == 1
        assert store.finish(first, ok=False)
        again = store.claim(event("once"))
        assert again.state is ClaimState.CLAIMED and again.attempt == 2
        assert store.finish(again, ok=True)
        assert store.claim(event("once")).state is ClaimState.DONE

    def test_delivery_attempts_are_kept_in_order_bounded_per_receiver_and_pruned(self, store: EventStore) -> None:
        claim = store.claim(event("logged"))
        assert store.finish(claim, ok=False)
        assert store.deliveries("logged") == [] and store.deliveries("unknown") == []
        hostile = 'x"><img src=x onerror=alert(1)>\u2028'
        first = DeliveryAttempt(1000.5, "webhook", 2, 500, "failed")
        store.record_delivery("logged", first)
        store.record_delivery("logged", DeliveryAttempt(1001.25, "replay", None, None, "processed", by=hostile))
        assert store.deliveries("logged") == [
            first,
            DeliveryAttempt(1001.25, "replay", None, None, "processed", hostile),
        ]
        for n in range(MAX_DELIVERIES + 5):
            store.record_delivery("logged", DeliveryAttempt(2000.0 + n, "stomp", n + 3, None, "duplicate"))
        kept = store.deliveries("logged")
        assert len(kept) == MAX_DELIVERIES, "only the newest attempts are kept"
        assert [a.attempt for a in kept] == list(range(8, MAX_DELIVERIES + 8)), "oldest first, the newest kept"
        other = store.for_receiver("outlet")
        assert other.deliveries("logged") == [], "another receiver's log is its own"
        theirs = other.claim(event("logged"))
        assert other.finish(theirs, ok=True)
        other.record_delivery("logged", DeliveryAttempt(3000.0, "webhook", 2, 200, "duplicate"))
        assert [a.answer for a in other.deliveries("logged")] == ["duplicate"]
        assert len(store.deliveries("logged")) == MAX_DELIVERIES
        assert store.prune(time.time() + 1, include_failed=True) == 1
        assert store.deliveries("logged") == [], "pruned with its event"
        assert len(other.deliveries("logged")) == 1

    def test_a_change_marker_never_stays_the_same_across_a_write(self, store: EventStore) -> None:
        before = store.change_marker()
        claim = store.claim(event("marked"))
        claimed = store.change_marker()
        assert store.finish(claim, ok=True)
        finished = store.change_marker()
        if before is None:  # no marker: it must stay None, so that every live poll reads the list
            assert claimed is None and finished is None, "a store without a marker answers None always"
            return
        assert claimed != before
        assert finished != claimed

    def test_receivers_sharing_a_store_keep_their_events_apart(self, store: EventStore) -> None:
        shop, outlet = store.for_receiver("shop"), store.for_receiver("outlet")
        assert shop.for_receiver("shop") is shop and (shop.receiver, outlet.receiver) == ("shop", "outlet")
        # one id at both: each receiver claims and finishes its own
        mine, theirs = shop.claim(event("same")), outlet.claim(event("same"))
        assert mine.state is ClaimState.CLAIMED and theirs.state is ClaimState.CLAIMED
        assert shop.finish(mine, ok=True)
        assert outlet.claim(event("same")).state is ClaimState.BUSY, "outlet's own claim still holds"
        assert outlet.finish(theirs, ok=False)
        shop_copy, outlet_copy = shop.get("same"), outlet.get("same")
        assert shop_copy is not None and shop_copy.status is EventStatus.PROCESSED
        assert outlet_copy is not None and outlet_copy.status is EventStatus.FAILED
        # each has its own queue
        assert shop.accept(event("queued")) is None
        assert outlet.count_due() == 0 and outlet.claim_due() is None
        assert outlet.get("queued") is None and [e.id for e in outlet.events()] == ["same"]
        assert shop.count_due() == 1
        taken = shop.claim_due()
        assert taken is not None and taken.event_id == "queued" and shop.finish(taken, ok=True)
        # and its own watermarks and housekeeping
        assert shop.raise_watermark("h", "order", "o-1", 500.0)
        assert outlet.watermark("h", "order", "o-1") is None
        assert outlet.raise_watermark("h", "order", "o-1", 100.0)
        assert outlet.prune(time.time() + 1, include_failed=True) == 1
        assert outlet.get("same") is None
        # both were received within one millisecond often enough: the order of a tie is not what this checks
        assert sorted(e.id for e in shop.events()) == ["queued", "same"]

    def test_a_request_s_claim_redelivered_to_the_queue_is_taken_over_once_its_lease_runs_out(
        self, make_store: MakeStore
    ) -> None:
        # A rolling deploy: a request (inline dispatch) claims the event and dies
        # mid-handler; upstream's retry reaches a background instance, which
        # answers 202: the queue must run the event once the dead lease runs out.
        store = make_store(1.0)  # long enough for the three calls below on a loaded machine (0.4 s was not)
        dead = store.claim(event("rolled"))
        claimed_at = time.monotonic()  # the lease was taken before this: it has run out 1.0 s after
        assert dead.state is ClaimState.CLAIMED
        assert store.accept(event("rolled")) is EventStatus.PROCESSING
        assert store.claim_due() is None, "the request's lease is still live"
        time.sleep(max(0.0, claimed_at + 1.1 - time.monotonic()))
        store.lease_seconds = 30.0
        assert store.count_due() == 1
        taken = store.claim_due()
        assert taken is not None and taken.event_id == "rolled" and taken.raw is not None
        assert taken.trigger == "order.paid"
        assert not store.finish(dead, ok=True), "the dead request's write is fenced off"
        assert store.finish(taken, ok=True)
        assert store.claim_due() is None and store.count_due() == 0
        stored = store.get("rolled")
        assert stored is not None and stored.status is EventStatus.PROCESSED

    def test_a_request_s_failed_run_of_an_event_answered_202_goes_back_to_the_queue(
        self, make_store: MakeStore
    ) -> None:
        # A rolling deploy: a request (inline dispatch) claims the event; upstream's retry reaches a
        # background instance, which answers 202; then the request's handler fails. Upstream retries no
        # more: the queue must run the event again, its attempts counted.
        store = make_store(30.0)
        held = store.claim(event("rolled"))
        assert held.state is ClaimState.CLAIMED and not held.by_queue, "a request's claim is not the queue's"
        assert store.accept(event("rolled")) is EventStatus.PROCESSING
        before = time.time()
        assert store.finish(held, ok=False, last=Run("h", False, "RuntimeError: boom", 1.0, 2.0), error="why")
        assert held.requeued, "the finish says the event was left to the queue"
        stored = store.get("rolled")
        assert stored is not None and stored.status is EventStatus.PENDING, "answered 202: not failed for good"
        assert stored.due_at is not None and before - 1 <= stored.due_at <= time.time() + 1, "due now"
        assert stored.handlers["h"].error == "RuntimeError: boom" and stored.handlers["h"].attempts == 1
        assert stored.error == "why" and stored.attempts == 1
        stats = store.backlog_stats()
        assert (stats.due, stats.failed) == (1, 0) and store.count_due() == 1
        assert not store.finish(held, ok=False), "the finished claim writes nothing more"
        again = store.claim_due()
        assert again is not None and again.event_id == "rolled" and again.by_queue
        assert again.attempt == 2 and again.outcomes["h"].attempts == 1, "the request's run counts"
        # the queue's own failure without a retry is final: its policy gave up
        assert store.finish(again, ok=False, last=Run("h", False, "RuntimeError: again", 3.0, 4.0))
        assert not again.requeued
        stored = store.get("rolled")
        assert stored is not None and stored.status is EventStatus.FAILED and stored.handlers["h"].attempts == 2
        assert store.claim_due() is None and store.backlog_stats().failed == 1
        # the queue gave up: it owes the event nothing more; a request's run of it (a replay, upstream's
        # retry) that fails is final, not one more run for the queue
        replay = store.claim(event("rolled"))
        assert replay.state is ClaimState.CLAIMED and not replay.by_queue
        assert store.finish(replay, ok=False, last=Run("h", False, "RuntimeError: still", 5.0, 6.0))
        assert not replay.requeued, "the queue's retries were spent: nothing more is owed"
        stored = store.get("rolled")
        assert stored is not None and stored.status is EventStatus.FAILED
        assert store.claim_due() is None
        # a new 202 for it makes it the queue's again
        assert store.accept(event("rolled")) is EventStatus.FAILED
        owed = store.claim_due()
        assert owed is not None and owed.event_id == "rolled"
        assert store.finish(owed, ok=True)

        # accepted (a 202) before a request took it: its failure goes back to the queue too
        assert store.accept(event("early")) is None
        taken = store.claim(event("early"))
        assert taken.state is ClaimState.CLAIMED and not taken.by_queue
        assert store.finish(taken, ok=False, last=Run("h", False, "E: x", 1.0, 2.0)) and taken.requeued
        stored = store.get("early")
        assert stored is not None and stored.status is EventStatus.PENDING
        queued = store.claim_due()
        assert queued is not None and queued.event_id == "early" and queued.attempt == 2
        assert store.finish(queued, ok=True)

        # a failure with a retry time is the caller's choice, as ever; a success is processed
        assert store.accept(event("given")) is None
        request = store.claim(event("given"))
        assert store.finish(request, ok=False, retry_at=time.time() + 60) and not request.requeued
        stored = store.get("given")
        assert stored is not None and stored.status is EventStatus.PENDING and stored.due_at is not None
        assert stored.due_at > time.time() + 30, "the retry time given is kept"

        # never answered 202: failed, for upstream's retry, as before
        alone = store.claim(event("alone"))
        assert store.finish(alone, ok=False) and not alone.requeued
        stored = store.get("alone")
        assert stored is not None and stored.status is EventStatus.FAILED
        assert store.claim_due() is None

    def test_a_request_s_failed_finish_is_fenced_once_the_queue_took_the_event_over(
        self, make_store: MakeStore
    ) -> None:
        store = make_store(0.4)
        dead = store.claim(event("slow"))
        assert store.accept(event("slow")) is EventStatus.PROCESSING
        time.sleep(0.5)
        store.lease_seconds = 30.0
        taken = store.claim_due()
        assert taken is not None and taken.event_id == "slow" and taken.by_queue
        assert not store.finish(dead, ok=False, last=Run("h", False, "late", 1.0, 2.0)), "fenced off"
        assert not dead.requeued
        stored = store.get("slow")
        assert stored is not None and stored.status is EventStatus.PROCESSING and stored.handlers == {}
        assert store.finish(taken, ok=True)
        stored = store.get("slow")
        assert stored is not None and stored.status is EventStatus.PROCESSED

    def test_a_store_works_in_a_forked_child(self, store: EventStore) -> None:
        # gunicorn --preload: the store is built (and used) in the master, then forked.
        first = store.claim(event("parent"))
        assert store.finish(first, ok=True)
        assert store.get("parent") is not None
        pid = os.fork()
        if pid == 0:  # the child: everything through the store, then a plain exit code
            code = 1
            try:
                claim = store.claim(event("child"))
                stored = store.get("parent")
                store.record_delivery("parent", DeliveryAttempt(1.0, "webhook", 2, 200, "duplicate"))
                logged = [a.answer for a in store.deliveries("parent")] == ["duplicate"]
                if claim.state is ClaimState.CLAIMED and store.finish(claim, ok=True) and stored is not None and logged:
                    code = 0
            finally:
                os._exit(code)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done, status = os.waitpid(pid, os.WNOHANG)
            if done:
                break
            time.sleep(0.05)
        else:
            os.kill(pid, 9)
            os.waitpid(pid, 0)
            raise AssertionError("the forked child hung using the store")
        assert os.waitstatus_to_exitcode(status) == 0, "the store failed in the forked child"
        again = store.claim(event("after"))
        assert again.state is ClaimState.CLAIMED and store.finish(again, ok=True), "the parent's store still works"
        if store.reach != "process":
            child = store.get("child")
            assert child is not None and child.status is EventStatus.PROCESSED
            assert [a.answer for a in store.deliveries("parent")] == ["duplicate"], "the child's log is kept"

    def test_a_claim_is_exclusive_among_threads(self, store: EventStore) -> None:
        states: list[ClaimState] = []
        start = threading.Barrier(8)

        def claim() -> None:
            start.wait()
            states.append(store.claim(event()).state)

        threads = [threading.Thread(target=claim) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(states) == sorted([ClaimState.CLAIMED] + [ClaimState.BUSY] * 7)

    def test_due_events_are_handed_out_once_among_threads(self, store: EventStore) -> None:
        for n in range(40):
            store.accept(event(f"d{n}"))
        taken: list[str] = []

        def drain() -> None:
            while (claim := store.claim_due()) is not None:
                taken.append(claim.event_id)
                assert store.finish(claim, ok=True)

        threads = [threading.Thread(target=drain) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert sorted(taken) == sorted(f"d{n}" for n in range(40))
        assert store.count_due() == 0

    def test_unknown_events_and_a_reopened_store(self, store: EventStore) -> None:
        assert store.get("nope") is None
        claim = store.claim(event())
        assert store.finish(claim, ok=True)
        store.close()
        stored = store.get("e-1")
        assert stored is not None and stored.status is EventStatus.PROCESSED, "usable again after close()"
        assert isinstance(store.location, str) and isinstance(store.durable, bool)
        assert store.reach in ("process", "machine", "network")
