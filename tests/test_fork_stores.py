"""The SQLite, Redis and memory stores in forked children: ``os.fork`` and real ``gunicorn --preload``.

With ``--preload`` gunicorn builds the app, and so its store, in the master
and forks the workers from it. Whatever the master held at that moment (a
connection, a pool, a lock a thread of the master held) comes along into
every worker; the stores replace it in ``after_fork``. Each test here makes a
thread of the parent hold a lock at the moment of the fork and checks that
the child still gets through the store (without ``after_fork`` it waits
forever on the copy of that lock, which no thread of the child will release).

This module is also gunicorn's configuration for the gunicorn tests
(``-c python:tests.test_fork_stores``): gunicorn reads its :func:`pre_fork`
hook and ignores every other name.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Callable

import pytest

from webhook_receiver.stores import ClaimState, EventStatus, EventStore, MemoryStore
from webhook_receiver.stores.redis import RedisStore
from webhook_receiver.stores.sqlite import SQLiteStore
from webhook_receiver.testing import deliver, make_event
from webhook_receiver.testing.store_contract import contract_event

from .conftest import REDIS_URL
from .processes import Processes, free_port, in_child, logs_text, port_open, wait_for
from .service_app import SECRET, read_output

#: How long a hung child is given before the test calls it hung (it needs well under a second).
_HUNG_AFTER = 30.0


def _in_child(work: Callable[[], bool]) -> int:
    """Fork; run *work* in the child (exit 0 when it returns True); the child's exit code, or -9 if it hung."""
    return in_child(work, hung_after=_HUNG_AFTER)


def _round_trip(store: EventStore, event_id: str) -> bool:
    claim = store.claim(contract_event(event_id))
    stored = store.get(event_id)
    return claim.state is ClaimState.CLAIMED and store.finish(claim, ok=True) and stored is not None


def _lock_in_another_process(path: str) -> subprocess.Popen[str]:
    """A process holding the SQLite file's write lock until :func:`_let_go` ends it."""
    code = (
        "import sqlite3, sys, time\n"
        "conn = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "conn.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(120)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, path], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "locked"
    proc.stdout.close()
    return proc


def _let_go(proc: subprocess.Popen[str]) -> None:
    """End the process holding the lock (a signal: a forked child may hold copies of any pipe to it)."""
    proc.terminate()
    proc.wait(30)


def _hold(lock: Any, release: threading.Event) -> threading.Thread:
    """A thread that takes *lock* and keeps it until *release* is set; returned once it holds it."""
    held = threading.Event()

    def run() -> None:
        with lock:
            held.set()
            release.wait(60)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert held.wait(10)
    return thread


def test_sqlite_a_parent_thread_setting_up_at_fork_time_does_not_block_the_child(tmp_path: Path) -> None:
    # Another process holds the file's write lock (a long prune, a backup); a thread of
    # the parent is opening its first connection and waits for that lock inside the
    # store's set-up, holding the set-up lock. The parent forks then.
    path = str(tmp_path / "events.sqlite3")
    SQLiteStore(path).get("warm-up")  # the file exists, in WAL mode
    blocker = _lock_in_another_process(path)
    store = SQLiteStore(path, timeout=20)
    parent_thread = threading.Thread(target=store.get, args=("anything",), daemon=True)
    parent_thread.start()
    time.sleep(0.5)  # the thread is inside the set-up, waiting for the file (a shorter wait only weakens the test)
    assert parent_thread.is_alive()
    let_go = threading.Timer(1.0, _let_go, args=(blocker,))  # the other process lets go of the file
    let_go.start()
    code = _in_child(lambda: _round_trip(store, "from-the-child"))
    let_go.join()
    parent_thread.join(30)
    assert code != -9, "the child hung on a lock a thread of its parent held at fork time"
    assert code == 0
    stored = store.get("from-the-child")
    assert stored is not None and stored.status is EventStatus.PROCESSED


def test_sqlite_the_child_opens_connections_of_its_own(tmp_path: Path) -> None:
    store = SQLiteStore(str(tmp_path / "events.sqlite3"))
    parents = store._connection()
    assert _round_trip(store, "parent")
    assert _in_child(lambda: store._connection() is not parents and _round_trip(store, "child")) == 0
    assert store._connection() is parents and _round_trip(store, "parent-again"), (
        "the child's closing its copy of the connection leaves the parent's working"
    )


def test_redis_a_pool_lock_held_by_a_parent_thread_at_fork_time_does_not_block_the_child(redis_prefix: str) -> None:
    # A thread of the parent is taking a connection from the pool (it holds the pool's
    # lock for that moment) when the parent forks. redis-py's own fork check resets
    # the pool in the child under that same lock: without a pool of the child's own,
    # the child waits for it forever.
    store = RedisStore(REDIS_URL, prefix=redis_prefix)
    assert _round_trip(store, "parent")
    release = threading.Event()
    holder = _hold(store.client.connection_pool._lock, release)
    try:
        code = _in_child(lambda: _round_trip(store, "child") and _round_trip(store.for_receiver("other"), "child"))
    finally:
        release.set()
        holder.join(10)
    assert code != -9, "the child hung on the pool lock a thread of its parent held at fork time"
    assert code == 0
    stored = store.get("child")
    assert stored is not None and stored.status is EventStatus.PROCESSED
    assert _round_trip(store, "parent-again"), "the parent's client still works"


def test_redis_the_child_opens_a_connection_of_its_own(redis_prefix: str) -> None:
    # The claim and the finish go to a connection held per thread: a child sharing its
    # parent's would interleave their replies on one socket.
    store = RedisStore(REDIS_URL, prefix=redis_prefix)
    assert _round_trip(store, "parent")
    parents = store._link.connection()
    parent_socket = parents._sock
    assert parent_socket is not None

    def child() -> bool:
        return store._link.connection() is not parents and _round_trip(store, "child")

    assert _in_child(child) == 0
    assert store._link.connection() is parents and parents._sock is parent_socket
    assert _round_trip(store, "parent-again"), "the child's connection leaves the parent's working"
    stored = store.get("child")
    assert stored is not None and stored.status is EventStatus.PROCESSED


def test_a_child_never_hands_out_its_parents_fencing_tokens(tmp_path: Path) -> None:
    # Tokens are a per-process random prefix and a counter: a child that kept its parent's
    # prefix would give a lease the very token the parent gives its next one.
    from webhook_receiver.stores.base import new_token

    parent_token = new_token()
    parent_prefix = parent_token.rsplit("-", 1)[0]
    store = SQLiteStore(str(tmp_path / "events.sqlite3"))

    def child() -> bool:
        claim = store.claim(contract_event("token-from-the-child"))
        return not new_token().startswith(parent_prefix) and not claim.token.startswith(parent_prefix)

    assert _in_child(child) == 0
    assert new_token().startswith(parent_prefix), "the parent keeps its own prefix"


def test_memory_a_lock_held_by_a_parent_thread_at_fork_time_does_not_block_the_child() -> None:
    store = MemoryStore()
    assert _round_trip(store, "parent")
    release = threading.Event()
    holder = _hold(store._lock, release)
    try:
        code = _in_child(lambda: _round_trip(store, "child"))
    finally:
        release.set()
        holder.join(10)
    assert code == 0, "the child hung on (or failed after) a lock its parent held at fork time"


# -- gunicorn --preload ---------------------------------------------------------------------

_hook_ran = False


def pre_fork(server: Any, worker: Any) -> None:
    """gunicorn's hook, in the master before it forks a worker: the first time, a master thread holds a store lock.

    ``WHR_HOLD_AT_FORK=sqlite``: another process takes the file's write lock
    and a master thread opens the store's first connection, which waits for it
    in the set-up (holding the set-up lock), as a master whose store meets a
    locked file does. ``WHR_HOLD_AT_FORK=redis``: a master thread holds the
    connection pool's lock, as one taking a connection does. Either is let go
    two seconds later, after every worker was forked with it held.
    """
    global _hook_ran
    kind = os.environ.get("WHR_HOLD_AT_FORK")
    if _hook_ran or not kind:
        return
    _hook_ran = True
    from tests.service_app import receiver

    store: Any = receiver.get_store(server.app.wsgi())
    release = threading.Event()
    if kind == "sqlite":
        blocker = _lock_in_another_process(store.path)
        threading.Thread(target=_ignore_errors, args=(store.count_due,), daemon=True).start()
        time.sleep(0.5)  # the thread now waits for the file inside the set-up
        threading.Timer(2.0, _let_go, args=(blocker,)).start()
    else:
        _hold(store.client.connection_pool._lock, release)
        threading.Timer(2.0, release.set).start()
    print(f"pre_fork: a master thread holds the {kind} store's lock", file=sys.stderr, flush=True)


def _ignore_errors(work: Callable[[], object]) -> None:
    try:
        work()
    except Exception:  # noqa: BLE001 - the master's own use of the store does not matter here
        pass


def _gunicorn_preload(processes: Processes, log: Path, workers: int) -> str:
    port = free_port()
    processes.start(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "--preload",
            "-c",
            "python:tests.test_fork_stores",
            "-w",
            str(workers),
            "-b",
            f"127.0.0.1:{port}",
            "--timeout",
            "120",
            "--graceful-timeout",
            "1",
            "tests.service_app:app",
        ],
        log,
    )
    wait_for(lambda: port_open(port), 30, f"gunicorn on port {port} ({log})")
    return f"http://127.0.0.1:{port}/webhooks/moltin"


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_gunicorn_preload_with_a_lock_held_at_fork_runs_300_events_once_each(
    processes: Processes, tmp_path: Path, kind: str, request: pytest.FixtureRequest
) -> None:
    """Three workers forked from a master whose thread holds a store lock; 300 events: none twice, stuck or lost.

    SQLite with inline dispatch (every answer is 200 ``processed``), Redis with
    thread dispatch (every answer is 202, and the workers, the master's
    included, run them).
    """
    if kind == "redis":
        prefix: str = request.getfixturevalue("redis_prefix")
        processes.env.update(WHR_STORE=REDIS_URL, WHR_PREFIX=prefix, WHR_DISPATCH="thread", WHR_THREADS="2")
        store: EventStore = RedisStore(REDIS_URL, prefix=prefix)
        expected = 202
    else:
        store = SQLiteStore(str(tmp_path / "webhook_receiver-moltin.sqlite3"))
        store.get("warm-up")  # the file exists; the master's store has not set it up yet
        processes.env.update(WHR_DISPATCH="inline")
        expected = 200
    processes.env.update(WHR_HOLD_AT_FORK=kind)
    url = _gunicorn_preload(processes, tmp_path / "gunicorn.log", workers=3)
    ids = [f"preload-{n}-{uuid.uuid4().hex[:6]}" for n in range(300)]

    gave_up = threading.Event()  # after a delivery that hung or failed, the rest are not sent (-3)

    def send(event_id: str) -> int:
        if gave_up.is_set():
            return -3
        try:
            code = int(deliver(url, make_event("order.paid", event_id=event_id), secret=SECRET, timeout=30).status_code)
        except Exception as exc:  # noqa: BLE001 - a worker that hangs or dies shows as a failed delivery
            code = -1 if "imeout" in repr(exc) else -2
        if code != expected:
            gave_up.set()
        return code

    with ThreadPoolExecutor(6) as pool:
        codes = list(pool.map(send, ids))
    failed = sorted({code for code in codes if code != expected})
    assert not failed, f"{sum(c != expected for c in codes)} deliveries answered {failed}\n{logs_text(tmp_path)}"

    def settled() -> bool:
        return all((s := store.get(i)) is not None and s.status is EventStatus.PROCESSED for i in ids)

    wait_for(settled, 60, f"every event to be processed\n{logs_text(tmp_path)}")
    effects = read_output(str(tmp_path / "effects.jsonl"))
    for phase in ("start", "done"):
        counts: dict[str, int] = {}
        for line in effects:
            if line["phase"] == phase:
                counts[line["id"]] = counts.get(line["id"], 0) + 1
        assert sorted(counts) == sorted(ids), f"every event {phase}ed"
        assert set(counts.values()) == {1}, f"no event {phase}ed twice"
    pids = {line["pid"] for line in effects}
    assert len(pids) >= 2, "several forked workers ran the events"
    assert "a master thread holds" in logs_text(tmp_path), "the hook held the lock at fork time"
    store.close()
