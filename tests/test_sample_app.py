"""The sample app: its handlers do something visible, once per event; the demo runs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from flask import Flask

from sample_app import create_app
from sample_app.activity import read_activity
from webhook_receiver.testing import deliver, make_event, sample_resource

SECRET = "sample-secret-for-tests"
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def shop(tmp_path: Path) -> Flask:
    return create_app({"WEBHOOK_RECEIVER_SECRET_KEY": SECRET}, instance_path=str(tmp_path))


def test_handlers_record_each_event_once(shop: Flask, tmp_path: Path) -> None:
    client = shop.test_client()
    order, _ = sample_resource("order.paid", "order-1")
    paid = make_event("order.paid", order, event_id="e-paid")
    for body in (
        paid,
        dict(paid, attempt=2),
        make_event("order.fulfilled", order, event_id="e-ful"),
        make_event("product.deleted", {"id": "p-1", "type": "product"}, event_id="e-del"),
    ):
        assert deliver(client, body, secret=SECRET).status_code == 200
    actions = [(a["action"], a["event"]) for a in read_activity(str(tmp_path / "activity.jsonl"))]
    assert actions == [
        ("payment_recorded", "e-paid"),
        ("shipping_notification_written", "e-ful"),
        ("product_unindexed", "e-del"),
    ]
    mail = (tmp_path / "outbox" / "shipping-order-1.eml").read_text()
    assert "To: ron@swanson.example" in mail and "has shipped" in mail


def test_refuses_to_start_without_a_secret(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("WEBHOOK_RECEIVER_SECRET_KEY", raising=False)
    with pytest.raises(RuntimeError, match="no secret"):
        create_app(instance_path=str(tmp_path))


def test_secret_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WEBHOOK_RECEIVER_SECRET_KEY", "from-env")
    app = create_app(instance_path=str(tmp_path))
    response = deliver(app.test_client(), make_event("product.deleted"), secret="from-env")
    assert response.get_json()["status"] == "processed"


def test_demo_runs_end_to_end(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "sample_app", "--exit", "--port", "0", "--instance-path", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    for expected in (
        "created integration 'webhook_receiver-moltin'",
        "attempt 1  <- 200 processed",
        "attempt 1  <- 500 failed\n   attempt 2  <- 200 processed",
        "handler: payment_recorded",
        "handler: shipping_notification_written",
        "handler: product_unindexed",
        "attempt 1  <- 200 duplicate",
        "<- 401",
    ):
        assert expected in out, out
    assert out.count("handler: payment_recorded") == 1
    assert out.count("handler: shipping_notification_written") == 1
    assert "Traceback" not in out
    secret = (tmp_path / "demo-secret").read_text()
    assert secret not in out and secret not in result.stderr
    assert oct((tmp_path / "demo-secret").stat().st_mode & 0o777) == "0o600"
