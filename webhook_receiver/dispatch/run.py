"""Running the handlers of an event, each in its own error handling.

:func:`run_handlers` runs the handlers of a claimed event; every dispatcher
uses it. :func:`process_stored` is the worker side of background dispatch:
it loads a stored event, claims it and runs what has not yet succeeded.
"""
from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, Sequence

from .. import signals
from ..events import Event
from ..handlers import Handler
from ..stores.base import Claim, ClaimState, EventStore, Run

if TYPE_CHECKING:
    from ..receiver import WebhookReceiver

__all__ = ["ProcessResult", "describe", "process_stored", "run_handlers"]

logger = logging.getLogger("webhook_receiver")

#: The longest error text kept for a failed handler.
MAX_ERROR_LENGTH = 500


def run_handlers(
    sender: Any,
    event: Event,
    handlers: Sequence[Handler],
    store: EventStore,
    claim: Claim,
    *,
    receiver: WebhookReceiver,
) -> list[str]:
    """Run each handler that has not yet succeeded for *event*, then finish the claim.

    A handler that raises is logged, recorded and reported through
    :data:`~webhook_receiver.signals.handler_failed`; the others still run.

    :param sender: the Flask app, passed to signal receivers.
    :param event: the event.
    :param handlers: every handler for its trigger, in order.
    :param store: the store holding *claim*.
    :param claim: a ``CLAIMED`` claim on *event*.
    :param receiver: the receiver, passed to lifecycle signals.
    :returns: the names of the handlers that failed; empty when all succeeded.
    :raises StoreUnavailable: if an outcome cannot be recorded.
    """
    failed: list[str] = []
    previous: Run | None = None
    for handler in handlers:
        if handler.name in claim.succeeded:
            continue
        if previous is not None:
            # Durable before the next handler starts; the last one goes with finish().
            store.record(claim, previous.name, ok=previous.ok, error=previous.error,
                         started_at=previous.started_at, finished_at=previous.finished_at)
        started = time.time()
        try:
            handler(sender, event)
        except Exception as exc:
            failed.append(handler.name)
            previous = Run(handler.name, False, describe(exc), started, time.time())
            logger.error(
                "handler %s failed on event %s (%s, attempt %d)",
                handler.name,
                event.id,
                event.trigger,
                event.attempt,
                exc_info=True,
            )
            signals.send_isolated(
                signals.handler_failed, sender,
                event=event, handler=handler.name, exception=exc, receiver=receiver,
            )
        else:
            previous = Run(handler.name, True, None, started, time.time())
    store.finish(claim, ok=not failed, last=previous)
    if not failed:
        signals.send_isolated(signals.event_handled, sender, event=event, receiver=receiver)
    return failed


def describe(exc: BaseException) -> str:
    """``"ExceptionType: message"``, cut to :data:`MAX_ERROR_LENGTH` characters.

    :param exc: the exception a handler raised.
    """
    text = f"{type(exc).__name__}: {exc}"
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 3] + "..."
    return text


class ProcessResult:
    """What :func:`process_stored` found or did.

    :param state: ``"processed"``, ``"failed"``, ``"duplicate"``, ``"busy"``
        or ``"missing"``.
    :param event: the event, unless it was missing.
    :param failed: the names of the handlers that failed.
    """

    __slots__ = ("state", "event", "failed")

    def __init__(self, state: str, event: Event | None = None, failed: Sequence[str] = ()) -> None:
        self.state = state
        self.event = event
        self.failed = list(failed)

    def __repr__(self) -> str:
        return f"<ProcessResult {self.state} failed={self.failed}>"


def process_stored(sender: Any, receiver: WebhookReceiver, store: EventStore, event_id: str) -> ProcessResult:
    """Claim a stored event and run the handlers that have not succeeded yet.

    :param sender: the Flask app (an app context must be pushed).
    :param receiver: the receiver whose handlers run.
    :param store: where the event is.
    :param event_id: the event's id.
    :raises StoreUnavailable: if the store cannot answer.
    """
    stored = store.get(event_id)
    if stored is None:
        return ProcessResult("missing")
    event = Event.from_dict(stored.raw)
    claim = store.claim(event)
    if claim.state is ClaimState.DONE:
        return ProcessResult("duplicate", event)
    if claim.state is ClaimState.BUSY:
        return ProcessResult("busy", event)
    handlers = receiver.handlers_for(event.trigger, sender)
    failed = run_handlers(sender, event, handlers, store, claim, receiver=receiver)
    return ProcessResult("failed" if failed else "processed", event, failed)
