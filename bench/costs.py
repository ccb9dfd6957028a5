"""Where a delivery's time goes beyond the web process's instructions: the receiver against its floor, per request.

``bench/instructions.py`` counts the user-space instructions of the web
process; a wall-clock gap it does not show is in the kernel, in the database
server, or in threads waiting on each other. This prints, per request, for the
receiver and its floor under the same gunicorn (2 sync workers) and wrk load as
``throughput.py``:

- the gunicorn workers' CPU time, user and system apart (``/proc/PID/stat``,
  every thread of the worker);
- the workers' context switches, voluntary (a thread blocked: a lock, a
  condition, a socket) and involuntary (preempted), summed over their threads
  (``/proc/PID/task/*/status``);
- with ``--store postgresql``, the CPU time of the PostgreSQL backends that
  serve the workers' connections (found by the connections' client ports in
  ``pg_stat_activity``), user and system;
- with ``--strace``, a second run under ``strace -c -f`` on each worker: the
  system calls per request, by name (strace slows the workers; the counts,
  not the times, are the figure). strace is Debian's ``strace`` package:
  ``apt-get install strace``;
- with ``--wal`` (PostgreSQL) instead, no load: the WAL records and bytes each
  write of a delivery makes, the receiver's claim and finish against the
  floor's insert and update (``EXPLAIN (ANALYZE, WAL)``).

Run it from the repository root::

    python bench/costs.py --store sqlite --seconds 5
    python bench/costs.py --store sqlite --deadline none --strace
    python bench/costs.py --store postgresql --strace
    python bench/costs.py --store postgresql --wal

These are counts of work, which other load on the machine moves much less than
requests per second; the load average is printed beside them.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.apps import SECRET  # noqa: E402
from bench.throughput import LUA, delivery_body, free_port, run_wrk, start_gunicorn  # noqa: E402

PSQL = ["psql", "-h", "127.0.0.1", "-U", "postgres", "-d", "test", "-Atqc"]
TICK = os.sysconf("SC_CLK_TCK")


def workers(master: int) -> list[int]:
    return [int(pid) for pid in Path(f"/proc/{master}/task/{master}/children").read_text().split()]


def cpu(pids: list[int]) -> tuple[float, float]:
    """User and system CPU seconds the processes *pids* used so far (all their threads)."""
    user = system = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        user += int(fields[11])
        system += int(fields[12])
    return user / TICK, system / TICK


def switches(pids: list[int]) -> tuple[int, int]:
    """Voluntary and involuntary context switches of every thread of *pids* so far."""
    voluntary = involuntary = 0
    for pid in pids:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                text = (task / "status").read_text()
            except FileNotFoundError:
                continue
            voluntary += int(re.search(r"^voluntary_ctxt_switches:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
            involuntary += int(re.search(r"^nonvoluntary_ctxt_switches:\s+(\d+)", text, re.M).group(1))  # type: ignore[union-attr]
    return voluntary, involuntary


def client_ports(pids: list[int]) -> set[int]:
    """The local TCP ports of the sockets the processes *pids* hold (their database connections among them)."""
    inodes = set()
    for pid in pids:
        for fd in Path(f"/proc/{pid}/fd").iterdir():
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for line in Path(f"/proc/{pids[0]}/net/tcp").read_text().splitlines()[1:]:
        parts = line.split()
        if parts[9] in inodes:
            ports.add(int(parts[1].rsplit(":", 1)[1], 16))
    return ports


def backends(pids: list[int]) -> list[int]:
    """The PostgreSQL backends serving the connections of *pids*."""
    ports = client_ports(pids)
    out = subprocess.run(
        [*PSQL, "SELECT pid, client_port FROM pg_stat_activity WHERE client_port IS NOT NULL"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [int(pid) for pid, port in (line.split("|") for line in out.split()) if int(port) in ports]


def strace_counts(pids: list[int], run: Any) -> tuple[dict[str, int], float]:
    """System calls by name of *pids* (all threads) while *run()* runs, and what *run()* returned."""
    outs = []
    tracers = []
    for pid in pids:
        out = tempfile.NamedTemporaryFile(prefix="whr-strace-", suffix=".txt", delete=False)
        out.close()
        outs.append(out.name)
        tracers.append(
            subprocess.Popen(["strace", "-c", "-f", "-o", out.name, "-p", str(pid)], stderr=subprocess.DEVNULL)
        )
    time.sleep(1.0)  # attached to every thread
    result = run()
    for tracer in tracers:
        tracer.send_signal(2)
        tracer.wait()
    counts: dict[str, int] = {}
    for name in outs:
        for line in Path(name).read_text().splitlines():
            parts = line.split()
            if len(parts) >= 5 and parts[0][0].isdigit() and parts[-1] != "total":
                calls = int(parts[3])
                counts[parts[-1]] = counts.get(parts[-1], 0) + calls
        os.unlink(name)
    return counts, result


def postgresql_wal(deliveries: int = 20) -> dict[str, tuple[float, float]]:
    """WAL records and bytes per statement, the receiver's claim and finish against the floor's two writes.

    Each statement runs under ``EXPLAIN (ANALYZE, WAL)`` on tables of its
    own, which counts the WAL that statement wrote and nothing else the
    server did meanwhile. The receiver's statements are the store's own
    (``SQLAlchemyStore``'s hot-path statements, compiled for psycopg).
    """
    import psycopg

    from webhook_receiver.stores.sqlalchemy import SQLAlchemyStore

    prefix = f"whr_costs_wal_{os.getpid()}_"
    store = SQLAlchemyStore("postgresql+psycopg://postgres@127.0.0.1:5432/test", prefix=prefix)
    template = json.dumps(delivery_body("typical"))
    statements = store._statements("postgresql")
    dialect = store.engine.dialect

    def compiled(statement: Any, params: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        sql = statement.compile(dialect=dialect)
        return str(sql), sql.construct_params(params)

    totals: dict[str, list[float]] = {}
    conn = psycopg.connect("postgresql://postgres@127.0.0.1:5432/test", autocommit=True)
    try:
        store.get("set-up")  # the store's tables
        conn.execute(f"CREATE TABLE {prefix}floor (id TEXT PRIMARY KEY, body TEXT NOT NULL, status TEXT NOT NULL)")

        def explain(label: str, sql: str, params: Any) -> None:
            plan = conn.execute("EXPLAIN (ANALYZE, WAL, COSTS OFF, TIMING OFF, SUMMARY OFF) " + sql, params).fetchall()
            text = " ".join(row[0] for row in plan)
            records = sum(int(n) for n in re.findall(r"records=(\d+)", text))
            size = sum(int(n) for n in re.findall(r"bytes=(\d+)", text))
            found = totals.setdefault(label, [0.0, 0.0])
            found[0] += records / deliveries
            found[1] += size / deliveries

        outcomes = json.dumps({"bench.apps.handle": {"ok": True, "error": None, "started_at": 1.0, "finished_at": 2.0}})
        for n in range(deliveries):
            event_id = f"wal-{n}-{time.time()}"
            body = template.replace("EVENT_ID", event_id)
            fence = {"p_receiver": "moltin", "p_event_id": event_id, "p_old_token": "t" * 32}
            claim = {"p_receiver": "moltin", "p_id": event_id, "p_trigger": "order.paid", "p_raw": body}
            explain(
                "receiver claim", *compiled(statements.insert_claimed, {**claim, "p_wall": 1.0, "p_token": "t" * 32})
            )
            finish = {"p_status": "processed", "p_outcomes": outcomes, "p_error": None, "p_due_at": None, "p_wall": 2.0}
            explain("receiver finish", *compiled(statements.finish, {**finish, **fence}))
            explain(
                "floor insert",
                f"INSERT INTO {prefix}floor (id, body, status) VALUES (%(id)s, %(body)s, 'processing')"
                " ON CONFLICT (id) DO NOTHING",
                {"id": event_id, "body": body},
            )
            explain(
                "floor update", f"UPDATE {prefix}floor SET status = 'processed' WHERE id = %(id)s", {"id": event_id}
            )
    finally:
        for name in ("events", "watermarks", "floor"):
            conn.execute(f"DROP TABLE IF EXISTS {prefix}{name}")
        conn.close()
        store.close()
    return {label: (records, size) for label, (records, size) in totals.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--deadline", help="BENCH_DEADLINE for the receiver (none: off)")
    parser.add_argument("--strace", action="store_true", help="also count system calls per request (strace)")
    parser.add_argument("--wal", action="store_true", help="PostgreSQL: only WAL records and bytes per statement")
    args = parser.parse_args()
    if args.wal:
        print("WAL written per statement (EXPLAIN (ANALYZE, WAL)), mean of 20 deliveries")
        for label, (records, size) in postgresql_wal().items():
            print(f"  {label:<16} {records:5.1f} records {size:7.0f} bytes")
        return 0
    if args.strace and not shutil.which("strace"):
        raise SystemExit("strace is not installed: apt-get install strace")
    if not shutil.which("wrk"):
        raise SystemExit("wrk is not installed: apt-get install wrk")
    body = json.dumps(delivery_body("typical"))
    instance = tempfile.mkdtemp(prefix="whr-costs-")
    prefix = f"whr_costs_{os.getpid()}_"
    env = {
        "BENCH_STORE": "" if args.store == "sqlite" else "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        "BENCH_TABLE_PREFIX": prefix,
        "BENCH_INSTANCE": instance,
        "BENCH_MAX_BACKLOG": "10000000",
    }
    if args.deadline:
        env["BENCH_DEADLINE"] = args.deadline
    if args.store == "postgresql":
        subprocess.run(
            [*PSQL, f"CREATE TABLE {prefix}floor (id TEXT PRIMARY KEY, body TEXT NOT NULL, status TEXT NOT NULL)"],
            check=True,
        )
    apps = ["receiver_app", f"floor_{args.store}_app"]
    rows: dict[str, dict[str, float]] = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for app in apps:
                port = free_port()
                proc = start_gunicorn(app, port, args.workers, env)
                try:
                    time.sleep(1)

                    def wrk(tag: str, seconds: int, app: str = app, port: int = port) -> dict[str, Any]:
                        script = os.path.join(tmp, f"{app}-{tag}.lua")
                        Path(script).write_text(LUA % {"body": body, "run": f"{tag}{app}", "secret": SECRET})
                        return run_wrk(port, script, seconds, args.connections, 1)

                    for attempt in range(30):  # until both workers have set up (imports, tables, connections)
                        if wrk(f"warm{attempt}", 2)["rps"] > 20:
                            break
                    pids = workers(proc.pid)
                    served = backends(pids) if args.store == "postgresql" else []
                    load = os.getloadavg()[0]
                    cpu0, sw0, db0 = cpu(pids), switches(pids), cpu(served)
                    result = wrk("measure", args.seconds)
                    cpu1, sw1, db1 = cpu(pids), switches(pids), cpu(served)
                    n = result["rps"] * args.seconds
                    row = {
                        "rps": result["rps"],
                        "load": load,
                        "user": (cpu1[0] - cpu0[0]) / n * 1e6,
                        "sys": (cpu1[1] - cpu0[1]) / n * 1e6,
                        "vol": (sw1[0] - sw0[0]) / n,
                        "invol": (sw1[1] - sw0[1]) / n,
                    }
                    if served:
                        row["db_user"] = (db1[0] - db0[0]) / n * 1e6
                        row["db_sys"] = (db1[1] - db0[1]) / n * 1e6
                    if args.strace:
                        counts, traced = strace_counts(pids, lambda: wrk("strace", args.seconds))
                        traced_n = traced["rps"] * args.seconds
                        row.update({f"sc:{k}": v / traced_n for k, v in counts.items()})
                    rows[app] = row
                finally:
                    proc.terminate()
                    proc.wait(timeout=10)
    finally:
        shutil.rmtree(instance, ignore_errors=True)
        if args.store == "postgresql":
            drop = "; ".join(f"DROP TABLE IF EXISTS {prefix}{name}" for name in ("events", "watermarks", "floor"))
            subprocess.run([*PSQL, drop], capture_output=True)

    receiver, floor = (rows[a] for a in apps)
    print(f"store {args.store}, deadline {args.deadline or 'default'}; per request, receiver vs {apps[1]}")
    print(f"{'':<28} {'receiver':>10} {'floor':>10}")
    labels = [
        ("load average (1 min)", "load", "{:.2f}"),
        ("requests/s", "rps", "{:.0f}"),
        ("workers' CPU user, us", "user", "{:.0f}"),
        ("workers' CPU system, us", "sys", "{:.0f}"),
        ("voluntary switches", "vol", "{:.2f}"),
        ("involuntary switches", "invol", "{:.2f}"),
        ("database backends user, us", "db_user", "{:.0f}"),
        ("database backends system, us", "db_sys", "{:.0f}"),
    ]
    for label, key, form in labels:
        if key in receiver or key in floor:
            print(f"{label:<28} {form.format(receiver.get(key, 0)):>10} {form.format(floor.get(key, 0)):>10}")
    calls = sorted({k for r in rows.values() for k in r if k.startswith("sc:")}, key=lambda k: -receiver.get(k, 0))
    if calls:
        total = [sum(r.get(k, 0) for k in calls) for r in (receiver, floor)]
        print(f"{'system calls (strace -c -f)':<28} {total[0]:>10.2f} {total[1]:>10.2f}")
        for key in calls:
            if max(receiver.get(key, 0), floor.get(key, 0)) >= 0.05:
                print(f"  {key[3:]:<26} {receiver.get(key, 0):>10.2f} {floor.get(key, 0):>10.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
