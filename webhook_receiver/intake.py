"""What every door does with an event once it is parsed: the HTTP endpoint and the queue consumers alike.

Each door (``delivery.py`` for webhooks, ``transports/`` for queues) reads and
checks its own bytes; from the parsed :class:`~webhook_receiver.events.Event`
on, the path is this one: odd shapes logged, ``event_received`` sent, the
handlers looked up, and the dispatcher handed the event.
"""

from __future__ import annotations

import time
from typing import Any

from . import signals
from .dispatch.base import Dispatcher, Outcome
from .dispatch.run import log_delivery
from .events import Event
from .handlers import HandlerSource
from .stores.base import DeliveryAttempt
from .untrusted import logger

__all__ = ["IGNORED", "hand_over"]

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
    irregular = event.__dict__.get("irregular")  # None: the resources string is read later, and noted then
    if irregular:
        logger.warning(
            "event %s (%s): unexpected shape of %s; kept as sent in event.raw",
            event.id,
            event.trigger,
            ", ".join(irregular),
        )
    if signals.event_received.receivers:
        signals.send_isolated(signals.event_received, app, event=event, receiver=receiver)
    handlers = receiver.handlers_for(event.trigger, app)
    if not handlers:
        return IGNORED
    outcome = dispatcher.dispatch(event, handlers)
    if outcome.known and dispatcher.store is not None:  # a redelivery (cold): the event's delivery log
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
    return outcome
