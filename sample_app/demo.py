"""The demo: the sample shop and a local Moltin, offline, wired together for real.

1. starts the Moltin emulator and the sample app on real ports of 127.0.0.1;
2. syncs the app's webhook integration into the emulator (``sync_integration``,
   what ``flask webhooks sync`` does);
3. fires ``order.paid``, ``order.fulfilled`` (whose mail server fails the first
   attempt, so the emulator retries) and ``product.deleted``, redelivers the
   paid order, and sends a forged delivery;
4. shows each delivery attempt and what the handlers did; then keeps serving
   so that you can fire more.

Run it with ``python -m sample_app``; ``--exit`` stops after step 4.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import secrets
import sys
import threading
from typing import Any, Sequence

from werkzeug.serving import make_server

from webhook_receiver.local.emulator import Emulator, Fired
from webhook_receiver.testing import deliver, make_event, sample_resource
from webhook_receiver.upstream.client import MoltinClient
from webhook_receiver.upstream.sync import sync_integration

from .activity import read_activity
from .app import create_app
from .handlers import receiver


class _Brief(logging.Formatter):
    """One line per record: the demo shows what failed, not the traceback."""

    def format(self, record: logging.LogRecord) -> str:
        record = logging.makeLogRecord({**record.__dict__, "exc_info": None, "exc_text": None})
        return super().format(record)


class _Activity:
    """Prints the handlers' actions recorded since the last call."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.seen = len(read_activity(path))

    def show(self) -> None:
        entries = read_activity(self.path)
        for entry in entries[self.seen :]:
            details = ", ".join(f"{k}={v}" for k, v in sorted(entry.items()) if k not in ("at", "action", "event"))
            print(f"      handler: {entry['action']} ({details})")
        self.seen = len(entries)


def _announce(trigger: str, label: str) -> None:
    """The event's header, printed before it is fired, so that the log lines it causes follow it."""
    print(f"-> {trigger:<16} ({label})", flush=True)


def _show_fired(moltin: Emulator, fired: Fired) -> None:
    for log in moltin.logs():
        if moltin.delivered(log)[1] == fired.event_id and log["relationships"]["job"]["data"]["id"] in fired.jobs:
            answer = log["status_code"] if log["status_code"] is not None else log["error_detail"]
            print(f"   attempt {log['attempt']}  <- {answer} {_status(log['body'])}")


def _status(body: str) -> str:
    """The ``status`` (or ``error``) of a receiver's JSON answer."""
    try:
        answer = json.loads(body)
    except ValueError:
        return ""
    return str(answer.get("status") or answer.get("error") or "") if isinstance(answer, dict) else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the demo; return the exit status."""
    parser = argparse.ArgumentParser(
        prog="python -m sample_app", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="the shop's port; 0 picks a free one (default: 5000)")
    parser.add_argument("--moltin-port", type=int, default=0, help="the emulator's port (default: a free one)")
    parser.add_argument("--exit", action="store_true", help="stop after the sample deliveries")
    parser.add_argument("--instance-path", help="where the app keeps its files (default: ./instance)")
    args = parser.parse_args(argv)

    brief = logging.StreamHandler(sys.stdout)
    brief.setFormatter(_Brief("      log: %(message)s"))
    logging.basicConfig(level=logging.WARNING, handlers=[brief])
    logging.getLogger("webhook_receiver").setLevel(logging.INFO)
    for quiet in ("werkzeug", "webhook_receiver.emulator"):
        logging.getLogger(quiet).setLevel(logging.ERROR)

    secret = secrets.token_urlsafe(32)
    app = create_app(
        {"WEBHOOK_RECEIVER_SECRET_KEY": secret, "SAMPLE_FLAKY_MAIL": True}, instance_path=args.instance_path
    )
    secret_file = os.path.join(app.instance_path, "demo-secret")
    fd = os.open(secret_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(secret)

    try:
        server = make_server(args.host, args.port, app, threaded=True)
    except OSError as exc:
        print(f"cannot listen on {args.host}:{args.port} ({exc.strerror}); try --port 0", file=sys.stderr)
        return 1
    threading.Thread(target=lambda: server.serve_forever(poll_interval=0.1), daemon=True).start()
    url = f"http://{args.host}:{server.server_port}/webhooks/moltin"
    moltin = Emulator(port=args.moltin_port, retry_delays=(1.0, 2.0, 4.0)).start()
    try:
        return _run(args, app, url, moltin, secret, secret_file)
    finally:
        moltin.stop()
        server.shutdown()


def _run(args: Any, app: Any, url: str, moltin: Emulator, secret: str, secret_file: str) -> int:
    activity = _Activity(app.config["SAMPLE_ACTIVITY_FILE"])
    print(f"Sample shop:    {url}")
    print(f"Local Moltin:   {moltin.url}  (client id {moltin.client_id!r})")
    print(f"Handlers:       {', '.join(h.name.rpartition('.')[2] for h in receiver.handlers)}\n")

    client = MoltinClient(moltin.client_id, moltin.client_secret, base_url=moltin.url)
    with app.app_context():
        print(sync_integration(client, receiver, url, secret_key=secret), "\n")

    order, _ = sample_resource("order.paid", secrets.token_hex(4))
    steps = [
        ("a new paid order", "order.paid", order, None),
        (
            "the same order shipped; the mail server fails once",
            "order.fulfilled",
            dict(order, shipping="fulfilled"),
            None,
        ),
        ("a product deleted", "product.deleted", None, None),
    ]
    fired_paid: Fired | None = None
    for label, trigger, data, _ in steps:
        _announce(trigger, label)
        fired = moltin.fire(trigger, data)
        fired_paid = fired_paid or fired
        moltin.wait_idle(30)
        _show_fired(moltin, fired)
        activity.show()

    assert fired_paid is not None
    _announce("order.paid", "upstream delivers the paid order again")
    again = moltin.fire("order.paid", order, event_id=fired_paid.event_id)
    moltin.wait_idle(30)
    _show_fired(moltin, again)
    activity.show()

    _announce("order.paid", "a forged delivery, wrong secret")
    forged = deliver(url, make_event("order.paid"), secret="not-the-secret")
    print(f"   <- {forged.status_code} {forged.json()['error']}")
    activity.show()

    print(f"\nActivity log: {app.config['SAMPLE_ACTIVITY_FILE']}\nOutbox:       {app.config['SAMPLE_OUTBOX']}")
    if args.exit:
        return 0
    print(
        "\nStill serving. Fire more events through the local Moltin, for example:\n"
        f'  curl -X POST {moltin.url}/emulator/fire -d \'{{"trigger": "product.deleted"}}\'\n'
        f"or send a sample event straight to the shop (the secret is in {secret_file}):\n"
        f"  WEBHOOK_RECEIVER_SECRET_KEY=$(cat {secret_file}) webhook-receiver send product.deleted --to {url}\n"
        "Press Ctrl-C to stop."
    )
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        print("\nbye")
    return 0
