"""End to end: the emulator and the sample app on real ports, synced by `flask webhooks sync`.

The sample app runs as its own process (``flask run``); the sync is the real
command line. Each handler's effect must happen exactly once, including the
shipping notification whose first attempt fails and is retried by the emulator.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

import pytest

from sample_app.activity import read_activity
from webhook_receiver.local.emulator import Emulator

from .processes import free_port, port_open, wait_for

ROOT = Path(__file__).resolve().parent.parent
SECRET = "end-to-end-secret-4b1f"


@pytest.fixture
def env(moltin: Emulator, tmp_path: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "FLASK_APP": f"sample_app:create_app(instance_path={str(tmp_path)!r})",
        "FLASK_WEBHOOK_RECEIVER_SECRET_KEY": json.dumps(SECRET),
        "FLASK_SAMPLE_FLAKY_MAIL": "true",
        "MOLTIN_CLIENT_ID": moltin.client_id,
        "MOLTIN_CLIENT_SECRET": moltin.client_secret,
        "MOLTIN_API_URL": moltin.url,
    }


@pytest.fixture
def shop_url(env: dict[str, str]) -> Iterator[str]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "flask", "run", "--port", str(port), "--no-reload"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )

    def started() -> bool:
        if proc.poll() is not None:
            output = proc.stdout.read().decode() if proc.stdout else ""
            pytest.fail(f"the sample app did not start:\n{output}")
        return port_open(port)

    wait_for(started, 30, "the sample app to start")
    yield f"http://127.0.0.1:{port}/webhooks/moltin"
    proc.terminate()
    proc.wait(timeout=10)


def flask(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "flask", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )


def test_sync_fire_and_handle_once(moltin: Emulator, env: dict[str, str], shop_url: str, tmp_path: Path) -> None:
    synced = flask(env, "webhooks", "sync", "--url", shop_url)
    assert synced.returncode == 0, synced.stderr
    assert synced.stdout.startswith("created integration 'webhook_receiver-moltin'")
    assert flask(env, "webhooks", "sync", "--url", shop_url).stdout.startswith("unchanged")
    (integration,) = moltin.state.integrations.values()
    assert integration["observes"] == ["order.fulfilled", "order.paid", "product.deleted"]
    assert integration["configuration"] == {"url": shop_url, "secret_key": SECRET}

    order = {"type": "order", "id": "order-77", "customer": {"name": "Ann", "email": "ann@example.com"}}
    paid = moltin.fire("order.paid", order)
    fulfilled = moltin.fire("order.fulfilled", order)
    deleted = moltin.fire("product.deleted", {"id": "p-77", "type": "product"})
    assert moltin.wait_idle(30)

    actions = [(a["action"], a["event"]) for a in read_activity(str(tmp_path / "activity.jsonl"))]
    assert sorted(actions) == sorted(
        [  # each handler's effect once
            ("payment_recorded", paid.event_id),
            ("shipping_notification_written", fulfilled.event_id),
            ("product_unindexed", deleted.event_id),
        ]
    )
    attempts = {(moltin.delivered(log)[0], log["attempt"], log["succeeded"]) for log in moltin.logs()}
    assert attempts == {
        ("order.paid", 1, True),
        ("order.fulfilled", 1, False),
        ("order.fulfilled", 2, True),
        ("product.deleted", 1, True),
    }, [
        (moltin.delivered(log)[0], log["attempt"], log["status_code"], log["body"][:200], log["error_detail"])
        for log in moltin.logs()
    ]
    assert (tmp_path / "outbox" / "shipping-order-77.eml").read_text().startswith("To: ann@example.com")

    logs = flask(env, "webhooks", "logs", "--failed")
    assert logs.returncode == 0 and len(logs.stdout.strip().splitlines()) == 1
    assert "FAILED  attempt 1  http 500  order.fulfilled" in logs.stdout
    assert f"{fulfilled.event_id}  'webhook_receiver-moltin'  here: processed" in logs.stdout
    listed = json.loads(flask(env, "webhooks", "logs", "--json", "--limit", "2").stdout)
    assert len(listed) == 2 and {"trigger", "event_id", "integration", "stored_status"} <= set(listed[0])

    # Upstream redelivers the paid order (at least once): nothing runs twice.
    again = moltin.fire("order.paid", order, event_id=paid.event_id)
    assert moltin.wait_idle(30) and len(again.jobs) == 1
    assert len(read_activity(str(tmp_path / "activity.jsonl"))) == 3
