"""Background dispatch through Celery: workers on any machine run the handlers (extra ``[celery]``)."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Sequence

from ..errors import BrokerUnavailable
from ..events import Event
from ..handlers import Handler
from ..stores.base import EventStore
from .base import Dispatcher, Outcome, RetryPolicy, accept, background_run

if TYPE_CHECKING:
    from ..receiver import WebhookReceiver

__all__ = ["CeleryDispatcher"]

class CeleryDispatcher(Dispatcher):
    """Makes the event durable, enqueues a Celery task before answering 202.

    The task (named ``webhook_receiver.process.<receiver>``) is registered on
    the given Celery app by ``init_app``, in the web processes and in the
    workers alike, so the workers must build the Flask app too (Flask's own
    Celery pattern). It is acknowledged late and rejected when its worker is
    lost, so the broker hands it to another worker; the store's lease keeps
    two workers from running it at once.

    :param celery_app: the Celery app.
    :param policy: the retry rules.
    """

    name = "celery"

    def __init__(self, celery_app: Any, *, policy: RetryPolicy | None = None) -> None:
        self.celery_app = celery_app
        self.policy = policy or RetryPolicy()
        self.task: Any = None

    def __repr__(self) -> str:
        return f"<CeleryDispatcher {getattr(self.celery_app, 'main', None)!r}>"

    def register(self, app: Any, receiver: WebhookReceiver, store: EventStore) -> None:
        """Register the task that runs *receiver*'s handlers for *app*."""
        policy = self.policy

        def process_event(task: Any, event_id: str, attempt: int = 1) -> str:
            state, delay = background_run(app, receiver, store, event_id, attempt, policy)
            if delay is not None:
                task.apply_async((event_id, attempt + 1), countdown=delay)
            return state

        self.task = self.celery_app.task(
            process_event, bind=True, name=f"webhook_receiver.process.{receiver.name}",
            acks_late=True, reject_on_worker_lost=True,
        )

    def dispatch(self, app: Any, receiver: WebhookReceiver, event: Event, handlers: Sequence[Handler],
                 store: EventStore) -> Outcome:
        done = accept(store, event)
        if done is not None:
            return done
        try:
            self.task.apply_async((event.id,), retry=False)
        except Exception as exc:  # kombu raises several kinds when the broker is down
            raise BrokerUnavailable(type(exc).__name__) from None
        return Outcome(202, "accepted")
