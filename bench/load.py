"""Load with duplicates: are events lost, or handled twice? How fast is the acknowledgement?

Sends N deliveries (20 % of them repeats of earlier events, as upstream's
at-least-once delivery does) from C concurrent senders, each retrying a
non-2xx answer as upstream would, and then checks, from the handler's own
record, that every unique event was handled exactly once.

Set-ups, run by hand from the repository root::

    python bench/load.py sqlite            # gunicorn, 4 workers, SQLite store, inline handlers
    python bench/load.py sqlite-thread     # gunicorn, 2 workers, SQLite store, thread dispatch
    python bench/load.py redis-thread      # two gunicorn instances (2 workers each) sharing Redis,
                                           # thread dispatch
    python bench/load.py redis-celery      # two gunicorn instances (2 workers each) sharing
                                           # Redis, two Celery workers running the handlers

``--kill-every 2`` SIGKILLs a worker every 2 s while the deliveries go on: a
gunicorn worker (its master starts another) with thread dispatch, a Celery
worker (started again at once) with Celery. Once the senders are done the
killing stops and nothing is delivered again: every unique event must then
run, and handler runs may exceed unique events only by runs a kill cut
short after their effect. ``--handler-sleep`` makes handlers take longer.

Needs ``pip install -e ".[dev]"`` and Redis at 127.0.0.1:6379 for the Redis set-ups.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench.apps import SECRET  # noqa: E402
from bench.throughput import free_port, start_gunicorn  # noqa: E402
from webhook_receiver.testing import make_event  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("setup", choices=["sqlite", "sqlite-thread", "redis-thread", "redis-celery"])
    parser.add_argument("--deliveries", type=int, default=10_000)
    parser.add_argument("--duplicates", type=float, default=0.2)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--kill-every", type=float, default=0.0, help="SIGKILL a worker this often (seconds)")
    parser.add_argument("--handler-sleep", type=float, default=0.0)
    args = parser.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="whr-load-"))
    effects = tmp / "effects.txt"
    prefix = f"whr-load-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "BENCH_INSTANCE": str(tmp),
        "BENCH_EFFECTS": str(effects),
        "BENCH_SLEEP": str(args.handler_sleep),
        "BENCH_LEASE": "5",
    }
    procs: list[subprocess.Popen[bytes]] = []
    celery_workers: list[subprocess.Popen[bytes]] = []
    gunicorns: list[subprocess.Popen[bytes]] = []
    urls: list[str] = []
    redis_env = {"BENCH_STORE": "redis://127.0.0.1:6379/13", "BENCH_PREFIX": prefix}
    if args.setup == "sqlite":
        env.update(BENCH_STORE="", BENCH_DISPATCH="inline")
        instances, workers = 1, 4
    elif args.setup == "sqlite-thread":
        env.update(BENCH_STORE="", BENCH_DISPATCH="thread")
        instances, workers = 1, 2
    elif args.setup == "redis-thread":
        env.update(redis_env, BENCH_DISPATCH="thread")
        instances, workers = 2, 2
    else:
        env.update(redis_env, BENCH_DISPATCH="celery", BENCH_BROKER="redis://127.0.0.1:6379/12", BENCH_QUEUE=prefix)
        instances, workers = 2, 2

    def start_celery() -> None:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.apps:celery",
                "worker",
                "-Q",
                prefix,
                "--pool",
                "threads",
                "-c",
                "8",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
            ],
            cwd=ROOT,
            env=env,
        )
        procs.append(proc)
        celery_workers.append(proc)

    if args.setup == "redis-celery":
        start_celery()
        start_celery()
    kills = 0
    stop_killing = threading.Event()

    def killer() -> None:
        nonlocal kills
        rng = random.Random(11)
        while not stop_killing.wait(args.kill_every):
            if args.setup == "redis-celery":
                alive = [p for p in celery_workers if p.poll() is None]
                victim = rng.choice(alive)
                victim.kill()
                victim.wait()
                celery_workers.remove(victim)
                start_celery()
            else:
                master = rng.choice(gunicorns)
                children = Path(f"/proc/{master.pid}/task/{master.pid}/children").read_text().split()
                if not children:
                    continue
                os.kill(int(rng.choice(children)), 9)
            kills += 1

    try:
        for _ in range(instances):
            port = free_port()
            proc = start_gunicorn("receiver_app", port, workers, env)
            procs.append(proc)
            gunicorns.append(proc)
            urls.append(f"http://127.0.0.1:{port}/webhooks/moltin")

        template = make_event("order.paid", event_id="EVENT_ID")
        template["configuration"] = {"url": urls[0], "secret_key": SECRET}
        text = json.dumps(template)
        rng = random.Random(7)
        ids: list[str] = []
        plan: list[str] = []
        for _ in range(args.deliveries):
            if ids and rng.random() < args.duplicates:
                plan.append(rng.choice(ids))
            else:
                ids.append(uuid.uuid4().hex)
                plan.append(ids[-1])
        latencies: list[float] = []
        answered: dict[str, int] = {}
        retries = 0
        lock = threading.Lock()
        cursor = iter(enumerate(plan))

        def sender() -> None:
            nonlocal retries
            session = requests.Session()
            headers = {
                "X-MOLTIN-SECRET-KEY": SECRET,
                "X-MOLTIN-INTEGRATION-TRIGGER": "order.paid",
                "Content-Type": "application/json",
            }
            while True:
                with lock:
                    item = next(cursor, None)
                if item is None:
                    return
                n, event_id = item
                body = text.replace("EVENT_ID", event_id)
                for attempt in range(20):
                    started = time.perf_counter()
                    try:
                        answer = session.post(urls[n % len(urls)], data=body, headers=headers, timeout=15)
                        code = answer.status_code
                    except requests.RequestException:
                        code = 0
                    elapsed = time.perf_counter() - started
                    with lock:
                        latencies.append(elapsed)
                        if 200 <= code < 300:
                            answered[event_id] = answered.get(event_id, 0) + 1
                        else:
                            retries += 1
                    if 200 <= code < 300:
                        break
                    time.sleep(0.05 * (attempt + 1))

        started = time.perf_counter()
        threads = [threading.Thread(target=sender) for _ in range(args.concurrency)]
        kill_thread = threading.Thread(target=killer, daemon=True)
        if args.kill_every:
            kill_thread.start()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        duration = time.perf_counter() - started
        stop_killing.set()
        if args.kill_every:
            kill_thread.join()

        unique = set(ids)
        deadline = time.monotonic() + 180
        while True:
            handled = effects.read_text().split() if effects.exists() else []
            if len(set(handled)) >= len(unique) or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        time.sleep(2 if args.setup != "sqlite" else 0)
        handled = effects.read_text().split() if effects.exists() else []
        lost = len(unique - set(answered)) + len(unique - set(handled))
        latencies.sort()
        drained = time.perf_counter() - started - duration
        print(
            f"setup {args.setup}: {args.deliveries} deliveries ({len(unique)} unique events,"
            f" {args.deliveries - len(unique)} duplicates), {args.concurrency} concurrent senders,"
            f" {instances} gunicorn instance(s) x {workers} workers, handlers sleep {args.handler_sleep:g} s"
        )
        if args.kill_every:
            print(
                f"  {kills} workers SIGKILLed, one every {args.kill_every:g} s while sending;"
                f" the backlog ran out {drained:.1f} s after the last answer, with no further delivery"
            )
        print(
            f"  sent in {duration:.1f} s ({args.deliveries / duration:.0f} deliveries/s),"
            f" {retries} non-2xx answers retried"
        )
        print(f"  lost events: {lost}; handler runs: {len(handled)} for {len(unique)} unique events")
        print(
            f"  acknowledgement latency: p50 {statistics.median(latencies) * 1000:.1f} ms,"
            f" p99 {latencies[int(len(latencies) * 0.99)] * 1000:.1f} ms"
        )
        extra = len(handled) - len(unique)
        print(f"  handler runs beyond one per event: {extra} (bound: {kills} kills)")
        return 0 if lost == 0 and 0 <= extra <= kills else 1
    finally:
        stop_killing.set()
        for proc in procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        shutil.rmtree(tmp, ignore_errors=True)
        if args.setup != "sqlite":
            for db in ("13", "12"):
                keys = subprocess.run(
                    ["redis-cli", "-n", db, "--scan", "--pattern", f"{prefix}*"], capture_output=True, text=True
                ).stdout.split()
                for i in range(0, len(keys), 500):
                    subprocess.run(["redis-cli", "-n", db, "DEL", *keys[i : i + 500]], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
