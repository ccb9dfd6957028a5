"""Blinker signals: the receiver's lifecycle, and helpers to send signals safely.

Lifecycle signals are sent with the Flask app as sender, so a receiver can be
connected for one app only::

    from webhook_receiver import signals

    @signals.handler_failed.connect_via(app)
    def alert(app, event, handler, exception, receiver):
        ...

Every lifecycle receiver is called in its own ``try``/``except``: a failing
receiver is logged and never changes the answer given to upstream.

Each trigger also has a signal of its own, per :class:`WebhookReceiver`:
``receiver.signal("order.paid")``. Its receivers are event handlers and are
called as ``fn(sender, event=event)``.
"""

from __future__ import annotations

from collections.abc import MutableSet
from typing import Any, Iterable, Iterator

from blinker import NamedSignal, Namespace, Signal

from .handlers import callable_name
from .untrusted import logger

__all__ = [
    "event_accepted",
    "event_failed",
    "event_handled",
    "event_received",
    "event_retrying",
    "handler_failed",
    "send_isolated",
    "TriggerSignal",
    "verification_failed",
]


_signals = Namespace()

#: A delivery passed the secret check and parsed as an event; sent before any
#: handler runs, for duplicates and ignored events too.
#: Arguments: ``event`` (:class:`~webhook_receiver.Event`), ``receiver``.
event_received: Signal = _signals.signal("event-received")

#: Every handler of an event has succeeded (on this delivery or earlier ones).
#: Arguments: ``event``, ``receiver``.
event_handled: Signal = _signals.signal("event-handled")

#: One handler raised; sent once per failing handler and delivery.
#: Arguments: ``event``, ``handler`` (its name), ``exception``, ``receiver``.
handler_failed: Signal = _signals.signal("handler-failed")

#: Background dispatch: some handlers failed and the event runs again after a
#: pause. Arguments: ``event``, ``failed`` (handler names), ``attempt`` (the
#: run that failed, from 1), ``delay`` (seconds), ``receiver``.
event_retrying: Signal = _signals.signal("event-retrying")

#: Background dispatch: the runs are used up and handlers still fail, or the
#: stored body cannot be rebuilt; the event stays failed until ``flask webhooks
#: replay``. Arguments: ``event`` (for a body that cannot be rebuilt, an
#: :class:`~webhook_receiver.Event` with only ``id`` and ``trigger``),
#: ``failed`` (handler names; empty when none ran), ``attempts``, ``error``
#: (why the event failed without running its handlers, else ``None``),
#: ``receiver``.
event_failed: Signal = _signals.signal("event-failed")

#: Inline dispatch: the handlers were still running at the deadline
#: (``WEBHOOK_RECEIVER_INLINE_DEADLINE``); the event joined the queue, the
#: delivery was answered 202, and the handlers go on in the background (their
#: end is told by ``event_handled``, ``event_retrying`` or ``event_failed``).
#: Sent by the request's thread. Arguments: ``event``, ``deadline`` (seconds),
#: ``receiver``.
event_accepted: Signal = _signals.signal("event-accepted")

#: A delivery was refused for its secret. Arguments: ``reason`` (``"missing"``
#: or ``"mismatch"``; never the secret), ``receiver``.
verification_failed: Signal = _signals.signal("verification-failed")


def send_isolated(signal: Signal, sender: Any, **kwargs: Any) -> None:
    """Send *signal*, calling each receiver in its own error handling.

    A plain :meth:`blinker.Signal.send` stops at the first exception; here a
    failing receiver is logged and the others still run.

    :param signal: the signal to send.
    :param sender: the sender, usually the Flask app.
    :param kwargs: the signal's arguments.
    """
    if not signal.receivers:
        return
    for receiver in signal.receivers_for(sender):
        try:
            receiver(sender, **kwargs)
        except Exception:
            logger.exception(
                "a receiver of the %r signal failed: %s",
                getattr(signal, "name", "?"),
                callable_name(receiver),
            )


class _OrderedSet(MutableSet[Any]):
    """A set that remembers insertion order, for :attr:`blinker.Signal.set_class`."""

    def __init__(self, items: Iterable[Any] = ()) -> None:
        self._items: dict[Any, None] = dict.fromkeys(items)

    def __contains__(self, item: object) -> bool:
        return item in self._items

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def add(self, value: Any) -> None:
        self._items[value] = None

    def discard(self, value: Any) -> None:
        self._items.pop(value, None)

    def copy(self) -> _OrderedSet:
        return _OrderedSet(self._items)


class TriggerSignal(NamedSignal):
    """The signal of one trigger; its receivers are called in connection order.

    Get one with :meth:`WebhookReceiver.signal`; connect handlers with
    ``weak=False`` when they are defined inside a function, or they vanish
    with it.
    """

    set_class = _OrderedSet  # type: ignore[assignment]
