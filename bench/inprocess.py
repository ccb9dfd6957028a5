"""Microseconds per delivery inside one process: the receiver against its floor, no server, no network.

Each app's WSGI callable is called directly with a ready environ (the same
``order.paid`` body as ``throughput.py``, a fresh id per call), in alternated
rounds; the figure is the best round's mean per app, and the ratio
floor / receiver (comparable with the requests-per-second ratio). With
``--profile`` the receiver's rounds run under cProfile and the functions that
cost the most (own time) are printed, to say where the time goes.

Run it from the repository root::

    python bench/inprocess.py --rounds 7 --requests 3000
    python bench/inprocess.py --store sqlite --floor durable
    python bench/inprocess.py --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def environ_for(body: bytes, secret: str) -> dict[str, Any]:
    return {
        "REQUEST_METHOD": "POST",
        "PATH_INFO": "/webhooks/moltin",
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": "127.0.0.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_X_MOLTIN_SECRET_KEY": secret,
        "HTTP_X_MOLTIN_INTEGRATION_TRIGGER": "order.paid",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": False,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
        "wsgi.version": (1, 0),
    }


def run_round(app: Callable[..., Any], template: str, secret: str, prefix: str, count: int) -> float:
    """Seconds per delivery over *count* deliveries, each with a fresh id."""
    bodies = [template.replace("EVENT_ID", f"{prefix}-{n}").encode() for n in range(count)]
    statuses: list[str] = []

    def start_response(status: str, headers: Any, exc_info: Any = None) -> None:
        statuses.append(status)

    started = time.perf_counter()
    for body in bodies:
        for _chunk in app(environ_for(body, secret), start_response):
            pass
    elapsed = time.perf_counter() - started
    bad = [s for s in statuses if not s.startswith("2")]
    if bad:
        raise SystemExit(f"non-2xx answers: {bad[:3]}")
    return elapsed / count


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--store", choices=["memory", "sqlite", "redis", "postgresql"], default="memory")
    parser.add_argument("--floor", choices=["bare", "durable"], default="bare")
    parser.add_argument("--body", choices=["typical", "small"], default="typical")
    parser.add_argument("--profile", action="store_true", help="Profile the receiver and print where time goes.")
    args = parser.parse_args()
    instance = tempfile.mkdtemp(prefix="whr-inprocess-")
    os.environ.update(
        BENCH_STORE={
            "memory": "memory://",
            "sqlite": "",
            "redis": "redis://127.0.0.1:6379/13",
            "postgresql": "postgresql+psycopg://postgres@127.0.0.1:5432/test",
        }[args.store],
        BENCH_PREFIX=f"whr-inprocess-{os.getpid()}",
        BENCH_TABLE_PREFIX=f"whr_inprocess_{os.getpid()}_",
        BENCH_INSTANCE=instance,
        BENCH_MAX_BACKLOG="10000000",
    )
    from bench import apps
    from bench.throughput import delivery_body

    if args.store == "memory":  # room for every round's events
        apps.receiver.get_store(apps.receiver_app).max_events = args.rounds * args.requests * 2  # type: ignore[attr-defined]
    floor_name = "bare_app" if args.floor == "bare" else f"floor_{args.store}_app"
    contenders = {"receiver_app": apps.receiver_app, floor_name: getattr(apps, floor_name)}
    template = json.dumps(delivery_body(args.body))
    print(f"body: {len(template)} bytes; {args.rounds} rounds x {args.requests} deliveries; store {args.store}")
    best: dict[str, float] = {name: float("inf") for name in contenders}
    profile = cProfile.Profile() if args.profile else None
    for round_no in range(args.rounds):
        order = list(contenders) if round_no % 2 == 0 else list(reversed(contenders))
        for name in order:
            if profile and name == "receiver_app":
                profile.enable()
            per = run_round(contenders[name], template, apps.SECRET, f"r{round_no}{name}", args.requests)
            if profile and name == "receiver_app":
                profile.disable()
            best[name] = min(best[name], per)
            print(f"round {round_no + 1} {name:<18} {per * 1e6:7.1f} us/delivery")
    receiver_us, floor_us = best["receiver_app"] * 1e6, best[floor_name] * 1e6
    print(
        f"\nbest round: receiver {receiver_us:.1f} us, {floor_name} {floor_us:.1f} us per delivery;"
        f" floor/receiver {floor_us / receiver_us:.3f}"
    )
    if profile:
        stats = pstats.Stats(profile)
        stats.sort_stats("tottime").print_stats(25)
    if args.store == "postgresql":
        apps.receiver.get_store(apps.receiver_app).metadata.drop_all(apps.receiver.get_store(apps.receiver_app).engine)  # type: ignore[attr-defined]
        with apps._floor_pg().connection() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {apps._floor_table()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
