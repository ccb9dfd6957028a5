"""The WSGI apps the benchmarks load (gunicorn imports them by name).

``receiver_app``: the webhook receiver with one trivial handler. ``bare_app``:
a plain Flask endpoint that only parses the same JSON body and answers in the
same shape: the floor any receiver is measured against.

The receiver is configured from the environment, so that one benchmark run
can compare stores and dispatch modes: ``BENCH_STORE`` (``memory://`` by
default), ``BENCH_DISPATCH`` (``inline``), ``BENCH_INSTANCE`` (the instance
folder), ``BENCH_PREFIX`` (Redis keys), ``BENCH_EFFECTS`` (a file the handler
appends each event id to), ``BENCH_SLEEP`` (seconds the handler sleeps),
``BENCH_BROKER`` and ``BENCH_QUEUE`` (Celery).
"""
from __future__ import annotations

import os
import tempfile
import time
from typing import Any

from flask import Flask, request

from webhook_receiver import Event, WebhookReceiver

SECRET = "bench-secret-2f8e1c9a7b6d5e4f"

receiver = WebhookReceiver()
_EFFECTS = os.environ.get("BENCH_EFFECTS")
_SLEEP = float(os.environ.get("BENCH_SLEEP", "0"))


@receiver.on("order.paid")
def handle(event: Event) -> None:
    """A trivial handler: reads the resource id; optionally sleeps and records the effect."""
    _ = event.data["id"] if isinstance(event.data, dict) else None
    if _SLEEP:
        time.sleep(_SLEEP)
    if _EFFECTS:
        fd = os.open(_EFFECTS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (event.id + "\n").encode())
        finally:
            os.close(fd)


receiver_app = Flask("bench_receiver", instance_path=os.environ.get("BENCH_INSTANCE") or tempfile.mkdtemp())
receiver_app.config.update(
    WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
    WEBHOOK_RECEIVER_STORE=os.environ.get("BENCH_STORE", "memory://") or None,
    WEBHOOK_RECEIVER_REDIS_PREFIX=os.environ.get("BENCH_PREFIX", "whr-bench"),
    WEBHOOK_RECEIVER_DISPATCH=os.environ.get("BENCH_DISPATCH", "inline"),
    WEBHOOK_RECEIVER_THREADS=int(os.environ.get("BENCH_THREADS", "8")),
)
celery: Any = None
if receiver_app.config["WEBHOOK_RECEIVER_DISPATCH"] == "celery":
    from celery import Celery

    celery = Celery("bench", broker=os.environ["BENCH_BROKER"])
    celery.conf.update(task_default_queue=os.environ.get("BENCH_QUEUE", "whr-bench"),
                       broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
receiver.init_app(receiver_app, celery=celery)

bare_app = Flask("bench_bare")


@bare_app.post("/webhooks/moltin")
def bare() -> Any:
    body = request.get_json(force=True)
    return {"id": body["id"], "status": "processed"}
