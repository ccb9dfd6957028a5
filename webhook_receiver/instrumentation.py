"""Where metrics and traces look in: the few points of delivery and dispatch that an observer hears of.

The core calls these functions at four points: when a delivery is answered
(:func:`answered`), around the run of an event's handlers (:func:`running`)
and around each handler (through :func:`observed_handlers`), after each
handler's run (:func:`handler_ran`, for observers that only count), and
before a background dispatcher makes an event durable (:func:`before_accept`). Each
app has its own observers (:func:`add_observer`; the
:mod:`webhook_receiver.observability` package adds them at ``init_app``);
with none, each point costs one dictionary look-up.

This module knows no metrics or tracing library: observers bring them.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from typing import Any, ContextManager, Protocol, Sequence

from .events import Event
from .handlers import Handler
from .untrusted import logger

__all__ = [
    "Observer",
    "add_observer",
    "answered",
    "before_accept",
    "flush",
    "handler_ran",
    "observed_handlers",
    "observers",
    "run_counters",
    "run_watchers",
    "running",
    "watches_runs",
]

#: The key of ``app.extensions`` holding the app's observers.
OBSERVERS_KEY = "webhook_receiver.observers"

#: The key of ``app.extensions`` holding the observers that count runs (:func:`run_counters`).
_COUNTERS_KEY = "webhook_receiver.run_counters"

#: The key of ``app.extensions`` holding the handlers as observed, by the id of the handler.
_WRAPPED_KEY = "webhook_receiver.observed_handlers"

_NOTHING: ContextManager[None] = contextlib.nullcontext()


class Observer(Protocol):
    """What an observer of deliveries and handler runs implements; every method is called in its own error handling."""

    def answered(
        self,
        receiver: str,
        status: str,
        code: int,
        event: Event | None,
        trigger: str | None,
        seconds: float,
        transport: str = "webhook",
    ) -> None:
        """A delivery was answered with *code* and the status word *status*, *seconds* after it came in.

        *transport* is how it came: ``"webhook"``, or a queue consumer's
        transport (``"stomp"``, ``"sqs"``), whose messages are counted as
        deliveries (*code* then is the HTTP status the same outcome has). It
        is passed by keyword, and only for a consumer's messages, so that an
        observer without the parameter still hears of webhook deliveries.
        """

    def running(self, receiver: str, event: Event, claim: Any) -> ContextManager[Any]:
        """Around one run of the handlers of *event* under *claim* (a :class:`~webhook_receiver.stores.base.Claim`)."""

    def handler(self, receiver: str, event: Event, handler: str) -> ContextManager[Any]:
        """Around one call of the handler named *handler*; an exception raised by it passes through."""

    def before_accept(self, event: Event) -> Event:
        """The event a background dispatcher stores: *event*, or a copy carrying what the observer needs later."""


class RunCounter(Protocol):
    """An observer that hears of each handler run once it is over: a ``handler_ran`` method besides the others.

    Cheaper than :meth:`Observer.handler`, which wraps each call in a
    context manager: an observer that only counts and times runs (metrics)
    implements this, and says with ``watching()`` that it watches no run.
    """

    def handler_ran(self, receiver: str, event: Event, handler: str, ok: bool, seconds: float) -> None:
        """The handler named *handler* ran on *event* for *seconds*, and raised unless *ok*."""


def watches_runs(observer: Observer) -> bool:
    """Whether *observer*'s :meth:`~Observer.running` and :meth:`~Observer.handler` would do anything now.

    An observer may say so with a ``watching()`` method (tracing with no
    provider set records nothing); one without it always watches. One whose
    ``watching()`` fails is logged and left out: it must not break a delivery.
    """
    watching = getattr(observer, "watching", None)
    if watching is None:
        return True
    try:
        return bool(watching())
    except Exception:  # noqa: BLE001 - an observer's failure never changes an answer or a run
        logger.exception("an observer of deliveries failed; the delivery goes on")
        return False


def run_watchers(app: Any) -> Sequence[Observer]:
    """The observers of *app* that watch runs now (see :func:`watches_runs`): ``()`` most often, at one look-up."""
    found = observers(app)
    if not found:
        return found
    return tuple(observer for observer in found if watches_runs(observer))


def run_counters(app: Any) -> Sequence[RunCounter]:
    """The observers of *app* with a ``handler_ran`` method (:class:`RunCounter`): ``()`` most often, at one look-up.

    Found as :func:`add_observer` adds them, not at each run: ``hasattr`` on an
    observer without the method raises and catches an ``AttributeError``.
    """
    extensions = getattr(app, "extensions", None)
    if not extensions:
        return ()
    found: Sequence[RunCounter] = extensions.get(_COUNTERS_KEY, ())
    return found


def handler_ran(
    counters: Sequence[RunCounter], receiver: str, event: Event, handler: str, ok: bool, seconds: float
) -> None:
    """Tell *counters* (:func:`run_counters`) that a handler ran; one that fails is logged, the run goes on."""
    for counter in counters:
        try:
            counter.handler_ran(receiver, event, handler, ok, seconds)
        except Exception:
            logger.exception("an observer of deliveries failed; the delivery goes on")


def flush(app: Any) -> None:
    """Have *app*'s observers with a ``flush()`` method write what they keep (never raises).

    Called at the end of each Celery task: a prefork pool's child may end with
    ``os._exit``, which runs no exit handler.
    """
    for observer in observers(app):
        write = getattr(observer, "flush", None)
        if write is None:
            continue
        try:
            write()
        except Exception:
            logger.exception("an observer of deliveries failed; the delivery goes on")


def add_observer(app: Any, observer: Observer) -> None:
    """Let *observer* hear of *app*'s deliveries and handler runs.

    :param app: the Flask app.
    :param observer: the observer.
    """
    found = app.extensions.setdefault(OBSERVERS_KEY, [])
    found.append(observer)
    app.extensions[_COUNTERS_KEY] = tuple(each for each in found if hasattr(each, "handler_ran"))


def observers(app: Any) -> Sequence[Observer]:
    """The observers of *app* (the sender of signals), in the order they were added."""
    extensions = getattr(app, "extensions", None)
    if not extensions:
        return ()
    found: Sequence[Observer] = extensions.get(OBSERVERS_KEY, ())
    return found


def answered(
    app: Any,
    receiver: str,
    status: str,
    code: int,
    event: Event | None,
    trigger: str | None,
    started: float,
    *,
    transport: str = "webhook",
) -> None:
    """Tell *app*'s observers that a delivery was answered.

    :param receiver: the receiver's name.
    :param status: the status word of the answer (``processed``, ``unauthorized``, ...).
    :param code: the HTTP status code.
    :param event: the event, when the body was one.
    :param trigger: the trigger header as sent (untrusted), or ``None``.
    :param started: when the delivery came in, by :func:`time.perf_counter`.
    :param transport: ``"webhook"``, or the queue transport a consumer took the message from.
    """
    found = observers(app)
    if not found:
        return
    seconds = time.perf_counter() - started
    for observer in found:
        try:  # not a context manager: this runs for every delivery
            if transport == "webhook":  # the call an observer written before the queue consumers takes
                observer.answered(receiver, status, code, event, trigger, seconds)
            else:
                observer.answered(receiver, status, code, event, trigger, seconds, transport=transport)
        except Exception:
            logger.exception("an observer of deliveries failed; the delivery goes on")


def running(
    app: Any, receiver: str, event: Event, claim: Any, *, watchers: Sequence[Observer] | None = None
) -> ContextManager[Any]:
    """A context manager around one run of *event*'s handlers under *claim*, for *app*'s observers.

    :param watchers: :func:`run_watchers` of *app*, when the caller has them already.
    """
    found = run_watchers(app) if watchers is None else watchers
    if not found:
        return _NOTHING
    return _Around(found, "running", (receiver, event, claim))


def observed_handlers(
    app: Any, receiver: str, handlers: list[Handler], *, watchers: Sequence[Observer] | None = None
) -> list[Handler]:
    """*handlers*, each calling *app*'s observers around itself (the same list when none watches runs).

    :param watchers: :func:`run_watchers` of *app*, when the caller has them already.
    """
    found = run_watchers(app) if watchers is None else watchers
    if not found or not handlers:
        return handlers
    watching = tuple(found)
    cache: dict[int, tuple[Handler, str, tuple[Observer, ...], Handler]] = app.extensions.setdefault(_WRAPPED_KEY, {})
    wrapped = []
    for handler in handlers:
        entry = cache.get(id(handler))
        if entry is None or entry[0] is not handler or entry[1] != receiver or entry[2] != watching:
            if len(cache) >= 4096:  # handlers of trigger signals may come and go
                cache.clear()
            entry = cache[id(handler)] = (handler, receiver, watching, _observed(handler, receiver, watching))
        wrapped.append(entry[3])
    return wrapped


def before_accept(app: Any, event: Event) -> Event:
    """The event a background dispatcher of *app* stores, as its observers make it."""
    for observer in observers(app):
        try:
            event = observer.before_accept(event)
        except Exception:
            logger.exception("an observer of deliveries failed; the delivery goes on")
    return event


@dataclasses.dataclass(frozen=True)
class _ObservedHandler(Handler):
    """A handler whose calls its observers see."""

    receiver: str = ""
    watchers: Sequence[Observer] = ()

    def __call__(self, sender: Any, event: Event) -> Any:
        with _Around(self.watchers, "handler", (self.receiver, event, self.name)):
            return super().__call__(sender, event)


def _observed(handler: Handler, receiver: str, watchers: Sequence[Observer]) -> Handler:
    fields = {field.name: getattr(handler, field.name) for field in dataclasses.fields(Handler) if field.init}
    return _ObservedHandler(**fields, receiver=receiver, watchers=watchers)


class _Around:
    """Enters ``observer.<method>(*args)`` of each observer, and leaves them in reverse order.

    An observer that fails to make, enter or leave its context manager is
    logged and left out; the body's own exception passes through every one
    of them unchanged (an observer cannot swallow a handler's failure).
    """

    __slots__ = ("watchers", "method", "args", "entered")

    def __init__(self, watchers: Sequence[Observer], method: str, args: tuple[Any, ...]) -> None:
        self.watchers = watchers
        self.method = method
        self.args = args
        self.entered: list[ContextManager[Any]] = []

    def __enter__(self) -> None:
        for observer in self.watchers:
            try:
                manager = getattr(observer, self.method)(*self.args)
                manager.__enter__()
            except Exception:
                logger.exception("an observer of deliveries failed; the delivery goes on")
                continue
            self.entered.append(manager)

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        for manager in reversed(self.entered):
            try:
                manager.__exit__(kind, exc, tb)
            except Exception:
                logger.exception("an observer of deliveries failed; the delivery goes on")
