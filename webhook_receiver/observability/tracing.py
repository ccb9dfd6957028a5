"""OpenTelemetry spans of event runs and handlers (extra ``[otel]``: ``opentelemetry-api`` only).

Each run of an event's handlers is a span ``process <trigger>`` (kind
``CONSUMER``), each handler a child span ``handler <name>``; spans a handler
makes itself are children of that. Inline, the run's parent is whatever span
is current in the request (the app's own HTTP instrumentation, if any). A
background dispatcher first makes a short span ``accept <trigger>`` (kind
``PRODUCER``) in the request and keeps its context with the stored event, in
the body under :data:`TRACE_KEY` (W3C ``traceparent`` / ``tracestate``): the
run, on whichever worker and however late, is its child, so that one trace
shows the request, the time in the queue and the handlers.

The app brings the SDK and an exporter; with none configured, the API's
spans record nothing and the context is not stored.
"""

from __future__ import annotations

import contextlib
import contextvars
import dataclasses
import os
from typing import Any

from .. import __about__
from ..events import Event

__all__ = ["TRACE_KEY", "TracingObserver", "tracing_observer"]

#: The key of the stored body holding the trace context of the request that accepted the event.
TRACE_KEY = "_webhook_receiver_trace"


def _otel() -> Any:
    try:
        from opentelemetry import trace
    except ImportError:
        raise RuntimeError(
            "WEBHOOK_RECEIVER_TRACING needs opentelemetry-api: pip install 'webhook_receiver[otel]'"
        ) from None
    return trace


def available() -> bool:
    """Whether ``opentelemetry-api`` can be imported."""
    try:
        import opentelemetry.trace  # noqa: F401
    except ImportError:
        return False
    return True


#: The run whose handlers are running in this context: a failing handler tells it its error type.
_RUN: contextvars.ContextVar[_RunSpan | None] = contextvars.ContextVar("webhook_receiver_run", default=None)


class TracingObserver:
    """Makes the spans of one app's runs (an :class:`~webhook_receiver.instrumentation.Observer`).

    :param tracer: an OpenTelemetry tracer.
    :param provider: the provider it came from, when the app named one;
        ``None`` for the global provider, looked at for each run (it may be
        set after ``init_app``).
    """

    def __init__(self, tracer: Any, provider: Any = None) -> None:
        from opentelemetry import context, propagate, trace
        from opentelemetry.trace import ProxyTracerProvider, SpanKind, Status, StatusCode

        self.tracer = tracer
        self._trace = trace
        self._context = context
        self._propagate = propagate
        self._kinds = SpanKind
        self._proxy = ProxyTracerProvider
        self._status_cls = Status
        self._error_code = StatusCode.ERROR
        self._fixed: bool | None = None if provider is None else not _is_noop(provider)
        #: Whether the environment names a provider for the API to load (at its first ``get_tracer_provider``).
        self._named = _PROVIDER_VARIABLE in os.environ

    def live(self) -> bool:
        """Whether spans are recorded: a provider is set (the SDK's), not the API's default.

        Asked twice a run. Until a provider is set, ``get_tracer_provider()``
        looks the environment variable up at each call (about 10k
        instructions); the API's global is read instead while it is unset and
        the variable was not set when the observer was made (the API reads it
        at its first use, as here).
        """
        if self._fixed is not None:
            return self._fixed
        if getattr(self._trace, "_TRACER_PROVIDER", _UNKNOWN) is None and not self._named:
            return False  # what get_tracer_provider() answers then: the API's proxy
        return not isinstance(self._trace.get_tracer_provider(), self._proxy)

    def watching(self) -> bool:
        """Whether runs and handlers get spans now (:meth:`live`): when not, the core skips this observer."""
        return self.live()

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
        """Nothing: the request's own span, if the app has one, tells the answer."""

    def before_accept(self, event: Event) -> Event:
        """*event* with the context of an ``accept`` span in its body, when spans are recorded."""
        if not self.live():
            return event
        span = self.tracer.start_span(
            f"accept {event.trigger}",
            kind=self._kinds.PRODUCER,
            attributes={"messaging.message.id": event.id, "messaging.operation.type": "send"},
        )
        try:
            if not span.is_recording():
                return event
            carrier: dict[str, str] = {}
            self._propagate.inject(carrier, context=self._trace.set_span_in_context(span))
            if not carrier:
                return event
            return dataclasses.replace(event, raw={**event.raw, TRACE_KEY: carrier})
        finally:
            span.end()

    def running(self, receiver: str, event: Event, claim: Any) -> Any:
        """The ``process <trigger>`` span around one run, a child of the stored context when there is one."""
        return _RunSpan(self, event, claim) if self.live() else _NOTHING

    def handler(self, receiver: str, event: Event, handler: str) -> Any:
        """The span of one handler call; an exception is recorded on it and passed on."""
        return _HandlerSpan(self, handler) if self.live() else _NOTHING


_NOTHING = contextlib.nullcontext()

#: The variable naming a provider for the OpenTelemetry API to load, and a stand-in for its global not being found.
_PROVIDER_VARIABLE = "OTEL_PYTHON_TRACER_PROVIDER"
_UNKNOWN = object()


def _is_noop(provider: Any) -> bool:
    from opentelemetry.trace import NoOpTracerProvider

    return isinstance(provider, NoOpTracerProvider)


class _RunSpan:
    """The span of one run, current while the handlers run.

    Its attributes go in the ``start_span`` call, ``webhook_receiver.status``
    too (``processed``): only a run that fails or loses its lease sets
    attributes again, so that the SDK checks and copies them once.
    """

    __slots__ = ("observer", "event", "claim", "span", "token", "run_token", "error_type")

    def __init__(self, observer: TracingObserver, event: Event, claim: Any) -> None:
        self.observer = observer
        self.event = event
        self.claim = claim
        #: The error type of the first handler that failed, told by its span.
        self.error_type: str | None = None

    def __enter__(self) -> None:
        observer, event = self.observer, self.event
        raw = event.raw
        carrier = raw.get(TRACE_KEY) if isinstance(raw, dict) else None  # stored by a background dispatcher
        parent = observer._propagate.extract(carrier) if isinstance(carrier, dict) else None
        attributes: dict[str, Any] = {  # the trigger is in the span's name
            "messaging.message.id": event.id,
            "messaging.operation.type": "process",
            "webhook_receiver.attempt": int(getattr(self.claim, "attempt", 0) or 0),
            "webhook_receiver.status": "processed",  # set again at the end, when it is not
        }
        if event.attempt != 1:
            attributes["webhook_receiver.delivery.attempt"] = event.attempt
        if event.transport != "webhook":  # a queue's CloudEvent: its id and type are the event's
            attributes["cloudevents.event_id"] = event.id
            attributes["cloudevents.event_type"] = event.trigger
        self.span = span = observer.tracer.start_span(
            f"process {event.trigger}", context=parent, kind=observer._kinds.CONSUMER, attributes=attributes
        )
        self.token = observer._context.attach(observer._trace.set_span_in_context(span))
        self.run_token = _RUN.set(self)

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        _RUN.reset(self.run_token)
        observer, span = self.observer, self.span
        try:
            if getattr(self.claim, "lost", False):
                span.set_attribute("webhook_receiver.status", "lost")
            elif kind is not None or self.error_type is not None:
                error = self.error_type or f"{kind.__module__}.{kind.__qualname__}"
                span.set_attributes({"error.type": error, "webhook_receiver.status": "failed"})
                span.set_status(observer._status_cls(observer._error_code, "a handler failed"))
        finally:
            observer._context.detach(self.token)
            span.end()


class _HandlerSpan:
    """The span of one handler call, current while it runs."""

    __slots__ = ("observer", "name", "span", "token")

    def __init__(self, observer: TracingObserver, name: str) -> None:
        self.observer = observer
        self.name = name

    def __enter__(self) -> None:
        observer = self.observer
        self.span = observer.tracer.start_span(
            f"handler {self.name}", attributes={"webhook_receiver.handler": self.name}
        )
        self.token = observer._context.attach(observer._trace.set_span_in_context(self.span))

    def __exit__(self, kind: Any, exc: Any, tb: Any) -> None:
        observer, span = self.observer, self.span
        try:
            if exc is not None and isinstance(exc, Exception):
                error = f"{type(exc).__module__}.{type(exc).__qualname__}"
                span.record_exception(exc)
                span.set_attribute("error.type", error)
                span.set_status(observer._status_cls(observer._error_code, type(exc).__name__))
                run = _RUN.get()
                if run is not None and run.error_type is None:
                    run.error_type = error
        finally:
            observer._context.detach(self.token)
            span.end()


def tracing_observer(setting: Any) -> TracingObserver | None:
    """The observer ``WEBHOOK_RECEIVER_TRACING`` (*setting*) asks for, or ``None``.

    ``None`` (the default): on when ``opentelemetry-api`` is installed;
    ``True``: on, and an error without it; ``False``: off; a
    ``TracerProvider``: on, with that provider rather than the global one.

    :raises RuntimeError: if tracing is asked for and the API is missing, or
        *setting* is of another kind.
    """
    if setting is False:
        return None
    if setting is None:
        if not available():
            return None
        setting = True
    if setting is True:
        return TracingObserver(_otel().get_tracer("webhook_receiver", __about__.__version__))
    if callable(getattr(setting, "get_tracer", None)):
        _otel()
        return TracingObserver(setting.get_tracer("webhook_receiver", __about__.__version__), setting)
    raise RuntimeError(
        "WEBHOOK_RECEIVER_TRACING is None (on when opentelemetry-api is installed), True, False or a"
        f" TracerProvider, not {type(setting).__name__}"
    )
