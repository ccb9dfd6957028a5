"""Who runs the handlers and when: the dispatcher interface, inline dispatch, and retry rules."""
from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Sequence

from .. import signals
from ..errors import StoreUnavailable
from ..events import Event
from ..handlers import Handler
from ..stores.base import ClaimState, EventStatus, EventStore
from .run import ProcessResult, process_stored, run_handlers

if TYPE_CHECKING:
    from ..receiver import WebhookReceiver

__all__ = ["Dispatcher", "InlineDispatcher", "Outcome", "RetryPolicy", "after_attempt", "background_run"]

logger = logging.getLogger("webhook_receiver")


@dataclass(frozen=True)
class Outcome:
    """The answer a dispatcher gives upstream: an HTTP status and a word for the body."""

    code: int
    status: str


@dataclass(frozen=True)
class RetryPolicy:
    """How background dispatch retries failed handlers.

    :param max_attempts: runs in all, the first included.
    :param backoff: seconds before the first retry, doubled each time.
    :param max_backoff: the longest pause.
    """

    max_attempts: int = 5
    backoff: float = 2.0
    max_backoff: float = 300.0

    def delay(self, attempt: int) -> float | None:
        """The pause after failed run number *attempt* (from 1), or ``None`` when it was the last."""
        if attempt >= self.max_attempts:
            return None
        return float(min(self.backoff * 2 ** (attempt - 1), self.max_backoff))


def after_attempt(sender: Any, receiver: WebhookReceiver, result: ProcessResult, attempt: int,
                  policy: RetryPolicy) -> float | None:
    """Report a background run that failed; return the pause before the next one, or ``None``.

    Sends :data:`~webhook_receiver.signals.event_retrying` or, when the runs
    are used up, :data:`~webhook_receiver.signals.event_failed`, and logs it.
    """
    if result.state != "failed" or result.event is None:
        return None
    event = result.event
    delay = policy.delay(attempt)
    if delay is None:
        logger.error("event %s (%s) failed for good after %d runs; handlers failing: %s."
                     " `flask webhooks replay %s` runs them again", event.id, event.trigger, attempt,
                     ", ".join(result.failed), event.id)
        signals.send_isolated(signals.event_failed, sender, event=event, failed=result.failed,
                              attempts=attempt, receiver=receiver)
        return None
    logger.warning("event %s (%s): %s failed on run %d; retrying in %.1f s", event.id, event.trigger,
                   ", ".join(result.failed), attempt, delay)
    signals.send_isolated(signals.event_retrying, sender, event=event, failed=result.failed,
                          attempt=attempt, delay=delay, receiver=receiver)
    return delay


def background_run(app: Any, receiver: WebhookReceiver, store: EventStore, event_id: str, attempt: int,
                   policy: RetryPolicy) -> tuple[str, float | None]:
    """One background run of a stored event, in an app context: what the thread and Celery workers do.

    :returns: the run's state (see :class:`ProcessResult`, or
        ``"store-unavailable"``) and the pause before the next run, or
        ``None`` when there is none.
    """
    try:
        with app.app_context():
            result = process_stored(app, receiver, store, event_id)
            return result.state, after_attempt(app, receiver, result, attempt, policy)
    except StoreUnavailable as exc:
        # The event is durable; run it again once the store is back.
        logger.error("event %s: %s; retrying", event_id, exc)
        return "store-unavailable", policy.delay(attempt)


class Dispatcher(ABC):
    """Takes a verified event with handlers and decides the answer."""

    #: The name used in ``WEBHOOK_RECEIVER_DISPATCH``.
    name: str = ""

    @abstractmethod
    def dispatch(self, app: Any, receiver: WebhookReceiver, event: Event, handlers: Sequence[Handler],
                 store: EventStore) -> Outcome:
        """Run or schedule the handlers of *event*.

        :raises StoreUnavailable: if the store cannot take the event.
        """

    def register(self, app: Any, receiver: WebhookReceiver, store: EventStore) -> None:
        """Prepare to dispatch *receiver*'s events on *app* (``init_app`` calls it once)."""

    def close(self) -> None:
        """Stop background work (tests and shutdown)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"


class InlineDispatcher(Dispatcher):
    """Runs the handlers in the request; the answer reflects them (200 or 500)."""

    name = "inline"

    def dispatch(self, app: Any, receiver: WebhookReceiver, event: Event, handlers: Sequence[Handler],
                 store: EventStore) -> Outcome:
        claim = store.claim(event)
        if claim.state is ClaimState.DONE:
            return Outcome(200, "duplicate")
        if claim.state is ClaimState.BUSY:
            return Outcome(409, "in_progress")
        failed = run_handlers(app, event, handlers, store, claim, receiver=receiver)
        return Outcome(500, "failed") if failed else Outcome(200, "processed")


def accept(store: EventStore, event: Event) -> Outcome | None:
    """Make *event* durable for a background dispatcher.

    :returns: the answer when there is nothing to schedule (a duplicate), else ``None``.
    """
    status = store.accept(event)
    if status is EventStatus.PROCESSED:
        return Outcome(200, "duplicate")
    return None
