"""How long a scrape of the metrics endpoint takes with many stored events, and the store read behind it.

The store is filled through its own interface with ``--events`` events
(default 100,000): most processed, ``--failed`` failed and ``--pending``
pending and due. The scrapes go through the endpoint with Flask's test
client, the cache interval set to nothing, so that each one finds the kept
backlog stale and starts a read of the store in the background (a scrape
never waits for one but the first). The store read itself
(:func:`~webhook_receiver.observability.backlog.read_backlog`) is timed
apart. Run it from the repository root::

    python bench/scrape.py --store sqlite
    python bench/scrape.py --store redis
    python bench/scrape.py --store postgresql

Needs ``pip install -e ".[dev]"``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402

from webhook_receiver import Event, WebhookReceiver  # noqa: E402
from webhook_receiver.observability.backlog import read_backlog  # noqa: E402
from webhook_receiver.stores.base import EventStore  # noqa: E402
from webhook_receiver.wire import make_event  # noqa: E402

STORES = {
    "sqlite": "",
    "redis": "redis://127.0.0.1:6379/13",
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=sorted(STORES), default="sqlite")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--failed", type=int, default=500)
    parser.add_argument("--pending", type=int, default=500)
    parser.add_argument("--scrapes", type=int, default=20)
    args = parser.parse_args()

    receiver = WebhookReceiver(name=f"scrape{os.getpid()}")
    receiver.on("order.paid")(lambda event: None)
    app = Flask("scrape", instance_path=tempfile.mkdtemp(prefix="whr-scrape-"))
    app.config.update(
        WEBHOOK_RECEIVER_SECRET_KEY="scrape-secret-" + uuid.uuid4().hex,
        WEBHOOK_RECEIVER_STORE=STORES[args.store] or None,
        WEBHOOK_RECEIVER_REDIS_PREFIX=f"whr-scrape-{os.getpid()}",
        WEBHOOK_RECEIVER_TABLE_PREFIX=f"whr_scrape_{os.getpid()}_",
        WEBHOOK_RECEIVER_METRICS="/metrics",
        WEBHOOK_RECEIVER_METRICS_CACHE_SECONDS=1e-9,
        WEBHOOK_RECEIVER_TRACING=False,
    )
    receiver.init_app(app)
    store = receiver.get_store(app)
    try:
        return measure(app, store, args)
    finally:  # forget every event, pending ones too
        store.prune(time.time() + 1, include_failed=True)
        store.close()
        if args.store == "redis":
            import redis

            client = redis.Redis.from_url(STORES["redis"])
            for key in client.scan_iter(match=app.config["WEBHOOK_RECEIVER_REDIS_PREFIX"] + ":*", count=1000):
                client.delete(key)
        elif args.store == "postgresql":
            import sqlalchemy

            engine = sqlalchemy.create_engine(STORES["postgresql"])
            with engine.begin() as conn:
                for name in ("events", "watermarks"):
                    conn.execute(
                        sqlalchemy.text(f"DROP TABLE IF EXISTS {app.config['WEBHOOK_RECEIVER_TABLE_PREFIX']}{name}")
                    )
            engine.dispose()
        shutil.rmtree(app.instance_path, ignore_errors=True)


def measure(app: Flask, store: EventStore, args: argparse.Namespace) -> int:
    body = make_event("order.paid", form="payload")
    started = time.perf_counter()
    processed = args.events - args.failed - args.pending
    with app.app_context():
        for n in range(args.events):
            event = Event.from_dict({**body, "id": f"scrape-{n}"})
            if n < processed + args.failed:
                claim = store.claim(event)
                store.finish(claim, ok=n < processed)
            else:
                store.accept(event)
    print(
        f"{args.store}: stored {args.events} events ({processed} processed, {args.failed} failed,"
        f" {args.pending} pending) in {time.perf_counter() - started:.1f} s"
    )
    client = app.test_client()
    t = time.perf_counter()
    answer = client.get("/metrics")
    first = (time.perf_counter() - t) * 1000
    times = []
    for _ in range(args.scrapes):
        time.sleep(0.05)
        t = time.perf_counter()
        answer = client.get("/metrics")
        times.append((time.perf_counter() - t) * 1000)
        assert answer.status_code == 200
    reads = []
    for _ in range(5):
        t = time.perf_counter()
        read_backlog(store)
        reads.append((time.perf_counter() - t) * 1000)
    deadline = time.monotonic() + 120
    while True:  # the gauges of the last background read
        text = client.get("/metrics").get_data(as_text=True)
        found = [line for line in text.splitlines() if line.startswith("webhook_receiver_") and "_events{" in line]
        if found or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    print("\n".join(found) or "no backlog gauges yet")
    print(
        f"scrape: first (waits for the store) {first:.1f} ms; then median {statistics.median(times):.1f} ms,"
        f" max {max(times):.1f} ms over {args.scrapes} scrapes; the store read in the background:"
        f" median {statistics.median(reads):.1f} ms"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
