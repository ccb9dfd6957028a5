"""The inbox page's server time with 100,000 stored events, in SQLite and in PostgreSQL.

For each store: 500 events are delivered through the real endpoint (about
one in seven failed), then copied, through SQL, to ``--events`` rows with
their own ids and received times spread over 30 days (every column copied
as it is, so the rows are what the store writes). Then, through the app's
WSGI callable (Flask's test client: no network, no browser), each page is
asked ``--rounds`` times and timed:

- the list's first page (50 newest events, no filter);
- an event's page (a random one of the 100,000);
- the list filtered by trigger and status (``order.paid``, ``failed``);
- also shown, with no target: the second and the 20th page (keyset pages),
  a trigger wildcard (``order.*``, filtered here), the 24 h and 7 day charts.

Last, delivery throughput (deliveries per second, inline dispatch, one
thread, ``--seconds`` a run) alone and while a page is open: another thread
of the same process polls the list's live rows as the page's script does
(every ``--poll-interval`` seconds, 3 as the page, with ``If-None-Match``:
``304`` while the store's change marker says nothing changed), in
alternated runs, side by side; with the process's CPU time per delivery,
and what the polls cost (their count, how many were ``304``, their mean
server time). ``--pages no`` skips the page timings.

Run it from the repository root (PostgreSQL at 127.0.0.1:5432, database
``test``, or ``BENCH_PG_URL``)::

    python bench/inbox.py
    python bench/inbox.py --events 100000 --rounds 200 --stores sqlite,postgresql
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402

from webhook_receiver import WebhookReceiver  # noqa: E402
from webhook_receiver.stores.base import EventStore  # noqa: E402
from webhook_receiver.testing import deliver, make_event  # noqa: E402

SECRET = "whsec-bench-inbox"
TEMPLATES = 500
TRIGGERS = ["order.paid", "order.created", "order.fulfilled", "product.updated", "customer.created"]
PG_URL = os.environ.get("BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TARGETS = {"list": 100.0, "event": 50.0, "trigger+status": 150.0}


def build_app(store: EventStore) -> Flask:
    receiver = WebhookReceiver()

    @receiver.on("*", name="bench.ship")
    def ship(event: Any) -> None:
        if event.id.endswith("7"):
            raise ConnectionError("warehouse API timed out")

    app = Flask("bench_inbox")
    app.config.update(
        TESTING=True,
        SECRET_KEY="bench",
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=store,
        WEBHOOK_RECEIVER_INBOX_URL="/webhooks/inbox",
        WEBHOOK_RECEIVER_INBOX_AUTH=lambda request: "bench",
    )
    receiver.init_app(app)
    return app


def deliver_templates(app: Flask) -> None:
    client = app.test_client()
    for n in range(TEMPLATES):
        body = make_event(TRIGGERS[n % len(TRIGGERS)], {"type": "order", "id": f"t{n}"}, event_id=f"tpl-{n:05d}")
        deliver(client, body, secret=SECRET)


def copies(rows: list[dict[str, Any]], total: int, now: float) -> list[dict[str, Any]]:
    """*total* rows made of *rows*: ids of their own, received times spread over the last 30 days."""
    step = 30 * 86400 / total
    made = []
    for n in range(total):
        row = dict(rows[n % len(rows)])
        row["id"] = f"bench-{n:07d}-{row['id']}"
        row["received_at"] = now - (total - n) * step
        row["updated_at"] = row["received_at"] + 0.01
        made.append(row)
    return made


def fill_sqlite(directory: str, total: int) -> tuple[EventStore, Callable[[], None]]:
    import sqlite3

    from webhook_receiver.stores.sqlite import SQLiteStore

    path = os.path.join(directory, "events.db")
    store = SQLiteStore(path)
    deliver_templates(build_app(store))
    conn = sqlite3.connect(path)
    conn.row_factory = sqlite3.Row
    rows = [dict(row) for row in conn.execute("SELECT * FROM webhook_receiver_events ORDER BY rowid")]
    conn.execute("DELETE FROM webhook_receiver_events")
    names = list(rows[0])
    made = copies(rows, total, time.time())
    conn.executemany(
        f"INSERT INTO webhook_receiver_events ({', '.join(names)}) VALUES ({', '.join('?' for _ in names)})",
        [tuple(row[name] for name in names) for row in made],
    )
    conn.commit()
    conn.execute("ANALYZE")
    conn.close()
    return store, lambda: None


def fill_postgresql(total: int) -> tuple[EventStore, Callable[[], None]]:
    import sqlalchemy as sa

    from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore

    prefix = f"whr_bench_inbox_{uuid.uuid4().hex[:8]}_"
    store = SQLAlchemyStore(PG_URL, prefix=prefix)
    deliver_templates(build_app(store))
    engine = sa.create_engine(PG_URL)
    table = sa.Table(f"{prefix}events", sa.MetaData(), autoload_with=engine)
    with engine.begin() as conn:
        rows = [dict(row._mapping) for row in conn.execute(sa.select(table).order_by(table.c.received_at))]
        conn.execute(table.delete())
        made = copies(rows, total, time.time())
        for start in range(0, len(made), 10_000):
            conn.execute(table.insert(), made[start : start + 10_000])
    with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
        conn.execute(sa.text(f"ANALYZE {prefix}events"))

    def drop() -> None:
        store.close()
        with engine.begin() as conn:
            for name in sa.inspect(engine).get_table_names():
                if name.startswith(prefix):
                    conn.execute(sa.text(f"DROP TABLE IF EXISTS {name}"))
        engine.dispose()

    return store, drop


def timed(client: Any, urls: Callable[[], str], rounds: int) -> list[float]:
    times = []
    for _ in range(rounds):
        url = urls()
        started = time.perf_counter()
        answer = client.get(url)
        times.append((time.perf_counter() - started) * 1000)
        assert answer.status_code == 200, (url, answer.status_code)
    return times


def p95(times: list[float]) -> float:
    return statistics.quantiles(times, n=20)[-1]


class Run:
    """One throughput run: deliveries per second, CPU ms per delivery, and the polls it saw."""

    def __init__(self, rate: float, cpu_ms: float, polls: list[tuple[int, float, float]]) -> None:
        self.rate, self.cpu_ms, self.polls = rate, cpu_ms, polls  # polls: (status, server ms, poller CPU ms)


def throughput(app: Flask, seconds: float, poll: float | None) -> Run:
    """Deliveries in this thread for *seconds*, while another polls the live rows every *poll* seconds (as the page)."""
    stop = threading.Event()
    polls: list[tuple[int, float, float]] = []

    def poller() -> None:
        client = app.test_client()
        etag = None
        while not stop.is_set():
            started, cpu = time.perf_counter(), time.thread_time()
            answer = client.get("/webhooks/inbox/?fragment=rows", headers={"If-None-Match": etag} if etag else {})
            polls.append(
                (answer.status_code, (time.perf_counter() - started) * 1000, (time.thread_time() - cpu) * 1000)
            )
            etag = answer.headers.get("ETag") or etag
            stop.wait(poll)

    thread = threading.Thread(target=poller, daemon=True)
    if poll is not None:
        thread.start()
    client = app.test_client()
    count = 0
    cpu = time.process_time()
    started = time.perf_counter()
    while time.perf_counter() - started < seconds:
        body = make_event("order.paid", {"type": "order", "id": "x"}, event_id=f"live-{uuid.uuid4().hex}")
        deliver(client, body, secret=SECRET)
        count += 1
    elapsed = time.perf_counter() - started
    cpu = time.process_time() - cpu  # the whole process: the deliveries and the polls
    stop.set()
    if poll is not None:
        thread.join()
    return Run(count / elapsed, cpu * 1000 / count, polls)


def idle_polls(app: Flask, rounds: int) -> tuple[list[float], int]:
    """The live poll's server time with no delivery meanwhile (ms), and how many answered 304."""
    client = app.test_client()
    first = client.get("/webhooks/inbox/?fragment=rows")
    etag = first.headers.get("ETag")
    times, unchanged = [], 0
    for _ in range(rounds):
        started = time.perf_counter()
        answer = client.get("/webhooks/inbox/?fragment=rows", headers={"If-None-Match": etag} if etag else {})
        times.append((time.perf_counter() - started) * 1000)
        unchanged += answer.status_code == 304
    return times, unchanged


def run(
    name: str,
    store: EventStore,
    total: int,
    rounds: int,
    seconds: float,
    throughput_rounds: int,
    poll_interval: float,
    pages: bool,
) -> dict[str, Any]:
    app = build_app(store)
    if pages:
        p95s = time_pages(app, store, name, total, rounds)
    else:
        print(f"\n{name}: {total:,} events")
        p95s = {}
    idle, unchanged = idle_polls(app, rounds)
    print(
        f"  the live poll with no delivery meanwhile: p50 {statistics.median(idle):.2f} ms, p95 {p95(idle):.2f} ms,"
        f" {unchanged} of {rounds} answered 304"
    )
    alone, polled = [], []
    for _ in range(throughput_rounds):  # alternated, so that the machine's other work hits both alike
        alone.append(throughput(app, seconds, None))
        polled.append(throughput(app, seconds, poll_interval))
    every_poll = [p for r in polled for p in r.polls]
    rates = ", ".join(f"{a.rate:.0f}/{p.rate:.0f}" for a, p in zip(alone, polled))
    cpus = ", ".join(f"{a.cpu_ms:.3f}/{p.cpu_ms:.3f}" for a, p in zip(alone, polled))
    print(
        f"  deliveries/s, median of {throughput_rounds} alternated {seconds:g} s rounds:"
        f" {statistics.median(r.rate for r in alone):.0f} alone,"
        f" {statistics.median(r.rate for r in polled):.0f} with the page open (polls every {poll_interval:g} s)"
        f"\n    rounds (deliveries/s alone/page open): {rates}"
        f"\n  process CPU per delivery, median: {statistics.median(r.cpu_ms for r in alone):.3f} ms alone,"
        f" {statistics.median(r.cpu_ms for r in polled):.3f} ms with the page open"
        f"\n    rounds (ms alone/page open): {cpus}"
        f"\n  polls during the runs: {len(every_poll)}, {sum(1 for c, _, _ in every_poll if c == 304)} answered 304,"
        f" mean {statistics.mean(t for _, t, _ in every_poll) if every_poll else 0:.1f} ms server time and"
        f" {statistics.mean(c for _, _, c in every_poll) if every_poll else 0:.1f} ms CPU (the poller's thread) each:"
        f" {(statistics.mean(c for _, _, c in every_poll) if every_poll else 0) / poll_interval / 10:.2f}% of a core"
    )
    return p95s


def time_pages(app: Flask, store: EventStore, name: str, total: int, rounds: int) -> dict[str, float]:
    client = app.test_client()
    ids = [e.id for e in store.events(limit=2000)] + [
        f"bench-{n:07d}-tpl-{n % TEMPLATES:05d}" for n in range(0, total, 97)
    ]
    first = client.get("/webhooks/inbox/").text
    marker = 'id="older" href="'
    second = first[first.index(marker) + len(marker) :].split('"', 1)[0].replace("&amp;", "&")
    deep = first
    for _ in range(19):  # the 20th page: 950 events down
        link = deep[deep.index(marker) + len(marker) :].split('"', 1)[0].replace("&amp;", "&")
        deep = client.get(link).text
    twentieth = link
    timed(client, lambda: "/webhooks/inbox/", 10)  # warm up
    figures = {
        "list": timed(client, lambda: "/webhooks/inbox/", rounds),
        "event": timed(client, lambda: f"/webhooks/inbox/event?id={random.choice(ids)}", rounds),
        "trigger+status": timed(client, lambda: "/webhooks/inbox/?trigger=order.paid&status=failed", rounds),
        "second page": timed(client, lambda: second, rounds),
        "20th page": timed(client, lambda: twentieth, rounds),
        "wildcard order.*": timed(client, lambda: "/webhooks/inbox/?trigger=order.*", rounds),
        "chart 24h": timed(client, lambda: "/webhooks/inbox/chart.svg", max(rounds // 10, 5)),
        "chart 7d": timed(client, lambda: "/webhooks/inbox/chart.svg?range=7d", max(rounds // 10, 5)),
    }
    print(f"\n{name}: {total:,} events, {rounds} rounds (ms)")
    print(f"  {'page':<18} {'p50':>8} {'p95':>8} {'target':>8}")
    for page, times in figures.items():
        target = TARGETS.get(page)
        verdict = "" if target is None else (f"< {target:.0f}" + (" ok" if p95(times) < target else " MISSED"))
        print(f"  {page:<18} {statistics.median(times):8.1f} {p95(times):8.1f} {verdict:>8}")
    return {page: p95(times) for page, times in figures.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=3.0, help="for each throughput run")
    parser.add_argument("--throughput-rounds", type=int, default=5, help="alternated runs with and without polling")
    parser.add_argument("--stores", default="sqlite,postgresql")
    parser.add_argument("--poll-interval", type=float, default=3.0, help="seconds between polls, 3 as the page")
    parser.add_argument("--pages", choices=("yes", "no"), default="yes", help="time the pages too")
    args = parser.parse_args()
    missed = False
    for name in args.stores.split(","):
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(prefix="bench-inbox-") as directory:
            store, cleanup = fill_sqlite(directory, args.events) if name == "sqlite" else fill_postgresql(args.events)
            print(f"{name}: filled in {time.perf_counter() - started:.0f} s")
            try:
                p95s = run(
                    name,
                    store,
                    args.events,
                    args.rounds,
                    args.seconds,
                    args.throughput_rounds,
                    args.poll_interval,
                    args.pages == "yes",
                )
            finally:
                cleanup()
        missed |= any(p95s.get(page, 0.0) >= target for page, target in TARGETS.items())
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
