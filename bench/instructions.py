"""Instructions per delivery under callgrind: the receiver against its floor, a figure noise does not move.

Wall-clock ratios on a shared 2-core machine wobble by 10 % from one run to the
next; the number of instructions a delivery costs does not. Each app runs in a
process of its own under ``valgrind --tool=callgrind`` with collection off;
after ``--warmup`` deliveries (imports, the first connection, caches) each of
the ``--requests`` measured deliveries is made inside a call of
``functools.reduce``, a C function the apps never call, named to callgrind with
``--toggle-collect``, so that exactly the WSGI calls are counted (and the few
hundred instructions of the lambda around each). Callgrind toggles per
thread, so each job handed to a runner thread (the inline deadline's: the
handlers and their app context) runs inside a ``functools.reduce`` call too,
and is counted. Every delivery has a fresh
id, as in ``inprocess.py`` and ``throughput.py``.

For Redis the server's side is shown too, since a design that moves work into
a Lua script is not free: the CPU time the server process spent (``INFO cpu``,
user and system) per delivery while the same app, not under valgrind, made
``--requests`` deliveries. It is taken on a ``redis-server`` of the
benchmark's own, on a free port, with ``hz 1`` (its housekeeping barely
counts), when one is on the PATH: a shared server's figures hold every other
client's work too (``INFO commandstats`` counts a script's inner commands
twice and a command's time off the CPU). Without one, the server at
127.0.0.1:6379 is used and its figure is only indicative. Beside it: the
commands the server ran per delivery (``INFO commandstats``, a script's inner
calls counted as commands) and, the stable figure, the instructions a
``redis-server`` of its own ran per delivery under callgrind (from its event
loop on, so reading, parsing, scripts and answers; its own line, ``server``).
The first 128 events of a run land in the received index while it is still a
listpack, whose inserts cost more than the skip list's that follows: compare
runs of one length.

With ``--observe`` the receiver is counted with metrics and tracing off,
with metrics on (prometheus_client's multiprocess mode, a folder of its
own) and with tracing on (the OpenTelemetry SDK, batching to an exporter
that drops every span), as ``throughput.py --observe`` runs it, instead of
against its floor, beside
what the SDK's own work for one run costs alone: the two spans a run makes
(``process <trigger>`` and one handler's child, current in turn, with their
attributes, the run's status among them, given to ``start_span``), made
straight through the SDK with nothing of the receiver around them. Tracing on minus off, less
that, is the receiver's own tracing code. The inline deadline is off in
these runs (``BENCH_DEADLINE=none``), so that the handlers run in the
request's thread: callgrind counts only the thread that entered the toggled
function, and with a deadline they run in a runner thread.

Run it from the repository root (Valgrind from Debian: ``apt-get install
valgrind``)::

    python bench/instructions.py                      # memory, sqlite, redis, postgresql
    python bench/instructions.py --store sqlite --requests 500
    python bench/instructions.py --observe --store sqlite
    BENCH_FLOOR_HANDOFF=8 python bench/instructions.py --store sqlite   # the floors hand off as the deadline does

Use it before and after a change to the hot path (``docs/development.rst``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

#: The store URL each choice runs with, and the floor it is compared to.
STORES = {
    "memory": ("memory://", "bare_app"),
    "sqlite": ("", "floor_sqlite_app"),
    "redis": ("redis://127.0.0.1:6379/13", "floor_redis_app"),
    "postgresql": ("postgresql+psycopg://postgres@127.0.0.1:5432/test", "floor_postgresql_app"),
}


def sdk_spans(warmup: int, requests: int) -> int:
    """Inside valgrind: the SDK's work for one run's two spans, *warmup* times uncounted, then *requests* counted."""
    from opentelemetry import context, trace
    from opentelemetry.trace import SpanKind

    from bench.apps import _tracing

    tracer = _tracing("noop").get_tracer("webhook_receiver")

    def one_run(n: int) -> None:
        span = tracer.start_span(
            "process order.paid",
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.message.id": f"sdk-{n}",
                "messaging.operation.type": "process",
                "webhook_receiver.attempt": 1,
                "webhook_receiver.status": "processed",
            },
        )
        token = context.attach(trace.set_span_in_context(span))
        handler = tracer.start_span("handler paid", attributes={"webhook_receiver.handler": "paid"})
        inner = context.attach(trace.set_span_in_context(handler))
        context.detach(inner)
        handler.end()
        context.detach(token)
        span.end()

    for n in range(warmup):
        one_run(n)
    for n in range(warmup, warmup + requests):
        functools.reduce(lambda _acc, _item, n=n: one_run(n), (0,), None)  # type: ignore[misc]
    return 0


def child(app_name: str, warmup: int, requests: int) -> int:
    """Inside valgrind: deliver *warmup* bodies uncounted, then *requests* counted ones."""
    if app_name == "sdk_spans":
        return sdk_spans(warmup, requests)
    from bench import apps
    from bench.inprocess import environ_for
    from bench.throughput import delivery_body

    app = getattr(apps, app_name)
    _count_runner_threads()
    if app_name == "receiver_app" and os.environ.get("BENCH_STORE") == "memory://":
        apps.receiver.get_store(app).max_events = (warmup + requests) * 2  # type: ignore[attr-defined]
    template = json.dumps(delivery_body("typical"))
    prefix = f"ins-{os.getpid()}-{app_name}"
    bodies = [template.replace("EVENT_ID", f"{prefix}-{n}").encode() for n in range(warmup + requests)]
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    def deliver(body: bytes) -> None:
        for _chunk in app(environ_for(body, apps.SECRET), start_response):
            pass

    for body in bodies[:warmup]:
        deliver(body)
    for body in bodies[warmup:]:
        functools.reduce(lambda _acc, _item, body=body: deliver(body), (0,), None)  # type: ignore[misc]
    bad = [s for s in statuses if not s.startswith("2")]
    if bad:
        print(f"non-2xx answers: {bad[:3]}", file=sys.stderr)
        return 1
    return 0


def _count_runner_threads() -> None:
    """Count the inline deadline's runner threads too: each job runs inside ``functools.reduce`` as well.

    Callgrind's ``--toggle-collect`` switches collection per thread: without
    this, the handlers a runner thread runs for a request (and its app
    context) would go uncounted, and a receiver with the deadline would look
    cheaper than one without. The floors' runner (``BENCH_FLOOR_HANDOFF``)
    is counted the same way.
    """
    from bench.apps import FloorRunner
    from webhook_receiver.dispatch.runners import Runners

    submit = Runners.submit
    floor_submit = FloorRunner.submit

    def counted(self: Runners, job: Any) -> None:
        submit(self, lambda: functools.reduce(lambda _acc, _item: job(), (0,), None))  # type: ignore[misc]

    def floor_counted(self: FloorRunner, job: Any) -> None:
        floor_submit(self, lambda: functools.reduce(lambda _acc, _item: job(), (0,), None))  # type: ignore[misc]

    Runners.submit = counted  # type: ignore[method-assign]
    FloorRunner.submit = floor_counted  # type: ignore[method-assign]


def redis_cpu_seconds(url: str) -> float:
    """The CPU seconds (user and system) the Redis server process has used since its start (``INFO cpu``)."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("cpu")
    finally:
        client.close()
    return float(stats["used_cpu_user"]) + float(stats["used_cpu_sys"])


def redis_commandstats(url: str) -> dict[str, int]:
    """The calls of each command the Redis server has run (``INFO commandstats``), a script's inner ones too."""
    import redis

    client = redis.Redis.from_url(url)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return {name.removeprefix("cmdstat_"): int(fields["calls"]) for name, fields in stats.items()}


def server_cpu_per_delivery(
    app_name: str, url: str, warmup: int, requests: int, env: dict[str, str]
) -> tuple[float, dict[str, float]]:
    """Microseconds of Redis CPU per delivery of *app_name*, run without valgrind, and its commands per delivery."""
    command = [sys.executable, __file__, "--child", app_name, "--warmup", str(warmup), "--requests", str(requests)]
    child_env = {**os.environ, **env, "BENCH_STORE": url, "BENCH_PREFIX": env["BENCH_PREFIX"] + "-cpu"}
    # The warm-up deliveries are counted too: the child's start-up makes a handful of round trips at most.
    calls = redis_commandstats(url)
    before = redis_cpu_seconds(url)
    done = subprocess.run(command, env=child_env, capture_output=True, text=True)
    after = redis_cpu_seconds(url)
    if done.returncode != 0:
        raise SystemExit(f"{app_name} failed:\n{done.stderr[-2000:]}")
    deliveries = warmup + requests
    per_delivery = {
        name: (count - calls.get(name, 0)) / deliveries
        for name, count in redis_commandstats(url).items()
        if name != "info" and (count - calls.get(name, 0)) / deliveries >= 0.05
    }
    return (after - before) * 1e6 / deliveries, per_delivery


def server_instructions_per_delivery(app_name: str, warmup: int, requests: int, env: dict[str, str]) -> int | None:
    """Instructions the Redis server ran per delivery of *app_name* (not under valgrind itself).

    The server is a ``redis-server`` of its own under callgrind, counting
    from its event loop (``aeMain``) on: reading, parsing, running and
    answering every command, its scripts' Lua and the housekeeping of
    ``hz 1``; not its start-up. ``None`` without a ``redis-server`` or when
    its build names no ``aeMain`` to callgrind.
    """
    if shutil.which("redis-server") is None:
        return None
    import socket
    import time

    import redis

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    out = tempfile.NamedTemporaryFile(prefix="whr-callgrind-redis-", suffix=".out", delete=False)
    out.close()
    server = subprocess.Popen(
        ["valgrind", "--tool=callgrind", "--collect-atstart=no", "--toggle-collect=aeMain"]
        + [f"--callgrind-out-file={out.name}", "redis-server", "--port", str(port), "--bind", "127.0.0.1"]
        + ["--save", "", "--appendonly", "no", "--hz", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    try:
        for _ in range(300):
            try:
                redis.Redis.from_url(url).ping()
                break
            except redis.ConnectionError:
                time.sleep(0.1)
        command = [sys.executable, __file__, "--child", app_name, "--warmup", str(warmup), "--requests", str(requests)]
        child_env = {**os.environ, **env, "BENCH_STORE": url}
        done = subprocess.run(command, env=child_env, capture_output=True, text=True)
        if done.returncode != 0:
            raise SystemExit(f"{app_name} failed against redis-server under valgrind:\n{done.stderr[-2000:]}")
        try:
            redis.Redis.from_url(url).shutdown(nosave=True)
        except redis.ConnectionError:
            pass  # the server closes the connection as it stops
        server.wait(timeout=60)
        match = re.search(r"^summary:\s+(\d+)", Path(out.name).read_text(), re.MULTILINE)
        total = int(match.group(1)) if match else 0
        return total // (warmup + requests) if total else None
    finally:
        if server.poll() is None:
            server.terminate()
            server.wait()
        os.unlink(out.name)


def private_redis() -> tuple[subprocess.Popen[bytes], str] | None:
    """A ``redis-server`` of our own on a free port (no persistence), and its URL; ``None`` without one."""
    if shutil.which("redis-server") is None:
        return None
    import socket
    import time

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--hz", "1"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"redis://127.0.0.1:{port}/0"
    import redis

    for _ in range(100):
        try:
            redis.Redis.from_url(url).ping()
            return server, url
        except redis.ConnectionError:
            time.sleep(0.05)
    server.terminate()
    return None


def count(app_name: str, store_url: str, warmup: int, requests: int, env: dict[str, str]) -> int:
    """Instructions per delivery of *app_name*, measured in a valgrind child."""
    out = tempfile.NamedTemporaryFile(prefix="whr-callgrind-", suffix=".out", delete=False)
    out.close()
    command = [
        "valgrind",
        "--tool=callgrind",
        "--collect-atstart=no",
        "--toggle-collect=functools_reduce",
        f"--callgrind-out-file={out.name}",
        sys.executable,
        __file__,
        "--child",
        app_name,
        "--warmup",
        str(warmup),
        "--requests",
        str(requests),
    ]
    try:
        done = subprocess.run(
            command, env={**os.environ, **env, "BENCH_STORE": store_url}, capture_output=True, text=True
        )
        if done.returncode != 0:
            raise SystemExit(f"{app_name} failed under valgrind:\n{done.stderr[-2000:]}")
        match = re.search(r"^summary:\s+(\d+)", Path(out.name).read_text(), re.MULTILINE)
        if match is None:
            raise SystemExit(f"no summary in callgrind's output for {app_name}")
        return int(match.group(1)) // requests
    finally:
        os.unlink(out.name)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=[*STORES, "all"], default="all")
    parser.add_argument("--warmup", type=int, default=200)
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument(
        "--observe", action="store_true", help="metrics and tracing off, then each on, beside the SDK's own spans"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.warmup, args.requests)
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed: bash bench/tools.sh (apt-get install valgrind)")
    chosen = list(STORES) if args.store == "all" else [args.store]
    instance = tempfile.mkdtemp(prefix="whr-instructions-")
    env = {
        "BENCH_PREFIX": f"whr-instructions-{os.getpid()}",
        "BENCH_TABLE_PREFIX": f"whr_instructions_{os.getpid()}_",
        "BENCH_INSTANCE": instance,
        "BENCH_MAX_BACKLOG": "10000000",
    }
    print(f"{args.warmup} warm-up and {args.requests} counted deliveries per app; instructions per delivery")
    if args.observe:
        return observe(chosen, args, env, instance)
    deadline = os.environ.get("BENCH_DEADLINE") or "the default"
    handoff = os.environ.get("BENCH_FLOOR_HANDOFF")
    print(
        f"receiver's inline deadline: {deadline}; durable floors: "
        + (f"handler handed off to a thread, waited for {handoff} s at most" if handoff else "handler in the request")
    )
    print(f"{'store':<11} {'receiver':>10} {'floor':>10} {'floor/receiver':>15}  floor app")
    own_redis = private_redis() if "redis" in chosen else None
    for store in chosen:
        url, floor = STORES[store]
        if store == "redis" and own_redis is not None:
            url = own_redis[1]
        receiver = count("receiver_app", url, args.warmup, args.requests, env)
        floor_count = count(floor, url, args.warmup, args.requests, env)
        print(f"{store:<11} {receiver:>10,} {floor_count:>10,} {floor_count / receiver:>15.3f}  {floor}")
        if store == "redis":
            receiver_cpu, receiver_calls = server_cpu_per_delivery("receiver_app", url, args.warmup, args.requests, env)
            floor_cpu, floor_calls = server_cpu_per_delivery(floor, url, args.warmup, args.requests, env)
            where = "its own redis-server" if own_redis is not None else "the shared server: indicative only"
            print(
                f"{'':<11} server CPU per delivery: receiver {receiver_cpu:.1f} us, floor {floor_cpu:.1f} us"
                f" (INFO cpu, {where})"
            )
            for who, calls in (("receiver", receiver_calls), ("floor", floor_calls)):
                listed = ", ".join(f"{name} {count:.2f}" for name, count in sorted(calls.items()))
                print(f"{'':<11} server commands per delivery, {who}: {listed} (INFO commandstats)")
            receiver_server = server_instructions_per_delivery("receiver_app", args.warmup, args.requests, env)
            floor_server = server_instructions_per_delivery(floor, args.warmup, args.requests, env)
            if receiver_server and floor_server:
                print(
                    f"{'server':<11} {receiver_server:>10,} {floor_server:>10,} {floor_server / receiver_server:>15.3f}"
                    "  redis-server's instructions per delivery (callgrind, a server of its own)"
                )
    if own_redis is not None:
        own_redis[0].terminate()
        own_redis[0].wait()
    if "postgresql" in chosen:
        drop_postgresql_tables(env["BENCH_TABLE_PREFIX"])
    shutil.rmtree(instance, ignore_errors=True)
    return 0


def observe(chosen: list[str], args: argparse.Namespace, env: dict[str, str], instance: str) -> int:
    """The receiver with metrics and tracing off, with metrics on, with tracing on; and the SDK's two spans alone."""
    sdk = count("sdk_spans", "", args.warmup, args.requests, env)
    print(f"the SDK's two spans of a run, alone: {sdk:,}")
    print(
        f"{'store':<11} {'both off':>10} {'metrics on':>11} {'off/on':>7} {'tracing on':>11} {'off/on':>7}"
        f" {'tracing on - off - SDK':>23}"
    )
    own_redis = private_redis() if "redis" in chosen else None
    env = {**env, "BENCH_DEADLINE": "none"}  # the handlers in the counted thread
    try:
        for n, store in enumerate(chosen):
            url = own_redis[1] if store == "redis" and own_redis is not None else STORES[store][0]
            off = count("receiver_app", url, args.warmup, args.requests, {**env, "BENCH_TRACING": "off"})
            metrics_dir = os.path.join(instance, f"prometheus-{n}")  # multiprocess mode, as under gunicorn
            os.mkdir(metrics_dir)
            metrics_env = {"BENCH_METRICS": "/webhooks/metrics", "PROMETHEUS_MULTIPROC_DIR": metrics_dir}
            metrics = count("receiver_app", url, args.warmup, args.requests, {**env, **metrics_env})
            on = count("receiver_app", url, args.warmup, args.requests, {**env, "BENCH_TRACING": "noop"})
            print(
                f"{store:<11} {off:>10,} {metrics:>11,} {off / metrics:>7.3f} {on:>11,} {off / on:>7.3f}"
                f" {on - off - sdk:>23,}"
            )
    finally:
        if own_redis is not None:
            own_redis[0].terminate()
            own_redis[0].wait()
        if "postgresql" in chosen:
            drop_postgresql_tables(env["BENCH_TABLE_PREFIX"])
        shutil.rmtree(instance, ignore_errors=True)
    return 0


def drop_postgresql_tables(prefix: str) -> None:
    """Drop the tables the PostgreSQL runs made."""
    import sqlalchemy as sa

    engine = sa.create_engine(STORES["postgresql"][0])
    try:
        names = [name for name in sa.inspect(engine).get_table_names() if name.startswith(prefix)]
        with engine.begin() as conn:
            for name in names:
                conn.execute(sa.text(f'DROP TABLE IF EXISTS "{name}"'))
    finally:
        engine.dispose()


if __name__ == "__main__":
    sys.exit(main())
