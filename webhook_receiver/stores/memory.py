"""An in-process store: for tests, demos and single-process apps that may forget on restart."""
from __future__ import annotations

import itertools
import os
import threading
import time
from collections import OrderedDict
from dataclasses import replace

from ..events import Event
from .base import Claim, ClaimState, EventStatus, EventStore, HandlerOutcome, StoredEvent

__all__ = ["MemoryStore"]


class MemoryStore(EventStore):
    """Keeps events in a dict guarded by a lock.

    Idempotency holds within one process only, and only for the last
    *max_events* finished events: older ones are forgotten first.

    :param lease_seconds: see :class:`~webhook_receiver.stores.EventStore`.
    :param max_events: how many events to remember.
    """

    name = "memory"

    def __init__(self, *, lease_seconds: float = 60.0, max_events: int = 10_000) -> None:
        super().__init__(lease_seconds=lease_seconds)
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.max_events = max_events
        self._events: OrderedDict[str, StoredEvent] = OrderedDict()
        self._leases: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self._token_prefix = f"{os.getpid()}-{id(self):x}-"
        self._tokens = itertools.count()

    def claim(self, event: Event) -> Claim:
        now = time.time()
        token = f"{self._token_prefix}{next(self._tokens)}"
        with self._lock:
            stored = self._events.get(event.id)
            if stored is None:
                self._insert(event, EventStatus.PROCESSING, now)
                self._leases[event.id] = (token, time.monotonic() + self.lease_seconds)
                return Claim(event.id, ClaimState.CLAIMED, token)
            if stored.status is EventStatus.PROCESSED:
                return Claim(event.id, ClaimState.DONE)
            lease = self._leases.get(event.id)
            if lease is not None and lease[1] > time.monotonic():
                return Claim(event.id, ClaimState.BUSY)
            self._leases[event.id] = (token, time.monotonic() + self.lease_seconds)
            stored.status = EventStatus.PROCESSING
            stored.updated_at = now
            succeeded = frozenset(name for name, o in stored.handlers.items() if o.ok)
            return Claim(event.id, ClaimState.CLAIMED, token, succeeded)

    def record(self, claim: Claim, name: str, *, ok: bool, error: str | None,
               started_at: float, finished_at: float) -> None:
        with self._lock:
            stored = self._events.get(claim.event_id)
            if stored is None:
                return
            previous = stored.handlers.get(name)
            stored.handlers[name] = HandlerOutcome(
                name=name,
                ok=ok,
                error=error,
                attempts=(previous.attempts if previous else 0) + 1,
                started_at=started_at,
                finished_at=finished_at,
            )
            stored.updated_at = finished_at

    def _finish(self, claim: Claim, *, ok: bool) -> None:
        with self._lock:
            lease = self._leases.get(claim.event_id)
            stored = self._events.get(claim.event_id)
            if stored is None or lease is None or lease[0] != claim.token:
                return
            del self._leases[claim.event_id]
            stored.status = EventStatus.PROCESSED if ok else EventStatus.FAILED
            stored.updated_at = time.time()

    def get(self, event_id: str) -> StoredEvent | None:
        with self._lock:
            stored = self._events.get(event_id)
            return None if stored is None else replace(stored, handlers=dict(stored.handlers))

    def accept(self, event: Event) -> EventStatus | None:
        now = time.time()
        with self._lock:
            stored = self._events.get(event.id)
            if stored is not None:
                return stored.status
            self._insert(event, EventStatus.PENDING, now)
            return None

    def _insert(self, event: Event, status: EventStatus, now: float) -> None:
        """Store a new event, making room first; the caller holds the lock."""
        self._evict()
        self._events[event.id] = StoredEvent(id=event.id, trigger=event.trigger, status=status,
                                             raw=event.raw, received_at=now, updated_at=now)

    def events(self, *, status: EventStatus | None = None, trigger: str | None = None,
               since: float | None = None, limit: int | None = None) -> list[StoredEvent]:
        with self._lock:
            found = [
                replace(e, handlers=dict(e.handlers)) for e in reversed(self._events.values())
                if (status is None or e.status is status) and (trigger is None or e.trigger == trigger)
                and (since is None or e.received_at >= since)
            ]
        return found[:limit] if limit is not None else found

    def prune(self, before: float) -> int:
        finished = (EventStatus.PROCESSED, EventStatus.FAILED)
        with self._lock:
            old = [i for i, e in self._events.items() if e.received_at < before and e.status in finished]
            for event_id in old:
                del self._events[event_id]
        return len(old)

    def _evict(self) -> None:
        """Forget the oldest events neither pending nor under a live lease, down to one free slot."""
        now = time.monotonic()
        while len(self._events) >= self.max_events:
            for event_id, stored in self._events.items():  # oldest first
                lease = self._leases.get(event_id)
                if stored.status is not EventStatus.PENDING and (lease is None or lease[1] <= now):
                    break
            else:
                return  # every event is being processed: hold them all
            del self._events[event_id]
            self._leases.pop(event_id, None)
