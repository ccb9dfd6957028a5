"""``gunicorn --preload`` with a SQLAlchemy store: the forked workers never share the master's connections.

The app is built (and its store used) in the gunicorn master, which then
forks three workers. 300 events are delivered concurrently, each redelivered
until it answers 200; every handler must run once and no event may stay
``processing``. Without the store's ``after_fork`` the workers share the
master's pooled connections (protocol errors, one worker reading another's
answers, events run twice or left ``processing``).

This module is also the app gunicorn runs (``tests.test_sqlalchemy_preload:app``),
built only when ``WHR_PRELOAD_DB`` is set.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import requests
import sqlalchemy as sa
from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore
from webhook_receiver.testing import deliver, make_event

from .conftest import POSTGRES_URL, drop_tables, require_database
from .processes import Processes, free_port, logs_text, port_open, wait_for

SECRET = "preload-secret-5d1e7f00a2"


def create_app() -> Flask:
    """The app of the gunicorn master: a store on its own engine, used before the fork."""
    store = SQLAlchemyStore(os.environ["WHR_PRELOAD_DB"], prefix=os.environ["WHR_PRELOAD_PREFIX"], lease_seconds=30)
    receiver = WebhookReceiver(secret_key=SECRET)
    output = os.environ["WHR_OUTPUT"]

    @receiver.on("order.paid")
    def effect(event: Event) -> None:
        fd = os.open(output, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (json.dumps({"id": event.id, "pid": os.getpid()}) + "\n").encode())
        finally:
            os.close(fd)
        time.sleep(0.003)

    app = Flask(__name__, instance_path=os.environ["WHR_INSTANCE"])
    app.config.update(WEBHOOK_RECEIVER_STORE=store, WEBHOOK_RECEIVER_DISPATCH="inline")
    receiver.init_app(app)
    # The master uses the store before it forks (a warm-up, a check at start): both of its pools now
    # hold an open connection, which every forked worker would otherwise take as its own.
    warm = store.claim(Event.from_dict(make_event("order.paid", event_id="warm-up")))
    store.finish(warm, ok=True)
    assert store.get("warm-up") is not None
    return app


app = create_app() if "WHR_PRELOAD_DB" in os.environ else None


def test_gunicorn_preload_workers_run_each_event_once(processes: Processes, table_prefix: str, tmp_path: Path) -> None:
    require_database(POSTGRES_URL)
    output = tmp_path / "effects.jsonl"
    processes.env.update(WHR_PRELOAD_DB=POSTGRES_URL, WHR_PRELOAD_PREFIX=table_prefix, WHR_OUTPUT=str(output))
    port = free_port()
    log = tmp_path / "gunicorn.log"
    processes.start(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "-w",
            "3",
            "--threads",
            "2",
            "-b",
            f"127.0.0.1:{port}",
            "--timeout",
            "20",
            "--graceful-timeout",
            "1",
            "tests.test_sqlalchemy_preload:app",
        ],
        log,
    )
    try:
        wait_for(lambda: port_open(port), 30, f"gunicorn on port {port}")
        url = f"http://127.0.0.1:{port}/webhooks/moltin"
        ids = [f"pre-{n:03d}" for n in range(300)]

        def send(event_id: str) -> str:
            body = make_event("order.paid", event_id=event_id)
            status = "never answered"
            for attempt in range(1, 8):
                try:
                    answer = deliver(url, {**body, "attempt": attempt}, secret=SECRET, timeout=10)
                except requests.RequestException as exc:
                    status = type(exc).__name__
                    continue
                status = str(answer.status_code)
                if answer.status_code == 200:
                    return str(answer.json()["status"])
                time.sleep(0.1)
            return status

        with ThreadPoolExecutor(8) as pool:
            answers = Counter(pool.map(send, ids))
    finally:
        processes.stop_all()
    runs = Counter(json.loads(line)["id"] for line in output.read_text().splitlines() if line.strip())
    engine = sa.create_engine(POSTGRES_URL)
    try:
        with engine.connect() as conn:
            statuses = dict(
                conn.execute(sa.text(f"SELECT id, status FROM {table_prefix}events WHERE id LIKE 'pre-%'")).all()
            )
    finally:
        engine.dispose()
        drop_tables(POSTGRES_URL, table_prefix)
    twice = sorted(event_id for event_id, count in runs.items() if count > 1)
    assert set(answers) <= {"processed", "duplicate"}, f"answers: {dict(answers)}\n{logs_text(tmp_path)}"
    assert twice == [], f"{len(twice)} of 300 events ran twice: {twice[:10]}"
    assert sorted(runs) == ids and Counter(statuses.values()) == {"processed": 300}, Counter(statuses.values())
