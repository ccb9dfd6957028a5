"""How long a scrape of the metrics endpoint takes with many stored events, and the store reads behind it.

Each store is filled with ``--events`` events (default 100,000): most
processed, ``--failed`` failed and ``--pending`` pending and due, through the
store's own interface (``claim`` and ``finish``, ``accept``); on PostgreSQL
and MariaDB, where 200,000 committed writes take minutes, the processed ones
are copies, made in one ``INSERT ... SELECT``, of one the store wrote. Then,
side by side on the same store:

* the scrapes, through the endpoint with Flask's test client and the cache
  interval set to nothing, so that each one finds the kept backlog stale and
  starts a read of the store in the background (a scrape never waits for one
  but the first);
* the store's :meth:`~webhook_receiver.stores.EventStore.backlog_stats`, the
  read behind each scrape (indexed counts);
* the old full read, :meth:`EventStore.backlog_stats
  <webhook_receiver.stores.EventStore.backlog_stats>` of the interface
  itself (``count_due`` and listings by status, which walk every pending and
  failed event), what a store that does not override the method is read
  with, and what every store was read with before.

Run it from the repository root::

    python bench/scrape.py                        # sqlite, redis and postgresql
    python bench/scrape.py --store mariadb --old-reads 1

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
from webhook_receiver.stores.base import EventStore  # noqa: E402
from webhook_receiver.wire import make_event  # noqa: E402

STORES = {
    "sqlite": "",
    "redis": "redis://127.0.0.1:6379/13",
    "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql+pymysql://root@127.0.0.1:3306/test",
}
DEFAULT = ("sqlite", "redis", "postgresql")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=[*STORES, "all"], default="all", help="all: " + ", ".join(DEFAULT))
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--failed", type=int, default=500)
    parser.add_argument("--pending", type=int, default=500)
    parser.add_argument("--scrapes", type=int, default=40)
    parser.add_argument("--reads", type=int, default=40, help="backlog_stats() reads")
    parser.add_argument("--old-reads", type=int, default=3, help="full reads (slow: some 50 s each on Redis)")
    args = parser.parse_args()
    chosen = DEFAULT if args.store == "all" else (args.store,)
    rows = [run(store, args) for store in chosen]
    print()
    print(f"{args.events:,} stored events ({args.failed} failed, {args.pending} pending); milliseconds")
    print(f"{'store':<11} {'scrape p50 / p95':>20} {'backlog_stats p50 / p95':>26} {'old full read p50 / max':>26}")
    for store, scrapes, reads, old in rows:
        pairs = (_p50_p95(scrapes), _p50_p95(reads), (statistics.median(old), max(old)))
        print(f"{store:<11}" + "".join(f"{f'{a:.1f} / {b:.1f}':>{w}}" for (a, b), w in zip(pairs, (21, 27, 27))))
    return 0


def _p50_p95(times: list[float]) -> tuple[float, float]:
    ordered = sorted(times)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def run(store_name: str, args: argparse.Namespace) -> tuple[str, list[float], list[float], list[float]]:
    receiver = WebhookReceiver(name=f"scrape{os.getpid()}")
    receiver.on("order.paid")(lambda event: None)
    app = Flask("scrape", instance_path=tempfile.mkdtemp(prefix="whr-scrape-"))
    app.config.update(
        WEBHOOK_RECEIVER_SECRET_KEY="scrape-secret-" + uuid.uuid4().hex,
        WEBHOOK_RECEIVER_STORE=STORES[store_name] or None,
        WEBHOOK_RECEIVER_REDIS_PREFIX=f"whr-scrape-{os.getpid()}",
        WEBHOOK_RECEIVER_TABLE_PREFIX=f"whr_scrape_{os.getpid()}_",
        WEBHOOK_RECEIVER_METRICS="/metrics",
        WEBHOOK_RECEIVER_METRICS_CACHE_SECONDS=1e-9,
        WEBHOOK_RECEIVER_TRACING=False,
        WEBHOOK_RECEIVER_INLINE_DEADLINE=None,  # no worker in the app: the pending events stay due
    )
    receiver.init_app(app)
    store = receiver.get_store(app)
    try:
        return (store_name, *measure(app, store, store_name, args))
    finally:  # forget every event, pending ones too
        store.prune(time.time() + 1, include_failed=True)
        store.close()
        if store_name == "redis":
            import redis

            client = redis.Redis.from_url(STORES["redis"])
            for key in client.scan_iter(match=app.config["WEBHOOK_RECEIVER_REDIS_PREFIX"] + ":*", count=1000):
                client.delete(key)
        elif store_name in ("postgresql", "mariadb"):
            import sqlalchemy

            engine = sqlalchemy.create_engine(STORES[store_name])
            with engine.begin() as conn:
                for name in ("events", "watermarks"):
                    conn.execute(
                        sqlalchemy.text(f"DROP TABLE IF EXISTS {app.config['WEBHOOK_RECEIVER_TABLE_PREFIX']}{name}")
                    )
            engine.dispose()
        shutil.rmtree(app.instance_path, ignore_errors=True)


def copy_processed(store: EventStore, store_name: str, processed: int) -> None:
    """Events ``scrape-1`` to ``scrape-<processed - 1>``: copies of ``scrape-0``, received a microsecond apart."""
    import sqlalchemy as sa

    table = store._events  # type: ignore[attr-defined]
    names = [c.name for c in table.columns]
    series = (
        f"SELECT generate_series(1, {processed - 1}) AS n"
        if store_name == "postgresql"
        else f"SELECT seq AS n FROM seq_1_to_{processed - 1}"  # MariaDB's sequence engine
    )
    values = ", ".join(
        "CONCAT('scrape-', s.n)"
        if name == "id"
        else "t.received_at + s.n * 1e-6"
        if name == "received_at"
        else f"t.{name}"
        for name in names
    )
    with store.engine.begin() as conn:  # type: ignore[attr-defined]
        conn.execute(
            sa.text(
                f"INSERT INTO {table.name} ({', '.join(names)}) SELECT {values} FROM {table.name} t, ({series}) s"
                " WHERE t.id = 'scrape-0'"
            )
        )
        if store_name == "postgresql":
            conn.execute(sa.text(f"ANALYZE {table.name}"))


def measure(
    app: Flask, store: EventStore, store_name: str, args: argparse.Namespace
) -> tuple[list[float], list[float], list[float]]:
    body = make_event("order.paid", form="payload")
    started = time.perf_counter()
    processed = args.events - args.failed - args.pending
    with app.app_context():
        copied = store_name in ("postgresql", "mariadb")
        if copied:
            store.finish(store.claim(Event.from_dict({**body, "id": "scrape-0"})), ok=True)
            copy_processed(store, store_name, processed)
        for n in range(1 if copied else 0, args.events):
            if copied and n < processed:
                continue
            event = Event.from_dict({**body, "id": f"scrape-{n}"})
            if n < processed + args.failed:
                claim = store.claim(event)
                store.finish(claim, ok=n < processed)
            else:
                store.accept(event)
    print(
        f"{store_name}: stored {args.events} events ({processed} processed, {args.failed} failed,"
        f" {args.pending} pending) in {time.perf_counter() - started:.1f} s",
        flush=True,
    )
    client = app.test_client()
    t = time.perf_counter()
    answer = client.get("/metrics")
    first = (time.perf_counter() - t) * 1000
    scrapes = []
    for _ in range(args.scrapes):
        time.sleep(0.05)
        t = time.perf_counter()
        answer = client.get("/metrics")
        scrapes.append((time.perf_counter() - t) * 1000)
        assert answer.status_code == 200
    time.sleep(0.5)  # the last background read done
    found = [
        line
        for line in client.get("/metrics").get_data(as_text=True).splitlines()
        if line.startswith("webhook_receiver_") and ("_events{" in line or "_seconds{" in line)
    ]
    print("\n".join(found) or "no backlog gauges yet")
    reads = []
    for _ in range(args.reads):
        t = time.perf_counter()
        stats = store.backlog_stats()
        reads.append((time.perf_counter() - t) * 1000)
    old = []
    for _ in range(args.old_reads):
        t = time.perf_counter()
        full = EventStore.backlog_stats(store)
        old.append((time.perf_counter() - t) * 1000)
    assert (stats.due, stats.failed) == (full.due, full.failed) == (args.pending, args.failed), (stats, full)
    print(
        f"{store_name}: first scrape (no gauges yet: it starts the first read) {first:.1f} ms; scrapes p50/p95"
        f" {_p50_p95(scrapes)[0]:.1f}/{_p50_p95(scrapes)[1]:.1f} ms; backlog_stats p50/p95"
        f" {_p50_p95(reads)[0]:.1f}/{_p50_p95(reads)[1]:.1f} ms; the old full read median"
        f" {statistics.median(old):.0f} ms",
        flush=True,
    )
    return scrapes, reads, old


if __name__ == "__main__":
    sys.exit(main())
