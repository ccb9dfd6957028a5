"""Throughput of the receiver against its floor, side by side in one run.

Both apps run under gunicorn with 2 sync workers on 127.0.0.1; wrk (Debian's
``wrk`` package) loads them with the same ``order.paid`` delivery, a fresh
event id per request, in alternated runs over several rounds. The figure that
counts is the ratio of the median requests per second, receiver / floor.

Run it by hand from the repository root::

    python bench/throughput.py --rounds 5 --seconds 10
    python bench/throughput.py --store sqlite --floor durable --rounds 5 --seconds 10
    python bench/throughput.py --store redis --floor durable --rounds 5 --seconds 10
    python bench/throughput.py --store postgresql --floor durable --rounds 5 --seconds 10
    python bench/throughput.py --store sqlite --dispatch thread --handler-sleep 1 --rounds 3 --seconds 10
    python bench/throughput.py --observe --store sqlite --rounds 5 --seconds 10

``--store`` picks the receiver's store (``memory``, ``sqlite`` in a fresh
instance folder, ``redis`` at 127.0.0.1:6379/13 under a fresh prefix, ``postgresql``: the
``SQLAlchemyStore`` on the machine's PostgreSQL under a fresh table prefix);
``--dispatch`` and ``--handler-sleep`` set the dispatch mode and how long the
handler takes. ``--floor`` picks what the receiver is compared with:
``bare`` (a Flask endpoint that only parses the body) or ``durable`` (the
floor of a durable exactly-once receiver on the same store: see
``bench/apps.py``). ``--body`` picks the delivery: ``typical`` (about 5 kB,
both ``resources`` and ``payload``, as upstream's ``order.paid``) or
``small`` (about 0.9 kB, ``payload`` only). With background dispatch the
resident memory of each receiver worker is printed at the start and the end.
``--observe`` runs the receiver three times instead, side by side: with
metrics and tracing off, with metrics on (prometheus_client's multiprocess
mode, as under gunicorn in production), and with tracing on (the
OpenTelemetry SDK, batching to an exporter that drops every span), and
prints, besides the requests per second, the CPU time the gunicorn workers
used per request (from ``/proc``), which other load on the machine disturbs
less. Every run prints that CPU time per request too (and the load average
beside each round); ``bench/costs.py`` splits it into user and system time,
context switches, the database server's share and system calls.

Needs ``pip install -e ".[dev]"`` (gunicorn) and ``apt-get install wrk``.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.apps import SECRET  # noqa: E402
from webhook_receiver.testing import make_event, sample_resource  # noqa: E402

LUA = r"""
local counter = 0
local threads = 0
local body_template = [[%(body)s]]

function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end

function request()
  counter = counter + 1
  local id = "%(run)s-" .. tid .. "-" .. counter
  local body = string.gsub(body_template, "EVENT_ID", id)
  return wrk.format("POST", "/webhooks/moltin", {
    ["Content-Type"] = "application/json",
    ["X-MOLTIN-SECRET-KEY"] = "%(secret)s",
    ["X-MOLTIN-INTEGRATION-TRIGGER"] = "order.paid",
  }, body)
end

local statuses = {}
function response(status, headers, body)
  if status < 200 or status > 299 then
    error("unexpected status " .. status .. ": " .. body)
  end
end
"""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_port(port: int, timeout: float = 30) -> None:
    """Wait until something listens on 127.0.0.1:*port*."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"nothing listens on port {port}")


def start_gunicorn(app: str, port: int, workers: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--log-level",
            "warning",
            f"bench.apps:{app}",
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
    )
    try:
        wait_port(port)
    except SystemExit:
        proc.kill()
        raise
    return proc


def delivery_body(kind: str) -> dict[str, Any]:
    """The benchmark's ``order.paid`` delivery, with the ``configuration`` echo upstream adds."""
    if kind == "small":
        data, _ = sample_resource("order.paid")
        body = make_event(
            "order.paid",
            {k: data[k] for k in ("type", "id", "status", "payment", "shipping", "customer", "meta") if k in data},
            event_id="EVENT_ID",
            form="payload",
        )
    else:
        data, included = sample_resource("order.paid")
        items = (included or {}).get("items", [])
        if items:  # an order of four lines, as a typical shop's
            included = dict(included, items=[dict(items[n % len(items)], id=f"{n:08d}-line") for n in range(4)])
        body = make_event("order.paid", data, event_id="EVENT_ID")
        body["resources"] = json.dumps({"data": data, "included": included})
        body["payload"] = {"data": data, "included": included}
        body.update(store_id="5f1e2d3c-4b5a-6978-8a9b-0c1d2e3f4a5b", org_id="0a1b2c3d-4e5f-6a7b-8c9d-0e1f2a3b4c5d")
    body["configuration"] = {"url": "http://127.0.0.1/webhooks/moltin", "secret_key": SECRET}
    return body


def rss_mib(master: int) -> str:
    """The resident memory of each child of gunicorn's *master*, in MiB."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    sizes = []
    for pid in children:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                sizes.append(f"{int(line.split()[1]) / 1024:.1f}")
    return " + ".join(sizes) + " MiB"


def cpu_seconds(master: int) -> float:
    """The CPU time (user and system) the children of gunicorn's *master* used so far."""
    total = 0
    for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split():
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def run_wrk(port: int, script: str, seconds: int, connections: int, threads: int) -> dict[str, Any]:
    out = subprocess.run(
        [
            "wrk",
            "-t",
            str(threads),
            "-c",
            str(connections),
            "-d",
            f"{seconds}s",
            "--latency",
            "-s",
            script,
            f"http://127.0.0.1:{port}/webhooks/moltin",
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    p50 = re.search(r"50%\s+([\d.]+\w+)", out)
    p99 = re.search(r"99%\s+([\d.]+\w+)", out)
    return {
        "rps": rps,
        "non2xx": int(errors.group(1)) if errors else 0,
        "p50": p50.group(1) if p50 else "?",
        "p99": p99.group(1) if p99 else "?",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--store", choices=["memory", "sqlite", "redis", "postgresql"], default="memory")
    parser.add_argument("--dispatch", choices=["inline", "thread"], default="inline")
    parser.add_argument("--handler-sleep", type=float, default=0.0)
    parser.add_argument("--floor", choices=["bare", "durable"], default="bare")
    parser.add_argument("--body", choices=["typical", "small"], default="typical")
    parser.add_argument(
        "--observe",
        action="store_true",
        help="compare the receiver with metrics on and with tracing on (no-op exporter) against it with both off",
    )
    args = parser.parse_args()
    if args.floor == "durable" and args.store == "memory":
        parser.error("--floor durable needs --store sqlite, redis or postgresql")
    if not shutil.which("wrk"):
        print("wrk is not installed: bash bench/tools.sh (apt-get install wrk)", file=sys.stderr)
        return 2

    body = json.dumps(delivery_body(args.body))
    floor = "bare_app" if args.floor == "bare" else f"floor_{args.store}_app"
    print(
        f"body: {len(body)} bytes; {args.rounds} rounds x {args.seconds}s per app; floor {floor}; "
        f"gunicorn -w {args.workers}; wrk -t{args.threads} -c{args.connections}; "
        f"receiver: store {args.store}, dispatch {args.dispatch}, handler sleeps {args.handler_sleep:g} s"
    )
    instance = tempfile.mkdtemp(prefix="whr-bench-")
    receiver_env = {
        "BENCH_STORE": {
            "memory": "memory://",
            "sqlite": "",
            "redis": "redis://127.0.0.1:6379/13",
            "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        }[args.store],
        "BENCH_TABLE_PREFIX": f"whr_bench_{os.getpid()}_",
        "BENCH_PREFIX": f"whr-bench-{os.getpid()}",
        "BENCH_INSTANCE": instance,
        "BENCH_DISPATCH": args.dispatch,
        "BENCH_SLEEP": str(args.handler_sleep),
        "BENCH_MAX_BACKLOG": "10000000",
    }

    if args.store == "postgresql":  # the floor's table, made once rather than by each worker at once
        subprocess.run(
            [
                "psql",
                "-h",
                "127.0.0.1",
                "-U",
                "postgres",
                "-d",
                "test",
                "-qc",
                f"CREATE TABLE {receiver_env['BENCH_TABLE_PREFIX']}floor"
                " (id TEXT PRIMARY KEY, body TEXT NOT NULL, status TEXT NOT NULL)",
            ],
            check=True,
        )
    envs = {"receiver_app": receiver_env, floor: receiver_env}
    if args.observe:  # the same receiver three times: both off, metrics on, tracing on
        floor = "receiver_app"
        metrics_dir = os.path.join(instance, "prometheus")
        os.mkdir(metrics_dir)
        envs = {
            "receiver_app": {**receiver_env, "BENCH_TRACING": "off"},
            "receiver_app+metrics": {
                **receiver_env,
                "BENCH_TRACING": "off",
                "BENCH_METRICS": "/webhooks/metrics",
                "PROMETHEUS_MULTIPROC_DIR": metrics_dir,
            },
            "receiver_app+tracing": {**receiver_env, "BENCH_TRACING": "noop"},
        }
        for n, label in enumerate(envs):
            envs[label] = {**envs[label], "BENCH_PREFIX": f"whr-bench-{os.getpid()}-{n}"}
            envs[label]["BENCH_TABLE_PREFIX"] = f"whr_bench_{os.getpid()}_{n}_"
            envs[label]["BENCH_INSTANCE"] = os.path.join(instance, str(n))
            os.mkdir(envs[label]["BENCH_INSTANCE"])
    results: dict[str, list[dict[str, Any]]] = {label: [] for label in envs}
    procs = {}
    ports = {}
    try:
        for app in results:
            ports[app] = free_port()
            procs[app] = start_gunicorn(app.split("+")[0], ports[app], args.workers, envs[app])
        time.sleep(1)
        with tempfile.TemporaryDirectory() as tmp:  # until each app answers: workers set up (imports, tables)
            for app in results:
                for attempt in range(30):
                    script = os.path.join(tmp, f"{app}-warm{attempt}.lua")
                    Path(script).write_text(LUA % {"body": body, "run": f"warm{attempt}{app}", "secret": SECRET})
                    if run_wrk(ports[app], script, 1, args.connections, args.threads)["rps"] > 0:
                        break
        if args.dispatch != "inline":
            print(f"receiver workers' RSS at start: {rss_mib(procs['receiver_app'].pid)}")
        with tempfile.TemporaryDirectory() as tmp:
            for round_no in range(args.rounds):
                order = list(results) if round_no % 2 == 0 else list(reversed(results))
                for app in order:
                    script = os.path.join(tmp, f"{app}-{round_no}.lua")
                    Path(script).write_text(LUA % {"body": body, "run": f"r{round_no}{app}", "secret": SECRET})
                    cpu = cpu_seconds(procs[app].pid)
                    result = run_wrk(ports[app], script, args.seconds, args.connections, args.threads)
                    served = max(result["rps"] * args.seconds, 1)
                    result["cpu_us"] = (cpu_seconds(procs[app].pid) - cpu) / served * 1e6
                    results[app].append(result)
                    print(
                        f"round {round_no + 1} {app:<20} {result['rps']:9.1f} req/s  "
                        f"p50 {result['p50']:>8}  p99 {result['p99']:>8}  non-2xx {result['non2xx']}  "
                        f"workers' CPU {result['cpu_us']:5.0f} us/request  load {os.getloadavg()[0]:.2f}"
                    )
        if args.dispatch != "inline":
            print(f"receiver workers' RSS at end:   {rss_mib(procs['receiver_app'].pid)}")
    finally:
        for proc in procs.values():
            proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # thread mode: a backlog of slow handlers
                proc.kill()
                proc.wait()
        shutil.rmtree(instance, ignore_errors=True)
        if args.store == "postgresql":
            drop = "; ".join(
                f"DROP TABLE IF EXISTS {receiver_env['BENCH_TABLE_PREFIX']}{name}"
                for name in ("events", "watermarks", "floor")
            )
            subprocess.run(
                ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-qc", drop], capture_output=True
            )
        if args.store == "redis":
            subprocess.run(
                ["redis-cli", "-n", "13", "--scan", "--pattern", receiver_env["BENCH_PREFIX"] + ":*"],
                capture_output=True,
            )
            subprocess.run(["redis-cli", "-n", "13", "FLUSHDB"], capture_output=True)

    if args.observe:
        base = statistics.median(r["rps"] for r in results["receiver_app"])
        failures = sum(r["non2xx"] for rs in results.values() for r in rs)
        print()
        base_cpu = statistics.median(r["cpu_us"] for r in results["receiver_app"])
        for label, runs in results.items():  # CPU per request: less at the mercy of other load on the machine
            rps = statistics.median(r["rps"] for r in runs)
            cpu = statistics.median(r["cpu_us"] for r in runs)
            print(
                f"median {label:<20} {rps:9.1f} req/s, ratio to both off {rps / base:.3f};"
                f" workers' CPU {cpu:6.0f} us/request, ratio both off / this {base_cpu / cpu:.3f}"
            )
        off = results["receiver_app"]
        for label, runs in list(results.items())[1:]:  # each round against the same round's both-off run
            rps_ratios = sorted(r["rps"] / o["rps"] for r, o in zip(runs, off))
            cpu_ratios = sorted(o["cpu_us"] / r["cpu_us"] for r, o in zip(runs, off))
            print(
                f"spread {label:<20} per round: req/s ratio {rps_ratios[0]:.3f} to {rps_ratios[-1]:.3f}"
                f" (median {statistics.median(rps_ratios):.3f}); CPU ratio {cpu_ratios[0]:.3f} to"
                f" {cpu_ratios[-1]:.3f} (median {statistics.median(cpu_ratios):.3f})"
            )
        print(f"non-2xx answers: {failures}")
        return 0 if failures == 0 else 1
    receiver_rps = statistics.median(r["rps"] for r in results["receiver_app"])
    floor_rps = statistics.median(r["rps"] for r in results[floor])
    receiver_cpu = statistics.median(r["cpu_us"] for r in results["receiver_app"])
    floor_cpu = statistics.median(r["cpu_us"] for r in results[floor])
    failures = sum(r["non2xx"] for rs in results.values() for r in rs)
    print(
        f"\nmedian receiver {receiver_rps:.1f} req/s, {floor} {floor_rps:.1f} req/s, "
        f"ratio receiver/floor {receiver_rps / floor_rps:.3f}; non-2xx answers: {failures}"
    )
    # CPU time per request moves less than requests per second with other load on the machine
    print(
        f"median workers' CPU per request: receiver {receiver_cpu:.0f} us, {floor} {floor_cpu:.0f} us,"
        f" ratio floor/receiver {floor_cpu / receiver_cpu:.3f}"
    )
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
