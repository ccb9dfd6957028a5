"""An app for tests that run real processes (gunicorn workers, Celery workers).

Everything comes from the environment, so that the web processes and the
workers build the same app:

``WHR_INSTANCE`` instance folder; ``WHR_STORE`` store URL; ``WHR_PREFIX`` Redis
key prefix; ``WHR_DISPATCH`` dispatch mode; ``WHR_LEASE`` lease seconds;
``WHR_BROKER`` Celery broker URL; ``WHR_QUEUE`` Celery queue; ``WHR_OUTPUT``
the file each handler run appends to; ``WHR_SLEEP`` seconds the handler
sleeps; ``WHR_FAIL_ONCE`` makes the handler fail the first run of each event;
``WHR_THREADS`` and ``WHR_MAX_BACKLOG`` set the worker threads and the backlog
limit of thread dispatch, ``WHR_GRACE`` its grace period at shutdown;
``WHR_DEADLINE`` the inline deadline in seconds; ``WHR_WAIT_FOR`` a file the
handler waits for (up to 60 s) after recording its start, so that a test
decides when a run goes on.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from flask import Flask

from webhook_receiver import Event, WebhookReceiver

SECRET = "service-app-secret-91c2"

receiver = WebhookReceiver(secret_key=SECRET)


def _append(line: dict[str, Any]) -> None:
    fd = os.open(os.environ["WHR_OUTPUT"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.write(fd, (json.dumps(line) + "\n").encode())
    finally:
        os.close(fd)


@receiver.on("order.paid", "order.fulfilled", "product.deleted")
def effect(event: Event) -> None:
    """Record a start, maybe sleep or fail, then record the effect."""
    _append({"id": event.id, "phase": "start", "pid": os.getpid()})
    time.sleep(float(os.environ.get("WHR_SLEEP", "0")))
    gate = os.environ.get("WHR_WAIT_FOR")
    waited = time.monotonic()
    while gate and not os.path.exists(gate) and time.monotonic() - waited < 60:
        time.sleep(0.02)
    runs = [line for line in read_output() if line["id"] == event.id and line["phase"] == "start"]
    if os.environ.get("WHR_FAIL_ONCE") and len(runs) == 1:
        raise RuntimeError("failing the first run on purpose")
    _append({"id": event.id, "phase": "done", "pid": os.getpid()})


def read_output(path: str | None = None) -> list[dict[str, Any]]:
    path = path or os.environ["WHR_OUTPUT"]
    if not os.path.exists(path):
        return []
    with open(path) as fh:
        text = fh.read()
    # the last piece is empty, or a line another process is still writing: a reader may see part of an append
    # (a handler that read one failed on it, and its retry started it twice)
    return [json.loads(line) for line in text.split("\n")[:-1] if line.strip()]


def effects(folder: Any, phase: str, event_id: str) -> list[dict[str, Any]]:
    """What the handler wrote to *folder*'s ``effects.jsonl`` (a test's ``WHR_OUTPUT``) for *event_id* at *phase*."""
    return [
        line
        for line in read_output(os.path.join(str(folder), "effects.jsonl"))
        if line["phase"] == phase and line["id"] == event_id
    ]


def create_app() -> Flask:
    app = Flask(__name__, instance_path=os.environ["WHR_INSTANCE"])
    app.config.update(
        WEBHOOK_RECEIVER_STORE=os.environ.get("WHR_STORE") or None,
        WEBHOOK_RECEIVER_REDIS_PREFIX=os.environ.get("WHR_PREFIX", "whr-service"),
        WEBHOOK_RECEIVER_DISPATCH=os.environ.get("WHR_DISPATCH", "inline"),
        WEBHOOK_RECEIVER_LEASE_SECONDS=float(os.environ.get("WHR_LEASE", "60")),
        WEBHOOK_RECEIVER_RETRY_BACKOFF=0.2,
        WEBHOOK_RECEIVER_MAX_ATTEMPTS=3,
        WEBHOOK_RECEIVER_THREADS=int(os.environ.get("WHR_THREADS", "4")),
        WEBHOOK_RECEIVER_MAX_BACKLOG=int(os.environ.get("WHR_MAX_BACKLOG", "10000")),
        WEBHOOK_RECEIVER_GRACE_SECONDS=float(os.environ.get("WHR_GRACE", "10")),
    )
    if os.environ.get("WHR_DEADLINE"):
        app.config["WEBHOOK_RECEIVER_INLINE_DEADLINE"] = os.environ["WHR_DEADLINE"]
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
