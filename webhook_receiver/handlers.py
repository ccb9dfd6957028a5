"""The registry of event handlers: which functions run for which trigger, in which order.

Each handler has a name, stable across processes and restarts, under which its
outcome is recorded: a redelivery skips the handlers that already succeeded for
that event. The name defaults to ``module.qualname`` of the function.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Protocol, Sequence

from blinker import Signal

from .catalogue import matches
from .events import Event

__all__ = ["Handler", "HandlerRegistry", "HandlerSource", "callable_name"]

#: A handler registered with :meth:`WebhookReceiver.on`: called as ``fn(event)``.
EventHandler = Callable[[Event], Any]


def callable_name(fn: Callable[..., Any]) -> str:
    """A stable, readable name for a callable: ``module.qualname``.

    :param fn: a function, method or callable object.
    """
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or type(fn).__qualname__
    return f"{module}.{qualname}"


@dataclass(frozen=True)
class Handler:
    """One function that runs for an event.

    :param name: the name its outcome is recorded under.
    :param fn: the function.
    :param patterns: the event names or patterns it was registered for.
    :param via_signal: ``True`` for a receiver connected to a trigger signal,
        called as ``fn(sender, event=event)``; ``False`` for a handler from
        :meth:`WebhookReceiver.on`, called as ``fn(event)``.
    :param latest_only: skip an event whose resource is older than one this
        handler already handled (see :attr:`Event.updated_at`).
    :param transactional: its writes to the store's database commit in one
        transaction with its outcome (a store with ``transactional`` set).
    """

    name: str
    fn: Callable[..., Any]
    patterns: tuple[str, ...] = ()
    via_signal: bool = False
    latest_only: bool = False
    transactional: bool = False

    def __call__(self, sender: Any, event: Event) -> Any:
        """Run the handler for *event*; *sender* is the Flask app."""
        if self.via_signal:
            return self.fn(sender, event=event)
        return self.fn(event)


class HandlerSource(Protocol):
    """All that delivery and dispatch know of a receiver: its name and the handlers of a trigger.

    :class:`~webhook_receiver.WebhookReceiver` is one; the layers below it take
    this interface, so that they never import the receiver back.
    """

    @property
    def name(self) -> str:
        """The receiver's name (it names Celery tasks and Redis keys)."""

    def handlers_for(self, trigger: str, app: Any = None) -> list[Handler]:
        """Every handler that runs for *trigger*, in order, with *app*'s signal receivers."""


class HandlerRegistry:
    """The handlers of one receiver, in registration order."""

    def __init__(self) -> None:
        self._handlers: list[Handler] = []
        self._by_trigger: dict[str, tuple[Handler, ...]] = {}
        self._lock = threading.Lock()

    def __iter__(self) -> Iterator[Handler]:
        return iter(tuple(self._handlers))

    def __len__(self) -> int:
        return len(self._handlers)

    def add(
        self,
        fn: EventHandler,
        patterns: Sequence[str],
        *,
        name: str | None = None,
        latest_only: bool = False,
        transactional: bool = False,
    ) -> Handler:
        """Register *fn* for *patterns*.

        :param fn: called as ``fn(event)``.
        :param patterns: exact names or wildcards, at least one, already
            checked with :func:`~webhook_receiver.catalogue.check_pattern`.
        :param name: the name to record outcomes under; ``module.qualname``
            of *fn* when not given.
        :param latest_only: see :attr:`Handler.latest_only`.
        :param transactional: see :attr:`Handler.transactional`.
        :raises TypeError: if *fn* is not callable.
        :raises ValueError: if no pattern is given or another handler already
            has this name.
        """
        if not callable(fn):
            raise TypeError(f"a handler must be callable, not {type(fn).__name__}")
        _check_signature(fn)
        if not patterns:
            raise ValueError("give at least one event name, such as 'order.paid', or '*'")
        handler = Handler(
            name=name or callable_name(fn),
            fn=fn,
            patterns=tuple(dict.fromkeys(patterns)),
            latest_only=latest_only,
            transactional=transactional,
        )
        with self._lock:
            if any(h.name == handler.name for h in self._handlers):
                raise ValueError(
                    f"a handler named {handler.name!r} is already registered; pass name='...' to tell the two apart"
                )
            self._handlers.append(handler)
            self._by_trigger = {}
        return handler

    def for_trigger(self, trigger: str) -> tuple[Handler, ...]:
        """The handlers registered for *trigger*, in registration order.

        :param trigger: an exact event name.
        """
        found = self._by_trigger.get(trigger)
        if found is None:
            found = tuple(h for h in self._handlers if any(matches(p, trigger) for p in h.patterns))
            if len(self._by_trigger) < 4096:
                self._by_trigger[trigger] = found
        return found


def _check_signature(fn: Callable[..., Any]) -> None:
    """Refuse, at registration, a handler that cannot be called with the event.

    Otherwise it would fail on every delivery, and upstream would retry it
    for days.

    :raises TypeError: naming the function.
    """
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C callables do not say: let them be
        return
    try:
        signature.bind(object())
    except TypeError:
        raise TypeError(
            f"handler {callable_name(fn)}{signature} cannot be called with the event: a handler takes one"
            " positional argument, as in `def ship(event): ...`"
        ) from None


def signal_handlers(signal: Signal, sender: Any, taken: Sequence[Handler]) -> list[Handler]:
    """The receivers of a trigger *signal* for *sender*, as handlers.

    Names already *taken* (or repeated among the receivers) get a ``#2``,
    ``#3``, .. suffix, so that each outcome has a name of its own.

    :param signal: the trigger's signal.
    :param sender: the Flask app.
    :param taken: the handlers that run before these.
    """
    if not signal.receivers:
        return []
    names = {h.name for h in taken}
    found: list[Handler] = []
    for fn in signal.receivers_for(sender):
        base = name = callable_name(fn)
        count = 1
        while name in names:
            count += 1
            name = f"{base}#{count}"
        names.add(name)
        found.append(Handler(name=name, fn=fn, via_signal=True))
    return found
