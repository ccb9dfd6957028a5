"""An app for the metrics and health tests that run gunicorn: outcomes known from the event id.

``WHR_INSTANCE`` instance folder (its SQLite store is shared by the workers);
``WHR_DISPATCH`` dispatch mode; ``WHR_GATE`` a file the handler waits for
before it returns (a backlog that grows until the test creates it).

Handlers on ``order.paid``: ``ship`` fails for ids starting with ``fail-``;
``audit`` always succeeds. ``product.created`` has no handler (ignored).
"""

from __future__ import annotations

import os
import time

from flask import Flask

from webhook_receiver import Event, WebhookReceiver

SECRET = "metrics-app-secret-5b7e21"

receiver = WebhookReceiver(secret_key=SECRET)


@receiver.on("order.paid", name="ship")
def ship(event: Event) -> None:
    gate = os.environ.get("WHR_GATE")
    while gate and not os.path.exists(gate):
        time.sleep(0.02)
    if event.id.startswith("fail-"):
        raise RuntimeError("failing on purpose")


@receiver.on("order.paid", name="audit")
def audit(event: Event) -> None:
    """Always succeeds."""


def create_app() -> Flask:
    app = Flask(__name__, instance_path=os.environ["WHR_INSTANCE"])
    app.config.update(
        WEBHOOK_RECEIVER_DISPATCH=os.environ.get("WHR_DISPATCH", "inline"),
        WEBHOOK_RECEIVER_METRICS="/webhooks/metrics",
        WEBHOOK_RECEIVER_METRICS_CACHE_SECONDS=0.2,
        WEBHOOK_RECEIVER_HEALTH_URL="/webhooks/health",
        WEBHOOK_RECEIVER_THREADS=2,
        WEBHOOK_RECEIVER_RETRY_BACKOFF=0.1,
    )
    receiver.init_app(app)
    return app


app = create_app()
