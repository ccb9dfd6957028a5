"""Two `flask webhooks sync` processes at once, against the emulator: one group, no duplicate."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
from pathlib import Path
from typing import Any, Callable

from webhook_receiver.local.emulator import Emulator

#: What a lock marker's description starts with (webhook_receiver.upstream.sync.LOCK_MARK).
LOCK_MARK = "webhook_receiver sync lock"

URL = "https://shop.example/webhooks/moltin"


class HoldFirstLists:
    """WSGI middleware: the first *count* GET /v2/integrations wait for each other, so that two syncs read together.

    Without a lock, both then see no integration and both create the group.
    """

    def __init__(self, app: Callable[..., Any], count: int = 2, timeout: float = 20.0) -> None:
        self.app = app
        self.count = count
        self.timeout = timeout
        self.arrived = 0
        self.ready = threading.Condition()

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if environ["REQUEST_METHOD"] == "GET" and environ["PATH_INFO"] == "/v2/integrations":
            with self.ready:
                if self.arrived < self.count:
                    self.arrived += 1
                    self.ready.notify_all()
                    self.ready.wait_for(lambda: self.arrived >= self.count, timeout=self.timeout)
        return self.app(environ, start_response)


def write_app(folder: Path) -> None:
    (folder / "shopapp.py").write_text(
        textwrap.dedent("""
        from flask import Flask
        from webhook_receiver import WebhookReceiver

        receiver = WebhookReceiver()
        receiver.on("order.*")(lambda event: None)  # seven events: a group of two integrations
        receiver.on("product.deleted", name="unindex")(lambda event: None)

        def create_app():
            app = Flask("shopapp")
            app.config.update(TESTING=True, WEBHOOK_RECEIVER_SECRET_KEY="a-long-enough-secret-1234")
            receiver.init_app(app)
            return app
        """)
    )


def sync_processes(moltin: Emulator, folder: Path, count: int) -> list[subprocess.Popen[str]]:
    env = {
        **os.environ,
        "PYTHONPATH": str(folder),
        "EPCC_CLIENT_ID": moltin.client_id,
        "EPCC_CLIENT_SECRET": moltin.client_secret,
        "EPCC_API_BASE_URL": moltin.url,
    }
    command = [sys.executable, "-m", "flask", "--app", "shopapp:create_app", "webhooks", "sync", "--url", URL]
    return [
        subprocess.Popen(command, cwd=folder, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for _ in range(count)
    ]


def test_two_syncs_at_once_make_one_group(moltin: Emulator, tmp_path: Path) -> None:
    write_app(tmp_path)
    moltin.app.wsgi_app = HoldFirstLists(moltin.app.wsgi_app)  # type: ignore[method-assign]
    processes = sync_processes(moltin, tmp_path, 2)
    outputs = [process.communicate(timeout=120) for process in processes]
    assert [process.returncode for process in processes] == [0, 0], outputs
    names = sorted(i["name"] for i in moltin.state.integrations.values())
    assert names == ["webhook_receiver-moltin", "webhook_receiver-moltin-2"], (names, outputs)
    observed = sorted(e for i in moltin.state.integrations.values() for e in i["observes"])
    assert len(observed) == 8 and len(set(observed)) == 8
    assert not any(str(i.get("description")).startswith(LOCK_MARK) for i in moltin.state.integrations.values())
    lines = [stdout for stdout, _ in outputs]
    assert sum("created integration 'webhook_receiver-moltin'" in out for out in lines) == 1, outputs


def test_a_sync_that_died_holding_the_lock_does_not_block_the_next(moltin: Emulator, moltin_client: Any) -> None:
    from webhook_receiver import WebhookReceiver
    from webhook_receiver.upstream.sync import sync_integration

    stale = moltin_client.create_integration(
        name="shop.sync-lock",
        url=URL,
        observes=["order.paid"],
        description=f"{LOCK_MARK} dead since 1000.0: a sync that was killed",
        enabled=False,
    )
    shop = WebhookReceiver(secret_key="a-long-enough-secret-1234")
    shop.on("order.paid")(lambda e: None)
    result = sync_integration(moltin_client, shop, URL, name="shop", secret_key="a-long-enough-secret-1234")
    assert result.action == "created"
    assert stale["id"] not in moltin.state.integrations
    assert [i["name"] for i in moltin.state.integrations.values()] == ["shop"]
