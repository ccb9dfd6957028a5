"""Background dispatch through Celery: workers on any machine pull due events (extra ``[celery]``)."""

from __future__ import annotations

from typing import Any

from .. import instrumentation
from ..errors import BrokerUnavailable
from ..untrusted import logger
from .queue import QueueDispatcher
from .run import run_claimed

__all__ = ["CeleryDispatcher"]


class CeleryDispatcher(QueueDispatcher):
    """Makes the event durable and enqueues a wake-up task before answering 202.

    The task (named ``webhook_receiver.process.<receiver>``) is registered on
    the given Celery app by ``init_app``, in the web processes and in the
    workers alike, so the workers must build the Flask app too (Flask's own
    Celery pattern). A task carries no event: it takes due events from the
    store, one atomic claim each, until none is due, so any worker runs any
    event, and a lost task loses nothing. The monitor of every process that
    built the app (web processes and workers) sends a wake-up when due events
    wait and the backlog did not shrink since its last look: events of a
    worker that died, once their lease runs out, and retries that are due.

    :param celery_app: the Celery app.
    :param kwargs: see :class:`QueueDispatcher`.
    """

    name = "celery"

    def __init__(self, celery_app: Any, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.celery_app = celery_app
        self.task: Any = None
        self._last_due = 0

    def __repr__(self) -> str:
        return f"<CeleryDispatcher {getattr(self.celery_app, 'main', None)!r}>"

    def bind(self, app: Any, receiver: Any, store: Any) -> None:
        dispatcher = self

        def process_events(event_id: str | None = None) -> int:
            """Run due events until none is due; returns how many ran."""
            return dispatcher.drain()

        self.task = self.celery_app.task(process_events, name=f"webhook_receiver.process.{receiver.name}")
        super().bind(app, receiver, store)

    def drain(self) -> int:
        """Run due events in this process until none is due (what the task does)."""
        app, receiver, store = self._bound()
        ran = 0
        try:
            with app.app_context():
                while not self._stopping.is_set():
                    claim = store.claim_due()
                    if claim is None:
                        return ran
                    ran += 1
                    _, delay = run_claimed(app, receiver, store, claim, self.policy, stopping=self._stopping)
                    if delay is not None:
                        self._send(countdown=delay)
            return ran
        finally:
            instrumentation.flush(app)  # a prefork child may end with os._exit, which writes nothing at exit

    def wake(self, event_id: str | None) -> None:
        try:
            self.task.apply_async((event_id,), retry=False)
        except Exception as exc:  # kombu raises several kinds when the broker is down
            raise BrokerUnavailable(type(exc).__name__) from None

    def _send(self, countdown: float = 0.0) -> None:
        try:
            self.task.apply_async((None,), countdown=countdown, retry=False)
        except Exception as exc:  # noqa: BLE001 - the monitor sends another one later
            logger.warning("cannot send a wake-up task: %s", type(exc).__name__)

    def on_tick(self, due: int) -> None:
        if due and due >= self._last_due:
            self._send()
        self._last_due = due
