"""The registry of event handlers: which functions run for which trigger, in which order.

Each handler has a name, stable across processes and restarts, under which its
outcome is recorded: a redelivery skips the handlers that already succeeded for
that event. The name defaults to ``module.qualname`` of the function.

An ``async def`` handler runs as Flask runs an async view: through the app's
``async_to_sync`` (asgiref, Flask's ``async`` extra), to its end, while the
dispatching thread waits; its exception is a failure like any other.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass
from typing import Any, Awaitable, Callable, Iterator, Protocol, Sequence

from blinker import Signal

from .catalogue import matches
from .events import Event

__all__ = [
    "ASYNC_EXTRA",
    "Handler",
    "HandlerRegistry",
    "HandlerSource",
    "callable_name",
    "is_async_callable",
    "is_generator_callable",
]

#: What to install for ``async def`` handlers.
ASYNC_EXTRA = 'pip install "webhook_receiver[async]" (Flask\'s "async" extra: asgiref)'

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
    :param is_async: calling *fn* makes a coroutine (``async def``): it is
        run to its end through the app's ``async_to_sync``.
    """

    name: str
    fn: Callable[..., Any]
    patterns: tuple[str, ...] = ()
    via_signal: bool = False
    latest_only: bool = False
    transactional: bool = False
    is_async: bool = False

    def __call__(self, sender: Any, event: Event) -> Any:
        """Run the handler for *event* to its end; *sender* is the Flask app.

        An ``async def`` handler, or a plain one that returns an awaitable
        (a decorator that hid the ``async``), is awaited through the app's
        ``async_to_sync``, so that no coroutine counts as run without
        having run.

        :raises RuntimeError: for a coroutine, when asgiref is not installed.
        :raises TypeError: when the call made a generator (a ``yield`` in the
            handler, or a decorator that hid one): its body did not run.
        """
        fn = _to_sync(sender, self.fn, self.name) if self.is_async else self.fn
        result = fn(sender, event=event) if self.via_signal else fn(event)
        if result is None:  # most handlers: nothing to await or to close
            return None
        if inspect.isgenerator(result) or inspect.isasyncgen(result):  # its body has not run, and will not
            _discard(result)
            raise TypeError(f"handler {self.name} {_GENERATOR}")
        if inspect.isawaitable(result):
            result = _to_sync(sender, _awaited, self.name, result)(result)
        return result


#: Why a generator function is not a handler, for messages.
_GENERATOR = (
    "is a generator function (its body holds a yield): calling it runs none of its body, so the event"
    " would count as handled without being handled; return instead of yielding"
)


def _discard(generator: Any) -> None:
    """Close a generator made by mistake, sync or async, without a warning that it never ran."""
    close = getattr(generator, "aclose", None) or getattr(generator, "close", None)
    closing = close() if callable(close) else None
    if inspect.iscoroutine(closing) or inspect.isawaitable(closing):
        getattr(closing, "close", lambda: None)()


def is_generator_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling *fn* makes a generator, sync or async, rather than running its body.

    True for a generator function or an ``async def`` with a ``yield``, a
    partial of one, and an object whose ``__call__`` is one.
    """
    call = type(fn).__call__
    tests = (inspect.isgeneratorfunction, inspect.isasyncgenfunction)
    return any(test(target) for target in (fn, call) for test in tests)


def is_async_callable(fn: Callable[..., Any]) -> bool:
    """Whether calling *fn* makes a coroutine.

    True for an ``async def`` function or method, a partial of one, and an
    object whose ``__call__`` is one.
    """
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(type(fn).__call__)


def asgiref_installed() -> bool:
    """Whether asgiref, which runs coroutines from sync code, can be imported."""
    try:
        import asgiref.sync  # noqa: F401
    except ImportError:
        return False
    return True


async def _awaited(awaitable: Awaitable[Any]) -> Any:
    return await awaitable


def _to_sync(sender: Any, fn: Callable[..., Any], name: str, pending: Any = None) -> Callable[..., Any]:
    """*fn*, a coroutine function, as a plain function that runs it to its end: the app's ``async_to_sync``.

    :param pending: an awaitable already made, closed when it cannot be run.
    :raises RuntimeError: when asgiref is not installed, naming the extra.
    """
    if not asgiref_installed():
        close = getattr(pending, "close", None)
        if callable(close):  # no "coroutine was never awaited" on top of the error
            close()
        what = "returned an awaitable" if pending is not None else "is a coroutine function (async def)"
        raise RuntimeError(f"handler {name} {what}, which cannot run without asgiref: {ASYNC_EXTRA}")
    app_to_sync = getattr(sender, "async_to_sync", None)  # a Flask app's, which an app may override
    if callable(app_to_sync):
        return app_to_sync(fn)  # type: ignore[no-any-return]
    from asgiref.sync import async_to_sync

    return async_to_sync(fn)


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
        :raises TypeError: if *fn* is not callable, or is a generator function.
        :raises ValueError: if no pattern is given or another handler already
            has this name.
        """
        if not callable(fn):
            raise TypeError(f"a handler must be callable, not {type(fn).__name__}")
        _check_signature(fn)
        if is_generator_callable(fn):
            raise TypeError(f"handler {callable_name(fn)} {_GENERATOR}")
        is_async = is_async_callable(fn)
        if is_async and not asgiref_installed():
            raise TypeError(
                f"handler {callable_name(fn)} is a coroutine function (async def): running it needs asgiref,"
                f" {ASYNC_EXTRA}; or make it a plain def"
            )
        if not patterns:
            raise ValueError("give at least one event name, such as 'order.paid', or '*'")
        handler = Handler(
            name=name or callable_name(fn),
            fn=fn,
            patterns=tuple(dict.fromkeys(patterns)),
            latest_only=latest_only,
            transactional=transactional,
            is_async=is_async,
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
        found.append(Handler(name=name, fn=fn, via_signal=True, is_async=is_async_callable(fn)))
    return found
