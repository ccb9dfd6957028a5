"""The demo: the sample app on a real port, sample deliveries, and what the handlers did.

Run it with ``python -m sample_app``; ``--exit`` stops after the deliveries
instead of serving on.
"""
from __future__ import annotations

import argparse
import logging
import os
import secrets
import sys
import threading
from typing import Any, Sequence

from werkzeug.serving import make_server

from webhook_receiver.testing import deliver, make_event, sample_resource

from .activity import read_activity
from .app import create_app
from .handlers import receiver


def _deliveries(order_id: str) -> list[tuple[str, dict[str, Any], str | None]]:
    """(what it shows, body, secret override) for each sample delivery."""
    order, _ = sample_resource("order.paid", order_id)
    paid = make_event("order.paid", order)
    fulfilled_order = dict(order, shipping="fulfilled")
    return [
        ("a new paid order", paid, None),
        ("the same order fulfilled", make_event("order.fulfilled", fulfilled_order), None),
        ("a product deleted", make_event("product.deleted"), None),
        ("upstream retries the paid order", dict(paid, attempt=2), None),
        ("an event with no handler", make_event("brand.created"), None),
        ("a forged delivery (wrong secret)", make_event("order.paid"), "not-the-secret"),
    ]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return the exit status."""
    parser = argparse.ArgumentParser(prog="python -m sample_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="0 picks a free port (default: 5000)")
    parser.add_argument("--exit", action="store_true", help="stop after the sample deliveries")
    parser.add_argument("--instance-path", help="where the app keeps its files (default: ./instance)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.WARNING, format="      log: %(message)s", stream=sys.stdout)
    logging.getLogger("webhook_receiver").setLevel(logging.INFO)
    logging.getLogger("werkzeug").setLevel(logging.ERROR)

    secret = secrets.token_urlsafe(32)
    app = create_app({"WEBHOOK_RECEIVER_SECRET_KEY": secret}, instance_path=args.instance_path)
    secret_file = os.path.join(app.instance_path, "demo-secret")
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)

    try:
        server = make_server(args.host, args.port, app, threaded=True)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); try --port 0", file=sys.stderr)
        return 1
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://{args.host}:{server.server_port}/webhooks/moltin"
    activity_file = app.config["SAMPLE_ACTIVITY_FILE"]
    seen = len(read_activity(activity_file))

    print(f"Sample shop listening on {url}")
    print(f"Handlers: {', '.join(h.name.rpartition('.')[2] for h in receiver.handlers)}\n")
    ok = True
    for label, body, wrong_secret in _deliveries(secrets.token_hex(4)):
        response = deliver(url, body, secret=wrong_secret or secret)
        answer = response.json()
        print(f"-> {body['triggered_by']:<16} attempt {body['attempt']}  ({label})")
        print(f"   <- {response.status_code} {answer.get('status') or answer.get('error')}")
        for entry in read_activity(activity_file)[seen:]:
            details = ", ".join(f"{k}={v}" for k, v in sorted(entry.items()) if k not in ("at", "action", "event"))
            print(f"      handler: {entry['action']} ({details})")
            seen += 1
        ok = ok and (response.status_code < 500)

    print(f"\nActivity log: {activity_file}\nOutbox: {app.config['SAMPLE_OUTBOX']}")
    if args.exit:
        server.shutdown()
        return 0 if ok else 1
    print(
        "\nStill serving; send your own deliveries, for example:\n"
        f"  curl -i {url} -H 'X-MOLTIN-INTEGRATION-TRIGGER: product.deleted' \\\n"
        f"       -H \"X-MOLTIN-SECRET-KEY: $(cat {secret_file})\" \\\n"
        "       -d '{\"id\": \"my-event-1\", \"triggered_by\": \"product.deleted\","
        " \"resources\": {\"id\": \"p-1\", \"type\": \"product\"}}'\n"
        "Press Ctrl-C to stop."
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("\nbye")
    finally:
        server.shutdown()
    return 0

