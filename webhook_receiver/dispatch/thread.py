"""Background dispatch in a bounded pool of threads of the web process."""
from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Sequence

from ..events import Event
from ..handlers import Handler
from ..stores.base import EventStatus, EventStore
from .base import Dispatcher, Outcome, RetryPolicy, accept, background_run

if TYPE_CHECKING:
    from ..receiver import WebhookReceiver

__all__ = ["ThreadDispatcher"]

logger = logging.getLogger("webhook_receiver")


class ThreadDispatcher(Dispatcher):
    """Makes the event durable, answers 202 at once, and runs the handlers in a thread pool.

    Failed handlers are retried with backoff (:class:`RetryPolicy`), then left
    failed for ``flask webhooks replay``. Events left pending or processing by
    a process that died are picked up by the first delivery after a restart
    (and by ``replay``), once their lease has run out.

    :param threads: the pool's size.
    :param policy: the retry rules.
    """

    name = "thread"

    def __init__(self, *, threads: int = 4, policy: RetryPolicy | None = None) -> None:
        self.threads = threads
        self.policy = policy or RetryPolicy()
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._swept = False
        self._timers: set[threading.Timer] = set()

    def __repr__(self) -> str:
        return f"<ThreadDispatcher threads={self.threads} max_attempts={self.policy.max_attempts}>"

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.threads, thread_name_prefix="webhook-receiver")
            return self._pool

    def dispatch(self, app: Any, receiver: WebhookReceiver, event: Event, handlers: Sequence[Handler],
                 store: EventStore) -> Outcome:
        done = accept(store, event)
        if done is not None:
            return done
        if not self._swept:
            self._sweep(app, receiver, store)
        self.submit(app, receiver, store, event.id)
        return Outcome(202, "accepted")

    def submit(self, app: Any, receiver: WebhookReceiver, store: EventStore, event_id: str,
               attempt: int = 1) -> None:
        """Run the handlers of a stored event in the pool."""
        self._executor().submit(self._run, app, receiver, store, event_id, attempt)

    def _run(self, app: Any, receiver: WebhookReceiver, store: EventStore, event_id: str, attempt: int) -> None:
        try:
            _, delay = background_run(app, receiver, store, event_id, attempt, self.policy)
        except Exception:
            logger.exception("event %s: the worker failed", event_id)
            return
        if delay is not None:
            timer = threading.Timer(delay, self._resubmit, (app, receiver, store, event_id, attempt + 1))
            timer.daemon = True
            with self._lock:
                self._timers.add(timer)
            timer.start()

    def _resubmit(self, app: Any, receiver: WebhookReceiver, store: EventStore, event_id: str,
                  attempt: int) -> None:
        with self._lock:
            self._timers = {t for t in self._timers if t.is_alive() and t is not threading.current_thread()}
            closed = self._pool is None
        if not closed:
            self.submit(app, receiver, store, event_id, attempt)

    def _sweep(self, app: Any, receiver: WebhookReceiver, store: EventStore) -> None:
        """Pick up events an earlier process accepted but did not finish."""
        self._swept = True
        stale = time.time() - store.lease_seconds
        for status in (EventStatus.PENDING, EventStatus.PROCESSING):
            for stored in store.events(status=status):
                if stored.updated_at < stale:
                    logger.warning("event %s was left %s by an earlier process; running it", stored.id,
                                   status.value)
                    self.submit(app, receiver, store, stored.id)

    def close(self) -> None:
        with self._lock:
            pool, self._pool = self._pool, None
            timers, self._timers = self._timers, set()
        for timer in timers:
            timer.cancel()
        if pool is not None:
            pool.shutdown(wait=True)
