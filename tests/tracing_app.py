"""An app for the tracing tests that run real processes: every span ends as a JSON line in ``WHR_SPANS``.

``WHR_INSTANCE`` instance folder; ``WHR_DISPATCH`` ``thread`` or ``celery``;
``WHR_LEASE`` lease seconds; ``WHR_BROKER`` / ``WHR_QUEUE`` for Celery;
``WHR_STORE`` the store URL (the SQLite file of the instance folder by
default); ``WHR_HANG`` a file: the first run of each event writes its pid
there and hangs (for the test to SIGKILL it), later runs return.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any, Sequence

from flask import Flask
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult

from webhook_receiver import Event, WebhookReceiver

SECRET = "tracing-app-secret-0c4d92"

receiver = WebhookReceiver(secret_key=SECRET)


def _append(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


class FileExporter(SpanExporter):
    """Appends each finished span to a file, one JSON object a line, in one write."""

    def __init__(self, path: str) -> None:
        self.path = path

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        lines = []
        for span in spans:
            context = span.context
            assert context is not None
            lines.append(
                json.dumps(
                    {
                        "name": span.name,
                        "kind": span.kind.name,
                        "trace_id": f"{context.trace_id:032x}",
                        "span_id": f"{context.span_id:016x}",
                        "parent_id": f"{span.parent.span_id:016x}" if span.parent else None,
                        "attributes": dict(span.attributes or {}),
                        "status": span.status.status_code.name,
                        "pid": os.getpid(),
                    }
                )
                + "\n"
            )
        _append(self.path, "".join(lines))
        return SpanExportResult.SUCCESS


def read_spans(path: str) -> list[dict[str, Any]]:
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        text = fh.read()
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]  # not a line still being written


@receiver.on("order.paid", name="ship")
def ship(event: Event) -> None:
    hang = os.environ.get("WHR_HANG")
    if hang and not os.path.exists(hang):
        _append(hang, str(os.getpid()))
        time.sleep(120)


def create_app() -> Flask:
    app = Flask(__name__, instance_path=os.environ["WHR_INSTANCE"])
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(FileExporter(os.environ["WHR_SPANS"])))
    app.config.update(
        WEBHOOK_RECEIVER_STORE=os.environ.get("WHR_STORE") or None,
        WEBHOOK_RECEIVER_REDIS_PREFIX=os.environ.get("WHR_PREFIX", "whr-tracing"),
        WEBHOOK_RECEIVER_DISPATCH=os.environ.get("WHR_DISPATCH", "thread"),
        WEBHOOK_RECEIVER_LEASE_SECONDS=float(os.environ.get("WHR_LEASE", "60")),
        WEBHOOK_RECEIVER_TRACING=provider,
        WEBHOOK_RECEIVER_THREADS=1,
    )
    celery = None
    if app.config["WEBHOOK_RECEIVER_DISPATCH"] == "celery":
        from celery import Celery

        celery = Celery(app.name, broker=os.environ["WHR_BROKER"])
        celery.conf.update(
            task_default_queue=os.environ["WHR_QUEUE"],
            broker_connection_retry_on_startup=True,
            worker_hijack_root_logger=False,
        )
        app.extensions["celery"] = celery
    receiver.init_app(app, celery=celery)
    return app


app = create_app() if "WHR_INSTANCE" in os.environ else None
celery = app.extensions.get("celery") if app is not None else None
