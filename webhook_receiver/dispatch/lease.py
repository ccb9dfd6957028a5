"""Keeping leases alive: one heartbeat thread per process renews the claims of running handlers."""

from __future__ import annotations

import os
import threading
import time

from ..errors import StoreUnavailable
from ..stores.base import Claim, EventStore
from ..untrusted import logger

__all__ = ["HEARTBEAT", "Heartbeat"]


#: Renew a lease when this fraction of it has passed since the last renewal.
RENEW_FRACTION = 1 / 3

#: This process's id, kept up to date by a fork hook: ``os.getpid()`` is a system call, once per delivery otherwise.
_pid = os.getpid()


def _forked() -> None:
    global _pid
    _pid = os.getpid()


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_forked)  # before the heartbeat's own hook, below: hooks run in order


class Heartbeat:
    """Renews the lease of every registered claim at a third of its length.

    A renewal that finds the lease taken over marks the claim
    :attr:`~webhook_receiver.stores.Claim.lost`; the worker then stops
    recording and running handlers for it. A store that cannot answer is
    tried again at the next beat. The thread starts on first use, again in a
    forked child (which starts with a lock of its own and none of the
    parent's claims), and is a daemon: it never keeps a process alive.
    """

    def __init__(self) -> None:
        self._claims: dict[int, tuple[EventStore, Claim, float]] = {}  # id(claim) -> (store, claim, next beat)
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._next = float("inf")
        self._pid = 0

    def after_fork(self) -> None:
        """In a forked child: a lock of its own, and none of the parent's claims.

        The lock may have been held at the fork (by the parent's heartbeat
        thread, at a beat), and the claims are the parent's threads', which
        do not exist here: renewed from the child, an event whose worker died
        would stay leased for as long as the child lives.
        """
        self._lock = threading.Lock()
        self._claims = {}
        self._wake = threading.Event()
        self._next = float("inf")
        self._pid = 0

    def keep(self, store: EventStore, claim: Claim) -> _Kept:
        """Renew *claim*'s lease for as long as the ``with`` block runs."""
        return _Kept(self, store, claim)

    def add(self, store: EventStore, claim: Claim) -> None:
        """Start renewing *claim*'s lease."""
        due = time.monotonic() + store.lease_seconds * RENEW_FRACTION
        with self._lock:
            self._claims[id(claim)] = (store, claim, due)
            if self._pid != _pid:
                self._start()
            wake = due < self._next
        if wake:
            self._wake.set()

    def add_many(self, store: EventStore, claims: list[Claim]) -> None:
        """Start renewing the lease of each of *claims* (a consumer's batch), under one lock."""
        if not claims:
            return
        due = time.monotonic() + store.lease_seconds * RENEW_FRACTION
        with self._lock:
            for claim in claims:
                self._claims[id(claim)] = (store, claim, due)
            if self._pid != os.getpid():
                self._start()
            wake = due < self._next
        if wake:
            self._wake.set()

    def discard_many(self, claims: list[Claim]) -> None:
        """Stop renewing the lease of each of *claims*."""
        with self._lock:
            for claim in claims:
                self._claims.pop(id(claim), None)

    def discard(self, claim: Claim) -> None:
        """Stop renewing *claim*'s lease."""
        with self._lock:
            self._claims.pop(id(claim), None)

    def _start(self) -> None:
        self._pid = _pid
        self._wake = threading.Event()
        thread = threading.Thread(target=self._loop, name="webhook-receiver-heartbeat", daemon=True)
        thread.start()

    def _loop(self) -> None:
        pid = self._pid
        while self._pid == pid:
            now = time.monotonic()
            with self._lock:
                due = [(key, store, claim) for key, (store, claim, at) in self._claims.items() if at <= now]
            for key, store, claim in due:
                self._renew(key, store, claim)
            with self._lock:
                self._next = min((at for _, _, at in self._claims.values()), default=now + 1.0)
                wake = self._wake
            wake.wait(max(0.01, self._next - time.monotonic()))
            wake.clear()

    def _renew(self, key: int, store: EventStore, claim: Claim) -> None:
        try:
            kept = store.renew(claim)
        except StoreUnavailable as exc:
            logger.warning("event %s: cannot renew the lease: %s", claim.event_id, exc)
            retry = time.monotonic() + min(1.0, store.lease_seconds * RENEW_FRACTION / 2)
            self._reschedule(key, retry)
            return
        if not kept:
            with self._lock:
                running = self._claims.get(key, (None, None))[1] is claim
            if not running:  # the run ended while this renewal was on its way: its finish took the lease
                return
            claim.lost = True
            logger.warning(
                "event %s: the lease was taken over by another worker; this one stops recording for it", claim.event_id
            )
            with self._lock:
                self._claims.pop(key, None)
            return
        self._reschedule(key, time.monotonic() + store.lease_seconds * RENEW_FRACTION)

    def _reschedule(self, key: int, at: float) -> None:
        with self._lock:
            entry = self._claims.get(key)
            if entry is not None:
                self._claims[key] = (entry[0], entry[1], at)


class _Kept:
    """The context manager of :meth:`Heartbeat.keep`."""

    __slots__ = ("heartbeat", "store", "claim")

    def __init__(self, heartbeat: Heartbeat, store: EventStore, claim: Claim) -> None:
        self.heartbeat, self.store, self.claim = heartbeat, store, claim

    def __enter__(self) -> Claim:
        self.heartbeat.add(self.store, self.claim)
        return self.claim

    def __exit__(self, *exc_info: object) -> None:
        self.heartbeat.discard(self.claim)


#: The process's heartbeat.
HEARTBEAT = Heartbeat()

if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=HEARTBEAT.after_fork)
