"""The two WSGI apps the throughput benchmark compares (gunicorn loads them by name).

``receiver_app``: the webhook receiver with the memory store and one trivial
handler. ``bare_app``: a plain Flask endpoint that only parses the same JSON
body and answers in the same shape: the floor any receiver is measured
against.
"""
from __future__ import annotations

from typing import Any

from flask import Flask, request

from webhook_receiver import Event, WebhookReceiver

SECRET = "bench-secret-2f8e1c9a7b6d5e4f"

receiver = WebhookReceiver()


@receiver.on("order.paid")
def handle(event: Event) -> None:
    """A trivial handler: reads the affected resource's id."""
    _ = event.data["id"] if isinstance(event.data, dict) else None


receiver_app = Flask("bench_receiver")
receiver_app.config["WEBHOOK_RECEIVER_SECRET_KEY"] = SECRET
receiver.init_app(receiver_app)

bare_app = Flask("bench_bare")


@bare_app.post("/webhooks/moltin")
def bare() -> Any:
    body = request.get_json(force=True)
    return {"id": body["id"], "status": "processed"}
