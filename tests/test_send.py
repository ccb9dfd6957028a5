"""webhook-receiver send and flask webhooks send."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Callable

from flask import Flask

from webhook_receiver import Event, WebhookReceiver

from .conftest import SECRET

ROOT = Path(__file__).resolve().parent.parent


def test_console_send_to_a_real_server(make_app: Callable[..., Flask], receiver: WebhookReceiver,
                                       live_server: Any, tmp_path: Path) -> None:
    seen: list[Event] = []
    receiver.on("product.deleted", "order.paid")(lambda e: seen.append(e))
    url = live_server(make_app()) + "/webhooks/moltin"
    data = tmp_path / "product.json"
    data.write_text(json.dumps({"id": "p-42", "type": "product"}))
    env = {**os.environ, "WEBHOOK_RECEIVER_SECRET_KEY": SECRET}
    run = [sys.executable, "-m", "webhook_receiver.console", "send"]
    ok = subprocess.run([*run, "product.deleted", "--to", url, "--data", str(data), "--attempt", "3"],
                        capture_output=True, text=True, env=env, timeout=30)
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("200 ") and '"processed"' in ok.stdout
    assert (seen[-1].data, seen[-1].attempt) == ({"id": "p-42", "type": "product"}, 3)
    refused = subprocess.run([*run, "order.paid", "--to", url, "--secret", "wrong"], capture_output=True,
                             text=True, env=env, timeout=30)
    assert refused.returncode == 1 and refused.stdout.startswith("401 ")
    bad = subprocess.run([*run, "order.paid", "--to", url, "--data", str(tmp_path / "none.json")],
                         capture_output=True, text=True, env=env, timeout=30)
    assert bad.returncode == 2 and "cannot read" in bad.stderr
    assert len(seen) == 1


def test_flask_webhooks_send(app: Flask, receiver: WebhookReceiver) -> None:
    seen: list[Event] = []
    receiver.on("order.paid")(lambda e: seen.append(e))
    runner = app.test_cli_runner()
    result = runner.invoke(args=["webhooks", "send", "order.paid"])
    assert result.exit_code == 0 and result.output.startswith("200 ")
    assert seen[0].data["type"] == "order" and seen[0].included["items"]
    ignored = runner.invoke(args=["webhooks", "send", "brand.created"])
    assert ignored.exit_code == 0 and '"ignored"' in ignored.output
