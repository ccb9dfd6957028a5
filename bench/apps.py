"""The WSGI apps the benchmarks load (gunicorn imports them by name).

``receiver_app``: the webhook receiver with one trivial handler. ``bare_app``:
a plain Flask endpoint that only parses the same JSON body and answers in the
same shape: the floor of any receiver. ``floor_sqlite_app``,
``floor_redis_app`` and ``floor_postgresql_app``: the floor of a *durable*
exactly-once receiver, a plain Flask endpoint doing only what any such
receiver must (parse; claim the id with the body in one write; run the
handler; mark it processed in a second write), with SQLite (WAL,
``synchronous=NORMAL``, ``INSERT .. ON CONFLICT DO NOTHING`` then ``UPDATE``,
each its own transaction), Redis (``SET NX`` with the body, then ``SET`` the
status, sent straight to a connection held per thread and read by its parser
alone, as the receiver's store sends its claim and finish) or PostgreSQL (the
same two statements as SQLite, each its own transaction in autocommit, over
psycopg 3 and a ``psycopg_pool`` pool). They check no secret and keep no outcome.

The receiver is configured from the environment, so that one benchmark run
can compare stores and dispatch modes: ``BENCH_STORE`` (``memory://`` by
default), ``BENCH_DISPATCH`` (``inline``), ``BENCH_INSTANCE`` (the instance
folder), ``BENCH_PREFIX`` (Redis keys), ``BENCH_EFFECTS`` (a file the handler
appends each event id to), ``BENCH_SLEEP`` (seconds the handler sleeps),
``BENCH_BROKER`` and ``BENCH_QUEUE`` (Celery), ``BENCH_THREADS``,
``BENCH_MAX_BACKLOG`` and ``BENCH_LEASE`` (thread dispatch and leases),
``BENCH_TABLE_PREFIX`` and ``BENCH_PG_DSN`` (PostgreSQL tables and the floor's
server), ``BENCH_DEADLINE`` (the inline deadline; ``none`` turns it off),
``BENCH_METRICS`` (the metrics endpoint's path: metrics on) and
``BENCH_TRACING`` (``off``, or ``noop``: spans made and dropped by the SDK).

``BENCH_FLOOR_HANDOFF`` (seconds) gives the durable floors the least a
receiver that answers before upstream gives up must add, as the receiver's
inline deadline does: the handler runs in a thread of the floor's own
(:class:`FloorRunner`) while the request waits for it that many seconds at
most, then answers 202 (and leaves the event unfinished: the benchmarks'
handlers never take that long). Set it to the receiver's deadline to see what
the receiver costs beyond that hand-off; unset, the floors run the handler in
the request's thread, as the receiver does with ``BENCH_DEADLINE=none``.
"""

from __future__ import annotations

import os
import queue
import sqlite3
import tempfile
import threading
import time
from typing import Any, Callable

from flask import Flask, request

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.stores.redis import _pack, _read

SECRET = "bench-secret-2f8e1c9a7b6d5e4f"

receiver = WebhookReceiver()
_EFFECTS = os.environ.get("BENCH_EFFECTS")
_SLEEP = float(os.environ.get("BENCH_SLEEP", "0"))


@receiver.on("order.paid")
def handle(event: Event) -> None:
    """A trivial handler: reads the resource id; optionally sleeps and records the effect."""
    _ = event.data["id"] if isinstance(event.data, dict) else None
    if _SLEEP:
        time.sleep(_SLEEP)
    if _EFFECTS:
        fd = os.open(_EFFECTS, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        try:
            os.write(fd, (event.id + "\n").encode())
        finally:
            os.close(fd)


def _tracing(setting: str) -> Any:
    """``BENCH_TRACING``: ``off``, ``noop`` (the OpenTelemetry SDK, batching to an exporter that drops
    every span), or empty for the library's default."""
    if setting == "off":
        return False
    if setting == "noop":
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

        class Drop(SpanExporter):
            def export(self, spans: Any) -> SpanExportResult:
                return SpanExportResult.SUCCESS

        provider = TracerProvider()
        provider.add_span_processor(BatchSpanProcessor(Drop()))
        return provider
    return None


receiver_app = Flask("bench_receiver", instance_path=os.environ.get("BENCH_INSTANCE") or tempfile.mkdtemp())
receiver_app.config.update(
    WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
    WEBHOOK_RECEIVER_STORE=os.environ.get("BENCH_STORE", "memory://") or None,
    WEBHOOK_RECEIVER_REDIS_PREFIX=os.environ.get("BENCH_PREFIX", "whr-bench"),
    WEBHOOK_RECEIVER_DISPATCH=os.environ.get("BENCH_DISPATCH", "inline"),
    WEBHOOK_RECEIVER_THREADS=int(os.environ.get("BENCH_THREADS", "8")),
    WEBHOOK_RECEIVER_MAX_BACKLOG=int(os.environ.get("BENCH_MAX_BACKLOG", "10000")),
    WEBHOOK_RECEIVER_LEASE_SECONDS=float(os.environ.get("BENCH_LEASE", "60")),
    WEBHOOK_RECEIVER_TABLE_PREFIX=os.environ.get("BENCH_TABLE_PREFIX", "whr_bench_"),
    WEBHOOK_RECEIVER_METRICS=os.environ.get("BENCH_METRICS") or None,
    WEBHOOK_RECEIVER_TRACING=_tracing(os.environ.get("BENCH_TRACING", "")),
)
if os.environ.get("BENCH_DEADLINE"):
    receiver_app.config["WEBHOOK_RECEIVER_INLINE_DEADLINE"] = os.environ["BENCH_DEADLINE"]
celery: Any = None
if receiver_app.config["WEBHOOK_RECEIVER_DISPATCH"] == "celery":
    from celery import Celery

    celery = Celery("bench", broker=os.environ["BENCH_BROKER"])
    celery.conf.update(
        task_default_queue=os.environ.get("BENCH_QUEUE", "whr-bench"),
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
    )
receiver.init_app(receiver_app, celery=celery)

bare_app = Flask("bench_bare")


@bare_app.post("/webhooks/moltin")
def bare() -> Any:
    body = request.get_json(force=True)
    return {"id": body["id"], "status": "processed"}


floor_sqlite_app = Flask("bench_floor_sqlite", instance_path=os.environ.get("BENCH_INSTANCE") or tempfile.mkdtemp())
_floor_local = threading.local()


def _floor_db() -> sqlite3.Connection:
    conn: sqlite3.Connection | None = getattr(_floor_local, "conn", None)
    if conn is None:
        os.makedirs(floor_sqlite_app.instance_path, exist_ok=True)
        conn = sqlite3.connect(
            os.path.join(floor_sqlite_app.instance_path, "floor.sqlite3"), timeout=5, isolation_level=None
        )
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute(
            "CREATE TABLE IF NOT EXISTS events (id TEXT PRIMARY KEY, body TEXT NOT NULL, status TEXT NOT NULL)"
        )
        _floor_local.conn = conn
    return conn


@floor_sqlite_app.post("/webhooks/moltin")
def floor_sqlite() -> Any:
    raw = request.get_data()
    body = request.get_json(force=True)
    conn = _floor_db()
    claimed = conn.execute(
        "INSERT INTO events (id, body, status) VALUES (?, ?, 'processing') ON CONFLICT (id) DO NOTHING",
        (body["id"], raw),
    ).rowcount
    if not claimed:
        return {"id": body["id"], "status": "duplicate"}
    if not run_floor_handler(body):
        return {"id": body["id"], "status": "accepted"}, 202
    conn.execute("UPDATE events SET status = 'processed' WHERE id = ?", (body["id"],))
    return {"id": body["id"], "status": "processed"}


floor_redis_app = Flask("bench_floor_redis")
_floor_redis_local = threading.local()


def _floor_redis() -> Any:
    """This thread's Redis connection: commands go straight to it, past redis-py's pool and retry layers.

    The same path the receiver's store takes for its claim and finish (its
    ``_pack`` and ``_read``: one buffer per command, each reply read by the
    connection's parser alone), so that the ratio compares the writes, not two
    ways of reaching Redis.
    """
    conn = getattr(_floor_redis_local, "conn", None)
    if conn is None or getattr(_floor_redis_local, "pid", None) != os.getpid():
        import redis

        pool = redis.Redis.from_url(os.environ.get("BENCH_STORE") or "redis://127.0.0.1:6379/13").connection_pool
        conn = _floor_redis_local.conn = pool.connection_class(**pool.connection_kwargs)
        _floor_redis_local.pid = os.getpid()
    return conn


@floor_redis_app.post("/webhooks/moltin")
def floor_redis() -> Any:
    conn = _floor_redis()
    prefix = os.environ.get("BENCH_PREFIX", "whr-bench") + "-floor"
    raw = request.get_data()
    body = request.get_json(force=True)
    conn.send_packed_command([_pack(b"SET", f"{prefix}:event:{body['id']}", raw, b"NX")], check_health=False)
    if _read(conn) is None:
        return {"id": body["id"], "status": "duplicate"}
    if not run_floor_handler(body):
        return {"id": body["id"], "status": "accepted"}, 202
    conn.send_packed_command([_pack(b"SET", f"{prefix}:status:{body['id']}", b"processed")], check_health=False)
    _read(conn)
    return {"id": body["id"], "status": "processed"}


floor_postgresql_app = Flask("bench_floor_postgresql")
_floor_pool: Any = None


def _floor_pg() -> Any:
    """A psycopg 3 pool and the floor's table (one pool per worker process)."""
    global _floor_pool
    if _floor_pool is None:
        from psycopg_pool import ConnectionPool

        dsn = os.environ.get("BENCH_PG_DSN", "postgresql://postgres@127.0.0.1:5432/test")
        # Autocommit: each statement is its own transaction without BEGIN and COMMIT round trips, as the receiver
        # does for its one-statement writes.
        _floor_pool = ConnectionPool(dsn, min_size=1, max_size=4, open=True, kwargs={"autocommit": True})
        with _floor_pool.connection() as conn:
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_floor_table()} (id TEXT PRIMARY KEY, body TEXT NOT NULL,"
                " status TEXT NOT NULL)"
            )
    return _floor_pool


def _floor_table() -> str:
    return os.environ.get("BENCH_TABLE_PREFIX", "whr_bench_") + "floor"


@floor_postgresql_app.post("/webhooks/moltin")
def floor_postgresql() -> Any:
    raw = request.get_data(as_text=True)
    body = request.get_json(force=True)
    pool = _floor_pg()
    with pool.connection() as conn:
        claimed = conn.execute(
            f"INSERT INTO {_floor_table()} (id, body, status) VALUES (%s, %s, 'processing')"
            " ON CONFLICT (id) DO NOTHING",
            (body["id"], raw),
        ).rowcount
    if not claimed:
        return {"id": body["id"], "status": "duplicate"}
    if not run_floor_handler(body):
        return {"id": body["id"], "status": "accepted"}, 202
    with pool.connection() as conn:
        conn.execute(f"UPDATE {_floor_table()} SET status = 'processed' WHERE id = %s", (body["id"],))
    return {"id": body["id"], "status": "processed"}


def handle_floor(body: dict[str, Any]) -> None:
    """The same trivial handler as the receiver's."""
    payload = body.get("payload")
    _ = payload["data"]["id"] if isinstance(payload, dict) else None


class FloorRunner:
    """The floors' hand-off (``BENCH_FLOOR_HANDOFF``): one thread of this process runs each job, the request waits.

    The cheapest hand-off in Python: a job into a :class:`queue.SimpleQueue`,
    and a lock the job releases once done, which the request waits on with
    a timeout. One thread is enough for gunicorn's sync workers (one request
    at a time); it starts in the process that first submits (after the fork).
    """

    def __init__(self) -> None:
        self._jobs: queue.SimpleQueue[Callable[[], None]] = queue.SimpleQueue()
        self._pid = 0

    def submit(self, job: Callable[[], None]) -> None:
        """Run *job* in the runner thread."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            self._jobs = queue.SimpleQueue()
            threading.Thread(target=self._loop, args=(self._jobs,), name="bench-floor-runner", daemon=True).start()
        self._jobs.put(job)

    @staticmethod
    def _loop(jobs: queue.SimpleQueue[Callable[[], None]]) -> None:
        while True:
            jobs.get()()

    def run(self, body: dict[str, Any], seconds: float) -> bool:
        """Run the floor's handler on *body* in the runner thread; whether it ended within *seconds*."""
        done = threading.Lock()
        done.acquire()

        def job() -> None:
            try:
                handle_floor(body)
            finally:
                done.release()

        self.submit(job)
        return done.acquire(timeout=seconds)


floor_runner = FloorRunner()
_FLOOR_HANDOFF = float(os.environ.get("BENCH_FLOOR_HANDOFF") or 0) or None


def run_floor_handler(body: dict[str, Any]) -> bool:
    """The floor's handler, in the request's thread or (``BENCH_FLOOR_HANDOFF``) handed off; whether it ended."""
    if _FLOOR_HANDOFF is None:
        handle_floor(body)
        return True
    return floor_runner.run(body, _FLOOR_HANDOFF)
