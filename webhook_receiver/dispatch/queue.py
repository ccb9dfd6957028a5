"""Background dispatch with the store as the work queue: what the thread and Celery dispatchers share.

Accepting an event is one durable write (pending, due now) and a wake-up;
nothing about the event lives only in process memory. Workers pull due events
from the store. A monitor thread per process measures the backlog once per
poll interval, for backpressure, and lets subclasses act on it.
"""

from __future__ import annotations

import atexit
import os
import threading
import weakref
from typing import Any, Sequence

from .. import instrumentation
from ..errors import BacklogFull, StoreUnavailable
from ..events import Event
from ..handlers import Handler
from ..stores.base import EventStatus
from ..untrusted import logger
from .base import Dispatcher, Outcome, RetryPolicy

__all__ = ["QueueDispatcher", "loaded_by_flask_command"]


#: The default ``WEBHOOK_RECEIVER_MAX_BACKLOG``.
DEFAULT_MAX_BACKLOG = 10_000

_ACCEPTED = Outcome(202, "accepted")
# for an event already stored: the delivery goes to its delivery log
_ACCEPTED_AGAIN = Outcome(202, "accepted", known=True)
_DUPLICATE = Outcome(200, "duplicate", known=True)


#: The dispatchers started in this process, restarted in a forked child.
_STARTED: weakref.WeakSet[QueueDispatcher] = weakref.WeakSet()


def _restart_after_fork() -> None:
    for dispatcher in list(_STARTED):
        dispatcher._after_fork()


os.register_at_fork(after_in_child=_restart_after_fork)


def loaded_by_flask_command() -> bool:
    """Whether a ``flask`` command other than ``run`` (or the reloader's watcher) is loading the app.

    Such a process (``flask webhooks events``, ``flask shell``, ``flask db
    upgrade``) must not start workers that would take events from the queue.
    """
    try:
        import click
        from flask.cli import ScriptInfo
    except ImportError:  # pragma: no cover - both come with Flask
        return False
    ctx = click.get_current_context(silent=True)
    if ctx is None or ctx.find_object(ScriptInfo) is None:
        return False
    if ctx.info_name != "run":
        return True
    return bool(ctx.params.get("reload")) and os.environ.get("WERKZEUG_RUN_MAIN") != "true"


class QueueDispatcher(Dispatcher):
    """Answers 202 once the event is durable in the store; workers pull it from there.

    :param policy: the retry rules.
    :param max_backlog: past this many due events, new deliveries get 503.
    :param grace: seconds running handlers get to finish when the process stops.
    :param poll_interval: how often idle workers and the monitor look at the
        store; a quarter of the lease (at most 1 s) by default.
    """

    def __init__(
        self,
        *,
        policy: RetryPolicy | None = None,
        max_backlog: int = DEFAULT_MAX_BACKLOG,
        grace: float = 10.0,
        poll_interval: float | None = None,
    ) -> None:
        super().__init__()
        self.policy = policy or RetryPolicy()
        self.max_backlog = max_backlog
        self.grace = grace
        self._poll_interval = poll_interval
        self._pid = 0
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._backlog = 0
        self._accepted = 0
        self._atexit = False

    @property
    def poll_interval(self) -> float:
        """Seconds between two looks at the store by an idle worker or the monitor."""
        if self._poll_interval is not None:
            return self._poll_interval
        lease = self.store.lease_seconds if self.store is not None else 60.0
        return min(1.0, lease / 4)

    @property
    def backlog(self) -> int:
        """Events due and not yet taken, as last measured, plus those accepted here since."""
        return self._backlog + self._accepted

    def bind(self, app: Any, receiver: Any, store: Any) -> None:
        super().bind(app, receiver, store)
        if not loaded_by_flask_command():
            self.start()

    # -- accepting -------------------------------------------------------------------

    def dispatch(self, event: Event, handlers: Sequence[Handler] | None = None) -> Outcome:
        _, _, store = self._bound()
        if self.backlog >= self.max_backlog:
            raise BacklogFull(self.max_backlog)
        found = store.accept(instrumentation.before_accept(self.app, event))
        if found is EventStatus.PROCESSED:
            return _DUPLICATE
        self._accepted += 1
        self.wake(event.id)
        return _ACCEPTED if found is None else _ACCEPTED_AGAIN

    def wake(self, event_id: str | None) -> None:
        """Tell the workers that an event is due (*event_id* is a hint).

        :raises BrokerUnavailable: if the wake-up cannot be sent (Celery).
        """

    # -- background work ---------------------------------------------------------------

    def start(self) -> None:
        """Start the monitor and the workers in this process; again after a fork."""
        if self._pid == os.getpid():
            return
        self._bound()
        self._pid = os.getpid()
        self._stopping = threading.Event()
        self._threads = []
        _STARTED.add(self)
        if not self._atexit:
            self._atexit = True
            atexit.register(_close_at_exit, weakref.ref(self))
        self._spawn(self._monitor, "monitor")
        self._start_workers()

    def _after_fork(self) -> None:
        """In a forked child: the threads did not come along; start them again."""
        if self._pid and not self._stopping.is_set():
            self._pid = 0
            self.start()

    def _spawn(self, target: Any, name: str) -> threading.Thread:
        thread = threading.Thread(target=target, name=f"webhook-receiver-{name}", daemon=True)
        thread.start()
        self._threads.append(thread)
        return thread

    def _start_workers(self) -> None:
        """Start this dispatcher's own workers, if it has any in the process."""

    def _monitor(self) -> None:
        _, _, store = self._bound()
        stopping = self._stopping
        while not stopping.is_set():
            try:
                due = store.count_due()
            except StoreUnavailable as exc:
                logger.warning("cannot measure the backlog: %s", exc)
            except Exception:  # noqa: BLE001 - the monitor must go on
                logger.exception("the backlog monitor failed")
            else:
                self._backlog, self._accepted = due, 0
                try:
                    self.on_tick(due)
                except Exception:  # noqa: BLE001
                    logger.exception("the backlog monitor failed")
            stopping.wait(self.poll_interval)

    def on_tick(self, due: int) -> None:
        """Called by the monitor with the number of due events, once per poll interval."""

    def close(self, grace: float | None = None) -> None:
        """Stop taking events; give running handlers *grace* seconds (:attr:`grace`) to finish.

        What is not finished by then stays in the store, due again once its
        lease runs out, for the next worker.
        """
        if self._pid != os.getpid():
            return
        self._stopping.set()
        self._wake_all()
        deadline = threading.Event()
        timer = threading.Timer(self.grace if grace is None else grace, deadline.set)
        timer.daemon = True
        timer.start()
        for thread in self._threads:
            while thread.is_alive() and not deadline.is_set():
                thread.join(0.05)
        timer.cancel()
        running = sum(t.is_alive() for t in self._threads)
        if running:
            logger.warning(
                "stopping with %d handler run(s) unfinished; they run again once their lease runs out", running
            )
        self._pid = 0

    def _wake_all(self) -> None:
        """Wake every idle worker of this process (shutdown)."""


def _close_at_exit(ref: weakref.ref[QueueDispatcher]) -> None:
    dispatcher = ref()
    if dispatcher is not None:
        dispatcher.close()
