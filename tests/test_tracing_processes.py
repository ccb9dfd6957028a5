"""Traces across processes: a SIGKILLed worker's event, finished by another worker, stays in the request's trace."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import pytest

from webhook_receiver.wire import make_event, post

from .conftest import REDIS_URL, require_redis
from .processes import Processes, logs_text, wait_for

pytest.importorskip("opentelemetry.sdk.trace")

TRACING_APP_SECRET = "tracing-app-secret-0c4d92"  # tests/tracing_app.py's (it builds its app when imported)
BROKER_URL = REDIS_URL.rsplit("/", 1)[0] + "/14"


def spans(tmp_path: Path) -> list[dict[str, Any]]:
    from .tracing_app import read_spans

    return read_spans(str(tmp_path / "spans.jsonl"))


def named(tmp_path: Path, name: str) -> list[dict[str, Any]]:
    return [span for span in spans(tmp_path) if span["name"] == name]


def check_one_trace(tmp_path: Path, event_id: str, victim: int) -> None:
    """The accept span, then a run on another process than *victim*, run 2, child of the accept span."""
    (accept,) = [s for s in named(tmp_path, "accept order.paid") if s["attributes"]["messaging.message.id"] == event_id]
    assert accept["kind"] == "PRODUCER"
    runs = [s for s in named(tmp_path, "process order.paid") if s["attributes"]["messaging.message.id"] == event_id]
    assert len(runs) == 1, runs  # the killed run's span never ended: it is not exported
    (run,) = runs
    assert run["pid"] != victim
    assert run["kind"] == "CONSUMER"
    assert run["trace_id"] == accept["trace_id"], "the second worker's run belongs to the request's trace"
    assert run["parent_id"] == accept["span_id"]
    assert run["attributes"]["webhook_receiver.attempt"] == 2
    assert run["attributes"]["webhook_receiver.status"] == "processed"
    (handler,) = [s for s in named(tmp_path, "handler ship") if s["parent_id"] == run["span_id"]]
    assert handler["trace_id"] == accept["trace_id"] and handler["pid"] == run["pid"]


def test_thread_dispatch_sigkilled_worker_the_next_run_continues_the_trace(
    processes: Processes, tmp_path: Path
) -> None:
    processes.env.update(
        WHR_SPANS=str(tmp_path / "spans.jsonl"),
        WHR_HANG=str(tmp_path / "hang.pid"),
        WHR_LEASE="2",
        WHR_DISPATCH="thread",
    )
    url = processes.gunicorn(tmp_path / "gunicorn.log", workers=2, app="tests.tracing_app:app")
    event = make_event("order.paid", event_id="killed-1")
    assert post(url, event, secret=TRACING_APP_SECRET).status_code == 202
    hang = tmp_path / "hang.pid"
    wait_for(lambda: hang.exists() and hang.read_text(), 30, f"the first run to start\n{logs_text(tmp_path)}")
    victim = int(hang.read_text())
    os.kill(victim, signal.SIGKILL)  # one gunicorn worker, mid-handler; its lease runs out, another takes over
    wait_for(lambda: named(tmp_path, "process order.paid"), 60, f"the second run\n{logs_text(tmp_path)}")
    check_one_trace(tmp_path, "killed-1", victim)


def test_celery_dispatch_sigkilled_worker_the_next_worker_continues_the_trace(
    processes: Processes, tmp_path: Path, redis_prefix: str
) -> None:
    require_redis()
    processes.env.update(
        WHR_SPANS=str(tmp_path / "spans.jsonl"),
        WHR_HANG=str(tmp_path / "hang.pid"),
        WHR_LEASE="2",
        WHR_DISPATCH="celery",
        WHR_STORE=REDIS_URL,
        WHR_PREFIX=redis_prefix,
        WHR_BROKER=BROKER_URL,
        WHR_QUEUE=redis_prefix,
    )
    url = processes.gunicorn(tmp_path / "gunicorn.log", workers=1, app="tests.tracing_app:app")
    first = processes.celery_worker(tmp_path / "celery-1.log", redis_prefix, app="tests.tracing_app:celery")
    assert post(url, make_event("order.paid", event_id="celery-killed-1"), secret=TRACING_APP_SECRET).status_code == 202
    hang = tmp_path / "hang.pid"
    wait_for(lambda: hang.exists() and hang.read_text(), 30, f"the first run to start\n{logs_text(tmp_path)}")
    victim = int(hang.read_text())
    assert os.getpgid(victim) == first.pid
    os.killpg(first.pid, signal.SIGKILL)
    first.wait(10)
    processes.celery_worker(tmp_path / "celery-2.log", redis_prefix, app="tests.tracing_app:celery")
    wait_for(lambda: named(tmp_path, "process order.paid"), 60, f"the second run\n{logs_text(tmp_path)}")
    check_one_trace(tmp_path, "celery-killed-1", victim)
