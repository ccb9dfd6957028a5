"""Review of issue 17, item 2 (fork safety) for the heartbeat that renews leases.

The heartbeat is one object per process (``HEARTBEAT``); ``os.fork`` copied it into the child as it
was: its lock (held for a moment at each beat: a child forked then deadlocked at its first
delivery), and the parent's running claims, which the child's heartbeat then renewed for as long as
the child lived. ``gunicorn --preload`` with thread dispatch forks the master, whose workers run
handlers. Seen: an event whose worker was SIGKILLed mid-handler stayed ``processing`` for good,
its lease renewed by a process that never ran it; a child that never answered.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any, Callable

import pytest
from flask import Flask

from webhook_receiver import Event, WebhookReceiver
from webhook_receiver.dispatch.lease import HEARTBEAT
from webhook_receiver.stores import ClaimState
from webhook_receiver.testing import deliver, make_event

from .conftest import POSTGRES_URL, SECRET, drop_tables, new_app, require_database
from .processes import wait_for


def _exited(pid: int, timeout: float) -> int | None:
    """The child's exit code, or ``None`` if it is still running after *timeout* seconds (then killed)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status)
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)
    os.waitpid(pid, 0)
    return None


def _in_child(work: Callable[[], bool]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 3
        try:
            code = 0 if work() else 1
        finally:
            os._exit(code)
    return pid


def test_a_child_forked_while_the_heartbeat_holds_its_lock_still_answers() -> None:
    receiver = WebhookReceiver()
    receiver.on("order.paid")(lambda event: None)
    app = new_app(WEBHOOK_RECEIVER_SECRET_KEY=SECRET)
    receiver.init_app(app)
    assert deliver(app.test_client(), make_event("order.paid"), secret=SECRET).status_code == 200

    holding, release = threading.Event(), threading.Event()

    def beat() -> None:
        with HEARTBEAT._lock:  # what the heartbeat thread does for a moment at each beat
            holding.set()
            release.wait()

    thread = threading.Thread(target=beat)
    thread.start()
    holding.wait()
    try:
        pid = _in_child(lambda: deliver(app.test_client(), make_event("order.paid"), secret=SECRET).status_code == 200)
    finally:
        release.set()
        thread.join()
    assert _exited(pid, 30) == 0, "the forked child deadlocked on the heartbeat's lock held at fork time"


@pytest.fixture
def shop(table_prefix: str) -> Any:
    require_database(POSTGRES_URL)
    yield table_prefix
    drop_tables(POSTGRES_URL, table_prefix)


def test_a_child_never_renews_the_lease_of_an_event_its_parent_was_running(shop: str) -> None:
    receiver = WebhookReceiver()
    started = threading.Event()

    @receiver.on("order.paid")
    def handle(event: Event) -> None:
        if event.id == "held":
            started.set()
            threading.Event().wait()  # runs until its process is killed

    app: Flask = new_app(
        WEBHOOK_RECEIVER_SECRET_KEY=SECRET,
        WEBHOOK_RECEIVER_STORE=POSTGRES_URL,
        WEBHOOK_RECEIVER_TABLE_PREFIX=shop,
        WEBHOOK_RECEIVER_LEASE_SECONDS=1.5,
    )
    receiver.init_app(app)
    store = receiver.get_store(app)
    reader, writer = os.pipe()

    def worker() -> bool:  # runs "held" in a thread, forks a sibling worker mid-handler, then is killed
        client = app.test_client()
        threading.Thread(
            target=lambda: deliver(client, make_event("order.paid", event_id="held"), secret=SECRET), daemon=True
        ).start()
        started.wait()
        sibling = os.fork()
        if sibling == 0:  # pragma: no cover - a worker that lives on and handles deliveries of its own
            ok = deliver(app.test_client(), make_event("order.paid", event_id="other"), secret=SECRET)
            os.write(writer, b"ok\n" if ok.status_code == 200 else b"no\n")
            time.sleep(120)
            os._exit(0)
        os.write(writer, f"{sibling}\n".encode())
        time.sleep(120)
        return True

    parent = _in_child(worker)
    lines = b""
    while lines.count(b"\n") < 2:
        lines += os.read(reader, 64)
    answers = lines.split()
    sibling = int(next(a for a in answers if a.isdigit()))
    assert b"ok" in answers, "the sibling handled a delivery of its own (its heartbeat runs)"
    os.kill(parent, signal.SIGKILL)  # the worker running "held" dies mid-handler
    os.waitpid(parent, 0)
    try:
        event = Event.from_dict(make_event("order.paid", event_id="held"))
        states: list[ClaimState] = []

        def taken() -> bool:
            states.append(store.claim(event).state)
            return states[-1] is ClaimState.CLAIMED

        wait_for(taken, 20, "the dead worker's lease to run out (the sibling must not renew it)")
    finally:
        os.kill(sibling, signal.SIGKILL)  # not ours to wait for: the dead worker's child
        os.close(reader)
        os.close(writer)
