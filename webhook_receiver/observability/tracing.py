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
from typing import Any, Iterator

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


class _RunState:
    """What the handlers of one run did, for the run's span."""

    __slots__ = ("error_type",)

    def __init__(self) -> None:
        self.error_type: str | None = None


_RUN: contextvars.ContextVar[_RunState | None] = contextvars.ContextVar("webhook_receiver_run", default=None)


class TracingObserver:
    """Makes the spans of one app's runs (an :class:`~webhook_receiver.instrumentation.Observer`).

    :param tracer: an OpenTelemetry tracer.
    """

    def __init__(self, tracer: Any) -> None:
        from opentelemetry import propagate, trace
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.tracer = tracer
        self._trace = trace
        self._propagate = propagate
        self._kinds = SpanKind
        self._error = Status(StatusCode.ERROR)
        self._status_cls = Status
        self._error_code = StatusCode.ERROR

    def answered(
        self, receiver: str, status: str, code: int, event: Event | None, trigger: str | None, seconds: float
    ) -> None:
        """Nothing: the request's own span, if the app has one, tells the answer."""

    def before_accept(self, event: Event) -> Event:
        """*event* with the context of an ``accept`` span in its body, when spans are recorded."""
        span = self.tracer.start_span(
            f"accept {event.trigger}",
            kind=self._kinds.PRODUCER,
            attributes={
                "messaging.message.id": event.id,
                "messaging.operation.type": "send",
                "webhook_receiver.trigger": event.trigger,
                "webhook_receiver.delivery.attempt": event.attempt,
            },
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

    @contextlib.contextmanager
    def running(self, receiver: str, event: Event, claim: Any) -> Iterator[None]:
        """The ``process <trigger>`` span around one run, a child of the stored context when there is one."""
        carrier = event.raw.get(TRACE_KEY) if isinstance(event.raw, dict) else None
        parent = self._propagate.extract(carrier) if isinstance(carrier, dict) else None
        attributes: dict[str, Any] = {
            "messaging.message.id": event.id,
            "messaging.operation.type": "process",
            "messaging.destination.name": receiver,
            "webhook_receiver.trigger": event.trigger,
            "webhook_receiver.attempt": int(getattr(claim, "attempt", 0) or 0),
            "webhook_receiver.delivery.attempt": event.attempt,
        }
        source = getattr(event, "cloudevent", None)  # queue transports: the CloudEvent's own id and type
        if source is not None:
            attributes["cloudevents.event_id"] = str(getattr(source, "id", event.id))
            attributes["cloudevents.event_type"] = str(getattr(source, "type", event.trigger))
        state = _RunState()
        token = _RUN.set(state)
        try:
            with self.tracer.start_as_current_span(
                f"process {event.trigger}", context=parent, kind=self._kinds.CONSUMER, attributes=attributes
            ) as span:
                try:
                    yield
                finally:
                    if getattr(claim, "lost", False):
                        status = "lost"
                    elif state.error_type is not None:
                        status = "failed"
                        span.set_attribute("error.type", state.error_type)
                        span.set_status(self._status_cls(self._error_code, "a handler failed"))
                    else:
                        status = "processed"
                    span.set_attribute("webhook_receiver.status", status)
        finally:
            _RUN.reset(token)

    @contextlib.contextmanager
    def handler(self, receiver: str, event: Event, handler: str) -> Iterator[None]:
        """The span of one handler call; an exception is recorded on it and passed on."""
        with self.tracer.start_as_current_span(
            f"handler {handler}",
            attributes={"webhook_receiver.handler": handler, "messaging.message.id": event.id},
            record_exception=False,
            set_status_on_exception=False,
        ) as span:
            try:
                yield
            except Exception as exc:
                kind = f"{type(exc).__module__}.{type(exc).__qualname__}"
                span.record_exception(exc)
                span.set_attribute("error.type", kind)
                span.set_status(self._status_cls(self._error_code, type(exc).__name__))
                state = _RUN.get()
                if state is not None and state.error_type is None:
                    state.error_type = kind
                raise


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
        return TracingObserver(setting.get_tracer("webhook_receiver", __about__.__version__))
    raise RuntimeError(
        "WEBHOOK_RECEIVER_TRACING is None (on when opentelemetry-api is installed), True, False or a"
        f" TracerProvider, not {type(setting).__name__}"
    )
