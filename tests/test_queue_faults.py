"""Accepted means it runs: background dispatch under faults, with real processes.

A 202 is a promise. These tests break what can break between the answer and
the handler's end (the web worker SIGKILLed, a Celery worker SIGKILLed, the
SQLite file locked by another process, a handler outliving its lease while
upstream redelivers, a poison body, a backlog past its limit) and check, with
no further delivery, that every accepted event ends processed and that no
handler ran twice at once.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from webhook_receiver.cli import webhooks_cli
from webhook_receiver.stores import EventStatus, EventStore
from webhook_receiver.stores.redis import RedisStore
from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.testing import deliver, make_event

from .conftest import REDIS_URL
from .processes import Processes, logs_text, wait_for
from .service_app import SECRET, read_output

BROKER_URL = REDIS_URL.rsplit("/", 1)[0] + "/14"


def lines(tmp_path: Path, phase: str, event_id: str | None = None) -> list[dict[str, Any]]:
    return [
        line
        for line in read_output(str(tmp_path / "effects.jsonl"))
        if line["phase"] == phase and (event_id is None or line["id"] == event_id)
    ]


def open_store(tmp_path: Path, processes: Processes) -> EventStore:
    """The store the service app uses, opened from the test process."""
    if processes.env.get("WHR_STORE", "").startswith("redis://"):
        return RedisStore(processes.env["WHR_STORE"], prefix=processes.env["WHR_PREFIX"])
    return SQLiteStore(str(tmp_path / "webhook_receiver-moltin.sqlite3"))


def use_redis(processes: Processes, request: pytest.FixtureRequest) -> str:
    prefix: str = request.getfixturevalue("redis_prefix")
    processes.env.update(WHR_STORE=REDIS_URL, WHR_PREFIX=prefix)
    return prefix


def all_processed(store: EventStore, ids: list[str]) -> bool:
    found = [store.get(i) for i in ids]
    return all(s is not None and s.status is EventStatus.PROCESSED for s in found)


@pytest.mark.parametrize("store_kind", ["sqlite", "redis"])
def test_thread_dispatch_web_worker_killed_after_202_runs_every_event_after_restart(
    processes: Processes, tmp_path: Path, store_kind: str, request: pytest.FixtureRequest
) -> None:
    if store_kind == "redis":
        use_redis(processes, request)
    processes.env.update(WHR_DISPATCH="thread", WHR_LEASE="3", WHR_SLEEP="1", WHR_THREADS="2")
    url = processes.gunicorn(tmp_path / "gunicorn.log", workers=1)
    ids = [f"crash-{n}-{uuid.uuid4().hex[:6]}" for n in range(6)]
    for event_id in ids:
        answer = deliver(url, make_event("order.paid", event_id=event_id), secret=SECRET)
        assert answer.status_code == 202, answer.text
    wait_for(lambda: lines(tmp_path, "start"), 20, "a handler to start")
    victim = lines(tmp_path, "start")[0]["pid"]
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()

    # gunicorn starts a new worker; nothing is delivered again
    store = open_store(tmp_path, processes)
    wait_for(lambda: all_processed(store, ids), 40, f"every accepted event to run\n{logs_text(tmp_path)}")
    took = time.monotonic() - killed_at
    for event_id in ids:
        assert len(lines(tmp_path, "done", event_id)) == 1, f"{event_id} had its effect once"
    starts = lines(tmp_path, "start")
    interrupted = [s for s in starts if s["pid"] == victim]
    assert len(starts) <= len(ids) + len(interrupted), "only the runs the kill interrupted ran again"
    assert took < 3 + 6 * 1 + 15, f"processed {took:.1f} s after the kill (lease 3 s, six 1 s handlers)"
    store.close()


def test_sigterm_lets_running_handlers_finish_and_leaves_the_rest_due(processes: Processes, tmp_path: Path) -> None:
    processes.env.update(WHR_DISPATCH="thread", WHR_LEASE="30", WHR_SLEEP="2", WHR_THREADS="1", WHR_GRACE="10")
    url = processes.gunicorn(tmp_path / "gunicorn.log", workers=1, graceful=15)
    ids = [f"term-{n}-{uuid.uuid4().hex[:6]}" for n in range(4)]
    for event_id in ids:
        assert deliver(url, make_event("order.paid", event_id=event_id), secret=SECRET).status_code == 202
    wait_for(lambda: lines(tmp_path, "start"), 20, "a handler to start")
    server = processes.procs[-1]
    os.kill(server.pid, signal.SIGTERM)  # gunicorn's master: a graceful stop of its worker
    server.wait(30)
    assert len(lines(tmp_path, "done")) == 1, "the running handler finished within its grace period"
    assert len(lines(tmp_path, "start")) == 1, "no new event was taken once the stop began"
    store = open_store(tmp_path, processes)
    first = lines(tmp_path, "done")[0]["id"]
    rest = [i for i in ids if i != first]
    assert all_processed(store, [first])
    assert {store.get(i).status for i in rest} == {EventStatus.PENDING}  # type: ignore[union-attr]

    processes.gunicorn(tmp_path / "gunicorn-2.log", workers=1)  # the next deploy; nothing delivered again
    wait_for(lambda: all_processed(store, ids), 30, f"the rest to run\n{logs_text(tmp_path)}")
    assert len(lines(tmp_path, "start")) == 4
    store.close()


@pytest.mark.parametrize("what", ["one-of-two-workers", "web-and-worker"])
def test_celery_dispatch_killed_processes_lose_nothing(
    processes: Processes, tmp_path: Path, what: str, request: pytest.FixtureRequest
) -> None:
    """SIGKILL one of two Celery workers mid-handler (the other takes its events over), or SIGKILL the
    web server and the only worker and start a new worker: every accepted event ends processed."""
    prefix = use_redis(processes, request)
    processes.env.update(WHR_DISPATCH="celery", WHR_LEASE="3", WHR_SLEEP="1", WHR_BROKER=BROKER_URL, WHR_QUEUE=prefix)
    workers = [processes.celery_worker(tmp_path / "celery-1.log", prefix)]
    if what == "one-of-two-workers":
        workers.append(processes.celery_worker(tmp_path / "celery-2.log", prefix))
    web = processes.gunicorn(tmp_path / "gunicorn.log", workers=1)
    ids = [f"celery-{n}-{uuid.uuid4().hex[:6]}" for n in range(6)]
    for event_id in ids:
        assert deliver(web, make_event("order.paid", event_id=event_id), secret=SECRET).status_code == 202
    wait_for(lambda: lines(tmp_path, "start"), 30, f"a handler to start\n{logs_text(tmp_path)}")
    victim_pid = lines(tmp_path, "start")[0]["pid"]
    victim = next(w for w in workers if w.pid == os.getpgid(victim_pid))
    os.killpg(victim.pid, signal.SIGKILL)
    victim.wait(10)
    if what == "web-and-worker":
        for proc in processes.procs:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(10)
        processes.celery_worker(tmp_path / "celery-3.log", prefix)
    store = open_store(tmp_path, processes)
    wait_for(lambda: all_processed(store, ids), 60, f"every accepted event to run\n{logs_text(tmp_path)}")
    for event_id in ids:
        assert len(lines(tmp_path, "done", event_id)) == 1, f"{event_id} had its effect once"
    assert any(line["pid"] != victim_pid for line in lines(tmp_path, "done"))
    store.close()


def test_sqlite_locked_by_another_process_while_a_handler_finishes(processes: Processes, tmp_path: Path) -> None:
    processes.env.update(WHR_DISPATCH="thread", WHR_LEASE="30", WHR_SLEEP="1.5")
    url = processes.gunicorn(tmp_path / "gunicorn.log", workers=1)
    event_id = f"locked-{uuid.uuid4().hex[:6]}"
    assert deliver(url, make_event("order.paid", event_id=event_id), secret=SECRET).status_code == 202
    wait_for(lambda: lines(tmp_path, "start", event_id), 20, "the handler to start")

    holder = sqlite3.connect(str(tmp_path / "webhook_receiver-moltin.sqlite3"), isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        wait_for(lambda: lines(tmp_path, "done", event_id), 20, "the handler to end")
        time.sleep(7)  # past the store's 5 s busy timeout: the outcome's first write fails
    finally:
        holder.execute("ROLLBACK")
        holder.close()

    store = open_store(tmp_path, processes)
    wait_for(lambda: all_processed(store, [event_id]), 20, f"the event to end processed\n{logs_text(tmp_path)}")
    stored = store.get(event_id)
    assert stored is not None
    outcome = stored.handlers["tests.service_app.effect"]
    assert outcome.ok and outcome.attempts == 1, "the handler's success was kept, not run again"
    assert len(lines(tmp_path, "start", event_id)) == 1
    assert "cannot write its outcome yet" in logs_text(tmp_path)


@pytest.mark.parametrize("store_kind", ["sqlite", "redis"])
def test_a_handler_three_times_longer_than_its_lease_is_not_run_twice(
    processes: Processes, tmp_path: Path, store_kind: str, request: pytest.FixtureRequest
) -> None:
    if store_kind == "redis":
        use_redis(processes, request)
    processes.env.update(WHR_DISPATCH="thread", WHR_LEASE="1", WHR_SLEEP="3", WHR_FAIL_ONCE="")
    url = processes.gunicorn(tmp_path / "gunicorn.log", workers=2)
    body = make_event("order.paid", event_id=f"long-{uuid.uuid4().hex[:6]}")
    assert deliver(url, body, secret=SECRET).status_code == 202
    wait_for(lambda: lines(tmp_path, "start", body["id"]), 20, "the handler to start")
    redelivered = []
    while not lines(tmp_path, "done", body["id"]):  # upstream redelivers all along
        redelivered.append(deliver(url, dict(body, attempt=2), secret=SECRET).status_code)
        time.sleep(0.2)
    assert set(redelivered) == {202} and len(redelivered) >= 8
    store = open_store(tmp_path, processes)
    wait_for(lambda: all_processed(store, [body["id"]]), 10, "the event to end processed")
    time.sleep(1.5)  # past another lease: nothing else starts
    assert len(lines(tmp_path, "start", body["id"])) == 1, "no second run started (the lease was renewed)"
    stored = store.get(body["id"])
    assert stored is not None and stored.handlers["tests.service_app.effect"].ok
    assert stored.handlers["tests.service_app.effect"].attempts == 1
    store.close()


def test_past_the_backlog_limit_deliveries_get_503_and_memory_stays_flat(processes: Processes, tmp_path: Path) -> None:
    processes.env.update(
        WHR_DISPATCH="thread", WHR_LEASE="60", WHR_SLEEP="120", WHR_THREADS="1", WHR_MAX_BACKLOG="2500"
    )
    url = processes.gunicorn(tmp_path / "gunicorn.log", workers=1)
    body = make_event("order.paid", event_id="EVENT")
    body["payload"] = {"data": {"note": "x" * 4000}}  # about 5 kB, as upstream's order.paid

    def send(n: int) -> list[int]:
        codes = []
        for _ in range(n):
            codes.append(deliver(url, dict(body, id=uuid.uuid4().hex), secret=SECRET).status_code)
        return codes

    assert set(send(300)) == {202}
    wait_for(lambda: lines(tmp_path, "start"), 20, "the one worker to be busy")
    pid = lines(tmp_path, "start")[0]["pid"]
    before = rss_kib(pid)
    assert set(send(2000)) == {202}
    after = rss_kib(pid)
    assert after - before < 4096, f"the web process grew {after - before} KiB over 2,000 queued events"

    time.sleep(1.5)  # the monitor measures the backlog once a second
    codes = send(300)
    assert codes[-1] == 503 and set(codes) <= {202, 503}
    full = deliver(url, dict(body, id="one-too-many"), secret=SECRET)
    assert full.status_code == 503 and full.json() == {
        "id": "one-too-many",
        "status": "unavailable",
        "error": "the backlog is full",
    }
    store = open_store(tmp_path, processes)
    assert store.get("one-too-many") is None, "nothing is stored for a refused delivery"
    store.close()


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError(f"no VmRSS for {pid}")


def test_a_deeply_nested_body_runs_and_an_unreadable_stored_body_fails_alone(tmp_path: Path) -> None:
    """In one process: a body 600 levels deep is handled; a stored body that cannot be rebuilt
    is failed with its reason and reported, and the events after it still run."""
    from webhook_receiver import WebhookReceiver, signals

    from .conftest import new_app

    receiver = WebhookReceiver(secret_key=SECRET)
    seen: list[str] = []
    receiver.on("order.paid")(lambda event: seen.append(event.id))
    app = new_app(
        WEBHOOK_RECEIVER_DISPATCH="thread",
        WEBHOOK_RECEIVER_THREADS=1,
        WEBHOOK_RECEIVER_STORE="sqlite:///webhook_receiver-moltin.sqlite3",
    )
    failures: list[dict[str, Any]] = []
    signals.event_failed.connect(lambda sender, **kw: failures.append(kw), app, weak=False)
    receiver.init_app(app)
    dispatcher = receiver.get_config(app).dispatcher
    try:
        store = receiver.get_store(app)
        deep: Any = "bottom"
        for _ in range(600):
            deep = {"nested": deep}
        nested = make_event("order.paid", event_id="deep")
        nested["payload"] = {"data": deep}
        client = app.test_client()
        assert deliver(client, nested, secret=SECRET).status_code == 202

        # a body stored by an older version, or damaged on disk
        path = str(Path(app.instance_path) / "webhook_receiver-moltin.sqlite3")
        with sqlite3.connect(path) as conn:
            now = time.time()
            conn.execute(
                "INSERT INTO webhook_receiver_events (id, trigger_name, status, raw, received_at,"
                " updated_at, due_at) VALUES ('poison', 'order.paid', 'pending', '{\"id\": 1', ?, ?, ?)",
                (now, now, now),
            )
        for n in range(3):
            assert deliver(client, make_event("order.paid", event_id=f"after-{n}"), secret=SECRET).status_code == 202
        wait_for(
            lambda: all_processed(store, ["deep", "after-0", "after-1", "after-2"]),
            20,
            "the events around the poison one to run",
        )
        wait_for(lambda: failures, 10, "event_failed")
        stored = store.get("poison")
        assert stored is not None and stored.status is EventStatus.FAILED
        assert stored.error is not None and stored.error.startswith("the stored body cannot be rebuilt")
        assert failures[0]["event"].id == "poison" and failures[0]["failed"] == []
        assert failures[0]["error"] == stored.error
        assert sorted(seen) == ["after-0", "after-1", "after-2", "deep"]
    finally:
        dispatcher.close()

    runner = app.test_cli_runner()
    replayed = runner.invoke(webhooks_cli, ["replay", "--failed"])
    assert "1 unreadable" in replayed.output, replayed.output


def test_redeliveries_while_held_are_accepted_and_run_once(tmp_path: Path) -> None:
    """Many threads deliver the same events at once in one process: each runs once."""
    from webhook_receiver import WebhookReceiver

    from .conftest import new_app

    receiver = WebhookReceiver(secret_key=SECRET)
    runs: list[str] = []
    lock = threading.Lock()

    @receiver.on("order.paid")
    def slow(event: Any) -> None:
        with lock:
            runs.append(event.id)
        time.sleep(0.05)

    app = new_app(WEBHOOK_RECEIVER_DISPATCH="thread", WEBHOOK_RECEIVER_THREADS=3)
    receiver.init_app(app)
    try:
        bodies = [make_event("order.paid", event_id=f"dup-{n}") for n in range(10)]

        def hammer() -> None:
            client = app.test_client()
            for body in bodies * 3:
                assert deliver(client, body, secret=SECRET).status_code in (200, 202)

        threads = [threading.Thread(target=hammer) for _ in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
        store = receiver.get_store(app)
        wait_for(lambda: all_processed(store, [b["id"] for b in bodies]), 20, "every event to run")
        assert sorted(runs) == sorted(b["id"] for b in bodies)
    finally:
        receiver.get_config(app).dispatcher.close()


def test_flask_commands_take_no_events_but_flask_run_does(processes: Processes, tmp_path: Path) -> None:
    """`flask webhooks events` (any command but `run`) must not start workers in its process."""
    import subprocess
    import sys

    from webhook_receiver import Event

    from .processes import ROOT, free_port, port_open

    processes.env.update(WHR_DISPATCH="thread", WHR_LEASE="5")
    store = SQLiteStore(str(tmp_path / "webhook_receiver-moltin.sqlite3"))
    store.accept(Event.from_dict(make_event("order.paid", event_id="waiting")))
    flask = [sys.executable, "-m", "flask", "--app", "tests.service_app:app"]
    listed = subprocess.run(
        [*flask, "webhooks", "events"], cwd=ROOT, env=processes.env, capture_output=True, text=True, timeout=60
    )
    assert listed.returncode == 0 and "waiting" in listed.stdout, listed.stderr
    time.sleep(0.5)
    assert lines(tmp_path, "start") == [], "the CLI process ran no handler"
    assert store.get("waiting").status is EventStatus.PENDING  # type: ignore[union-attr]

    port = free_port()
    processes.start([*flask, "run", "--port", str(port)], tmp_path / "flask-run.log")
    wait_for(lambda: port_open(port), 30, "flask run")
    wait_for(lambda: all_processed(store, ["waiting"]), 20, f"flask run's workers\n{logs_text(tmp_path)}")
    store.close()
