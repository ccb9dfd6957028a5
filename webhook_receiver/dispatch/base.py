"""Who runs the handlers and when: the dispatcher interface and the retry rules."""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, Sequence

from ..events import Event
from ..handlers import Handler, HandlerSource
from ..stores.base import EventStore

__all__ = ["NOT_STARTED", "Dispatcher", "Outcome", "RetryPolicy"]


@dataclass(frozen=True)
class Outcome:
    """The answer a dispatcher gives upstream: an HTTP status and a word for the body.

    :param code: the HTTP status.
    :param status: the word.
    :param known: the event was stored before this delivery (a redelivery),
        or the answer is one the event's row does not tell (a 202 at the
        inline deadline): the delivery goes to the event's delivery log
        (:meth:`~webhook_receiver.stores.EventStore.record_delivery`). A
        first delivery answered as usual is not logged: its row tells it.
    """

    code: int
    status: str
    known: bool = False

    def as_known(self) -> Outcome:
        """This answer, for a delivery that goes to the event's delivery log."""
        return Outcome(self.code, self.status, True)


#: The outcome :meth:`Dispatcher.dispatch_many` gives an event it did not start because *stopping* was set.
NOT_STARTED = Outcome(503, "not_started")


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


class Dispatcher(ABC):
    """Takes a verified event with handlers and decides the answer.

    A dispatcher is bound once, by ``init_app``, to one app, its receiver and
    its store (:meth:`bind`); :meth:`dispatch` then answers each delivery.
    ``WEBHOOK_RECEIVER_DISPATCH`` takes a name or an instance.
    """

    #: The name used in ``WEBHOOK_RECEIVER_DISPATCH``.
    name: str = ""

    def __init__(self) -> None:
        self.app: Any = None
        self.receiver: HandlerSource | None = None
        self.store: EventStore | None = None

    def bind(self, app: Any, receiver: HandlerSource, store: EventStore) -> None:
        """Dispatch *receiver*'s events on *app*, kept in *store* (``init_app`` calls it once).

        :raises RuntimeError: if the dispatcher is already bound to another app
            or receiver.
        """
        if self.app is not None and (self.app is not app or self.receiver is not receiver):
            raise RuntimeError(
                f"this {type(self).__name__} is already bound to another app or receiver;"
                " give each app a dispatcher of its own"
            )
        self.app, self.receiver, self.store = app, receiver, store

    def _bound(self) -> tuple[Any, HandlerSource, EventStore]:
        if self.receiver is None or self.store is None:
            raise RuntimeError(f"this {type(self).__name__} is not bound: init_app binds it")
        return self.app, self.receiver, self.store

    @abstractmethod
    def dispatch(self, event: Event, handlers: Sequence[Handler] | None = None) -> Outcome:
        """Run or schedule the handlers of *event*; return the answer for upstream.

        :param event: the verified event.
        :param handlers: its handlers, when the caller already looked them up.
        :raises StoreUnavailable: if the store cannot take the event.
        """

    def dispatch_many(
        self, batch: Sequence[tuple[Event, Sequence[Handler]]], *, stopping: threading.Event | None = None
    ) -> list[Outcome | Exception]:
        """Dispatch each ``(event, handlers)`` of *batch*: a queue consumer's messages, taken together.

        The default calls :meth:`dispatch` for each; a dispatcher that can
        share its store writes among them (inline) overrides it.

        :param stopping: once set (the consumer stops), no further event is
            started: each left gets :data:`NOT_STARTED`.
        :returns: for each, its outcome, or the exception its dispatch raised
            (:class:`~webhook_receiver.errors.StoreUnavailable`, ...), in order.
        """
        results: list[Outcome | Exception] = []
        for event, handlers in batch:
            if stopping is not None and stopping.is_set():
                results.append(NOT_STARTED)
                continue
            try:
                results.append(self.dispatch(event, handlers))
            except Exception as exc:  # noqa: BLE001 - the caller decides per event
                results.append(exc)
        return results

    def start(self) -> None:
        """Start background work, if the dispatcher has any (``init_app`` calls it)."""

    def close(self) -> None:
        """Stop background work (tests and shutdown)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__}>"
