"""An in-process store: for tests, demos and single-process apps that may forget on restart."""

from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections import OrderedDict, deque
from dataclasses import replace

from ..errors import StoreUnavailable
from ..events import Event
from .base import (
    DEFAULT_RECEIVER,
    MAX_DELIVERIES,
    BacklogStats,
    Claim,
    ClaimState,
    DeliveryAttempt,
    EventStatus,
    EventStore,
    HourCount,
    Run,
    StoredEvent,
    finished_status,
    hour_start,
    leaves_to_queue,
    load_raw,
    prunable,
)

__all__ = ["MemoryStore"]


class MemoryStore(EventStore):
    """Keeps events in a dict guarded by a lock; the queue and the leases are heaps.

    Idempotency holds within one process only, and only for the last
    *max_events* finished events: older ones are forgotten first. Bodies are
    kept as JSON bytes, so that thousands of kept events do not make each of
    the interpreter's garbage collections walk their every object. When every
    slot holds an unfinished event, a new one is refused
    (:class:`~webhook_receiver.errors.StoreUnavailable`, so upstream retries).

    Each receiver sharing the store (:meth:`for_receiver`) has state of its
    own (events, queue, leases, watermarks, lock), and so its own
    *max_events*. A forked child starts with the parent's state (the store is
    per process) and new locks.

    :param lease_seconds: see :class:`~webhook_receiver.stores.EventStore`.
    :param max_events: how many events to remember.
    :param receiver: the receiver this object keeps the events of.
    """

    name = "memory"
    durable = False
    reach = "process"

    def __init__(
        self, *, lease_seconds: float = 60.0, max_events: int = 10_000, receiver: str = DEFAULT_RECEIVER
    ) -> None:
        super().__init__(lease_seconds=lease_seconds)
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self.receiver = receiver
        #: Every receiver's view of this store, by name, shared by the views.
        self._views: dict[str, MemoryStore] = {receiver: self}
        self._views_lock = threading.Lock()
        self._events: OrderedDict[str, StoredEvent] = OrderedDict()  # raw left empty: see _bodies
        self._bodies: dict[str, bytes] = {}
        self._leases: dict[str, tuple[str, float]] = {}
        self._queue: list[tuple[float, int, str]] = []  # (due_at, seq, id); stale entries skipped
        self._lease_heap: list[tuple[float, int, str, str]] = []  # (expires, seq, id, token)
        self._background: set[str] = set()  # events that came through the queue: their leases are swept
        self._watermarks: dict[tuple[str, str, str], float] = {}
        self._deliveries: dict[str, deque[DeliveryAttempt]] = {}  # recorded on the cold paths only
        self._seq = itertools.count()
        self._lock = threading.Lock()
        self._token_prefix = f"{os.getpid()}-{id(self):x}-"
        self._tokens = itertools.count()

    def __repr__(self) -> str:
        return f"<MemoryStore receiver={self.receiver!r} lease_seconds={self.lease_seconds}>"

    def for_receiver(self, receiver: str) -> MemoryStore:
        """The store of *receiver*: state of its own, the same object each time it is asked for."""
        with self._views_lock:
            view = self._views.get(receiver)
            if view is None:
                view = MemoryStore(lease_seconds=self.lease_seconds, max_events=self.max_events, receiver=receiver)
                view._views, view._views_lock = self._views, self._views_lock
                self._views[receiver] = view
            return view

    def after_fork(self) -> None:
        """New locks in a forked child (one a parent thread held at fork time would never be released)."""
        self._lock = threading.Lock()
        self._views_lock = threading.Lock()
        for view in self._views.values():
            view._views_lock = self._views_lock
        self._token_prefix = f"{os.getpid()}-{id(self):x}-"

    # -- helpers; the caller holds the lock ------------------------------------------

    def _token(self) -> str:
        return f"{self._token_prefix}{next(self._tokens)}"

    def _lease(self, event_id: str) -> str:
        token = self._token()
        expires = time.monotonic() + self.lease_seconds  # leases: immune to wall-clock steps
        self._leases[event_id] = (token, expires)
        if event_id in self._background:
            heapq.heappush(self._lease_heap, (expires, next(self._seq), event_id, token))
        return token

    def _holds(self, claim: Claim) -> StoredEvent | None:
        lease = self._leases.get(claim.event_id)
        if lease is None or lease[0] != claim.token:
            return None
        return self._events.get(claim.event_id)

    def _enqueue(self, stored: StoredEvent, due_at: float, *, accepted: bool = True) -> None:
        """Queue *stored* at *due_at*; *accepted*: it came through the queue (accept), as a 202 promised."""
        if accepted:
            self._background.add(stored.id)
        stored.status = EventStatus.PENDING
        stored.due_at = due_at
        heapq.heappush(self._queue, (due_at, next(self._seq), stored.id))

    def _take(self, stored: StoredEvent, now: float, *, with_body: bool = False, by_queue: bool = False) -> Claim:
        token = self._lease(stored.id)
        stored.status = EventStatus.PROCESSING
        stored.due_at = None
        stored.attempts += 1
        stored.updated_at = now
        return Claim(
            stored.id,
            ClaimState.CLAIMED,
            token,
            attempt=stored.attempts,
            outcomes=dict(stored.handlers),
            trigger=stored.trigger,
            raw=load_raw(self._bodies[stored.id]) if with_body else None,  # claim() has the event
            by_queue=by_queue,
        )

    def _insert(self, event: Event, now: float) -> StoredEvent:
        """Store a new event, making room first."""
        self._evict()
        stored = StoredEvent(
            id=event.id,
            trigger=event.trigger,
            status=EventStatus.PENDING,
            raw={},
            received_at=now,
            updated_at=now,
        )
        self._events[event.id] = stored
        self._bodies[event.id] = event.raw_json
        return stored

    def _evict(self) -> None:
        """Forget the oldest finished events, down to one free slot."""
        finished = (EventStatus.PROCESSED, EventStatus.FAILED, EventStatus.RESOLVED)
        while len(self._events) >= self.max_events:
            oldest = next((i for i, stored in self._events.items() if stored.status in finished), None)
            if oldest is None:
                raise StoreUnavailable(self.name, f"all {self.max_events} slots hold unfinished events")
            del self._events[oldest]
            del self._bodies[oldest]
            self._background.discard(oldest)
            self._deliveries.pop(oldest, None)

    def _copy(self, stored: StoredEvent) -> StoredEvent:
        """What a reader gets: a copy, with the body."""
        return replace(stored, raw=load_raw(self._bodies[stored.id]), handlers=dict(stored.handlers))

    def _live_lease(self, event_id: str) -> bool:
        lease = self._leases.get(event_id)
        return lease is not None and lease[1] > time.monotonic()

    # -- the protocol ------------------------------------------------------------------

    def claim(self, event: Event) -> Claim:
        now = time.time()
        with self._lock:
            stored = self._events.get(event.id)
            if stored is None:
                stored = self._insert(event, now)
            elif stored.status is EventStatus.PROCESSED:
                return Claim(event.id, ClaimState.DONE)
            elif stored.status is EventStatus.PROCESSING and self._live_lease(event.id):
                return Claim(event.id, ClaimState.BUSY)
            return self._take(stored, now)

    def claim_due(self) -> Claim | None:
        now = time.time()
        with self._lock:
            while self._queue and self._queue[0][0] <= now:
                due_at, _, event_id = heapq.heappop(self._queue)
                stored = self._events.get(event_id)
                if stored is not None and stored.status is EventStatus.PENDING and stored.due_at == due_at:
                    return self._take(stored, now, with_body=True, by_queue=True)
            held_now = time.monotonic()
            while self._lease_heap and self._lease_heap[0][0] <= held_now:
                _, _, event_id, token = heapq.heappop(self._lease_heap)
                stored = self._events.get(event_id)
                lease = self._leases.get(event_id)
                if stored is not None and lease is not None and lease[0] == token and lease[1] <= held_now:
                    return self._take(stored, now, with_body=True, by_queue=True)
        return None

    def accept(self, event: Event) -> EventStatus | None:
        now = time.time()
        with self._lock:
            stored = self._events.get(event.id)
            if stored is None:
                self._enqueue(self._insert(event, now), now)
                return None
            status = stored.status
            if status in (EventStatus.FAILED, EventStatus.RESOLVED):
                self._enqueue(stored, now)
                stored.updated_at = now
            elif status is EventStatus.PROCESSING and event.id not in self._background:
                # held by a request (claim): the queue takes it over if that lease runs out
                self._background.add(event.id)
                lease = self._leases.get(event.id)
                if lease is not None:
                    heapq.heappush(self._lease_heap, (lease[1], next(self._seq), event.id, lease[0]))
            return status

    def count_due(self) -> int:
        now = time.time()
        with self._lock:
            due = sum(
                1
                for e in self._events.values()
                if e.status is EventStatus.PENDING and e.due_at is not None and e.due_at <= now
            )
            held_now = time.monotonic()
            expired = sum(
                1 for i, (_, expires) in self._leases.items() if expires <= held_now and i in self._background
            )
        return due + expired

    def backlog_stats(self) -> BacklogStats:
        """One walk of the events kept (at most *max_events*) and of the leases, under the lock."""
        now = time.time()
        with self._lock:
            held_now = time.monotonic()
            due = failed = 0
            oldest: float | None = None
            for e in self._events.values():
                status = e.status
                if status is EventStatus.PENDING:
                    due_at = e.due_at
                    if due_at is not None and due_at <= now:
                        due += 1
                        if oldest is None or due_at < oldest:
                            oldest = due_at
                elif status is EventStatus.FAILED:
                    failed += 1
            for event_id, (_, expires) in self._leases.items():
                if expires <= held_now and event_id in self._background:
                    due += 1
                    ran_out = now - (held_now - expires)  # the lease's monotonic time on the wall clock
                    if oldest is None or ran_out < oldest:
                        oldest = ran_out
        return BacklogStats(due, oldest, failed)

    def renew(self, claim: Claim) -> bool:
        with self._lock:
            if self._holds(claim) is None:
                return False
            expires = time.monotonic() + self.lease_seconds
            self._leases[claim.event_id] = (claim.token, expires)
            if claim.event_id in self._background:
                heapq.heappush(self._lease_heap, (expires, next(self._seq), claim.event_id, claim.token))
            return True

    def record(self, claim: Claim, run: Run) -> bool:
        with self._lock:
            stored = self._holds(claim)
            if stored is None:
                return False
            claim.outcomes = stored.handlers = claim.with_run(run)
            stored.updated_at = run.finished_at
            return True

    def finish(
        self,
        claim: Claim,
        *,
        ok: bool,
        last: Run | None = None,
        retry_at: float | None = None,
        error: str | None = None,
    ) -> bool:
        now = time.time()
        with self._lock:
            stored = self._holds(claim)
            if stored is None:
                return False
            claim.outcomes = stored.handlers = claim.with_run(last)
            del self._leases[claim.event_id]
            stored.updated_at = now
            stored.error = error
            if not ok and leaves_to_queue(claim, ok, retry_at) and claim.event_id in self._background:
                self._enqueue(stored, now)  # a 202 was answered for it: the queue runs it again
                claim.requeued = True
                return True
            stored.status = finished_status(ok, retry_at)
            if stored.status is EventStatus.FAILED:  # for good: the queue owes it nothing more (a new 202 says again)
                self._background.discard(claim.event_id)
            if stored.status is EventStatus.PENDING and retry_at is not None:
                # due again, as on every store; it came through the queue only if accept said so (SQLite's flag)
                self._enqueue(stored, retry_at, accepted=False)
            return True

    def watermark(self, handler: str, resource_type: str, resource_id: str) -> float | None:
        with self._lock:
            return self._watermarks.get((handler, resource_type, resource_id))

    def raise_watermark(self, handler: str, resource_type: str, resource_id: str, updated_at: float) -> bool:
        key = (handler, resource_type, resource_id)
        with self._lock:
            if updated_at < self._watermarks.get(key, float("-inf")):
                return False
            self._watermarks[key] = updated_at
            return True

    def get(self, event_id: str) -> StoredEvent | None:
        with self._lock:
            stored = self._events.get(event_id)
            return None if stored is None else self._copy(stored)

    def events(
        self,
        *,
        status: EventStatus | None = None,
        trigger: str | None = None,
        since: float | None = None,
        limit: int | None = None,
        before: tuple[float, str] | None = None,
    ) -> list[StoredEvent]:
        with self._lock:
            chosen = [
                e
                for e in self._events.values()
                if (status is None or e.status is status)
                and (trigger is None or e.trigger == trigger)
                and (since is None or e.received_at >= since)
                and (before is None or (e.received_at, e.id) < before)
            ]
            chosen.sort(key=lambda e: (e.received_at, e.id), reverse=True)
            # under the lock only what must be (each row's fields as they are now, its body's bytes); the
            # bodies are decoded after letting it go: a list of thousands (the inbox's live poll, a filter
            # applied by the inbox) would otherwise pause every delivery of the process while it parses
            taken = [
                (replace(e, handlers=dict(e.handlers)), self._bodies[e.id])
                for e in (chosen[:limit] if limit is not None else chosen)
            ]
        for stored, body in taken:
            stored.raw = load_raw(body)
        return [stored for stored, _ in taken]

    def resolve(self, event_id: str) -> bool:
        with self._lock:
            stored = self._events.get(event_id)
            if stored is None or stored.status is not EventStatus.FAILED:
                return False
            stored.status = EventStatus.RESOLVED
            stored.updated_at = time.time()
            return True

    def record_delivery(self, event_id: str, attempt: DeliveryAttempt) -> None:
        with self._lock:
            if event_id in self._events:  # forgotten with the event: no log of an event it does not keep
                self._deliveries.setdefault(event_id, deque(maxlen=MAX_DELIVERIES)).append(attempt)

    def deliveries(self, event_id: str) -> list[DeliveryAttempt]:
        with self._lock:
            return list(self._deliveries.get(event_id, ()))

    def count_by_hour(self, since: float) -> list[HourCount]:
        hours: dict[float, list[int]] = {}
        with self._lock:
            for e in self._events.values():
                if e.received_at >= since:
                    counts = hours.setdefault(hour_start(e.received_at), [0, 0])
                    counts[0] += 1
                    counts[1] += e.status is EventStatus.FAILED
        return [HourCount(start, received, failed) for start, (received, failed) in sorted(hours.items())]

    def prune(self, before: float, *, include_failed: bool = False, dry_run: bool = False) -> int:
        statuses = prunable(include_failed)
        with self._lock:
            old = [i for i, e in self._events.items() if e.received_at < before and e.status in statuses]
            if dry_run:
                return len(old)
            for event_id in old:
                del self._events[event_id]
                del self._bodies[event_id]
                self._background.discard(event_id)
                self._deliveries.pop(event_id, None)
        return len(old)
