"""OpenTelemetry spans, caught by the SDK's in-memory exporter: inline and thread dispatch."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.observability.tracing import TRACE_KEY
from webhook_receiver.testing import deliver, make_event

from .conftest import SECRET, new_app
from .processes import wait_for

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402
from opentelemetry.trace import SpanKind, StatusCode  # noqa: E402


def traced(**config: Any) -> tuple[Any, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = sdk_trace.TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_TRACING=provider, **config)
    return app, exporter


def named(exporter: InMemorySpanExporter, name: str) -> list[Any]:
    return [span for span in exporter.get_finished_spans() if span.name == name]


def register(receiver: WebhookReceiver) -> None:
    @receiver.on("order.paid", name="ship")
    def ship(event: Event) -> None:
        if event.id.startswith("fail-"):
            raise LookupError("no such warehouse")

    @receiver.on("order.paid", name="audit")
    def audit(event: Event) -> None:
        pass


def test_inline_a_process_span_with_a_child_per_handler(receiver: WebhookReceiver) -> None:
    register(receiver)
    app, exporter = traced()
    receiver.init_app(app)
    client = app.test_client()
    assert deliver(client, make_event("order.paid", event_id="ok-1"), secret=SECRET).status_code == 200

    (process,) = named(exporter, "process order.paid")
    assert process.kind is SpanKind.CONSUMER
    assert process.attributes["messaging.message.id"] == "ok-1"
    assert process.attributes["messaging.operation.type"] == "process"
    assert process.attributes["webhook_receiver.attempt"] == 1
    assert process.attributes["webhook_receiver.status"] == "processed"
    assert "error.type" not in process.attributes
    handlers = [named(exporter, "handler ship")[0], named(exporter, "handler audit")[0]]
    for span in handlers:
        assert span.parent is not None and span.parent.span_id == process.context.span_id
        assert span.context.trace_id == process.context.trace_id
    assert not named(exporter, "accept order.paid")  # inline: nothing is queued

    exporter.clear()
    assert deliver(client, make_event("order.paid", event_id="fail-1"), secret=SECRET).status_code == 500
    (process,) = named(exporter, "process order.paid")
    assert process.attributes["webhook_receiver.status"] == "failed"
    assert process.attributes["error.type"] == "builtins.LookupError"
    assert process.status.status_code is StatusCode.ERROR
    (ship,) = named(exporter, "handler ship")
    assert ship.attributes["error.type"] == "builtins.LookupError"
    assert ship.status.status_code is StatusCode.ERROR
    assert [event.name for event in ship.events] == ["exception"]
    (audit,) = named(exporter, "handler audit")  # the next handler still ran, and its span is fine
    assert audit.status.status_code is StatusCode.UNSET

    exporter.clear()  # upstream's retry: only ship runs again, as run 2 of the event
    assert deliver(client, make_event("order.paid", event_id="fail-1", attempt=2), secret=SECRET).status_code == 500
    (process,) = named(exporter, "process order.paid")
    assert process.attributes["webhook_receiver.attempt"] == 2
    assert process.attributes["webhook_receiver.delivery.attempt"] == 2
    assert [span.name for span in exporter.get_finished_spans() if span.name.startswith("handler")] == ["handler ship"]


def test_a_queue_event_s_span_carries_its_cloudevent_id_and_type(receiver: WebhookReceiver) -> None:
    from webhook_receiver import instrumentation
    from webhook_receiver.local.emulator.queues import cloudevent
    from webhook_receiver.stores.base import Claim, ClaimState

    register(receiver)
    app, exporter = traced()
    receiver.init_app(app)
    message = cloudevent(make_event("order.paid", event_id="ce-1"), integration_id="i-1", store_id="s-1")
    for event in (Event.from_cloudevent(message, transport="stomp"), Event.from_dict(make_event("order.paid"))):
        exporter.clear()
        with instrumentation.running(app, receiver.name, event, Claim(event.id, ClaimState.CLAIMED, "t", attempt=1)):
            pass
        (process,) = named(exporter, "process order.paid")
        assert process.attributes["messaging.message.id"] == event.id
        if event.transport == "webhook":
            assert "cloudevents.event_id" not in process.attributes, "a webhook's body is no CloudEvent"
        else:
            assert process.attributes["cloudevents.event_id"] == "ce-1"
            assert process.attributes["cloudevents.event_type"] == "order.paid"


def test_inline_the_run_is_a_child_of_the_request_span(receiver: WebhookReceiver) -> None:
    register(receiver)
    app, exporter = traced()
    receiver.init_app(app)
    tracer = app.extensions["webhook_receiver.observers"][0].tracer
    with tracer.start_as_current_span("POST /webhooks/moltin") as request_span:
        assert deliver(app.test_client(), make_event("order.paid"), secret=SECRET).status_code == 200
    (process,) = named(exporter, "process order.paid")
    assert process.parent is not None and process.parent.span_id == request_span.get_span_context().span_id


def test_thread_dispatch_continues_the_trace_of_the_request(receiver: WebhookReceiver) -> None:
    register(receiver)
    done = threading.Event()
    receiver.on("order.paid", name="last")(lambda event: done.set())
    app, exporter = traced(WEBHOOK_RECEIVER_DISPATCH="thread", WEBHOOK_RECEIVER_THREADS=1)
    receiver.init_app(app)
    tracer = app.extensions["webhook_receiver.observers"][0].tracer
    try:
        with tracer.start_as_current_span("POST /webhooks/moltin") as request_span:
            answer = deliver(app.test_client(), make_event("order.paid", event_id="bg-1"), secret=SECRET)
        assert answer.status_code == 202
        assert done.wait(10)
        wait_for(lambda: named(exporter, "process order.paid"), 10, "the run's span")
    finally:
        receiver.get_config(app).dispatcher.close()

    trace_id = request_span.get_span_context().trace_id
    (accept,) = named(exporter, "accept order.paid")
    assert accept.kind is SpanKind.PRODUCER
    assert accept.parent is not None and accept.parent.span_id == request_span.get_span_context().span_id
    (process,) = named(exporter, "process order.paid")
    assert process.kind is SpanKind.CONSUMER
    assert process.context.trace_id == trace_id  # one trace: the request, the wait in the queue, the handlers
    assert process.parent is not None and process.parent.span_id == accept.context.span_id
    assert process.start_time >= accept.end_time
    assert process.attributes["webhook_receiver.status"] == "processed"
    for name in ("handler ship", "handler audit", "handler last"):
        (span,) = named(exporter, name)
        assert span.parent is not None and span.parent.span_id == process.context.span_id

    stored = receiver.get_store(app).get("bg-1")
    assert stored is not None and set(stored.raw[TRACE_KEY]) == {"traceparent"}  # W3C, nothing else


def test_without_a_recording_provider_nothing_is_stored(receiver: WebhookReceiver) -> None:
    from opentelemetry.trace import NoOpTracerProvider

    register(receiver)
    app = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_TRACING=NoOpTracerProvider(),
        WEBHOOK_RECEIVER_DISPATCH="thread",
    )
    receiver.init_app(app)
    try:
        assert (
            deliver(app.test_client(), make_event("order.paid", event_id="plain-1"), secret=SECRET).status_code == 202
        )
        stored = receiver.get_store(app).get("plain-1")
        assert stored is not None and TRACE_KEY not in stored.raw
    finally:
        receiver.get_config(app).dispatcher.close()


def test_tracing_off_adds_no_observer(receiver: WebhookReceiver) -> None:
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_TRACING=False)
    receiver.init_app(app)
    assert not app.extensions.get("webhook_receiver.observers")
    with pytest.raises(RuntimeError, match="WEBHOOK_RECEIVER_TRACING"):
        WebhookReceiver().init_app(new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET, WEBHOOK_RECEIVER_TRACING="yes"))
