"""Background dispatch in a pool of threads of the web process, pulling due events from the store."""

from __future__ import annotations

import threading
import time
from typing import Any

from ..errors import StoreUnavailable
from ..untrusted import logger
from .queue import QueueDispatcher
from .run import run_claimed

__all__ = ["ThreadDispatcher"]


class ThreadDispatcher(QueueDispatcher):
    """Makes the event durable, answers 202 at once; *threads* workers of each process run due events.

    A worker takes the event due the longest (or whose worker died: its lease
    ran out) with one atomic claim, runs its handlers with the lease kept
    alive, and finishes it: processed, due again after a backoff
    (:class:`RetryPolicy`), or failed for ``flask webhooks replay``. Idle
    workers look at the store every :attr:`poll_interval`, and at once when a
    delivery is accepted in their process. Nothing but that wake-up is kept in
    memory, so a restart loses nothing: the next process's workers carry on.

    :param threads: the workers per process.
    :param kwargs: see :class:`QueueDispatcher`.
    """

    name = "thread"

    #: How long a new worker waits, unless a delivery comes first, before it takes an event: handlers
    #: registered just after ``init_app`` (``WebhookReceiver(app)``, then ``@receiver.on(...)`` at
    #: import time) must be there before a due event left by a previous process runs, or it would
    #: run with none and count as handled.
    SETTLE_SECONDS = 1.0

    def __init__(self, *, threads: int = 4, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.threads = threads
        self._settled = threading.Event()
        self._ready = threading.Condition()
        self._signalled = False
        self._next_due = float("inf")

    def __repr__(self) -> str:
        return f"<ThreadDispatcher threads={self.threads} max_attempts={self.policy.max_attempts}>"

    def _start_workers(self) -> None:
        self._ready = threading.Condition()
        self._settled = threading.Event()
        for n in range(self.threads):
            self._spawn(self._work, f"worker-{n + 1}")

    def wake(self, event_id: str | None) -> None:
        self._settled.set()  # a delivery came: the app is serving, its handlers are registered
        with self._ready:
            self._signalled = True
            self._ready.notify()

    def _cannot_take(self, exc: StoreUnavailable, pause: float) -> None:
        """Say that the store could not give a worker an event."""
        logger.warning("a worker cannot take events: %s; trying again in %.2f s", exc, pause)

    def due_at(self, when: float) -> None:
        """Tell the idle workers that an event is due at *when* (epoch seconds), if that is before their next look."""
        with self._ready:
            self._next_due = min(self._next_due, when)
            self._ready.notify()

    def _wake_all(self) -> None:
        with self._ready:
            self._signalled = True
            self._ready.notify_all()

    def _idle(self) -> None:
        """Wait for a wake-up, the next known due time, or the poll interval."""
        with self._ready:
            if not self._signalled and not self._stopping.is_set():
                timeout = min(self.poll_interval, max(0.005, self._next_due - time.time()))
                self._ready.wait(timeout)
            self._signalled = False
            if self._next_due <= time.time():
                self._next_due = float("inf")

    def _work(self) -> None:
        app, receiver, store = self._bound()
        stopping = self._stopping
        pause = 0.05
        self._settled.wait(self.SETTLE_SECONDS)
        while not stopping.is_set():
            try:
                claim = store.claim_due()
            except StoreUnavailable as exc:
                self._cannot_take(exc, pause)
                stopping.wait(pause)
                pause = min(pause * 2, 2.0)
                continue
            except Exception:  # noqa: BLE001 - a worker must go on
                logger.exception("a worker failed to take an event")
                stopping.wait(1.0)
                continue
            pause = 0.05
            if claim is None:
                self._idle()
                continue
            try:
                with app.app_context():
                    _, delay = run_claimed(app, receiver, store, claim, self.policy, stopping=stopping)
            except Exception:  # noqa: BLE001 - the event is durable; its lease runs out and it runs again
                logger.exception("event %s: the worker failed; it runs again once its lease runs out", claim.event_id)
                continue
            if delay is not None:
                with self._ready:
                    self._next_due = min(self._next_due, time.time() + delay)
