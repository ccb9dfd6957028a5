"""A shop on Flask-SQLAlchemy whose handler's effect is a row in its own table, for tests with real processes.

Everything comes from the environment, so that gunicorn workers and Celery
workers build the same app: ``WHR_DB`` the database URL; ``WHR_PREFIX`` the
prefix of every table (the receiver's and the shop's); ``WHR_TRANSACTIONAL``
``1`` for a transactional handler, else one that commits its row itself;
``WHR_DISPATCH``, ``WHR_LEASE``, ``WHR_BROKER`` and ``WHR_QUEUE`` as in
``service_app``; ``WHR_STARTS`` a file each handler run appends the event id to
when it starts; ``WHR_RUNNING`` a file each handler run appends ``<pid> start
<event id>`` to when it starts and ``<pid> end <event id>`` when its body ends
(before its outcome is written), so that a test can tell whose handler is
running; ``WHR_SLEEP`` seconds the handler sleeps after its write (inside
the transaction of a transactional handler); ``WHR_DEADLINE`` the inline
deadline in seconds.

The ``shipments`` table has no unique constraint: a second run of a handler
leaves a second row, which is what the tests count.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

from flask import Flask
from flask_sqlalchemy import SQLAlchemy

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore

SECRET = "shop-app-secret-7d3a9c"
PREFIX = os.environ.get("WHR_PREFIX", "whr_shop_")
TRANSACTIONAL = os.environ.get("WHR_TRANSACTIONAL") == "1"

db = SQLAlchemy()
store = SQLAlchemyStore(db, prefix=PREFIX, lease_seconds=float(os.environ.get("WHR_LEASE", "60")))
receiver = WebhookReceiver(secret_key=SECRET)


class Shipment(db.Model):  # type: ignore[name-defined,misc]
    __tablename__ = f"{PREFIX}shipments"
    id = db.Column(db.Integer, primary_key=True)
    event_id = db.Column(db.String(200), nullable=False)


def _append(variable: str, line: str) -> None:
    """Append *line* to the file named by the environment *variable*, if it is set, in one write."""
    path = os.environ.get(variable)
    if path:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)


def _started(event_id: str) -> None:
    _append("WHR_STARTS", event_id)
    _append("WHR_RUNNING", f"{os.getpid()} start {event_id}")


@receiver.on("order.paid", transactional=TRANSACTIONAL, name="ship")
def ship(event: Event) -> None:
    """Write one row; a transactional handler leaves the commit to the receiver, the other commits itself."""
    _started(event.id)
    db.session.add(Shipment(event_id=event.id))
    if not TRANSACTIONAL:
        db.session.commit()
    time.sleep(random.uniform(0.005, 0.03))  # the window a kill lands in: after the effect, before the outcome
    time.sleep(float(os.environ.get("WHR_SLEEP", "0")))
    _append("WHR_RUNNING", f"{os.getpid()} end {event.id}")


def create_app() -> Flask:
    app = Flask(__name__, instance_path=os.environ.get("WHR_INSTANCE") or None)
    app.config.update(
        SQLALCHEMY_DATABASE_URI=os.environ["WHR_DB"],
        SQLALCHEMY_ENGINE_OPTIONS={"pool_pre_ping": True},
        WEBHOOK_RECEIVER_STORE=store,
        WEBHOOK_RECEIVER_DISPATCH=os.environ.get("WHR_DISPATCH", "inline"),
        WEBHOOK_RECEIVER_RETRY_BACKOFF=0.2,
        WEBHOOK_RECEIVER_MAX_ATTEMPTS=10,
    )
    if os.environ.get("WHR_DEADLINE"):
        app.config["WEBHOOK_RECEIVER_INLINE_DEADLINE"] = os.environ["WHR_DEADLINE"]
    db.init_app(app)
    celery: Any = None
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


def create_tables(app: Flask) -> None:
    """The shop's tables and the receiver's; tried again when a worker thread of the app creates them meanwhile."""
    import sqlalchemy as sa

    with app.app_context():
        db.create_all()
        for attempt in range(5):
            try:
                store.metadata.create_all(db.engine)
                return
            except sa.exc.SQLAlchemyError:  # the store's takeover worker creates them on first use too
                if attempt == 4:
                    raise
                time.sleep(0.2)


app = create_app() if "WHR_DB" in os.environ else None
celery = app.extensions.get("celery") if app is not None else None
