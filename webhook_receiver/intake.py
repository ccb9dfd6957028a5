"""What every door does with an event once it is parsed: the HTTP endpoint and the queue consumers alike.

Each door (``delivery.py`` for webhooks, ``transports/`` for queues) reads and
checks its own bytes; from the parsed :class:`~webhook_receiver.events.Event`
on, the path is this one: odd shapes logged, ``event_received`` sent, the
handlers looked up, and the dispatcher handed the event.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Sequence

from . import signals
from .dispatch.base import Dispatcher, Outcome
from .dispatch.run import log_delivery
from .events import Event, irregular_so_far
from .handlers import Handler, HandlerSource
from .stores.base import DeliveryAttempt
from .untrusted import logger

__all__ = ["IGNORED", "hand_over", "hand_over_many", "log_redelivery"]

#: The outcome for an event that no handler takes.
IGNORED = Outcome(200, "ignored")


def hand_over(event: Event, receiver: HandlerSource, app: Any, dispatcher: Dispatcher) -> Outcome:
    """Hand a parsed event to the receiver's handlers through *dispatcher*.

    :param event: the parsed event.
    :param receiver: whose handlers run.
    :param app: the app (the signals' sender).
    :param dispatcher: the receiver's dispatcher on *app*.
    :returns: the dispatcher's outcome, or :data:`IGNORED` when no handler takes the event.
    :raises StoreUnavailable: if the store cannot take the event (and
        :class:`~webhook_receiver.errors.BrokerUnavailable`,
        :class:`~webhook_receiver.errors.BacklogFull` from background dispatch).
    """
    irregular = irregular_so_far(event)  # a resources string decoded only when read is not checked here
    if irregular:
        _warn_irregular(event, irregular)
    if signals.event_received.receivers:
        signals.send_isolated(signals.event_received, app, event=event, receiver=receiver)
    handlers = receiver.handlers_for(event.trigger, app)
    if not handlers:
        return IGNORED
    outcome = dispatcher.dispatch(event, handlers)
    if outcome.known:
        log_redelivery(dispatcher, event, outcome)
    return outcome


def _warn_irregular(event: Event, irregular: Sequence[str]) -> None:
    """Log the parts of an event's body that are not of the expected shape (kept, secret fields redacted)."""
    logger.warning(
        "event %s (%s): unexpected shape of %s; kept in event.raw as sent, secret fields redacted",
        event.id,
        event.trigger,
        ", ".join(irregular),
    )


def log_redelivery(dispatcher: Dispatcher, event: Event, outcome: Outcome) -> None:
    """Append a redelivery's answer to the event's delivery log (a cold path: a first delivery writes nothing).

    :param dispatcher: the dispatcher whose store keeps the log (none: nothing is written).
    :param event: the event as this delivery brought it (its transport and attempt number).
    :param outcome: the answer this delivery got.
    """
    if dispatcher.store is not None:
        log_delivery(
            dispatcher.store,
            event.id,
            DeliveryAttempt(
                time.time(),
                event.transport,
                event.attempt,
                outcome.code if event.transport == "webhook" else None,
                outcome.status,
            ),
        )


def hand_over_many(
    events: Sequence[Event],
    receiver: HandlerSource,
    app: Any,
    dispatcher: Dispatcher,
    *,
    stopping: threading.Event | None = None,
) -> list[Outcome | Exception]:
    """:func:`hand_over` for several events (a queue consumer's batch), dispatched together.

    Each event is logged, signalled and looked up as :func:`hand_over` does;
    those with handlers go to :meth:`Dispatcher.dispatch_many` in one call
    (with *stopping*: once it is set, no further event starts).

    :returns: for each event, in order, its outcome (:data:`IGNORED` when no
        handler takes it) or the exception its dispatch raised
        (:class:`~webhook_receiver.errors.StoreUnavailable`, ...).
    """
    results: list[Outcome | Exception] = [IGNORED] * len(events)
    batch: list[tuple[Event, Sequence[Handler]]] = []
    positions: list[int] = []
    received = signals.event_received.receivers
    for position, event in enumerate(events):
        irregular = irregular_so_far(event)
        if irregular:
            _warn_irregular(event, irregular)
        if received:
            signals.send_isolated(signals.event_received, app, event=event, receiver=receiver)
        handlers = receiver.handlers_for(event.trigger, app)
        if handlers:
            batch.append((event, handlers))
            positions.append(position)
    if batch:
        try:
            outcomes = dispatcher.dispatch_many(batch, stopping=stopping)
        except Exception as exc:  # noqa: BLE001 - the store could not claim them: each is retried
            outcomes = [exc] * len(batch)
        for position, outcome in zip(positions, outcomes):
            results[position] = outcome
            if isinstance(outcome, Outcome) and outcome.known:
                log_redelivery(dispatcher, events[position], outcome)
    return results
