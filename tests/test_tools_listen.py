"""flask webhooks listen: the answer background dispatch gave, and every event of a burst past any page size."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any, Callable

from flask import Flask

from webhook_receiver import WebhookReceiver
from webhook_receiver.cli import webhooks_cli
from webhook_receiver.testing import deliver, make_event

from .conftest import SECRET


def test_a_background_delivery_shows_its_202_then_its_run(
    make_app: Callable[..., Flask], receiver: WebhookReceiver
) -> None:
    ran = threading.Event()
    receiver.on("order.paid", name="ledger")(lambda e: ran.set())
    app = make_app(WEBHOOK_RECEIVER_DISPATCH="thread", WEBHOOK_RECEIVER_STORE="memory://")
    app.extensions["webhook_receiver"]["moltin"].dispatcher.start()  # a flask command starts no workers
    client = app.test_client()

    def upstream() -> None:
        time.sleep(0.3)
        assert deliver(client, make_event("order.paid", event_id="bg-1"), secret=SECRET).status_code == 202

    sender = threading.Thread(target=upstream)
    sender.start()
    result = app.test_cli_runner().invoke(webhooks_cli, ["listen", "--interval", "0.05", "--json", "--seconds", "2"])
    sender.join()
    assert result.exit_code == 0, result.output
    assert ran.is_set()
    reports = [json.loads(line) for line in result.output.splitlines()]
    shown = [(r["kind"], r["answer"], r.get("outcome"), r["attempt"]) for r in reports]
    shown = [s for s in shown if s[2] != "... running"]
    assert shown == [("delivery", "202 accepted", None, 0), ("run", None, "processed", 1)] or shown == [
        ("delivery", "202 accepted", None, 1),
        ("run", None, "processed", 1),
    ], reports
    app.extensions["webhook_receiver"]["moltin"].dispatcher.close()


def test_a_burst_larger_than_any_window_is_shown_whole(tmp_path: Path) -> None:
    """1,200 events land while listen is stopped (SIGSTOP): its next look shows all 1,200, not the newest 500."""
    (tmp_path / "burstapp.py").write_text(
        textwrap.dedent(f"""
        from flask import Flask
        from webhook_receiver import WebhookReceiver

        receiver = WebhookReceiver()
        receiver.on("order.paid")(lambda event: None)

        def create_app():
            app = Flask("burstapp", instance_path={str(tmp_path)!r})
            app.config.update(
                WEBHOOK_RECEIVER_SECRET_KEY={SECRET!r},
                WEBHOOK_RECEIVER_STORE="sqlite:///burst.sqlite3",
            )
            receiver.init_app(app)
            return app
        """)
    )
    sys.path.insert(0, str(tmp_path))
    try:
        import burstapp  # type: ignore[import-not-found]
    finally:
        sys.path.remove(str(tmp_path))
    app = burstapp.create_app()
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONUNBUFFERED": "1"}
    listen = subprocess.Popen(
        [sys.executable, "-m", "flask", "--app", "burstapp:create_app", "webhooks", "listen"]
        + ["--interval", "0.1", "--limit", "1200", "--seconds", "120", "--status", "processed"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert listen.stdout is not None
        banner = listen.stdout.readline()
        assert banner.startswith("listening for deliveries to sqlite store"), banner + listen.stderr.read()
        time.sleep(0.3)  # let it look once or twice, then stop it where it stands
        listen.send_signal(signal.SIGSTOP)
        client = app.test_client()
        for n in range(1200):
            answer = deliver(client, make_event("order.paid", event_id=f"burst-{n}"), secret=SECRET)
            assert answer.status_code == 200
        listen.send_signal(signal.SIGCONT)
        out, err = listen.communicate(timeout=150)
    finally:
        listen.kill()
    lines = [line for line in out.splitlines() if line.startswith("--> order.paid burst-")]
    assert len(lines) == 1200, (len(lines), err[-2000:])
    assert {line.split()[2] for line in lines} == {f"burst-{n}" for n in range(1200)}
    assert listen.returncode == 0, err


def test_an_event_below_the_horizon_is_followed_until_it_is_processed(
    app: Flask, receiver: WebhookReceiver, send: Callable[..., Any], monkeypatch: Any
) -> None:
    """A failed event the horizon passed, run again by upstream's retry: its running and processed states are shown."""
    import webhook_receiver.cli.listen as listen

    monkeypatch.setattr(listen, "SLACK_SECONDS", 0.0)  # the horizon may move right up to the newest event
    broken = {"on": True}
    running, release = threading.Event(), threading.Event()

    def charge(event: Any) -> None:
        if event.id != "retried":
            return
        if broken["on"]:
            raise ConnectionError("payments down")
        running.set()
        release.wait(30)

    receiver.on("order.paid", name="charge")(charge)
    watch = listen.StoreWatch(receiver.get_store(app), since=time.time() - 1)
    send(make_event("order.paid", event_id="retried"))
    time.sleep(0.01)
    send(make_event("order.paid", event_id="later"))
    assert [(c.event.id, c.event.status.value) for c in watch.look()] == [
        ("retried", "failed"),
        ("later", "processed"),
    ]
    assert watch.horizon > receiver.get_store(app).get("retried").received_at
    broken["on"] = False
    retry = threading.Thread(target=send, args=(make_event("order.paid", event_id="retried", attempt=2),))
    retry.start()
    assert running.wait(30)
    assert [(c.event.id, c.event.status.value) for c in watch.look()] == [("retried", "processing")]
    release.set()
    retry.join()
    changes = watch.look()
    assert [(c.event.id, c.event.status.value, c.event.attempts, c.ran) for c in changes] == [
        ("retried", "processed", 2, ("charge",))
    ]
    assert watch.look() == []


def test_a_look_mid_run_hides_no_handler_from_the_finished_runs_line(
    app: Flask, receiver: WebhookReceiver, send: Callable[..., Any]
) -> None:
    """A look landing after the first handler and before the second: the finished line still names both."""
    import webhook_receiver.cli.listen as listen

    running, release = threading.Event(), threading.Event()
    receiver.on("order.paid", name="ledger")(lambda event: None)

    def warehouse(event: Any) -> None:
        running.set()
        release.wait(30)
        raise ConnectionError("warehouse API down")

    receiver.on("order.paid", name="warehouse")(warehouse)
    watch = listen.StoreWatch(receiver.get_store(app), since=time.time() - 1)
    delivery = threading.Thread(target=send, args=(make_event("order.paid", event_id="mid-run"),))
    delivery.start()
    assert running.wait(30)
    assert [(c.event.id, c.event.status.value) for c in watch.look()] == [("mid-run", "processing")]
    release.set()
    delivery.join()
    assert [(c.event.id, c.event.status.value, c.ran) for c in watch.look()] == [
        ("mid-run", "failed", ("ledger", "warehouse"))
    ]
